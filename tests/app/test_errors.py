"""Reliability matrix: every bad input through the real CLI gives exit != 0, one line naming
the problem (no traceback), and leaves no partial artifact behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from coreml_diarize import signals
from coreml_diarize.app.cli import main
from coreml_diarize.atomic import LOCK_NAME
from coreml_diarize.mlpackage import tree_hash


def run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, exit_code: int, pattern: str) -> None:
    import re

    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in result.output


def leftovers(directory: Path) -> list[str]:
    """Anything in an output dir besides finished artifacts (temp dirs, half-written files)."""
    if not directory.exists():
        return []
    return sorted(
        p.name for p in directory.iterdir() if p.name.endswith(".tmp") or ".old." in p.name
    )


@pytest.fixture(scope="module")
def preprocessor_package(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pre")
    assert run("convert", "preprocessor", "--out", out).exit_code == 0
    return out / "embedding_preprocessor.mlpackage"


# --- weights --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_weights(tmp_path_factory, seg_weights) -> dict[str, Path]:
    import torch

    from coreml_diarize.checkpoints import save_pyannote_checkpoint
    from coreml_diarize.sources import build_architecture

    root = tmp_path_factory.mktemp("badw")
    good = save_pyannote_checkpoint(seg_weights.model, root / "good.bin")
    (root / "empty.bin").write_bytes(b"")
    (root / "truncated.bin").write_bytes(good.read_bytes()[:5000])
    save_pyannote_checkpoint(build_architecture("embedding"), root / "other.bin")
    ckpt = torch.load(good, weights_only=False)
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("linear.1")}
    torch.save(dict(ckpt, state_dict=state), root / "missing.bin")
    torch.save(
        dict(ckpt, payload=subprocess.Popen), root / "code.bin"
    )  # a global outside the allow-list
    return {p.stem: p for p in root.iterdir()}


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("absent", "checkpoint not found"),
        ("empty", "checkpoint is empty"),
        ("truncated", "not a PyTorch checkpoint|corrupt or truncated"),
        ("other", "holds WeSpeakerResNet34, expected PyanNet"),
        ("missing", "cannot load checkpoint"),
        ("code", "arbitrary code.*--trust-checkpoint"),
    ],
)
def test_bad_weights(case, pattern, bad_weights, tmp_path):
    source = bad_weights.get(case, tmp_path / "absent.bin")
    out = tmp_path / "out"
    assert_one_line_error(
        run("convert", "segmentation", "--source", source, "--out", out), 3, pattern
    )
    assert not (out / "pyannote_segmentation.mlpackage").exists()


def test_hub_repo_absent_offline_and_token_never_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_SECRETSECRETSECRET")
    result = run(
        "convert",
        "segmentation",
        "--source",
        "hf:acme/absent@v1",
        "--hf-cache",
        tmp_path / "c",
        "--out",
        tmp_path / "o",
    )
    assert_one_line_error(result, 3, r"acme/absent@v1 is not in the local cache")
    assert "SECRET" not in result.output


# --- audio for validate ---------------------------------------------------------------------


def _write(path: Path, data: np.ndarray, rate: int, subtype: str | None = None) -> Path:
    sf.write(path, data, rate, subtype=subtype)
    return path


@pytest.mark.parametrize(
    "case,pattern",
    [
        ("missing", "audio file not found"),
        ("not_audio", "not a readable audio file"),
        ("empty", "audio file is empty|not a readable audio file"),
        ("short", "shorter than 1 s"),
        ("nan", "NaN or infinite"),
    ],
)
def test_bad_audio(case, pattern, preprocessor_package, tmp_path):
    path = tmp_path / f"{case}.wav"
    if case == "not_audio":
        path.write_text("hello")
    elif case == "empty":
        _write(path, np.zeros(0, dtype=np.float32), 16000)
    elif case == "short":
        _write(path, signals.noise(8000), 16000)
    elif case == "nan":
        data = signals.noise(32000)
        data[100] = np.nan
        _write(path, data, 16000, "FLOAT")
    result = run("validate", preprocessor_package, "--backend", "mil", "--quiet", "--audio", path)
    assert_one_line_error(result, 4, pattern)


@pytest.mark.parametrize(
    "case,rate,channels,subtype,notice",
    [
        ("8k", 8000, 1, None, "resampled 8000 Hz"),
        ("44k", 44100, 1, None, "resampled 44100 Hz"),
        ("stereo", 16000, 2, None, "downmixed 2 channels"),
        ("float32", 16000, 1, "FLOAT", None),
    ],
)
def test_unusual_but_valid_audio_is_accepted_with_notice(
    case, rate, channels, subtype, notice, preprocessor_package, tmp_path
):
    data = signals.real_speech(0.0, rate * 2)
    if channels == 2:
        data = np.stack([data, signals.noise(rate * 2)], axis=1)
    path = _write(tmp_path / f"{case}.wav", data, rate, subtype)
    result = run("validate", preprocessor_package, "--backend", "mil", "--quiet", "--audio", path)
    assert result.exit_code == 0, result.output
    if notice:
        assert notice in result.output
    assert f"{case}#0" in result.output


# --- artifacts ------------------------------------------------------------------------------


def _corrupt(package: Path, how: str, tmp: Path) -> Path:
    broken = tmp / package.name
    shutil.copytree(package, broken)
    weights = broken / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    if how == "deleted weights":
        shutil.rmtree(weights.parent)
    elif how == "garbage manifest":
        (broken / "Manifest.json").write_text("{not json")
    elif how == "truncated blob":
        weights.write_bytes(weights.read_bytes()[:100])
    elif how == "missing":
        shutil.rmtree(broken)
    return broken


@pytest.mark.parametrize(
    "how", ["missing", "deleted weights", "garbage manifest", "truncated blob"]
)
@pytest.mark.parametrize("command", ["inspect", "validate"])
def test_corrupt_packages(how, command, seg_package, tmp_path):
    broken = _corrupt(seg_package, how, tmp_path)
    args = [command, broken] + (["--backend", "mil", "--quiet"] if command == "validate" else [])
    result = run(*args)
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1


def test_package_not_built_by_us(tmp_path):
    import coremltools as ct
    import torch

    traced = torch.jit.trace(torch.nn.Linear(4, 2).eval(), torch.zeros(1, 4))
    foreign = tmp_path / "foreign.mlpackage"
    ct.convert(traced, inputs=[ct.TensorType(name="x", shape=(1, 4))], convert_to="mlprogram").save(
        str(foreign)
    )
    assert_one_line_error(
        run("validate", foreign, "--backend", "mil", "--quiet"), 5, "not built by coreml-diarize"
    )


def test_wrong_weights_for_the_package(seg_package, bad_weights):
    result = run(
        "validate", seg_package, "--backend", "mil", "--quiet", "--source", bad_weights["other"]
    )
    assert_one_line_error(result, 3, "holds WeSpeakerResNet34, expected PyanNet")


def test_bundle_hash_mismatch(tmp_path):
    bundle = tmp_path / "b"
    (bundle / "x.mlpackage").mkdir(parents=True)
    (bundle / "x.mlpackage" / "f").write_text("tampered")
    manifest = {
        "artifacts": [{"name": "x.mlpackage", "files": {"f": "0" * 64}, "tree_sha256": "0"}]
    }
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert_one_line_error(run("verify", bundle), 5, "does not match its manifest")


# --- environment ----------------------------------------------------------------------------


def test_output_path_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    assert_one_line_error(
        run("convert", "postprocessor", "--out", tmp_path / "file" / "sub"), 2, "output directory"
    )


def test_disk_full_keeps_previous_artifact(tmp_path, monkeypatch):
    import errno

    import coremltools as ct

    out = tmp_path / "out"
    assert run("convert", "postprocessor", "--out", out).exit_code == 0
    package = out / "powerset_postprocessor.mlpackage"
    before = tree_hash(package)

    def full_disk(self, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "partial").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ct.models.MLModel, "save", full_disk)
    assert_one_line_error(run("convert", "postprocessor", "--out", out), 2, "no space left")
    assert tree_hash(package) == before
    assert leftovers(out) == []


def _convert_script(out: Path, kill_before_rename: bool) -> str:
    return f"""
