"""The same inputs and versions give byte-identical packages, across processes too.

Within one process this always held; across processes the package's user-defined metadata
(a protobuf map) came out in a per-process hash order until `make_deterministic` switched to
protobuf's deterministic serialisation. Each conversion here runs in a fresh interpreter with
a different PYTHONHASHSEED, as two CI runs would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CONVERT = """
import sys
from pathlib import Path
from coreml_diarize.context import make_context
from coreml_diarize.converters.convert import convert_model
from coreml_diarize.mlpackage import tree_hash
from coreml_diarize.models import get_spec

spec = get_spec("postprocessor")
result = convert_model(spec, make_context(spec, source="random:0"), Path(sys.argv[1]))
print(tree_hash(result.path)[0])
"""


def _convert_in_fresh_process(out: Path, hash_seed: str) -> str:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    done = subprocess.run(
        [sys.executable, "-c", CONVERT, str(out)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=300,
    )
    return done.stdout.strip().splitlines()[-1]


def test_two_processes_write_identical_packages(tmp_path):
    first = _convert_in_fresh_process(tmp_path / "a", "1")
    second = _convert_in_fresh_process(tmp_path / "b", "2")
    assert len(first) == 64
    assert first == second
