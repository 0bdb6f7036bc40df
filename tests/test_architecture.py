"""One direction of dependency: import-linter's contracts (.importlinter) hold, and a
back-arrow (a lower layer importing a higher one) breaks them. And no import circles between
the installed package's modules (issue #22 part 7): imports inside functions count too (grimp
reads every import statement of a module, not only the top-level ones), so a function-level
`from .bundle import ...` that closes a circle is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _lint(view: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache", "--config", str(ROOT / ".importlinter")],
        cwd=view,
        env={"PYTHONPATH": str(view), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _view(tmp_path: Path) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_view.py"), str(tmp_path / "src")],
        check=True,
        capture_output=True,
    )
    return tmp_path / "src"


def test_layer_contracts_hold(tmp_path):
    done = _lint(_view(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:]
    assert "3 kept, 0 broken" in done.stdout


def test_a_back_arrow_breaks_the_contracts(tmp_path):
    view = _view(tmp_path)
    wrapper = view / "coreml_diarize" / "wrappers" / "segmentation.py"
    wrapper.write_text(wrapper.read_text() + "\nfrom coreml_diarize.app import cli  # noqa\n")
    ground = view / "coreml_diarize" / "errors.py"
    ground.write_text(
        ground.read_text() + "\nfrom coreml_diarize.validation import judge  # noqa\n"
    )
    done = _lint(view)
    assert done.returncode != 0
    assert "0 broken" not in done.stdout
    assert "coreml_diarize.wrappers.segmentation -> coreml_diarize.app.cli" in done.stdout
    assert "coreml_diarize.errors -> coreml_diarize.validation.judge" in done.stdout


# Tarjan's strongly connected components over grimp's graph of direct imports, run inside the
# installed layout (tools/import_view.py), where app/ etc. are subpackages of coreml_diarize
_FIND_CYCLES = """
import json, sys
import grimp
# imports under `if TYPE_CHECKING:` never run: annotations may point both ways
graph = grimp.build_graph("coreml_diarize", exclude_type_checking_imports=True)
edges = {m: sorted(graph.find_modules_directly_imported_by(m)) for m in graph.modules}
index, low, stack, on, out = {}, {}, [], set(), []
sys.setrecursionlimit(10000)
def visit(v):
    index[v] = low[v] = len(index); stack.append(v); on.add(v)
    for w in edges.get(v, ()):
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        group = []
        while True:
            w = stack.pop(); on.discard(w); group.append(w)
            if w == v: break
        if len(group) > 1: out.append(sorted(group))
for v in sorted(edges):
    if v not in index: visit(v)
print(json.dumps(out))
"""


def _cycles(view: Path) -> list[list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _FIND_CYCLES],
        cwd=view,
        env={"PYTHONPATH": str(view)},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout)


def test_no_module_imports_itself_through_others(tmp_path):
    view = _view(tmp_path)
    assert _cycles(view) == []
    # the check sees a function-level import that closes a circle
    # (bundle -> golden_files -> bundle)
    golden = view / "coreml_diarize" / "app" / "golden_files.py"
    golden.write_text(golden.read_text() + "\n\ndef _late():\n    from .bundle import MANIFEST\n")
    cycles = _cycles(view)
    assert any(
        {"coreml_diarize.app.bundle", "coreml_diarize.app.golden_files"} <= set(c) for c in cycles
    )
