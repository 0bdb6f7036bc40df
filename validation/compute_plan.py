"""Where Core ML says it can run, and where it places each op: read from coremltools' API and
set beside `inspect --ane`'s static prediction.

* Devices: `MLModel.get_available_compute_devices()` (coremltools >= 8, macOS >= 14) returns
  instances of `coremltools.models.compute_device.MLCPUComputeDevice`, `MLGPUComputeDevice`
  and `MLNeuralEngineComputeDevice` (the last with `total_core_count`); a GitHub-hosted macOS
  VM has no Neural Engine, so a `cpu_and_ne` request silently runs on the CPU there.
* Placement: `coremltools.models.compute_plan.MLComputePlan.load_from_path(compiled model
  path, compute_units)` (macOS >= 14.4). Its `model_structure.program.functions["main"].block
  .operations` are `MLModelStructureProgramOperation`s (`operator_name`, `outputs`: named
  values, `blocks`: nested blocks); `get_compute_device_usage_for_mlprogram_operation(op)`
  gives an `MLComputePlanDeviceUsage` whose `preferred_compute_device` is one of the device
  classes above, or None when Core ML cannot tell (coremltools/models/compute_plan.py).

Ops are matched to the static prediction (`validation/ane.py`, `ane_report`) by the name of
their first output: the compute plan's operations carry no op names, and a MIL output name is
unique in a program.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CPU = "cpu"
GPU = "gpu"
NEURAL_ENGINE = "neural_engine"
MIL_EXECUTOR_DEVICE = "cpu (MIL executor)"
# ane.py's device labels -> ours
_STATIC_DEVICE = {"ANE": NEURAL_ENGINE, "CPU": CPU}
# at most this many disagreeing ops are listed in a report (the counts cover all of them)
MAX_LISTED_DISAGREEMENTS = 50


def device_kind(device: Any) -> str:
    """`cpu`, `gpu` or `neural_engine` for a coremltools compute device object."""
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    for cls, kind in (
        (MLNeuralEngineComputeDevice, NEURAL_ENGINE),
        (MLGPUComputeDevice, GPU),
        (MLCPUComputeDevice, CPU),
    ):
        if isinstance(device, cls):
            return kind
    return type(device).__name__


def describe_device(device: Any) -> str:
    """A device as the report shows it: `neural_engine (16 cores)`, `gpu`, `cpu`."""
    kind = device_kind(device)
    if kind == NEURAL_ENGINE:
        try:
            return f"{kind} ({int(device.total_core_count)} cores)"
        except Exception:  # the core count is informative only; the proxy may not offer it
            return kind
    return kind


@dataclass
class OpDisagreement:
    """An op Core ML placed elsewhere than the static prediction said."""

    output: str  # the op's first output (MIL var name)
    op_type: str
    predicted: str  # static prediction: neural_engine | cpu
    planned: str  # Core ML's preferred device


@dataclass
class PlacementReport:
    """Core ML's per-op placement (MLComputePlan) summarised, beside the static prediction."""

    compute_units: str
    ops_by_device: dict[str, int]  # Core ML's preferred device -> op count (consts excluded)
    unknown_ops: int  # ops for which Core ML gave no device usage
    compared_ops: int  # ops found in both the plan and the static prediction
    agreement: float | None  # share of compared ops placed where the prediction said
    disagreements: list[OpDisagreement] = field(default_factory=list)
    disagreement_count: int = 0

    def line(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(self.ops_by_device.items())) or "none"
        agreement = "-" if self.agreement is None else f"{self.agreement:.3f}"
        return (
            f"Core ML placement ({self.compute_units}): {counts}"
            + (f", unknown {self.unknown_ops}" if self.unknown_ops else "")
            + f"; agrees with inspect --ane on {agreement} of {self.compared_ops} ops"
        )


@dataclass(frozen=True)
class PlannedOp:
    op_type: str
    output: str
    device: str | None  # None: Core ML gave no usage for it


def _op_type(operator_name: str) -> str:
    """`conv` from `conv` or an opset-qualified `ios17.conv` (both spellings are seen)."""
    return operator_name.rsplit(".", 1)[-1]


def _is_weight(op_type: str) -> bool:
    return op_type == "const" or op_type.startswith("constexpr_")


def _walk(block: Any) -> Iterator[Any]:
    for op in block.operations:
        yield op
        for inner in getattr(op, "blocks", ()) or ():
            yield from _walk(inner)


def planned_ops(plan: Any, function: str = "main") -> list[PlannedOp]:
    """Every non-constant op of an MLComputePlan with Core ML's preferred device."""
    program = plan.model_structure.program
    if program is None:
        raise ValueError("the compute plan is not an ML program's")
    ops = []
    for op in _walk(program.functions[function].block):
        op_type = _op_type(op.operator_name)
        if _is_weight(op_type):
            continue
        usage = plan.get_compute_device_usage_for_mlprogram_operation(op)
        device = None if usage is None else device_kind(usage.preferred_compute_device)
        output = op.outputs[0].name if op.outputs else ""
        ops.append(PlannedOp(op_type, output, device))
    return ops


def static_prediction(path: Path) -> dict[str, tuple[str, str]]:
    """`inspect --ane`'s prediction per op: first output name -> (op type, device)."""
    from coreml_diarize.mlpackage import iter_ops, load_mlmodel, load_program

    from .ane import ane_report_for_program, flexible_inputs_of

    program = load_program(Path(path))
    flexible = flexible_inputs_of(load_mlmodel(Path(path)).get_spec())
    report = ane_report_for_program(program, flexible_inputs=flexible)
    # ane_report_for_program reports the non-weight ops of iter_ops in order: zip them back
    ops = [op for op in iter_ops(program.functions["main"]) if not _is_weight(op.op_type)]
    if len(ops) != len(report.ops):
        raise ValueError("the static prediction does not cover the program's ops")
    return {
        op.outputs[0].name: (placement.op_type, _STATIC_DEVICE[placement.device])
        for op, placement in zip(ops, report.ops, strict=True)
        if op.outputs
    }


def compare_placement(
    planned: Iterable[PlannedOp], predicted: Mapping[str, tuple[str, str]], compute_units: str
) -> PlacementReport:
    """Counts per device, and the share of ops placed where the prediction said."""
    planned = list(planned)
    by_device = Counter(op.device for op in planned if op.device is not None)
    compared = agreed = 0
    disagreements: list[OpDisagreement] = []
    for op in planned:
        if op.device is None or op.output not in predicted:
            continue
        compared += 1
        op_type, device = predicted[op.output]
        if device == op.device:
            agreed += 1
        else:
            disagreements.append(OpDisagreement(op.output, op_type, device, op.device))
    return PlacementReport(
        compute_units=compute_units,
        ops_by_device=dict(by_device),
        unknown_ops=sum(op.device is None for op in planned),
        compared_ops=compared,
        agreement=agreed / compared if compared else None,
        disagreements=disagreements[:MAX_LISTED_DISAGREEMENTS],
        disagreement_count=len(disagreements),
    )
