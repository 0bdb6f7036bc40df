"""The rules behind `inspect --ane` (docs/ane.md): which ops the Neural Engine can run, what
they cost in FLOPs, and how many bytes their weights take, read op by op from a MIL program.
validation/ane.py assembles them into the report."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # coremltools is imported lazily: it is slow and noisy to import
    from coremltools.converters.mil.mil import Operation

ANE = "ANE"
CPU = "CPU"

# reason code -> (what it means, how well it is established); docs/ane.md cites each one
REASONS: dict[str, tuple[str, str]] = {
    "fp32": ("fp32-typed tensors: the Neural Engine is barred for fp32 ops", "Apple docs"),
    "dtype": ("integer/bool-only compute: the Neural Engine computes in fp16", "community"),
    "recurrent": (
        "LSTM/GRU/RNN are not supported on the Neural Engine",
        "coremltools maintainer (issue), community",
    ),
    "flexible-shape": (
        "shape depends on a flexible (range) input or is data-dependent",
        "Apple docs (implied), community",
    ),
    "unsupported-op": (
        "op type known not to run on the Neural Engine",
        "community; control flow and random ops: project assumption",
    ),
    "rank": (
        "a tensor of rank > 5 (the ANE layout is 5-D: N, D, C, H, W)",
        "ANE compiler message (community reports)",
    ),
    "size": (
        "a tensor axis beyond the ANE compiler's range (W,H,D <= 16384; N,C <= 65536)",
        "ANE compiler message (community reports)",
    ),
}

RECURRENT_OPS = frozenset({"lstm", "gru", "rnn"})
# hollance/neural-engine "unsupported layers" (gather); control flow and random ops have no
# static ANE form (a project assumption, flagged as such in docs/ane.md)
UNSUPPORTED_OPS = frozenset(
    {
        "gather",
        "gather_nd",
        "gather_along_axis",
        "cond",
        "while_loop",
        "random_bernoulli",
        "random_categorical",
        "random_normal",
        "random_uniform",
    }
)
MAX_RANK = 5
# Limits printed by the ANE compiler when it rejects a layer, e.g. "Tensor dimensions
# N1D1C1H1W240000 are not within supported range, N[1-65536]D[1-16384]C[1-65536]H[1-16384]
# W[1-16384]"; the trailing axis is W (Apple's ANE transformer notes), so shapes are
# right-aligned onto N, D, C, H, W.
AXIS_LIMITS = (65536, 16384, 65536, 16384, 16384)  # N, D, C, H, W
ELIGIBLE_DTYPES = frozenset({"fp16", "int8", "uint8"})

# FLOP counting (docs/ane.md): 2 per multiply-accumulate, 1 per element for element-wise ops
ELEMENTWISE_OPS = frozenset(
    {
        "abs",
        "acos",
        "add",
        "asin",
        "atan",
        "atanh",
        "ceil",
        "clamped_relu",
        "clip",
        "cos",
        "cosh",
        "elu",
        "equal",
        "erf",
        "exp",
        "exp2",
        "floor",
        "floor_div",
        "gelu",
        "greater",
        "greater_equal",
        "inverse",
        "leaky_relu",
        "less",
        "less_equal",
        "linear_activation",
        "log",
        "logical_and",
        "logical_not",
        "logical_or",
        "logical_xor",
        "maximum",
        "minimum",
        "mod",
        "mul",
        "not_equal",
        "pow",
        "prelu",
        "real_div",
        "relu",
        "relu6",
        "round",
        "rsqrt",
        "scaled_tanh",
        "select",
        "sigmoid",
        "sigmoid_hard",
        "sign",
        "silu",
        "sin",
        "sinh",
        "softplus",
        "softplus_parametric",
        "softsign",
        "sqrt",
        "square",
        "sub",
        "tan",
        "tanh",
        "thresholded_relu",
        "threshold",
    }
)
POOL_OPS = frozenset({"avg_pool", "max_pool", "l2_pool"})
# FLOPs per input element for ops that read each element a fixed number of times
PER_INPUT_ELEMENT = {
    "batch_norm": 2,  # scale and shift (statistics are constants at inference)
    "instance_norm": 5,  # mean, subtract, variance, normalise, affine
    "layer_norm": 5,
    "l2_norm": 3,
    "softmax": 5,  # max, subtract, exp, sum, divide
    "cumsum": 1,
}


# --- reading the program ---------------------------------------------------------------------


def is_weight_op(op) -> bool:
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def _input_vars(op) -> Iterator[Any]:
    for value in op.inputs.values():
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def tensor_vars(op, *, with_consts: bool) -> Iterator[Any]:
    """Tensor-typed inputs (optionally skipping `const` parameters) and outputs of an op."""
    for var in _input_vars(op):
        producer = getattr(var, "op", None)
        if not with_consts and producer is not None and producer.op_type == "const":
            continue
        if shape_of(var) is not None:
            yield var
    for var in op.outputs:
        if shape_of(var) is not None:
            yield var


def shape_of(var) -> tuple | None:
    from coremltools.converters.mil.mil import types

    if not types.is_tensor(var.sym_type):
        return None
    return tuple(var.shape)


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def is_symbolic(dim) -> bool:
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    return is_symbolic(dim)


def _numel(shape: Iterable) -> int:
    """Element count, with symbolic dims taken as 1 (a lower bound for flexible shapes)."""
    return math.prod(1 if is_symbolic(d) else int(d) for d in shape)


def compute_dtype(op: Operation) -> str:
    """fp32 if the op reads or writes any fp32 activation, else fp16, else its integer type.

    Core ML treats a tensor's declared type as the minimum precision (coremltools "Typed
    Execution"), so one fp32 activation makes the op an fp32 op.
    """
    names = [_dtype_name(v) for v in tensor_vars(op, with_consts=False)]
    for wanted in ("fp64", "fp32", "fp16", "bf16"):
        if wanted in names:
            return wanted
    non_bool = [n for n in names if n != "bool"]
    if non_bool:
        return non_bool[0]
    return names[0] if names else "none"


# --- eligibility -----------------------------------------------------------------------------


def _shape_reasons(op, flexible: bool) -> list[str]:
    reasons: list[str] = []
    for var in tensor_vars(op, with_consts=True):
        shape = shape_of(var)
        if any(is_symbolic(d) for d in shape):
            if flexible and "flexible-shape" not in reasons:
                reasons.append("flexible-shape")
            continue
        if len(shape) > MAX_RANK:
            if "rank" not in reasons:
                reasons.append("rank")
            continue
        limits = AXIS_LIMITS[len(AXIS_LIMITS) - len(shape) :]
        if (
            any(int(d) > limit for d, limit in zip(shape, limits, strict=True))
            and "size" not in reasons
        ):
            reasons.append("size")
    return reasons


def ineligibility_reasons(
    op: Operation, *, dtype: str, symbolic_is_flexible: bool = True
) -> list[str]:
    """Reason codes (see REASONS) why `op` would not run on the Neural Engine; [] if eligible."""
    reasons: list[str] = []
    if dtype in ("fp32", "fp64"):
        reasons.append("fp32")
    elif dtype not in ELIGIBLE_DTYPES:
        reasons.append("dtype")
    if op.op_type in RECURRENT_OPS:
        reasons.append("recurrent")
    if op.op_type in UNSUPPORTED_OPS:
        reasons.append("unsupported-op")
    elif op.op_type == "conv" and _dilated(op):
        reasons.append("unsupported-op")  # hollance/neural-engine: dilated convolutions
    for reason in _shape_reasons(op, symbolic_is_flexible):
        if reason not in reasons:
            reasons.append(reason)
    return reasons


def _dilated(op) -> bool:
    dilations = op.inputs.get("dilations")
    if dilations is None or dilations.val is None:
        return False
    return any(int(d) > 1 for d in dilations.val)


# --- FLOPs -----------------------------------------------------------------------------------


def _has_input(op, name: str) -> bool:
    return op.inputs.get(name) is not None


def op_flops(op: Operation) -> int:
    """FLOPs of one op under the counting rule of docs/ane.md (symbolic dims count as 1)."""
    kind = op.op_type
    out = op.outputs[0] if op.outputs else None
    out_shape = shape_of(out) if out is not None else None
    if kind == "conv":
        weight = shape_of(op.inputs["weight"])
        macs = _numel(out_shape) * _numel(weight[1:])  # weight: (Cout, Cin/groups, *kernel)
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "conv_transpose":
        weight = shape_of(op.inputs["weight"])
        macs = _numel(shape_of(op.inputs["x"])) * _numel(weight[1:])  # (Cin, Cout/groups, *k)
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "linear":
        in_features = shape_of(op.inputs["weight"])[-1]
        macs = _numel(out_shape) * _numel([in_features])
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "matmul":
        x = shape_of(op.inputs["x"])
        transpose_x = op.inputs.get("transpose_x")
        transposed = bool(transpose_x.val) if transpose_x is not None else False
        k = x[-2] if transposed and len(x) >= 2 else x[-1]
        return 2 * _numel(out_shape) * _numel([k])
    if kind in RECURRENT_OPS:
        return _recurrent_flops(op)
    if kind in POOL_OPS:
        kernel = op.inputs["kernel_sizes"].val
        return _numel(out_shape) * math.prod(int(k) for k in kernel)
    if kind.startswith("reduce_"):
        return _numel(shape_of(op.inputs["x"]))
    if kind in PER_INPUT_ELEMENT:
        return PER_INPUT_ELEMENT[kind] * _numel(shape_of(op.inputs["x"]))
    if kind in ELEMENTWISE_OPS and out_shape is not None:
        return _numel(out_shape)
    return 0  # data movement (reshape, transpose, slice, concat, cast, tile, pad, ...)


def _recurrent_flops(op) -> int:
    """Per step, batch row and direction: the two matmuls (2 FLOPs per MAC) plus the gates."""
    seq, batch, inputs = (_numel([d]) for d in shape_of(op.inputs["x"]))
    hidden = _numel([shape_of(op.inputs["weight_hh"])[-1]])
    gates, pointwise = {"lstm": (4, 13), "gru": (3, 11), "rnn": (1, 2)}[op.op_type]
    direction = op.inputs.get("direction")
    directions = 2 if direction is not None and direction.val == "bidirectional" else 1
    per_step = 2 * gates * hidden * (inputs + hidden) + pointwise * hidden
    return directions * seq * batch * per_step


# --- weights ---------------------------------------------------------------------------------


def _stored_bytes(var) -> int:
    """Bytes of a constant as stored: element count x bit width (sub-byte types packed)."""
    import numpy as np

    value = var.val
    if value is None or isinstance(value, str):
        return 0
    array = np.asarray(value)
    bits = getattr(var.dtype, "get_bitwidth", None)
    width = bits() if bits is not None else array.dtype.itemsize * 8
    return math.ceil(array.size * width / 8)


def weight_bytes(ops: Iterable[Operation]) -> int:
    """Sum of float const tensors (rank >= 1) plus what every `constexpr_*` op stores.

    A compressed weight is counted as stored (LUT + packed indices, int8 data + scales and
    offsets...), not as the dense tensor it expands to; its `shape` argument is metadata.
    """
    from coremltools.converters.mil.mil import types

    ops = list(ops)
    total = 0
    compressed: set[int] = set()
    for op in ops:
        if not op.op_type.startswith("constexpr_"):
            continue
        for name, var in op.inputs.items():
            producer = getattr(var, "op", None)
            if name == "shape" or producer is None or producer.op_type != "const":
                continue
            if not shape_of(var):  # scalars (axis...) are parameters
                continue
            compressed.add(id(var))
            total += _stored_bytes(var)
    for op in ops:
        if op.op_type != "const":
            continue
        var = op.outputs[0]
        if id(var) in compressed or not shape_of(var) or not types.is_float(var.dtype):
            continue
        total += _stored_bytes(var)
    return total
