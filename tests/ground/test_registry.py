"""The registry is the only declaration: a new weightless model is a wrapper, a reference and
one registry entry, and goes through convert -> validate -> package from the CLI without any
other file knowing about it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import coreml_diarize.models as models
from coreml_diarize.app.cli import main
from coreml_diarize.errors import SourceError
from coreml_diarize.sources import load_weights, weight_family
from coreml_diarize.specs import ModelSpec, TensorSpec, Tolerance


class LogCompress(torch.nn.Module):
    """y = log(1 + |x|): a toy model whose forward reads like the math."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.abs(x))


class OffByATenth(torch.nn.Module):
    """A wrong model: 0.1 % too large."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(torch.abs(x)) * 1.001


def _reference(ctx):
    return lambda inputs: {"y": np.log1p(np.abs(np.asarray(inputs["x"], dtype=np.float64)))}


def _inputs(ctx):
    rng = np.random.default_rng(0)
    return {
        "noise": {"x": rng.standard_normal((1, ctx.geometry.frames)).astype(np.float32)},
        "ramp": {"x": np.linspace(-5, 5, ctx.geometry.frames, dtype=np.float32)[None]},
    }


TOY = ModelSpec(
    key="toy",
    filename="toy_log_compress",
    role="auxiliary",
    description="log(1 + |x|) per frame",
    weights=None,
    inputs=(TensorSpec("x", (1, "frames"), "anything per frame"),),
    outputs=(TensorSpec("y", (1, "frames"), "log(1 + |x|)"),),
    build_wrapper=lambda ctx: LogCompress(),
    build_reference=_reference,
    example_inputs=_inputs,
    tolerances={"fp32": {"y": Tolerance(max_abs=1e-6, min_reference_spread=0.05)}},
    license_note="MIT",
)


@pytest.fixture
def with_toy(monkeypatch):
    registered = models.all_specs()
    monkeypatch.setattr(models, "all_specs", lambda: (*registered, TOY))


def test_a_toy_model_goes_through_convert_validate_package(with_toy, tmp_path):
    runner = CliRunner()
    models_dir, dist = tmp_path / "models", tmp_path / "dist"
    done = runner.invoke(main, ["convert", "toy", "--out", str(models_dir)])
    assert done.exit_code == 0, done.output
    package = models_dir / "toy_log_compress.mlpackage"
    assert package.is_dir()
    report = tmp_path / "report.json"
    args = ["validate", str(package), "--backend", "mil", "--save", "--quiet"]
    done = runner.invoke(main, [*args, "--json", str(report)])
    assert done.exit_code == 0, done.output
    (result,) = json.loads(report.read_text())
    assert result["passed"] and result["model"] == "toy"
    done = runner.invoke(main, ["package", str(package), "--out", str(dist)])
    assert done.exit_code == 0, done.output
    manifest = json.loads((dist / "coreml-diarize-bundle" / "manifest.json").read_text())
    (entry,) = manifest["artifacts"]
    assert entry["model"] == "toy" and entry["source"]["kind"] == "none"
    assert entry["compute_units"] == "cpu_only"


def test_a_wrong_toy_fails_validation(with_toy, tmp_path, monkeypatch):
    """The same path catches a model that does not match its reference."""
    runner = CliRunner()
    wrong = ModelSpec(**{**TOY.__dict__, "build_wrapper": lambda ctx: OffByATenth()})
    registered = models.all_specs()[:-1]
    monkeypatch.setattr(models, "all_specs", lambda: (*registered, wrong))
    assert runner.invoke(main, ["convert", "toy", "--out", str(tmp_path)]).exit_code == 0
    package = tmp_path / "toy_log_compress.mlpackage"
    done = runner.invoke(main, ["validate", str(package), "--backend", "mil", "--quiet"])
    assert done.exit_code == 6, done.output


def test_cli_source_options_come_from_the_registry(with_toy):
    done = CliRunner().invoke(main, ["convert", "--help"])
    families = {s.weights.name for s in models.registry().values() if s.weights}
    assert families == {"segmentation", "embedding", "plda"}
    for family in families:
        assert f"--{family}-source" in done.output


def test_unknown_weight_family_is_an_error():
    with pytest.raises(SourceError, match="unknown weight family 'vocoder'"):
        weight_family("vocoder")
    with pytest.raises(SourceError, match="unknown weight family"):
        load_weights("vocoder", "random:0")


def test_diarize_needs_only_its_chain(with_toy):
    """A registered model outside the online chain is not required by `diarize`."""
    chain = [s.key for s in models.registry().values() if "online" in s.chains]
    assert "toy" in models.registry() and "toy" not in chain
    assert chain == ["segmentation", "postprocessor", "preprocessor", "embedding", "post-embedding"]