import os, signal, sys
import coreml_diarize.atomic as atomic
if {kill_before_rename}:
    atomic._replace = lambda src, dst: os.kill(os.getpid(), signal.SIGKILL)
from coreml_diarize.app.cli import main
sys.argv = ["coreml-diarize", "convert", "postprocessor", "--out", {str(out)!r}]
main()
"""


def test_killed_between_write_and_rename_keeps_previous(tmp_path):
    out = tmp_path / "out"
    assert run("convert", "postprocessor", "--out", out).exit_code == 0
    package = out / "powerset_postprocessor.mlpackage"
    before = tree_hash(package)
    proc = subprocess.run(
        [sys.executable, "-c", _convert_script(out, True)], capture_output=True, timeout=600
    )
    assert proc.returncode == -9
    assert tree_hash(package) == before  # the previous artifact is intact
    # the killed build's temp dir is hidden and never mistaken for an artifact
    assert sorted(p.name for p in out.glob("*.mlpackage")) == ["powerset_postprocessor.mlpackage"]


def test_two_builds_at_once_into_one_directory(tmp_path):
    out = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _convert_script(out, False)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    codes = [p.wait(timeout=600) for p in procs]
    assert codes == [0, 0], [p.stderr.read() for p in procs]
    result = run("inspect", out / "powerset_postprocessor.mlpackage", "--json")
    assert result.exit_code == 0
    assert leftovers(out) == []
    assert sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME) == [
        "powerset_postprocessor.mlpackage"
    ]


def test_conversion_writes_only_inside_out(tmp_path):
    before = set(os.listdir(tmp_path))
    out = tmp_path / "only" / "here"
    assert run("convert", "postprocessor", "--out", out).exit_code == 0
    assert set(os.listdir(tmp_path)) - before == {"only"}


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args,code,pattern",
    [
        (["convert", "nope", "--out", "{tmp}"], 2, "unknown model 'nope'"),
        (
            ["convert", "postprocessor", "--precision", "fp8", "--out", "{tmp}"],
            2,
            "Invalid value for '--precision'",
        ),
        (
            ["convert", "post-embedding", "--min-activity-frames", "-1", "--out", "{tmp}"],
            2,
            "non-negative",
        ),
        (
            ["convert", "post-embedding", "--min-speaker-duration", "nan", "--out", "{tmp}"],
            2,
            "non-negative",
        ),
        (
            ["convert", "postprocessor", "--target", "iOS9", "--out", "{tmp}"],
            2,
            "unknown deployment target",
        ),
        (["validate", "{pkg}", "--backend", "tpu"], 2, "Invalid value for '--backend'"),
        (["validate", "{pkg}", "--max-abs", "-1"], 2, "must be >= 0"),
        (
            ["convert", "segmentation", "--source", "random:abc", "--out", "{tmp}"],
            3,
            "non-negative integer",
        ),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_bad_options(args, code, pattern, tmp_path, preprocessor_package):
    filled = [a.format(tmp=tmp_path / "o", pkg=preprocessor_package) for a in args]
    assert_one_line_error(run(*filled), code, pattern)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.mlpackage"))


def test_debug_shows_the_traceback(tmp_path):
    result = CliRunner().invoke(main, ["--debug", "convert", "nope", "--out", str(tmp_path)])
    assert result.exit_code != 0
    assert result.exception is not None and "unknown model" in str(result.exception)
