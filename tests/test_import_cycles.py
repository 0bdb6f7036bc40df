"""No import circles between the installed package's modules (issue #22 part 7): imports inside
functions count too (grimp reads every import statement of a module, not only the top-level
ones), so a function-level `from .bundle import ...` that closes a circle is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

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


def _view(tmp_path: Path) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "tools" / "import_view.py"), str(tmp_path / "src")],
        check=True,
        capture_output=True,
    )
    return tmp_path / "src"


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
    # the check sees a function-level import that closes a circle (bundle -> golden -> bundle)
    golden = view / "coreml_diarize" / "app" / "golden.py"
    golden.write_text(golden.read_text() + "\n\ndef _late():\n    from .bundle import MANIFEST\n")
    cycles = _cycles(view)
    assert any({"coreml_diarize.app.bundle", "coreml_diarize.app.golden"} <= set(c) for c in cycles)
