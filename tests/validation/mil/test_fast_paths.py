"""The executor's fp16 fast paths (issue #23, item 7) give the values of the implementations
they replaced (validation/mil/ops_reference.py, kept unchanged as the slow reference):
op by op on every fp16 bit pattern, and whole converted models (fp16 and palettize8 packages
of segmentation and WeSpeaker, random:0) output for output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.validation.mil import DEFAULT_OPS, MILExecutor
from coreml_diarize.validation.mil.loader import Binding, Node, ValueType
from coreml_diarize.validation.mil.opcall import OpCall, cast_array
from coreml_diarize.validation.mil.ops_reference import REFERENCE_OPS

FAST_OPS = ("abs", "relu", "leaky_relu", "add", "sub", "mul", "real_div", "max_pool")


def every_fp16(shape: tuple[int, ...] = (4, 16, 1024)) -> np.ndarray:
    """All 65536 fp16 bit patterns (zeros of both signs, subnormals, infinities, NaNs)."""
    bits = np.arange(65536, dtype=np.uint16)
    return bits.view(np.float16).reshape(shape)


def run_op(table, op_type: str, **inputs) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One op of `table` on fp16 arrays (named values) and literals, rounded to fp16 as the
    executor stores an fp16 op's output."""
    values = {k: v for k, v in inputs.items() if isinstance(v, np.ndarray)}
    bindings = {
        k: [Binding(name=k) if isinstance(v, np.ndarray) else Binding(value=v)]
        for k, v in inputs.items()
    }
    node = Node(op_type, "op", bindings, [("out", ValueType("fp16", None))], {})
    return cast_array(table[op_type](OpCall(node, values, frozenset(), {})), np.float16)


def assert_same_fp16(fast: np.ndarray, reference: np.ndarray) -> None:
    """Same dtype and shape, the same bits for every number (so -0 stays -0 and +0 stays
    +0), NaN where the reference has NaN (a NaN's payload carries no value)."""
    assert fast.dtype == reference.dtype == np.float16
    assert fast.shape == reference.shape
    nan = np.isnan(reference)
    assert np.array_equal(np.isnan(fast), nan)
    differ = fast.view(np.uint16)[~nan] != reference.view(np.uint16)[~nan]
    assert not differ.any(), (
        f"{int(differ.sum())} values differ, e.g. {fast[~nan][differ][:4]} vs "
        f"{reference[~nan][differ][:4]}"
    )


def test_the_default_table_has_the_fast_paths_and_the_reference_keeps_the_others():
    for op in FAST_OPS:
        assert DEFAULT_OPS[op] is not REFERENCE_OPS[op]
    assert set(REFERENCE_OPS) == set(DEFAULT_OPS)
    assert REFERENCE_OPS["conv"] is DEFAULT_OPS["conv"]


@pytest.mark.parametrize("op", ["abs", "relu"])
def test_unary_fast_paths_equal_the_widened_computation_on_every_fp16_value(op):
    x = every_fp16()
    assert_same_fp16(run_op(DEFAULT_OPS, op, x=x), run_op(REFERENCE_OPS, op, x=x))


@pytest.mark.filterwarnings("ignore:invalid value encountered")  # the reference: inf * 0
@pytest.mark.parametrize("alpha", [0.01, 0.2998, -1.5, 0.0])
def test_leaky_relu_fast_path_on_every_fp16_value(alpha):
    x, a = every_fp16(), np.array(alpha, dtype=np.float16)
    assert_same_fp16(
        run_op(DEFAULT_OPS, "leaky_relu", x=x, alpha=a),
        run_op(REFERENCE_OPS, "leaky_relu", x=x, alpha=a),
    )


@pytest.mark.parametrize("op", ["add", "sub", "mul", "real_div"])
def test_binary_fast_paths_equal_numpys_float16_arithmetic(op):
    """Every fp16 value against a permutation of them (all sign/exponent pairings occur),
    against a broadcast row, and against a scalar: torch's float16 arithmetic vs numpy's
    scalar float16 loops (fp32 computation, one rounding)."""
    x = every_fp16()
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(x.reshape(-1)).reshape(x.shape)
    row = rng.permutation(x.reshape(-1))[: x.shape[-1]].copy()
    for y in (shuffled, row, np.array(3.0e-3, np.float16), every_fp16()):
        assert_same_fp16(run_op(DEFAULT_OPS, op, x=x, y=y), run_op(REFERENCE_OPS, op, x=x, y=y))
        assert_same_fp16(run_op(DEFAULT_OPS, op, x=y, y=x), run_op(REFERENCE_OPS, op, x=y, y=x))


