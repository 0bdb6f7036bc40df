"""Per-layer sensitivity tables (validation/sensitivity.py): what is measured, and how.

References are independent of the code under test: the quantizer's own eligibility
(`summarize_program` + `weight_threshold` + the spec's `uncompressed`), a package that
`quantize_package` really palettized, coremltools' own grouped palettization, and the MIL
executor running the whole modified program.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.mlpackage import load_program
from coreml_diarize.models import get_spec
from coreml_diarize.quantize import QuantizeConfig, quantize_package
from coreml_diarize.quantize.apply import kmeans_lut, summarize_program
from coreml_diarize.quantize.recipes import DEFAULT_WEIGHT_THRESHOLD
from coreml_diarize.quantize.sensitivity_table import TABLE_SCHEMA, SensitivityTable
from coreml_diarize.validation.mil.executor import MILExecutor
from coreml_diarize.validation.mil.loader import read_mil_program
from coreml_diarize.validation.sensitivity import (
    Calibration,
    CalibrationChunk,
    DownstreamRunner,
    measure_sensitivity,
    palettized,
    weighted_layers,
)

# one LSTM weight and one linear weight of PyanNet (names as the converter writes them)
LAYERS = ("concat_36", "linears_1_weight")


@pytest.fixture(scope="module")
def calibration():
    """Two chunks: a chirp + noise and a pulsed tone, each with two 'speakers'."""
    t = np.arange(160000) / 16000
    rng = np.random.default_rng(0)
    chirp = 0.3 * np.sin(2 * np.pi * (100 + 40 * t) * t) + 0.05 * rng.standard_normal(t.size)
    pulses = 0.4 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 0.5 * t) > 0)
    turns = (((0.0, 4.0),), ((5.0, 9.5),))
    return Calibration(
        "test signals",
        (
            CalibrationChunk("chirp", chirp.astype(np.float32), turns),
            CalibrationChunk("pulses", pulses.astype(np.float32), turns),
        ),
    )


@pytest.fixture(scope="module")
def seg_fp16(seg_package, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg16")
    return quantize_package(seg_package, out, QuantizeConfig(mode="fp16")).dst


@pytest.fixture(scope="module")
def table(seg_package, seg_fp16, calibration):
    return measure_sensitivity(
        seg_package,
        widths=(8, 2),
        calibration=calibration,
        layers=LAYERS,
        fp16_package=seg_fp16,
    )


def test_layers_are_what_the_quantizer_compresses(seg_package):
    summary = summarize_program(load_program(seg_package))
    expected = {
        n for n, size in summary.weight_sizes.items() if size > DEFAULT_WEIGHT_THRESHOLD
    } - set(get_spec("segmentation").uncompressed_consts())
    found = weighted_layers(read_mil_program(seg_package), get_spec("segmentation"))
    assert {name for name, _ in found} == expected
    assert "sinc_filters_weight" not in expected  # the spec keeps the filterbank fp32
    assert all(int(np.prod(shape)) == summary.weight_sizes[n] for n, shape in found)


def test_table_names_exist_and_losses_grow_with_fewer_bits(table, seg_package):
    sizes = summarize_program(load_program(seg_package)).weight_sizes
    assert [x.name for x in table.layers] and {x.name for x in table.layers} == set(LAYERS)
    for layer in table.layers:
        assert layer.name in sizes and layer.elements == sizes[layer.name]
        # a wrong dequantization (indices into the wrong table, a shuffled layout) breaks this
        assert layer.loss[2] > 0
        assert layer.loss[2] >= layer.loss[8]
    assert table.metric == "error/spread" and table.baseline_loss >= 0
    assert table.model == "segmentation" and table.calibration["items"] == 2


def test_table_json_round_trips_in_the_agreed_format(table, tmp_path):
    text = table.dumps()
    assert (
        text.endswith("}\n")
        and text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    )
    data = json.loads(text)
    assert data["schema"] == TABLE_SCHEMA
    assert {
        "model",
        "package",
        "package_tree_sha256",
        "granularity",
        "group_size",
        "metric",
    } <= set(data)
    assert {"baseline_loss", "calibration", "widths", "layers", "seconds", "versions"} <= set(data)
    assert set(data["layers"][0]["loss"]) == {"8", "2"}  # JSON keys are strings
    path = tmp_path / "t.json"
    path.write_text(text)
    # the measured table passes the checking reader (the search's) and writes back the same
    again = SensitivityTable.from_file(path)
    assert again == table and again.dumps() == text
    assert again.skipped == {}  # recorded (per tensor: nothing skipped), so written


def test_replaced_const_gives_what_a_palettized_package_gives(seg_fp16, calibration, tmp_path):
    """The hook (one const replaced, downstream ops only) against `quantize_package` really
    palettizing that one layer of the fp16 program (4 bits, numpy k-means, seed 0).

    From the fp16 package, `exclude` = every other weight: from the fp32 package `exclude`
    would also keep every reader of those weights in fp32 (fp32_path_of)."""
    name16 = "linears_1_weight_to_fp16"
    weights16 = summarize_program(load_program(seg_fp16)).weight_sizes
    others = [n for n in weights16 if n != name16 and weights16[n] > DEFAULT_WEIGHT_THRESHOLD]
    config = QuantizeConfig(mode="palettize", nbits=4, exclude=others)
    one = quantize_package(seg_fp16, tmp_path, config).dst
    assert summarize_program(load_program(one)).compressed == 1

    program16 = read_mil_program(seg_fp16)
    w16 = next(n.attributes["val"] for n in program16.main.nodes if n.outputs[0][0] == name16)
    runner = DownstreamRunner(program16, [name16])
    item = calibration.segmentation_inputs((1, 1, 160000))[0]
    baseline, recorded = runner.record(item)
    ours = runner.run(name16, palettized(w16, 4), recorded)["segments"]
    theirs = MILExecutor.from_path(one).predict(item)["segments"]
    assert np.array_equal(ours, theirs)  # bitwise: the same fp16 ops on the same fp16 values
    assert not np.array_equal(ours, baseline["segments"])
    # and the full (not downstream-only) run of the program with that const replaced
    nodes = [
        dataclasses.replace(n, attributes={**n.attributes, "val": palettized(w16, 4)})
        if n.outputs and n.outputs[0][0] == name16
        else n
        for n in program16.main.nodes
    ]
    full = dataclasses.replace(program16, main=dataclasses.replace(program16.main, nodes=nodes))
    assert np.array_equal(MILExecutor(full).predict(item)["segments"], ours)


def test_grouped_palettization_matches_coremltools():
    from coremltools.optimize.coreml._quantization_passes import palettize_weights

    rng = np.random.default_rng(3)
    weight = rng.standard_normal((32, 24, 3)).astype(np.float16)
    for axis in (0, 1):
        params = palettize_weights.grouped_channelwise_compress(
            weight,
            "CUSTOM",
            None,
            axis,
            8,
            lut_function=lambda v: kmeans_lut(v, nbits=2, seed=0),
        )
        expected = palettize_weights.decompress(params)
        got = palettized(weight, 2, granularity="per_grouped_channel", group_size=8, axis=axis)
        assert np.array_equal(got, expected)
        assert len(np.unique(got)) > 4  # one table per group, not one for the tensor


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--widths", "8,5"], "error: widths must be among 1, 2, 3, 4, 6, 8, got 5"),
        (["--widths", "8,x"], "error: --widths must be comma-separated integers"),
        (["--group-size", "4"], "error: group_size goes with granularity per_grouped_channel"),
        (
            ["--layers", "convs_0_weight,nope"],
            "error: pyannote_segmentation.mlpackage: no weighted layer nope",
        ),
        (
            ["--layers", "sinc_filters_weight"],
            "error: pyannote_segmentation.mlpackage: no weighted layer sinc",
        ),
    ],
)
def test_cli_bad_options_are_one_line_errors(seg_package, tmp_path, args, message):
    out = tmp_path / "t.json"
    result = CliRunner().invoke(main, ["sensitivity", str(seg_package), "--out", str(out), *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)
    assert not out.exists()


def test_cli_refuses_a_quantized_package_and_a_missing_one(seg_fp16, tmp_path):
    out = tmp_path / "t.json"
    result = CliRunner().invoke(main, ["sensitivity", str(seg_fp16), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip() == (
        f"error: {seg_fp16.name} is a fp16 package: measure sensitivity on the fp32 one"
    )
    result = CliRunner().invoke(
        main, ["sensitivity", str(tmp_path / "no.mlpackage"), "--out", str(out)]
    )
    assert result.exit_code == 5 and result.output.startswith("error: mlpackage not found")
    assert not out.exists()
