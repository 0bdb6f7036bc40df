"""Build profiles: `build --profile P` builds the registry's models whose chains name P, writes
their sidecar files, and bundles them under a manifest that names the profile."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import coreml_diarize.models as models
from coreml_diarize.app.build import build_all, bundle_name, profile_specs, profiles
from coreml_diarize.app.bundle import make_bundle, verify_bundle
from coreml_diarize.app.cli import main
from coreml_diarize.errors import DiarizeError
from coreml_diarize.specs import ModelSpec, TensorSpec, Tolerance


class Square(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


def _table(ctx) -> dict:
    """A sidecar's content: computed from the same context as the wrapper."""
    return {"frames": ctx.geometry.frames, "rule": "y = x^2"}


TOY = ModelSpec(
    key="toy-square",
    filename="ToySquare",
    role="auxiliary",
    description="x^2 per frame",
    weights=None,
    inputs=(TensorSpec("x", (1, "frames"), "anything per frame"),),
    outputs=(TensorSpec("y", (1, "frames"), "x squared"),),
    build_wrapper=lambda ctx: Square(),
    build_reference=lambda ctx: lambda inputs: {"y": np.square(inputs["x"].astype(np.float64))},
    example_inputs=lambda ctx: {
        "ramp": {"x": np.linspace(-2, 2, ctx.geometry.frames, dtype=np.float32)[None]},
        "flat": {"x": np.full((1, ctx.geometry.frames), 0.5, dtype=np.float32)},
    },
    tolerances={"fp32": {"y": Tolerance(max_abs=1e-6, min_reference_spread=0.05)}},
    chains=("toyset",),
    sidecars={"toy-table.json": _table},
)


@pytest.fixture
def with_toy(monkeypatch):
    registered = models.all_specs()
    monkeypatch.setattr(models, "all_specs", lambda: (*registered, TOY))


def test_online_profile_is_the_five_package_chain():
    keys = [spec.key for spec in profile_specs("online")]
    assert keys == ["segmentation", "postprocessor", "preprocessor", "embedding", "post-embedding"]
    assert profiles()[0] == "online"
    assert bundle_name("online") == "coreml-diarize-bundle"


def test_unknown_profile_is_a_one_line_error():
    with pytest.raises(DiarizeError, match="unknown profile 'nope' \\(choose from online"):
        profile_specs("nope")
    done = CliRunner().invoke(main, ["build", "--profile", "nope", "--out", "x"])
    assert done.exit_code == 2 and "Invalid value for '--profile'" in done.output


def test_a_profile_builds_only_its_models_with_sidecars(with_toy, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    summary = build_all(out, sources={}, profile="toyset", backend="mil", allow_untrained=True)
    assert [p.name for p in summary.packages] == ["ToySquare.mlpackage"]
    sidecar = out / "toy-table.json"
    assert summary.sidecars == [sidecar]
    assert json.loads(sidecar.read_text()) == {"frames": 589, "rule": "y = x^2"}

    bundle = summary.bundle
    assert bundle.name == "coreml-diarize-toyset-bundle" and summary.zip_path.is_file()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["profile"] == "toyset"
    (entry,) = manifest["artifacts"]
    digest = hashlib.sha256(sidecar.read_bytes()).hexdigest()
    assert entry["sidecars"] == {"toy-table.json": digest}
    assert (bundle / "toy-table.json").read_bytes() == sidecar.read_bytes()
    assert "toy-table.json" in (bundle / "README.md").read_text()
    assert verify_bundle(bundle) == [] and verify_bundle(summary.zip_path) == []

    (bundle / "toy-table.json").write_text("{}\n")  # tampered
    assert verify_bundle(bundle) == ["toy-table.json: SHA-256 mismatch"]
    (bundle / "toy-table.json").unlink()
    assert verify_bundle(bundle) == ["toy-table.json: missing"]


def test_a_package_without_its_sidecar_is_not_bundled(with_toy, tmp_path):
    runner = CliRunner()
    done = runner.invoke(main, ["convert", "toy-square", "--out", str(tmp_path)])
    assert done.exit_code == 0, done.output
    assert "toy-table.json" in done.output
    package = tmp_path / "ToySquare.mlpackage"
    args = ["validate", str(package), "--backend", "mil", "--save", "--quiet"]
    assert runner.invoke(main, args).exit_code == 0
    (tmp_path / "toy-table.json").unlink()
    with pytest.raises(DiarizeError, match="ToySquare.mlpackage needs toy-table.json beside it"):
        make_bundle([package], tmp_path / "dist")
    assert not (tmp_path / "dist" / "coreml-diarize-bundle").exists()
