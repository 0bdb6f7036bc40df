"""Neural Engine readiness: hand-built MIL programs with answers computed by hand."""

from __future__ import annotations

import json

import coremltools as ct
import numpy as np
import pytest
from click.testing import CliRunner
from coremltools.converters.mil import Builder as mb
from coremltools.converters.mil.mil import get_new_symbol, types

from coreml_diarize.app.cli import main
from coreml_diarize.validation.ane import ane_report, ane_report_for_program

RNG = np.random.default_rng(0)
# conv 3->8, 3x3 valid on 8x8: output (1, 8, 6, 6)
CONV_MACS = 8 * 3 * 3 * 3 * 6 * 6
CONV_RELU_FLOPS = 2 * CONV_MACS + 8 * 6 * 6 + 8 * 6 * 6  # MACs, bias add, relu
CONV_WEIGHT_ELEMENTS = 8 * 3 * 3 * 3 + 8  # weight + bias


def conv_relu_program(dtype):
    np_dtype = np.float16 if dtype == types.fp16 else np.float32
    weight = RNG.standard_normal((8, 3, 3, 3)).astype(np_dtype)
    bias = RNG.standard_normal(8).astype(np_dtype)

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8), dtype=dtype)],
        opset_version=ct.target.iOS17,
    )
    def prog(x):
        return mb.relu(x=mb.conv(x=x, weight=weight, bias=bias))

    return prog


def test_fp16_conv_relu_is_all_ane():
    report = ane_report_for_program(conv_relu_program(types.fp16))
    assert [op.op_type for op in report.ops] == ["conv", "relu"]
    assert all(op.eligible and op.dtype == "fp16" and op.reasons == [] for op in report.ops)
    assert report.switches == 0
    assert [(p.device, p.op_count) for p in report.partitions] == [("ANE", 2)]
    assert report.flops == CONV_RELU_FLOPS == 16128
    assert report.weight_bytes == CONV_WEIGHT_ELEMENTS * 2
    assert report.eligible_share == 1.0 and report.eligible_flop_share == 1.0


def test_fp32_program_never_runs_on_ane():
    report = ane_report_for_program(conv_relu_program(types.fp32))
    assert [op.reasons for op in report.ops] == [["fp32"], ["fp32"]]
    assert report.eligible_count == 0 and report.eligible_flop_share == 0.0
    assert [(p.device, p.op_count) for p in report.partitions] == [("CPU", 2)]
    assert report.switches == 0
    assert report.weight_bytes == CONV_WEIGHT_ELEMENTS * 4


def test_lstm_in_the_middle_splits_the_program_twice():
    steps, hidden, inputs = 5, 3, 4
    f16 = np.float16

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(steps, 1, inputs), dtype=types.fp16)],
        opset_version=ct.target.iOS17,
    )
    def prog(x):
        y = mb.relu(x=x, name="pre")
        seq, _, _ = mb.lstm(
            x=y,
            initial_h=np.zeros((1, hidden), f16),
            initial_c=np.zeros((1, hidden), f16),
            weight_ih=RNG.standard_normal((4 * hidden, inputs)).astype(f16),
            weight_hh=RNG.standard_normal((4 * hidden, hidden)).astype(f16),
            bias=np.zeros(4 * hidden, f16),
            output_sequence=True,
            name="rnn",
        )
        z = mb.relu(x=seq, name="post")
        return mb.add(x=z, y=z, name="out")

    report = ane_report_for_program(prog)
    lstm = next(op for op in report.ops if op.op_type == "lstm")
    assert lstm.dtype == "fp16" and lstm.reasons == ["recurrent"]
    assert lstm.flops == steps * (2 * 4 * hidden * (inputs + hidden) + 13 * hidden)
    assert report.switches == 2
    segments = [(p.device, p.first_op, p.last_op, p.op_count) for p in report.partitions]
    assert segments == [
        ("ANE", "pre", "pre", 1),
        ("CPU", "rnn", "rnn", 1),
        ("ANE", "post", "out", 2),
    ]
    assert report.eligible_count == 3


def test_flexible_input_marks_its_ops():
    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, 3, get_new_symbol(), 8), dtype=types.fp16)],
        opset_version=ct.target.iOS17,
    )
    def prog(x):
        return mb.relu(x=x)

    ranged = ane_report_for_program(prog, flexible_inputs={"x": "range"})
    assert [op.reasons for op in ranged.ops] == [["flexible-shape"]]
    assert ranged.flops_lower_bound
    # nothing said about the inputs: symbolic dims are taken as flexible
    assert ane_report_for_program(prog).ops[0].reasons == ["flexible-shape"]
    # Core ML specialises a model for each enumerated shape
    enumerated = ane_report_for_program(prog, flexible_inputs={"x": "enumerated"})
    assert enumerated.ops[0].eligible


