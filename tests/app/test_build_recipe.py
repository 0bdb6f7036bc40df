"""`build --recipe` on untrained weights: a mixed recipe is searched on one trained model's
measured sensitivity, and the `mixed` tolerance is derived for trained models, so the build
refuses in one line before it converts anything, and leaves no package behind."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from coreml_diarize.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "quantize" / "mixed_recipes" / "segmentation-fixture-0.99mb.json"


def test_recipe_on_seeded_random_weights_is_refused(tmp_path):
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main, ["build", "--out", str(out), "--source", "random:0", "--recipe", str(RECIPE)]
    )
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output
    assert "untrained" in lines[-1] and "--segmentation-source" in lines[-1], lines
    assert not out.exists() or not list(out.rglob("*.mlpackage"))


def test_refusal_comes_before_any_conversion(tmp_path):
    """Trained segmentation, seeded embedding, a WeSpeaker recipe: the segmentation model (first
    in the profile) is not converted either."""
    recipe = ROOT / "quantize" / "mixed_recipes" / "wespeaker-fixture-factored-3.95mb.json"
    fixture = ROOT / "tests" / "fixtures" / "segmentation-synthetic" / "pytorch_model.bin"
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main,
        ["build", "--out", str(out), "--source", "random:0", "--segmentation-source",
         str(fixture), "--fbank-front-end", "factored", "--recipe", str(recipe)],
    )  # fmt: skip
    assert result.exit_code != 0
    last = [line for line in result.output.splitlines() if line.strip()][-1]
    assert "untrained" in last and "--embedding-source" in last, result.output
    assert not out.exists() or not list(out.rglob("*.mlpackage"))
