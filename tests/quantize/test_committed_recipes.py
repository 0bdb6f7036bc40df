"""The committed mixed recipes reproduce from the CLI.

WeSpeaker: `convert --fbank-front-end factored` of the embedding fixture, then `quantize
--config RECIPE` gives a package under the issue's 4.0 MB goal whose compressed weights are
exactly the recipe's, at the recipe's widths. Segmentation, iOS18 (per-grouped-channel
tables): `convert --target iOS18` of the segmentation fixture, then `quantize --config RECIPE`
gives a package under the 1.0 MB goal whose look-up tables have the recipe's widths and group
size, read from the saved program; an iOS17 conversion refuses the recipe in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.mlpackage import load_program, package_size
from coreml_diarize.quantize.apply import summarize_program

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "embedding-synthetic" / "pytorch_model.bin"
RECIPE = ROOT / "quantize" / "mixed_recipes" / "wespeaker-fixture-factored-3.95mb.json"
SEGMENTATION = ROOT / "tests" / "fixtures" / "segmentation-synthetic" / "pytorch_model.bin"
IOS18_RECIPES = sorted(
    (ROOT / "quantize" / "mixed_recipes").glob("segmentation-fixture-ios18-*.json")
)


def _lut_widths(package: Path) -> dict[str, int]:
    """const name (as the fp32 package names it) -> bits, read from the saved program's
    constexpr_lut_to_dense ops (a LUT of 2**bits entries)."""
    widths = {}
    for op in load_program(package).functions["main"].operations:
        if op.op_type != "constexpr_lut_to_dense":
            continue
        entries = int(np.prod(op.lut.val.shape[-2:-1]) if op.lut.val.ndim > 2 else op.lut.val.size)
        name = op.outputs[0].name.removesuffix("_palettized").removesuffix("_to_fp16")
        widths[name] = int(np.log2(entries))
    return widths


def test_committed_wespeaker_recipe_reproduces_from_the_cli(tmp_path):
    runner = CliRunner()
    fp32 = tmp_path / "fp32"
    done = runner.invoke(
        main,
        ["convert", "embedding", "--embedding-source", str(FIXTURE), "--out", str(fp32),
         "--fbank-front-end", "factored"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    package = fp32 / "wespeaker_v2.mlpackage"
    recipe = json.loads(RECIPE.read_text())
    weights = summarize_program(load_program(package)).weight_sizes
    assert set(recipe["bits"]) <= set(weights)  # the factored build's names
    done = runner.invoke(
        main, ["quantize", str(package), "--config", str(RECIPE), "--out", str(tmp_path / "q")]
    )
    assert done.exit_code == 0, done.output
    mixed = tmp_path / "q" / "wespeaker_v2_mixed.mlpackage"
    assert package_size(mixed) <= 4.0e6
    assert _lut_widths(mixed) == recipe["bits"]


def test_dense_build_has_no_recipe_names(tmp_path):
    """The dense front end's constants shift every ResNet const name: the recipe is refused in
    one line rather than applied to the wrong layers."""
    runner = CliRunner()
    done = runner.invoke(
        main,
        ["convert", "embedding", "--embedding-source", str(FIXTURE), "--out", str(tmp_path)],
    )
    assert done.exit_code == 0, done.output
    done = runner.invoke(
        main,
        ["quantize", str(tmp_path / "wespeaker_v2.mlpackage"), "--config", str(RECIPE),
         "--out", str(tmp_path / "q")],
    )  # fmt: skip
    assert done.exit_code != 0
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1


def _luts(package: Path) -> dict[str, tuple[int, int | None]]:
    """const name -> (bits, output channels per table; None for one table per tensor), read
    from the saved program: iOS18's lut has the weight's rank + 2 dims, (tables along each
    weight axis..., 2**bits, 1); the grouped axis is the one with more than one table."""
    out = {}
    for op in load_program(package).functions["main"].operations:
        if op.op_type != "constexpr_lut_to_dense":
            continue
        lut, shape = op.lut.val.shape, op.indices.val.shape
        name = op.outputs[0].name.removesuffix("_palettized").removesuffix("_to_fp16")
        grouped = [shape[i] // lut[i] for i in range(len(shape)) if lut[i] > 1]
        assert len(grouped) <= 1, (name, lut, shape)
        out[name] = (int(np.log2(lut[-2])), grouped[0] if grouped else None)
    return out


@pytest.fixture(scope="module")
def segmentation_ios18(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("seg_ios18")
    done = CliRunner().invoke(
        main,
        ["convert", "segmentation", "--segmentation-source", str(SEGMENTATION),
         "--target", "iOS18", "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return out / "pyannote_segmentation.mlpackage"


def test_ios18_recipes_are_committed():
    assert {p.name for p in IOS18_RECIPES} >= {
        "segmentation-fixture-ios18-g16-0.99mb.json",
        "segmentation-fixture-ios18-g16-0.8mb.json",
    }


@pytest.mark.parametrize("recipe_path", IOS18_RECIPES, ids=lambda p: p.stem)
def test_committed_ios18_segmentation_recipe_reproduces(recipe_path, segmentation_ios18, tmp_path):
    recipe = json.loads(recipe_path.read_text())
    assert recipe["granularity"] == "per_grouped_channel"
    done = CliRunner().invoke(
        main,
        ["quantize", str(segmentation_ios18), "--config", str(recipe_path),
         "--out", str(tmp_path / "q")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    mixed = tmp_path / "q" / "pyannote_segmentation_mixed.mlpackage"
    assert package_size(mixed) <= 1.0e6  # issue #24's segmentation goal
    luts = _luts(mixed)
    assert {k: bits for k, (bits, _) in luts.items()} == recipe["bits"]
    assert {g for _, g in luts.values()} == {recipe["group_size"]}


def test_ios18_recipe_is_refused_on_an_ios17_package(tmp_path):
    runner = CliRunner()
    done = runner.invoke(
        main,
        ["convert", "segmentation", "--segmentation-source", str(SEGMENTATION),
         "--out", str(tmp_path / "fp32")],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    out = tmp_path / "q"
    done = runner.invoke(
        main,
        ["quantize", str(tmp_path / "fp32" / "pyannote_segmentation.mlpackage"),
         "--config", str(IOS18_RECIPES[0]), "--out", str(out)],
    )  # fmt: skip
    assert done.exit_code != 0
    assert "Traceback" not in done.output and len(done.output.strip().splitlines()) == 1
    assert "iOS18" in done.output
    assert not out.exists()
