"""`validate`: saved packages against PyTorch through the backend; failures are real failures."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.validation.report import validate_package


@pytest.fixture(scope="module")
def seg_report(seg_package):
    return validate_package(seg_package, backend="mil")


def test_good_package_passes_on_every_input_and_output(seg_report):
    assert seg_report.passed, seg_report.table()
    assert seg_report.backend == "mil"
    assert {c.input for c in seg_report.cases} >= {
        "silence",
        "noise",
        "sine_sweep",
        "speech_0s",
        "speech_15s",
    }
    worst = seg_report.summary()["segments"]
    assert worst["argmax_agreement_confident"] >= 0.999
    for case in seg_report.cases:
        (out,) = case.outputs
        # judged in probability space (docs/validation.md): 5 x the worst of 306 chunks
        assert out.prob_max_abs <= 7.5e-3, case.input
        # log-probs: the fixed 1e-4 holds where SincNet does not amplify fp32 rounding
        if case.input in ("noise", "sine_sweep", "clipped"):
            assert out.max_abs <= 1e-4, case.input
    assert seg_report.reference_spread["segments"] > 0.05
    assert seg_report.trained == "false"


def test_tampered_weight_blob_fails(seg_package, tmp_path):
    package = tmp_path / seg_package.name
    shutil.copytree(seg_package, package)
    blob = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    floats = np.frombuffer(
        data, dtype=np.float32, offset=len(data) // 2 // 4 * 4 - 4096, count=1024
    ).copy()
    floats *= 3.0  # a block of weights in the middle of the blob
    start = len(data) // 2 // 4 * 4 - 4096
    data[start : start + floats.nbytes] = floats.tobytes()
    blob.write_bytes(bytes(data))
    report = validate_package(package, backend="mil")
    assert not report.passed


def test_degenerate_weights_fail_instead_of_passing_trivially(tmp_path, monkeypatch):
    """Uncalibrated default-init weights: the package matches its reference, but the reference
    barely depends on its input, so validation must refuse to call that a pass."""
    import coreml_diarize.calibration as calibration
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec

    monkeypatch.setattr(calibration, "calibrate_segmentation", lambda model, audio: None)
    spec = get_spec("segmentation")
    package = convert_model(spec, make_context(spec, source="random:5"), tmp_path).path
    report = validate_package(package, backend="mil")
    assert not report.passed
    assert any("barely depends on its input" in f for f in report.failures)


def test_cli_validate_json_and_exit_codes(seg_package, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main, ["validate", str(seg_package), "--backend", "mil", "--json", str(out), "--quiet"]
    )
    assert result.exit_code == 0, result.output
    assert "PASSED" in result.output
    data = json.loads(out.read_text())
    assert data[0]["passed"] and data[0]["backend"] == "mil"
    assert data[0]["versions"]["coremltools"]
    bad = CliRunner().invoke(
        main, ["validate", str(seg_package), "--backend", "mil", "--source", "random:2", "--quiet"]
    )
    assert bad.exit_code == 6
    assert "segments" in bad.output and "validation failed" in bad.output


def test_cli_validate_user_audio(seg_package, tmp_path):
    import soundfile as sf

    from coreml_diarize import signals

    stereo = np.stack([signals.real_speech(4.0, 64000), signals.noise(64000)], axis=1)
    sf.write(tmp_path / "two.wav", stereo, 16000)
    sf.write(tmp_path / "hi.flac", signals.real_speech(0.0, 44100 * 3), 44100)
    result = CliRunner().invoke(
        main,
        [
            "validate",
            str(seg_package),
            "--backend",
            "mil",
            "--quiet",
            "--audio",
            str(tmp_path / "two.wav"),
            "--audio",
            str(tmp_path / "hi.flac"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "downmixed 2 channels" in result.output
    assert "resampled 44100 Hz" in result.output
    assert "two#0" in result.output and "hi#0" in result.output


def test_coreml_backend_on_linux_is_a_clear_error(seg_package):
    import platform

    if platform.system() == "Darwin":
        pytest.skip("Core ML prediction is available on macOS")
    result = CliRunner().invoke(
        main, ["validate", str(seg_package), "--backend", "coreml", "--quiet"]
    )
    assert result.exit_code != 0
    assert "macOS" in result.output and len(result.output.strip().splitlines()) <= 2


def test_user_audio_is_one_window_for_a_batch_model_and_stays_paired_otherwise():
    """`validate --audio` on offline Segmentation (batch 1..32, default 32) ran each chunk as
    32 identical windows; the online embedding's waveform must keep the batch of its mask."""
    import numpy as np

    from coreml_diarize.models import get_spec
    from coreml_diarize.sources import default_geometry
    from coreml_diarize.specs import BuildContext, Options
    from coreml_diarize.validation.report import audio_cases

    ctx = BuildContext(default_geometry(), Options())
    n = ctx.geometry.samples
    chunk = np.linspace(-1, 1, n, dtype=np.float32)
    (case,) = audio_cases(
        get_spec("offline-segmentation"), ctx, {"audio": np.zeros((7, 1, n))}, {"x": chunk}
    ).values()
    assert case["audio"].shape == (1, 1, n) and np.array_equal(case["audio"][0, 0], chunk)
    base = {"waveform": np.zeros((3, n)), "mask": np.ones((3, ctx.geometry.frames))}
    (case,) = audio_cases(get_spec("embedding"), ctx, base, {"x": chunk}).values()
    assert case["waveform"].shape == (3, n) and case["mask"] is base["mask"]
