"""One direction of dependency: import-linter's contracts (.importlinter) hold, and a
back-arrow (a lower layer importing a higher one) breaks them."""

from __future__ import annotations

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
