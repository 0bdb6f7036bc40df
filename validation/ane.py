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

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coreml_diarize.mlpackage import iter_ops, load_mlmodel, load_program

from .ane_rules import (
    ANE,
    CPU,
    REASONS,
    compute_dtype,
    ineligibility_reasons,
    is_symbolic,
    is_weight_op,
    op_flops,
    shape_of,
    tensor_vars,
    weight_bytes,
)

if TYPE_CHECKING:  # coremltools is imported lazily: it is slow and noisy to import
    from coremltools.converters.mil.mil import Operation, Program
    from coremltools.proto.Model_pb2 import Model


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
        if is_weight_op(op):
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
        is_symbolic(d)
        for op in all_ops
        if not is_weight_op(op)
        for v in tensor_vars(op, with_consts=False)
        for d in shape_of(v)
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