def test_binary_fast_path_is_not_taken_for_mixed_or_integer_operands():
    """fp16 with fp32 promotes to fp32 in numpy (torch would keep fp16): numpy decides."""
    x = every_fp16()[0, 0, :8]
    y = np.linspace(-2, 2, 8, dtype=np.float32)
    node = Node("add", "op", {"x": [Binding(name="x")], "y": [Binding(name="y")]}, [], {})
    fast = DEFAULT_OPS["add"](OpCall(node, {"x": x, "y": y}, frozenset(), {}))
    assert fast.dtype == np.float32
    ints = {"x": np.arange(8, dtype=np.int32), "y": np.arange(8, dtype=np.int32) - 3}
    for op in ("real_div", "mul"):
        out = DEFAULT_OPS[op](OpCall(node, ints, frozenset(), {}))
        ref = REFERENCE_OPS[op](OpCall(node, ints, frozenset(), {}))
        assert out.dtype == ref.dtype and np.array_equal(out, ref)


@pytest.mark.parametrize(
    "geometry",
    [
        dict(kernel_sizes=[3], strides=[3], pad_type="valid"),
        dict(kernel_sizes=[4], strides=[2], pad_type="custom", pad=[1, 2], ceil_mode=True),
        dict(kernel_sizes=[2, 3], strides=[2, 1], pad_type="same"),
    ],
)
def test_max_pool_in_fp16_equals_the_widened_pooling(geometry):
    x = every_fp16((2, 8, 4096))
    if len(geometry["kernel_sizes"]) == 2:
        x = x.reshape(2, 8, 64, 64)
    assert_same_fp16(
        run_op(DEFAULT_OPS, "max_pool", x=x, **geometry),
        run_op(REFERENCE_OPS, "max_pool", x=x, **geometry),
    )


# -- whole models -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def device_variants(seg_package, emb_package, tmp_path_factory) -> dict[str, Path]:
    """fp16 and palettize8 packages of both random:0 models, as `build` makes them."""
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    out = tmp_path_factory.mktemp("variants")
    made = {}
    for model, src in (("segmentation", seg_package), ("embedding", emb_package)):
        for config in (QuantizeConfig(mode="fp16"), QuantizeConfig(mode="palettize", nbits=8)):
            made[f"{model}_{config.name}"] = quantize_package(Path(src), out, config).dst
    return made


def model_inputs(model: str) -> dict[str, np.ndarray]:
    from coreml_diarize import signals

    audio = signals.speech_like(160_000).astype(np.float32)
    if model == "segmentation":
        return {"audio": audio[None, None]}
    # three speaker rows as the chain feeds them: different audio, partial masks
    mask = np.zeros((3, 589), np.float32)
    mask[0], mask[1, :300], mask[2, 250:] = 1.0, 1.0, 1.0
    return {"waveform": np.stack([audio, audio[::-1], 0.5 * np.roll(audio, 4000)]), "mask": mask}


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    ["segmentation_fp16", "segmentation_palettize8", "embedding_fp16", "embedding_palettize8"],
)
def test_fast_executor_reproduces_the_reference_on_device_variants(device_variants, variant):
    from coreml_diarize.validation.mil import read_mil_program

    program = read_mil_program(device_variants[variant])
    fast = MILExecutor(program)
    reference = MILExecutor(program, ops=REFERENCE_OPS)
    assert fast.op_types()["cast"] >= 1  # an fp16 program with fp32 I/O
    inputs = model_inputs(variant.split("_")[0])
    got, want = fast.predict(inputs), reference.predict(inputs)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name].dtype == want[name].dtype
        assert np.array_equal(got[name], want[name]), name
        bits = f"u{want[name].itemsize}"
        assert np.array_equal(got[name].view(bits), want[name].view(bits)), name


def test_profile_returns_predicts_outputs_and_one_timing_per_op_in_program_order(small_package):
    from coreml_diarize.validation.mil import read_mil_program

    program = read_mil_program(small_package)
    executor = MILExecutor(program)
    x = {"x0": np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)}
    outputs, timings = executor.profile(x)
    expected = executor.predict(x)
    assert outputs.keys() == expected.keys()
    assert all(np.array_equal(outputs[k], expected[k]) for k in expected)
    ran = [n for n in program.main.nodes if n.op_type != "const"]
    assert [(t.name, t.op_type) for t in timings] == [(n.name, n.op_type) for n in ran]
    assert {t.op_type for t in timings} >= {"linear", "relu"}
    assert all(t.compute_s >= 0 and t.store_s >= 0 for t in timings)
    assert [t.dtype for t in timings] == [n.outputs[0][1].dtype for n in ran]
