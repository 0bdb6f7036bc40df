"""Neural Engine readiness of a saved ML program: a static, per-op prediction.

For every op (not `const`, not `constexpr_*`: those are weights, resolved at load time) the
report gives its compute dtype, whether it is eligible for the Apple Neural Engine (ANE) under
the rules in docs/ane.md and, if not, short reason codes. Walking the ops in program order and
grouping consecutive ops by predicted device gives the partitions (ANE vs CPU) and the number
of device switches. Per model it also counts FLOPs and weight bytes.

This is a prediction from documented rules and community measurements: Core ML decides the
real placement when it loads the model (see docs/ane.md for how to check it on a Mac).

    report = ane_report(Path("artifacts/wespeaker_v2_fp16.mlpackage"))
    report.eligible_share, report.switches, report.flops, report.weight_bytes
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coreml_diarize.mlpackage import iter_ops, load_mlmodel, load_program

if TYPE_CHECKING:  # coremltools is imported lazily: it is slow and noisy to import
    from coremltools.converters.mil.mil import Operation, Program
    from coremltools.proto.Model_pb2 import Model

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


@dataclass
class OpPlacement:
    index: int  # position among the reported (non-const) ops, in program order
    name: str
    op_type: str
    dtype: str  # compute dtype: the widest float type it reads or writes, else its int type
    eligible: bool
    reasons: list[str] = field(default_factory=list)
    flops: int = 0

    @property
    def device(self) -> str:
        return ANE if self.eligible else CPU

    @property
    def reason(self) -> str:
        return self.reasons[0] if self.reasons else ""


@dataclass
class Partition:
    device: str
    first_op: str
    last_op: str
    first_index: int
    last_index: int
    op_count: int
    flops: int


@dataclass
class OpTypeSummary:
    op_type: str
    count: int
    dtypes: list[str]
    eligible: int
    reasons: list[str]
    flops: int


@dataclass
class ShapeAlternative:
    """What the other kind of flexible input would change, for a program with flexible inputs.

    Core ML runs a range-flexible input on the ANE only at its default shape, an enumerated one
    at each of its shapes (docs/ane.md, "Batch shapes"): `ops` are the ops eligible with
    enumerated shapes that a range makes ineligible at its other sizes, `flops` their FLOPs
    (flexible dims counted as 1) and `flop_share` their share of the program's."""

    declared: str  # "enumerated" | "range": what the program's flexible inputs are
    alternative: str  # the other kind
    ops: int
    flops: int
    flop_share: float

    def sentence(self) -> str:
        cost = f"{self.ops} ops ({self.flop_share:.1%} of FLOPs)"
        if self.declared == "enumerated":
            return (
                "a range-flexible input would run on the ANE only at its default shape:"
                f" at other sizes {cost} would lose ANE eligibility"
            )
        return (
            "a range-flexible input runs on the ANE only at its default shape: at other sizes"
            f" {cost} lose ANE eligibility; enumerated shapes would keep them at each size"
        )


@dataclass
class AneReport:
    path: str | None
    ops: list[OpPlacement]
    partitions: list[Partition]
    weight_bytes: int
    flexible_inputs: dict[str, str]
    # FLOPs of ops with symbolic (flexible) dims are counted with each symbolic dim = 1
    flops_lower_bound: bool = False
    # with flexible inputs: what the other kind (range / enumerated) would change
    shape_alternative: ShapeAlternative | None = None

    @property
    def op_count(self) -> int:
        return len(self.ops)

    @property
    def eligible_count(self) -> int:
        return sum(op.eligible for op in self.ops)

    @property
    def eligible_share(self) -> float:
        return self.eligible_count / self.op_count if self.ops else 0.0

    @property
    def flops(self) -> int:
        return sum(op.flops for op in self.ops)

    @property
    def eligible_flops(self) -> int:
        return sum(op.flops for op in self.ops if op.eligible)

    @property
    def eligible_flop_share(self) -> float:
        return self.eligible_flops / self.flops if self.flops else 0.0

    @property
    def switches(self) -> int:
        return max(len(self.partitions) - 1, 0)

    def by_op_type(self) -> list[OpTypeSummary]:
        """One row per op type, in order of first appearance."""
        rows: dict[str, OpTypeSummary] = {}
        for op in self.ops:
            row = rows.setdefault(op.op_type, OpTypeSummary(op.op_type, 0, [], 0, [], 0))
            row.count += 1
            row.eligible += op.eligible
            row.flops += op.flops
            if op.dtype not in row.dtypes:
                row.dtypes.append(op.dtype)
            row.reasons.extend(r for r in op.reasons if r not in row.reasons)
        return list(rows.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "op_count": self.op_count,
            "eligible_count": self.eligible_count,
            "eligible_share": self.eligible_share,
            "flops": self.flops,
            "eligible_flops": self.eligible_flops,
            "eligible_flop_share": self.eligible_flop_share,
            "flops_lower_bound": self.flops_lower_bound,
            "weight_bytes": self.weight_bytes,
            "switches": self.switches,
            "flexible_inputs": dict(self.flexible_inputs),
            "shape_alternative": (
                asdict(self.shape_alternative) if self.shape_alternative is not None else None
            ),
            "partitions": [asdict(p) for p in self.partitions],
            "op_types": [asdict(row) for row in self.by_op_type()],
            "ops": [{**asdict(op), "device": op.device} for op in self.ops],
            "reason_codes": {
                code: {"meaning": text, "evidence": evidence}
                for code, (text, evidence) in REASONS.items()
            },
        }


