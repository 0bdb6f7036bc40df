"""Mixed-bit recipes (issue #24): the search against brute force, recipe files, refusals, and a
recipe applied to the segmentation package (seeded random weights: the mechanics, not quality).
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import (
    inspect_package,
    iter_ops,
    load_program,
    package_size,
    tree_hash,
)
from coreml_diarize.models import get_spec
from coreml_diarize.quantize import QuantizeConfig, quantize_package
from coreml_diarize.quantize.apply import summarize_program
from coreml_diarize.quantize.kmeans import kmeans_1d
from coreml_diarize.quantize.mixed import (
    FP16,
    RECIPE_SCHEMA,
    MixedRecipe,
    fixed_bytes_of,
    layer_options,
    search,
    search_recipe,
)
from coreml_diarize.quantize.sensitivity_table import TABLE_SCHEMA, SensitivityTable

# --- the search ------------------------------------------------------------------------------


def _table(layers: list[dict], *, baseline: float = 1e-3, widths=(8, 6, 4, 2), **extra) -> dict:
    return {
        "schema": TABLE_SCHEMA,
        "model": "segmentation",
        "package": "pyannote_segmentation.mlpackage",
        "package_tree_sha256": "0" * 64,
        "granularity": "per_tensor",
        "group_size": None,
        "metric": "error/spread",
        "baseline_loss": baseline,
        "calibration": {"description": "toy", "items": 0},
        "widths": list(widths),
        "layers": layers,
        "seconds": 0.0,
        "versions": {},
        **extra,
    }


def _toy_layers(seed: int, count: int) -> list[dict]:
    """Layers whose damage does not simply follow their size, so neither "smallest first" nor
    "least damage first" is the optimum."""
    rng = np.random.default_rng(seed)
    layers = []
    for i in range(count):
        shape = [int(rng.integers(16, 200)), int(rng.integers(16, 200))]
        scale = float(rng.choice([1e-5, 1e-4, 1e-3, 1e-2]))
        losses = np.sort(rng.random(4) * scale)  # wider tables damage less, not by a fixed rule
        layers.append(
            {
                "name": f"layer_{i}",
                "elements": shape[0] * shape[1],
                "shape": shape,
                "loss": {str(w): float(v) for w, v in zip((8, 6, 4, 2), losses, strict=True)},
            }
        )
    return layers


def _brute_force(table: SensitivityTable, fixed: int):
    """Every combination of widths: (bytes, loss, widths) of each. The loss is summed from
    the baseline in layer order, as the search documents (one rounding order)."""
    options = layer_options(table)
    for combo in itertools.product(*options):
        loss = table.baseline_loss
        for option in combo:
            loss += option[2]
        yield fixed + sum(o[1] for o in combo), loss, tuple(o[0] for o in combo)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_search_is_the_brute_force_optimum_for_both_limits(seed):
    table = SensitivityTable.from_mapping(_table(_toy_layers(seed, 6)))
    fixed = 12_345
    combos = list(_brute_force(table, fixed))  # 5**6 = 15625
    sizes = sorted({s for s, _, _ in combos})
    losses = sorted({loss for _, loss, _ in combos})
    for target in [sizes[len(sizes) * k // 8] for k in range(8)] + [sizes[-1]]:
        found = search(table, fixed_bytes=fixed, target_bytes=target)
        best = min(loss for s, loss, _ in combos if s <= target)
        assert found.predicted_bytes <= target
        assert math.isclose(found.predicted_loss, best, rel_tol=1e-12, abs_tol=1e-15)
        # the chosen widths really have the size and loss reported
        chosen = tuple(found.widths[layer.name] for layer in table.layers)
        size, loss = next((s, lo) for s, lo, w in combos if w == chosen)
        assert size == found.predicted_bytes and math.isclose(loss, found.predicted_loss)
    for limit in [losses[len(losses) * k // 8] for k in range(8)] + [losses[-1]]:
        found = search(table, fixed_bytes=fixed, max_loss=limit)
        best = min(s for s, loss, _ in combos if loss <= limit)
        assert found.predicted_bytes == best
        assert found.predicted_loss <= limit


def test_search_leaves_fp16_where_nothing_else_fits_the_loss():
    layers = _toy_layers(3, 3)
    layers[0]["loss"] = {"8": 1.0, "6": 1.0, "4": 1.0, "2": 1.0}  # ruinous at any width
    table = SensitivityTable.from_mapping(_table(layers, baseline=0.0))
    found = search(table, fixed_bytes=0, max_loss=0.5)
    assert found.widths["layer_0"] == FP16 and "layer_0" not in found.bits
    assert found.widths["layer_1"] != FP16  # the others still shrink


def test_unreachable_limits_name_what_is_reachable():
    table = SensitivityTable.from_mapping(_table(_toy_layers(0, 4)))
    smallest = min(s for s, _, _ in _brute_force(table, 1000))
    with pytest.raises(DiarizeError) as info:
        search(table, fixed_bytes=1000, target_bytes=smallest - 1)
    assert f"smallest reachable size is {smallest / 1e6:.3f} MB" in str(info.value)
    assert search(table, fixed_bytes=1000, target_bytes=smallest).predicted_bytes == smallest
    with pytest.raises(DiarizeError, match=r"smallest reachable loss is 0\.001"):
        search(table, fixed_bytes=1000, max_loss=0.0009)  # below the fp16 program's own loss


# --- recipes ---------------------------------------------------------------------------------


def test_recipe_file_round_trip_is_byte_identical(tmp_path):
    config = QuantizeConfig(mode="mixed", bits={"b_weight": 4, "a_weight": 8}, seed=3)
    search_record = {"table": "t.json", "target_mb": 1.0, "max_loss": None, "predicted_bytes": 7}
    recipe = MixedRecipe(model="segmentation", config=config, search=search_record)
    path = recipe.write(tmp_path / "r.json")
    text = path.read_text()
    data = json.loads(text)
    assert data["schema"] == RECIPE_SCHEMA and data["mode"] == "mixed"
    assert data["bits"] == {"a_weight": 8, "b_weight": 4}
    assert data["compute"] == "fp16" and data["granularity"] == "per_tensor"
    assert text == json.dumps(data, sort_keys=True, indent=2) + "\n"  # the agreed layout
    again = MixedRecipe.from_file(path)
    assert again == recipe and again.config == config
    assert again.write(tmp_path / "r2.json").read_bytes() == path.read_bytes()
    # nothing else left behind (atomic.py's lock file aside)
    assert {p.name for p in tmp_path.iterdir()} - {".coreml-diarize.lock"} == {"r.json", "r2.json"}


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"mode": "mixed"}, "mode mixed needs bits"),
        ({"mode": "mixed", "bits": {}}, "mode mixed needs bits"),
        ({"mode": "mixed", "bits": {"w": 5}}, "bits[w] 5 is not a palettization format"),
        ({"mode": "mixed", "bits": {"w": 4}, "compute": "fp32"}, "computes in fp16 only"),
        ({"mode": "mixed", "bits": {"w": 4}, "nbits": 4}, "nbits does not apply to mode mixed"),
        ({"mode": "mixed", "bits": ["w"]}, "bits must map weight names to widths"),
        ({"mode": "palettize", "bits": {"w": 4}}, "unknown setting 'bits' (did you mean 'nbits'?"),
    ],
)
def test_bad_mixed_settings_are_one_line_errors(settings, message):
    with pytest.raises(DiarizeError) as info:
        QuantizeConfig.from_mapping(settings)
    assert message in str(info.value)


def test_mixed_config_names_and_tolerance_key():
    config = QuantizeConfig(mode="mixed", bits={"w": 4})
    assert (config.name, config.compression, config.family) == ("mixed", "mixed", "mixed")
    assert config.needs_ios18() is None
    assert QuantizeConfig(mode="mixed", bits={"w": 3}).needs_ios18() == (
        "3-bit palettization (bits[w])"
    )
    for key in ("segmentation", "embedding"):
        assert get_spec(key).tolerance_key(config.compression) == "mixed"


# --- on the segmentation package -------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_weights_by_name(seg_package):
    """Source const name -> (elements, shape) of the weights a recipe may name."""
    summary = summarize_program(load_program(seg_package))
    return {
        n: (summary.weight_sizes[n], summary.weight_shapes[n])
        for n in summary.weight_names
        if summary.weight_sizes[n] > 2048 and n != "sinc_filters_weight"
    }


@pytest.mark.parametrize(
    ("bits", "message"),
    [
        ({"convs_1_weight": 3}, "3-bit palettization (bits[convs_1_weight]) needs an iOS18"),
        ({"convs_1_weigth": 4}, "has no weight named 'convs_1_weigth': closest convs_1_weight"),
        ({"sinc_filters_weight": 8}, "sinc_filters_weight must stay uncompressed"),
        ({"convs_1_bias": 8}, "coremltools does not palettize convs_1_bias (rank-1"),
    ],
)
def test_package_refusals(seg_package, tmp_path, bits, message):
    with pytest.raises(DiarizeError) as info:
        quantize_package(seg_package, tmp_path, QuantizeConfig(mode="mixed", bits=bits))
    assert message in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_grouped_tables_need_ios18(seg_package, tmp_path):
    config = QuantizeConfig(
        mode="mixed", bits={"convs_1_weight": 4}, granularity="per_grouped_channel"
    )
    with pytest.raises(DiarizeError, match="per_grouped_channel palettization needs an iOS18"):
        quantize_package(seg_package, tmp_path, config)


def _seg_table(seg_package, weights: dict) -> dict:
    """A toy table for the real package: linears_1_weight is ruinous at every width (it must
    stay fp16), the rest cost more the narrower their table."""
    layers = []
    for i, (name, (elements, shape)) in enumerate(sorted(weights.items())):
        base = 1e-3 * (1 + i % 5)
        loss = {"8": base * 0.01, "6": base * 0.05, "4": base * 0.3, "2": base * 3}
        if name == "linears_1_weight":
            loss = {w: 10.0 for w in loss}
        layers.append({"name": name, "elements": elements, "shape": list(shape), "loss": loss})
    return {
        **_table(layers),
        "package": seg_package.name,
        "package_tree_sha256": tree_hash(seg_package)[0],
    }


def test_a_table_of_another_package_is_refused(seg_package, seg_weights_by_name, tmp_path):
    table = {**_seg_table(seg_package, seg_weights_by_name), "package_tree_sha256": "f" * 64}
    path = tmp_path / "t.json"
    path.write_text(json.dumps(table))
    with pytest.raises(DiarizeError, match="was measured on another package"):
        search_recipe(seg_package, path, target_mb=1.0)


TARGET_MB = 1.0


@pytest.fixture(scope="module")
def searched(seg_package, seg_weights_by_name, tmp_path_factory):
    """`quantize --mode mixed --target-mb 1.0` through the CLI: (recipe file, package)."""
    work = tmp_path_factory.mktemp("mixed")
    table = work / "table.json"
    table.write_text(json.dumps(_seg_table(seg_package, seg_weights_by_name), indent=2))
    recipe = work / "recipe.json"
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(seg_package),
            "--mode",
            "mixed",
            "--sensitivity",
            str(table),
            "--target-mb",
            str(TARGET_MB),
            "--recipe-out",
            str(recipe),
            "--out",
            str(work / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    return recipe, work / "out" / "pyannote_segmentation_mixed.mlpackage"


def _luts(path: Path) -> dict:
    return {
        op.name: op
        for op in iter_ops(load_program(path).functions["main"])
        if op.op_type == "constexpr_lut_to_dense"
    }


def test_searched_recipe_is_applied_exactly(searched, seg_package):
    recipe_path, package = searched
    recipe = json.loads(recipe_path.read_text())
    bits = recipe["bits"]
    assert "linears_1_weight" not in bits and len(bits) >= 10
    assert set(bits.values()) - {8, 6, 4, 2} == set() and len(set(bits.values())) >= 2
    luts = _luts(package)
    # exactly the listed weights carry a look-up table, each 2**bits fp16 entries
    assert sorted(luts) == sorted(f"{name}_to_fp16_palettized" for name in bits)
    source = {
        op.name: op.outputs[0].val
        for op in iter_ops(load_program(seg_package).functions["main"])
        if op.op_type == "const"
    }
    for name, width in bits.items():
        op = luts[f"{name}_to_fp16_palettized"]
        assert op.lut.val.shape == (1 << width,) and op.lut.val.dtype == np.float16
        # coremltools' own constexpr semantics give back the k-means values of the fp16 weight
        dense = op.materialized_val_inference()
        weight = source[name].astype(np.float16)
        centers, labels = kmeans_1d(weight, 1 << width, seed=0)
        expected = centers.astype(np.float16)[labels].reshape(weight.shape)
        np.testing.assert_array_equal(dense, expected)
    consts = {
        op.name: op.outputs[0].val
        for op in iter_ops(load_program(package).functions["main"])
        if op.op_type == "const"
    }
    assert consts["linears_1_weight_to_fp16"].dtype == np.float16  # left fp16, uncompressed
    assert consts["sinc_filters_weight"].dtype == np.float32  # the spec's fp32 filterbank
    # the size model: predicted within 0.5% (the fp16 program's casts are not modelled)
    size = package_size(package)
    predicted = recipe["search"]["predicted_bytes"]
    assert predicted <= TARGET_MB * 1e6 and abs(size - predicted) <= 0.005 * size
    meta = inspect_package(package).metadata
    assert meta["coreml_diarize.compression"] == "mixed"
    assert meta["coreml_diarize.precision"] == "fp16"
    recorded = json.loads(meta["coreml_diarize.recipe"])
    assert recorded["bits"] == bits and recorded["search"] == recipe["search"]
    assert recorded["source"]["tree_sha256"] == tree_hash(seg_package)[0]


def test_target_size_holds_for_the_package_made_not_only_the_model(
    seg_package, seg_weights_by_name, tmp_path
):
    """The size model leaves out the program text and metadata (a few kB), so a target equal to
    what the model predicts for some recipe is overshot unless the search measures the package
    the recipe makes and searches again: the package written must fit the target."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(_seg_table(seg_package, seg_weights_by_name)))
    table = SensitivityTable.from_file(path)
    model_only = search(table, fixed_bytes=fixed_bytes_of(seg_package, table), target_bytes=900_000)
    target_mb = model_only.predicted_bytes / 1e6  # the model says this recipe fits exactly
    recipe, _ = search_recipe(seg_package, path, target_mb=target_mb)
    made = quantize_package(seg_package, tmp_path / "out", recipe.config, search=recipe.search)
    assert package_size(made.dst) <= model_only.predicted_bytes
    assert recipe.search["size_correction_bytes"] > 0  # the model alone would have overshot