def batch_flexible_program():
    """x: (B, 3, 8, 8) fp16 with a symbolic batch B -> conv + relu, then a cast to fp32
    (ineligible whatever the shapes); y: (1, 4) fp16, fixed -> relu."""
    weight = RNG.standard_normal((8, 3, 3, 3)).astype(np.float16)
    bias = RNG.standard_normal(8).astype(np.float16)

    @mb.program(
        input_specs=[
            mb.TensorSpec(shape=(get_new_symbol(), 3, 8, 8), dtype=types.fp16),
            mb.TensorSpec(shape=(1, 4), dtype=types.fp16),
        ],
        opset_version=ct.target.iOS17,
    )
    def prog(x, y):
        a = mb.relu(x=mb.conv(x=x, weight=weight, bias=bias, name="conv"), name="relu_x")
        return mb.cast(x=a, dtype="fp32", name="out"), mb.relu(x=y, name="relu_y")

    return prog


def test_shape_alternative_says_what_a_range_would_cost():
    """Enumerated batch: conv and relu_x run on the ANE at every size; with a range they would
    only at the default size. relu_y (fixed shape) and the fp32 cast do not change."""
    prog = batch_flexible_program()
    total = CONV_RELU_FLOPS + 4  # + relu_y; the cast moves data (symbolic B counted as 1)
    enumerated = ane_report_for_program(prog, flexible_inputs={"x": "enumerated"})
    assert [(op.name, op.eligible) for op in enumerated.ops] == [
        ("conv", True),
        ("relu_x", True),
        ("out", False),
        ("relu_y", True),
    ]
    cost = enumerated.shape_alternative
    assert (cost.declared, cost.alternative, cost.ops) == ("enumerated", "range", 2)
    assert cost.flops == CONV_RELU_FLOPS and cost.flop_share == CONV_RELU_FLOPS / total
    assert "only at its default shape: at other sizes 2 ops (100.0% of FLOPs)" in cost.sentence()
    assert enumerated.to_dict()["shape_alternative"]["ops"] == 2
    # the same program declared with a range: the same ops, seen from the other side
    ranged = ane_report_for_program(prog, flexible_inputs={"x": "range"})
    assert [op.name for op in ranged.ops if op.eligible] == ["relu_y"]
    back = ranged.shape_alternative
    assert (back.declared, back.alternative, back.ops, back.flops) == (
        "range",
        "enumerated",
        2,
        CONV_RELU_FLOPS,
    )
    assert "enumerated shapes would keep them" in back.sentence()
    # no flexible input declared: nothing to compare
    assert ane_report_for_program(conv_relu_program(types.fp16)).shape_alternative is None


def test_palettized_weight_counts_its_stored_bytes():
    lut = np.arange(4, dtype=np.float16)  # 2-bit palette
    indices = np.packbits(RNG.integers(0, 2, 8 * 3 * 3 * 3 * 2).astype(np.uint8))
    assert indices.nbytes == 54

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(1, 3, 8, 8), dtype=types.fp16)],
        opset_version=ct.target.iOS17,
    )
    def prog(x):
        weight = mb.constexpr_lut_to_dense(
            lut=lut, indices=indices, shape=np.array([8, 3, 3, 3], np.uint32)
        )
        return mb.relu(x=mb.conv(x=x, weight=weight))

    report = ane_report_for_program(prog)
    assert report.weight_bytes == lut.nbytes + indices.nbytes == 62
    assert [op.op_type for op in report.ops] == ["conv", "relu"]  # constexpr is a weight
    assert report.flops == 2 * CONV_MACS + 8 * 6 * 6


def test_rank_and_size_limits():
    @mb.program(
        input_specs=[
            mb.TensorSpec(shape=(1, 1, 20000), dtype=types.fp16),
            mb.TensorSpec(shape=(1, 2, 1, 2, 1, 2), dtype=types.fp16),
            mb.TensorSpec(shape=(1, 1, 16384), dtype=types.fp16),
        ],
        opset_version=ct.target.iOS17,
    )
    def prog(long, deep, edge):
        return mb.relu(x=long, name="long"), mb.relu(x=deep, name="deep"), mb.relu(x=edge)

    reasons = {op.name: op.reasons for op in ane_report_for_program(prog).ops}
    assert reasons["long"] == ["size"]
    assert reasons["deep"] == ["rank"]
    assert list(reasons.values())[2] == []  # 16384 is still within range