# --- reading the program ---------------------------------------------------------------------


def _is_weight_op(op) -> bool:
    return op.op_type == "const" or op.op_type.startswith("constexpr_")


def _input_vars(op) -> Iterator[Any]:
    for value in op.inputs.values():
        if isinstance(value, (list, tuple)):
            yield from value
        else:
            yield value


def _tensor_vars(op, *, with_consts: bool) -> Iterator[Any]:
    """Tensor-typed inputs (optionally skipping `const` parameters) and outputs of an op."""
    for var in _input_vars(op):
        producer = getattr(var, "op", None)
        if not with_consts and producer is not None and producer.op_type == "const":
            continue
        if _shape(var) is not None:
            yield var
    for var in op.outputs:
        if _shape(var) is not None:
            yield var


def _shape(var) -> tuple | None:
    from coremltools.converters.mil.mil import types

    if not types.is_tensor(var.sym_type):
        return None
    return tuple(var.shape)


def _dtype_name(var) -> str:
    from coremltools.converters.mil.mil import types

    return types.builtin_to_string(var.dtype)


def _is_symbolic(dim) -> bool:
    from coremltools.converters.mil.mil.types.symbolic import is_symbolic

    return is_symbolic(dim)


def _numel(shape: Iterable) -> int:
    """Element count, with symbolic dims taken as 1 (a lower bound for flexible shapes)."""
    return math.prod(1 if _is_symbolic(d) else int(d) for d in shape)


def compute_dtype(op: Operation) -> str:
    """fp32 if the op reads or writes any fp32 activation, else fp16, else its integer type.

    Core ML treats a tensor's declared type as the minimum precision (coremltools "Typed
    Execution"), so one fp32 activation makes the op an fp32 op.
    """
    names = [_dtype_name(v) for v in _tensor_vars(op, with_consts=False)]
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
    for var in _tensor_vars(op, with_consts=True):
        shape = _shape(var)
        if any(_is_symbolic(d) for d in shape):
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
    out_shape = _shape(out) if out is not None else None
    if kind == "conv":
        weight = _shape(op.inputs["weight"])
        macs = _numel(out_shape) * _numel(weight[1:])  # weight: (Cout, Cin/groups, *kernel)
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "conv_transpose":
        weight = _shape(op.inputs["weight"])
        macs = _numel(_shape(op.inputs["x"])) * _numel(weight[1:])  # (Cin, Cout/groups, *k)
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "linear":
        in_features = _shape(op.inputs["weight"])[-1]
        macs = _numel(out_shape) * _numel([in_features])
        return 2 * macs + (_numel(out_shape) if _has_input(op, "bias") else 0)
    if kind == "matmul":
        x = _shape(op.inputs["x"])
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
        return _numel(_shape(op.inputs["x"]))
    if kind in PER_INPUT_ELEMENT:
        return PER_INPUT_ELEMENT[kind] * _numel(_shape(op.inputs["x"]))
    if kind in ELEMENTWISE_OPS and out_shape is not None:
        return _numel(out_shape)
    return 0  # data movement (reshape, transpose, slice, concat, cast, tile, pad, ...)


def _recurrent_flops(op) -> int:
    """Per step, batch row and direction: the two matmuls (2 FLOPs per MAC) plus the gates."""
    seq, batch, inputs = (_numel([d]) for d in _shape(op.inputs["x"]))
    hidden = _numel([_shape(op.inputs["weight_hh"])[-1]])
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
            if not _shape(var):  # scalars (axis...) are parameters
                continue
            compressed.add(id(var))
            total += _stored_bytes(var)
    for op in ops:
        if op.op_type != "const":
            continue
        var = op.outputs[0]
        if id(var) in compressed or not _shape(var) or not types.is_float(var.dtype):
            continue
        total += _stored_bytes(var)
    return total


# --- the report ------------------------------------------------------------------------------