def test_committed_recipe_reproduces_the_package(searched, seg_package, tmp_path):
    recipe_path, package = searched
    copy = tmp_path / "copy.json"
    result = CliRunner().invoke(
        main,
        [
            "quantize",
            str(seg_package),
            "--config",
            str(recipe_path),
            "--recipe-out",
            str(copy),
            "--out",
            str(tmp_path / "out"),
        ],
    )
    assert result.exit_code == 0, result.output
    again = tmp_path / "out" / package.name
    assert tree_hash(again) == tree_hash(package)  # same recipe, same bytes
    assert copy.read_bytes() == recipe_path.read_bytes()


def test_recipe_for_another_model_is_refused(searched, seg_package, tmp_path):
    recipe_path, _ = searched
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**json.loads(recipe_path.read_text()), "model": "embedding"}))
    result = CliRunner().invoke(
        main, ["quantize", str(seg_package), "--config", str(other), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code != 0
    assert (
        "the recipe is for model embedding; pyannote_segmentation.mlpackage holds segmentation"
        in (result.output)
    )
    assert "Traceback" not in result.output and not (tmp_path / "o").exists()


def test_cli_mixed_needs_a_table_and_one_limit(seg_package, tmp_path):
    runner = CliRunner()
    base = ["quantize", str(seg_package), "--out", str(tmp_path)]
    none = runner.invoke(main, [*base, "--mode", "mixed"])
    assert none.exit_code != 0 and "--mode mixed needs --sensitivity" in none.output
    table = tmp_path / "t.json"
    table.write_text(json.dumps(_table(_toy_layers(0, 2))))
    both = runner.invoke(
        main,
        [
            *base,
            "--mode",
            "mixed",
            "--sensitivity",
            str(table),
            "--target-mb",
            "1",
            "--max-loss",
            "1",
        ],
    )
    assert both.exit_code != 0 and "one limit: --target-mb or --max-loss" in both.output
    stray = runner.invoke(main, [*base, "--mode", "palettize", "--target-mb", "1"])
    assert stray.exit_code != 0 and "go with --mode mixed" in stray.output


def test_build_refuses_a_recipe_for_a_model_outside_the_profile(tmp_path):
    recipe = MixedRecipe(
        model="offline-embedding", config=QuantizeConfig(mode="mixed", bits={"w": 4})
    ).write(tmp_path / "r.json")
    out = tmp_path / "artifacts"
    result = CliRunner().invoke(main, ["build", "--out", str(out), "--recipe", str(recipe)])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'offline-embedding', which the online profile" in lines[0]
    assert not any(out.glob("*.mlpackage"))


def test_build_applies_a_recipe_to_its_models_package(
    searched, seg_package, seg_ctx, tmp_path, monkeypatch
):
    """`build --recipe`'s wiring (app/build.py `_convert_all`): the recipe's variant joins the
    model's packages, made from the package the build converted (the session's, stood in for
    the conversion, which takes minutes), and is validated with the same context."""
    import shutil
    from dataclasses import replace

    from coreml_diarize.app import build
    from coreml_diarize.converters import convert

    recipe_path, package = searched
    recipe = MixedRecipe.from_file(recipe_path)

    def converted(spec, ctx, out_dir):
        target = Path(out_dir) / seg_package.name
        shutil.copytree(seg_package, target)
        return convert.ConversionResult(spec.key, target, "fp32", 0.0, package_size(target))

    # a recipe is refused on untrained weights: the session's seeded weights stand in for
    # trained ones here (labelled so), as the fixture's checkpoint would be
    weights = seg_ctx.weights
    trained = replace(weights, provenance=replace(weights.provenance, trained=True))
    trained_ctx = replace(seg_ctx, weights=trained)
    monkeypatch.setattr(convert, "convert_model", converted)
    monkeypatch.setattr(build, "make_context", lambda spec, **_: trained_ctx)
    monkeypatch.setattr(build, "profile_specs", lambda profile: [get_spec("segmentation")])
    settings = build.BuildSettings(sources={}, quantize=False, recipes=(recipe,))
    summary = build.BuildSummary()
    contexts = build._convert_all(tmp_path, settings, summary, lambda line: None)
    assert [p.name for p in summary.packages] == [seg_package.name, package.name]
    assert tree_hash(summary.packages[1]) == tree_hash(package)  # the recipe, reproduced
    assert contexts[package.name] is trained_ctx