def test_flop_rule_for_linear_matmul_pool_and_reduce():
    @mb.program(
        input_specs=[
            mb.TensorSpec(shape=(2, 16), dtype=types.fp16),
            mb.TensorSpec(shape=(2, 3, 5), dtype=types.fp16),
            mb.TensorSpec(shape=(2, 5, 7), dtype=types.fp16),
            mb.TensorSpec(shape=(1, 4, 8, 8), dtype=types.fp16),
        ],
        opset_version=ct.target.iOS17,
    )
    def prog(a, b, c, d):
        lin = mb.linear(
            x=a,
            weight=RNG.standard_normal((4, 16)).astype(np.float16),
            bias=np.zeros(4, np.float16),
            name="lin",
        )
        mm = mb.matmul(x=b, y=c, name="mm")
        pool = mb.max_pool(x=d, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid", name="pool")
        red = mb.reduce_sum(x=d, axes=[1], name="red")
        return lin, mm, pool, red

    flops = {op.name: op.flops for op in ane_report_for_program(prog).ops}
    assert flops == {
        "lin": 2 * 2 * 4 * 16 + 2 * 4,
        "mm": 2 * 2 * 3 * 7 * 5,
        "pool": 1 * 4 * 4 * 4 * (2 * 2),
        "red": 1 * 4 * 8 * 8,
    }


@pytest.fixture(scope="module")
def tiny_package(tmp_path_factory):
    """fp32 I/O, fp16 compute: the converter wraps the fp16 conv+relu in two casts."""
    path = tmp_path_factory.mktemp("ane") / "tiny.mlpackage"
    model = ct.convert(
        conv_relu_program(types.fp32),
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        skip_model_load=True,
    )
    model.save(str(path))
    return path


def test_ane_report_of_a_saved_package(tiny_package):
    report = ane_report(tiny_package)
    assert [(p.device, p.op_count) for p in report.partitions] == [
        ("CPU", 1),
        ("ANE", 2),
        ("CPU", 1),
    ]
    assert report.weight_bytes == CONV_WEIGHT_ELEMENTS * 2  # stored as fp16
    assert report.flops == CONV_RELU_FLOPS


def test_cli_inspect_ane_json(tiny_package):
    result = CliRunner().invoke(main, ["inspect", str(tiny_package), "--ane", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["op_count"] == 4 and payload["eligible_count"] == 2
    assert payload["switches"] == 2
    assert payload["flops"] == CONV_RELU_FLOPS
    assert payload["eligible_flop_share"] == 1.0  # the casts move data only
    assert payload["weight_bytes"] == CONV_WEIGHT_ELEMENTS * 2
    casts = [op for op in payload["ops"] if op["op_type"] == "cast"]
    assert [(op["dtype"], op["reasons"], op["device"]) for op in casts] == [
        ("fp32", ["fp32"], "CPU")
    ] * 2


def test_cli_inspect_ane_table(tiny_package):
    result = CliRunner().invoke(main, ["inspect", str(tiny_package), "--ane"])
    assert result.exit_code == 0, result.output
    assert "switches 2" in result.output
    assert "ANE ops 1-2 (2)" in result.output


def test_cli_inspect_ane_missing_package_is_one_line(tmp_path):
    missing = tmp_path / "none.mlpackage"
    result = CliRunner().invoke(main, ["inspect", str(missing), "--ane"])
    assert result.exit_code == 5
    assert result.output.strip().splitlines() == [f"error: mlpackage not found: {missing}"]


@pytest.fixture(scope="module")
def enumerated_package(tmp_path_factory):
    """tiny_package's conv + relu with a batch of 1..4 as enumerated shapes (default 4)."""
    weight = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32)

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(get_new_symbol(), 3, 8, 8), dtype=types.fp32)],
        opset_version=ct.target.iOS17,
    )
    def prog(x):
        return mb.relu(x=mb.conv(x=x, weight=weight))

    shapes = ct.EnumeratedShapes(shapes=[(b, 3, 8, 8) for b in (1, 2, 3, 4)], default=(4, 3, 8, 8))
    path = tmp_path_factory.mktemp("ane_enum") / "enum.mlpackage"
    model = ct.convert(
        prog,
        inputs=[ct.TensorType(name="x", shape=shapes)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        skip_model_load=True,
    )
    model.save(str(path))
    return path


def test_cli_inspect_shows_enumerated_batches_and_what_a_range_would_cost(enumerated_package):
    plain = CliRunner().invoke(main, ["inspect", str(enumerated_package)])
    assert plain.exit_code == 0, plain.output
    assert "(4, 3, 8, 8)" in plain.output and "axis0:{1..4}" in plain.output
    table = CliRunner().invoke(main, ["inspect", str(enumerated_package), "--ane"])
    assert table.exit_code == 0, table.output
    assert "flexible input x (enumerated)" in table.output
    # conv and relu (fp16) are eligible at every enumerated size; a range keeps them on the
    # ANE only at the default: all of the program's FLOPs (the casts move data only)
    assert (
        "a range-flexible input would run on the ANE only at its default shape: at other"
        " sizes 2 ops (100.0% of FLOPs) would lose ANE eligibility"
    ) in table.output