def _partitions(placements: list[OpPlacement]) -> list[Partition]:
    parts: list[Partition] = []
    for op in placements:
        if parts and parts[-1].device == op.device:
            last = parts[-1]
            last.last_op, last.last_index = op.name, op.index
            last.op_count += 1
            last.flops += op.flops
        else:
            parts.append(Partition(op.device, op.name, op.name, op.index, op.index, 1, op.flops))
    return parts


def _placements(ops: list[Operation], *, symbolic_is_flexible: bool) -> list[OpPlacement]:
    placements: list[OpPlacement] = []
    for op in ops:
        if _is_weight_op(op):
            continue
        dtype = compute_dtype(op)
        reasons = ineligibility_reasons(op, dtype=dtype, symbolic_is_flexible=symbolic_is_flexible)
        placements.append(
            OpPlacement(
                index=len(placements),
                name=op.name,
                op_type=op.op_type,
                dtype=dtype,
                eligible=not reasons,
                reasons=reasons,
                flops=op_flops(op),
            )
        )
    return placements


def _shape_alternative(
    ops: list[Operation], placements: list[OpPlacement], *, symbolic_is_flexible: bool
) -> ShapeAlternative:
    """The eligibility rerun with the other kind of flexible input, compared op by op."""
    other = _placements(ops, symbolic_is_flexible=not symbolic_is_flexible)
    as_range, as_enumerated = (placements, other) if symbolic_is_flexible else (other, placements)
    lost = [
        e for r, e in zip(as_range, as_enumerated, strict=True) if e.eligible and not r.eligible
    ]
    total = sum(op.flops for op in placements)
    flops = sum(op.flops for op in lost)
    declared = "range" if symbolic_is_flexible else "enumerated"
    return ShapeAlternative(
        declared=declared,
        alternative="enumerated" if symbolic_is_flexible else "range",
        ops=len(lost),
        flops=flops,
        flop_share=flops / total if total else 0.0,
    )


def ane_report_for_program(
    program: Program,
    *,
    flexible_inputs: Mapping[str, str] | None = None,
    path: str | None = None,
    function: str = "main",
) -> AneReport:
    """The readiness report of a pymil Program (hand-built or loaded from a package).

    `flexible_inputs` maps input names to "range" or "enumerated" (from the package's spec).
    Ops with symbolic dims are flagged `flexible-shape` unless every flexible input is an
    enumerated one (Core ML specialises the model for each enumerated shape); with no mapping,
    symbolic dims count as flexible. With flexible inputs, `shape_alternative` says what the
    other kind would change.
    """
    flexible = dict(flexible_inputs or {})
    symbolic_is_flexible = not flexible or any(kind != "enumerated" for kind in flexible.values())
    all_ops = list(iter_ops(program.functions[function]))
    placements = _placements(all_ops, symbolic_is_flexible=symbolic_is_flexible)
    lower_bound = any(
        _is_symbolic(d)
        for op in all_ops
        if not _is_weight_op(op)
        for v in _tensor_vars(op, with_consts=False)
        for d in _shape(v)
    )
    alternative = (
        _shape_alternative(all_ops, placements, symbolic_is_flexible=symbolic_is_flexible)
        if flexible
        else None
    )
    return AneReport(
        path=path,
        ops=placements,
        partitions=_partitions(placements),
        weight_bytes=weight_bytes(all_ops),
        flexible_inputs=flexible,
        flops_lower_bound=lower_bound,
        shape_alternative=alternative,
    )


def flexible_inputs_of(spec: Model) -> dict[str, str]:
    """Inputs whose shape is not fixed in a model spec: name -> "range" or "enumerated"."""
    found: dict[str, str] = {}
    for feature in spec.description.input:
        kind = feature.type.WhichOneof("Type")
        if kind == "multiArrayType":
            array = feature.type.multiArrayType
            which = array.WhichOneof("ShapeFlexibility")
            if which == "shapeRange" and any(
                r.lowerBound != r.upperBound for r in array.shapeRange.sizeRanges
            ):
                found[feature.name] = "range"
            elif which == "enumeratedShapes" and len(array.enumeratedShapes.shapes) > 1:
                found[feature.name] = "enumerated"
        elif kind == "imageType":
            which = feature.type.imageType.WhichOneof("SizeFlexibility")
            if which == "imageSizeRange":
                found[feature.name] = "range"
            elif which == "enumeratedSizes":
                found[feature.name] = "enumerated"
    return found


def ane_report(path: Path) -> AneReport:
    """The readiness report of a saved .mlpackage (ML program); ArtifactError if unreadable."""
    spec = load_mlmodel(Path(path)).get_spec()
    program = load_program(Path(path))
    return ane_report_for_program(program, flexible_inputs=flexible_inputs_of(spec), path=str(path))
