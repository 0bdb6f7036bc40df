"""The DER gate script the macos-hub job runs (.github/scripts/der_gate.py), on the JSON
`coreml-diarize compare` writes: standard library only, one line per file, exit 0/1/2."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parent.parent
GATE = ROOT / ".github" / "scripts" / "der_gate.py"


# --- the DER gate ------------------------------------------------------------------------


def _gate_module():
    spec = importlib.util.spec_from_file_location("der_gate", GATE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compare_json(path: Path, der: float, variant: str | None = None) -> Path:
    """What `coreml-diarize compare --json` writes (built by compare.py's own to_dict)."""
    from coreml_diarize.diarization.compare import ComparisonResult, Scores

    converted = SimpleNamespace(
        seconds=1.0,
        to_dict=lambda: {"backend": "coreml", "variant": variant, "windows": 21},
    )
    result = ComparisonResult(
        uri="sample",
        duration_s=30.0,
        converted=converted,
        torch_annotation=SimpleNamespace(labels=lambda: ["SPEAKER_00", "SPEAKER_01"]),
        torch_seconds=2.0,
        between=Scores(der=der, jer=der),
    )
    path.write_text(json.dumps(result.to_dict()))
    return path


def _run_gate(*args: str | Path) -> subprocess.CompletedProcess:
    # -I -S: isolated, no site-packages: the gate must run on the standard library alone
    return subprocess.run(
        [sys.executable, "-I", "-S", str(GATE), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_der_gate_passes_within_the_limit(tmp_path):
    fp32 = _compare_json(tmp_path / "cmp_fp32.json", 0.0)
    pal = _compare_json(tmp_path / "cmp_palettize8.json", 0.0042, "palettize8")
    result = _run_gate("--max-der-percent", "1", fp32, pal)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert "DER 0.00%" in lines[0] and "variant fp32" in lines[0] and lines[0].endswith("ok")
    assert "DER 0.42%" in lines[1] and "variant palettize8" in lines[1]
    assert "limit 1.00%" in lines[1] and lines[1].endswith("ok")


def test_der_gate_fails_above_the_limit(tmp_path):
    fp32 = _compare_json(tmp_path / "cmp_fp32.json", 0.0)
    pal = _compare_json(tmp_path / "cmp_palettize8.json", 0.0125, "palettize8")
    result = _run_gate("--max-der-percent", "1", fp32, pal)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0].endswith("ok")
    assert "DER 1.25%" in lines[1] and lines[1].endswith("FAIL")
    # the limit is the argument, not a constant
    assert _run_gate("--max-der-percent", "2", fp32, pal).returncode == 0
    assert _run_gate("--max-der-percent", "0", fp32).returncode == 0
    assert _run_gate("--max-der-percent", "0", pal).returncode == 1


def test_der_gate_exactly_at_the_limit_passes_and_nan_fails(tmp_path):
    at = _compare_json(tmp_path / "at.json", 0.01)
    assert _run_gate("--max-der-percent", "1", at).returncode == 0
    nan = tmp_path / "nan.json"
    nan.write_text('{"converted_vs_torch": {"der": NaN}}')
    result = _run_gate("--max-der-percent", "1", nan)
    assert result.returncode == 1 and result.stdout.strip().endswith("FAIL")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"converted_vs_torch": {"der": 0.0', "not valid JSON"),
        ("", "not valid JSON"),
        ("[]", "no numeric converted_vs_torch.der"),
        ('{"der": 0.0}', "no numeric converted_vs_torch.der"),
        ('{"converted_vs_torch": {"der": "0.0"}}', "no numeric converted_vs_torch.der"),
        ('{"converted_vs_torch": {"der": true}}', "no numeric converted_vs_torch.der"),
    ],
)
def test_der_gate_malformed_input_is_a_clear_error(tmp_path, content, message):
    bad = tmp_path / "cmp_bad.json"
    bad.write_text(content)
    good = _compare_json(tmp_path / "cmp_fp32.json", 0.0)
    result = _run_gate("--max-der-percent", "1", good, bad)
    assert result.returncode == 2
    assert result.stdout.splitlines()[0].endswith("ok")  # the good file is still reported
    (error,) = result.stderr.splitlines()
    assert error.startswith(f"error: {bad}: ") and message in error
    assert "Traceback" not in result.stderr


def test_der_gate_missing_file_and_bad_arguments(tmp_path):
    result = _run_gate("--max-der-percent", "1", tmp_path / "absent.json")
    assert result.returncode == 2 and "cannot read" in result.stderr
    fp32 = _compare_json(tmp_path / "cmp_fp32.json", 0.0)
    assert _run_gate(fp32).returncode == 2  # the limit is required
    assert _run_gate("--max-der-percent", "-1", fp32).returncode == 2
    assert _run_gate("--max-der-percent", "nan", fp32).returncode == 2
    assert _run_gate("--max-der-percent", "1").returncode == 2  # no files


def test_der_gate_in_process(tmp_path, capsys):
    gate = _gate_module()
    fp32 = _compare_json(tmp_path / "cmp_fp32.json", 0.0)
    assert gate.read_der(fp32) == (0.0, "variant fp32, backend coreml")
    assert gate.main(["--max-der-percent", "1", str(fp32)]) == 0
    assert capsys.readouterr().out.count("\n") == 1
