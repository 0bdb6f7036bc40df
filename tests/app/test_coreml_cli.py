"""`--backend coreml` through the CLI on Linux, with the Core ML stand-in (tests/coreml_standin.py)
in place of coremltools' MLModel: validate, build, verify --run-golden, diarize and compare run
the code a Mac runs. Kept small: a one-op toy model for validate/build/verify, one 10 s window
for diarize/compare.
"""

from __future__ import annotations

import json

import coreml_standin as standin
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import coreml_diarize.models as models
from coreml_diarize.app.cli import main
from coreml_diarize.specs import ModelSpec, TensorSpec, Tolerance

SAMPLE_RATE = 16000
PROFILE = "coreml-toy"


class Cube(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x * x


TOY = ModelSpec(
    key="toy-cube",
    filename="ToyCube",
    role="auxiliary",
    description="x^3 per frame",
    weights=None,
    inputs=(TensorSpec("x", (1, "frames"), "anything per frame"),),
    outputs=(TensorSpec("y", (1, "frames"), "x cubed"),),
    build_wrapper=lambda ctx: Cube(),
    build_reference=lambda ctx: lambda inputs: {"y": inputs["x"].astype(np.float64) ** 3},
    example_inputs=lambda ctx: {
        "ramp": {"x": np.linspace(-2, 2, ctx.geometry.frames, dtype=np.float32)[None]},
        "flat": {"x": np.full((1, ctx.geometry.frames), 0.5, dtype=np.float32)},
    },
    # fp16: |x| <= 2, |x^3| <= 8 where the fp16 spacing is 2^-7: a few spacings of rounding
    tolerances={
        "fp32": {"y": Tolerance(max_abs=1e-5, min_reference_spread=0.05)},
        "fp16": {"y": Tolerance(max_abs=5e-2, min_reference_spread=0.05)},
    },
    chains=(PROFILE,),
)


def _register(monkeypatch) -> None:
    registered = models.all_specs()
    monkeypatch.setattr(models, "all_specs", lambda: (*registered, TOY))


@pytest.fixture
def with_toy(monkeypatch):
    """ToyCube in the registry, and its profile among `build --profile`'s choices (which the
    command reads from the registry once, at import)."""
    from coreml_diarize.app.commands.build import build

    _register(monkeypatch)
    (profile,) = [p for p in build.params if p.name == "profile"]
    monkeypatch.setattr(profile.type, "choices", (*profile.type.choices, PROFILE))


@pytest.fixture(scope="module")
def toy_fp16(tmp_path_factory):
    """ToyCube.mlpackage as an fp16 program (its multiplications are Neural Engine work)."""
    out = tmp_path_factory.mktemp("toy16")
    with pytest.MonkeyPatch.context() as mp:
        _register(mp)
        done = CliRunner().invoke(
            main, ["convert", "toy-cube", "--precision", "fp16", "--out", str(out)]
        )
    assert done.exit_code == 0, done.output
    return out / "ToyCube.mlpackage"


def _validate(package, tmp_path, units: str):
    report = tmp_path / "report.json"
    args = ["validate", str(package), "--backend", "coreml", "--compute-units", units]
    done = CliRunner().invoke(main, [*args, "--json", str(report), "--quiet"])
    assert done.exit_code == 0, done.output
    (payload,) = json.loads(report.read_text())
    return done, payload


def test_validate_cpu_and_ne_on_a_hosted_vm_is_not_an_ane_check(
    with_toy, toy_fp16, coreml_standin, tmp_path
):
    coreml_standin(standin.GITHUB_HOSTED_VM)
    done, report = _validate(toy_fp16, tmp_path, "cpu_and_ne")
    assert report["backend"] == "coreml" and report["compute_units"] == "cpu_and_ne"
    assert report["available_devices"] == ["cpu", "gpu"]
    assert report["neural_engine_checked"] is False
    (note,) = [n for n in report["notes"] if "Neural Engine" in n]
    assert "no Neural Engine" in note and "not an ANE check" in note
    assert "Neural Engine NOT checked" in done.stdout
    assert [line for line in done.stderr.splitlines() if "Neural Engine" in line] == [
        f"note: ToyCube.mlpackage: {note}"
    ]
    assert set(report["placement"]["ops_by_device"]) == {"cpu"}


def test_validate_cpu_and_ne_on_a_mac_records_the_placement(
    with_toy, toy_fp16, coreml_standin, tmp_path
):
    coreml_standin(standin.APPLE_SILICON_MAC)
    done, report = _validate(toy_fp16, tmp_path, "cpu_and_ne")
    assert report["available_devices"] == ["cpu", "gpu", "neural_engine (16 cores)"]
    assert report["neural_engine_checked"] is True
    placement = report["placement"]
    assert placement["ops_by_device"]["neural_engine"] >= 1  # the fp16 multiplications
    assert placement["agreement"] == 1.0 and placement["disagreements"] == []
    assert "Neural Engine checked" in done.stdout and "Core ML placement" in done.stdout
    assert "Neural Engine" not in done.stderr


def test_build_and_verify_run_golden_through_core_ml(with_toy, coreml_standin, tmp_path):
    coreml_standin(standin.GITHUB_HOSTED_VM)
    out = tmp_path / "out"
    args = ["build", "--profile", PROFILE, "--backend", "coreml", "--allow-untrained"]
    done = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert done.exit_code == 0, done.output
    saved = json.loads((out / "ToyCube.mlpackage.validation.json").read_text())
    assert saved["backend"] == "coreml" and saved["available_devices"] == ["cpu", "gpu"]
    bundle = out / f"coreml-diarize-{PROFILE}-bundle"
    for target in (bundle, bundle.with_suffix(".zip")):  # the zip keeps the empty weights/
        verify = CliRunner().invoke(
            main, ["verify", str(target), "--run-golden", "--backend", "coreml"]
        )
        assert verify.exit_code == 0, verify.output
    assert "ToyCube.mlpackage [fp32] golden via coreml: ok" in verify.output
    # asked for the Neural Engine on a machine without one, the golden check says so
    from coreml_diarize.app.golden import check_golden

    report = check_golden(
        bundle / "ToyCube.mlpackage",
        bundle / "golden" / "ToyCube",
        backend="coreml",
        compute_units="cpu_and_ne",
    )
    assert report.passed and any("no Neural Engine" in n for n in report.notes)
    assert "note: " in report.line()


def test_build_stops_in_one_line_when_core_ml_cannot_load(with_toy, coreml_standin, tmp_path):
    """macOS 13 loads specification version 7 at most; the build converts for iOS 17 (8)."""
    coreml_standin(standin.Machine("macOS 13", (13, 5)))
    out = tmp_path / "out"
    args = ["build", "--profile", PROFILE, "--backend", "coreml", "--allow-untrained"]
    done = CliRunner().invoke(main, [*args, "--out", str(out)])
    assert done.exit_code == 5, done.output
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and "Core ML cannot load the package" in line
    assert "Traceback" not in done.output
    assert not list(out.glob("*bundle*"))


@pytest.fixture(scope="module")
def online_models(seg_package, emb_package, tmp_path_factory):
    """The online chain: the session's fp32 segmentation and embedding packages + the three
    auxiliary ones (no weights, converted in seconds)."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec

    out = tmp_path_factory.mktemp("online")
    for package in (seg_package, emb_package):
        (out / package.name).symlink_to(package, target_is_directory=True)
    for key in ("postprocessor", "preprocessor", "post-embedding"):
        spec = get_spec(key)
        convert_model(spec, make_context(spec, source="random:0"), out)
    return out


@pytest.fixture(scope="module")
def one_window(tmp_path_factory):
    """10 s of pyannote's bundled sample: exactly one window."""
    import soundfile as sf

    from coreml_diarize.audio import bundled_sample_path, read_audio

    wav = tmp_path_factory.mktemp("audio") / "sample.wav"
    sf.write(wav, read_audio(bundled_sample_path()).samples[: 10 * SAMPLE_RATE], SAMPLE_RATE)
    return wav


def test_diarize_and_compare_through_core_ml(online_models, one_window, coreml_standin, tmp_path):
    coreml_standin(standin.APPLE_SILICON_MAC)
    runner = CliRunner()
    args = [str(one_window), "--models", str(online_models)]
    diarized = runner.invoke(main, ["diarize", *args, "--backend", "coreml", "--quiet"])
    assert diarized.exit_code == 0, diarized.output
    assert diarized.stderr.strip().splitlines()[-1].endswith(", coreml)")
    assert diarized.stdout.strip(), "no speech turn found"

    report = tmp_path / "cmp.json"
    compared = runner.invoke(
        main, ["compare", *args, "--backend", "coreml", "--json", str(report), "--quiet"]
    )
    assert compared.exit_code == 0, compared.output
    payload = json.loads(report.read_text())
    assert payload["converted"]["backend"] == "coreml"
    # the chain run through "Core ML" diarizes as pyannote's own pipeline on the same weights
    assert payload["converted_vs_torch"]["der"] <= 0.01
