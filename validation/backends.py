"""One way to run a saved .mlpackage: Core ML on macOS, the MIL reference executor elsewhere.

result = run_mlpackage(path, {"waveform": x}, backend="auto", compute_units="all")
result.outputs["log_probs"], result.backend  # "coreml" or "mil"
runner = open_package(path, backend="coreml", compute_units="cpu_and_ne")
runner.compute_devices()  # what was asked, what Core ML can use, where it placed each op

The Core ML path goes through three small functions (`_macos_version`, `_coreml_model_class`,
`_compute_plan_class`): the test suite replaces them with a stand-in of coremltools' MLModel
that runs our MIL executor (tests/coreml_standin.py), so this code runs on every CI machine.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError

from .compute_plan import (
    MIL_EXECUTOR_DEVICE,
    NEURAL_ENGINE,
    PlacementReport,
    compare_placement,
    describe_device,
    device_kind,
    planned_ops,
    static_prediction,
)

BACKENDS = ("auto", "coreml", "mil")
COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")
# MLComputePlan / MLModelStructure exist from macOS 14.4 (coremltools' CoreMLPython.mm throws
# "MLComputePlan is only available on macOS >= 14.4" below it)
COMPUTE_PLAN_MACOS = (14, 4)
NEURAL_ENGINE_REQUESTS = ("all", "cpu_and_ne")


@dataclass
class ComputeDevices:
    """Where a package ran: the units asked for, the devices Core ML says it can use, and (on
    macOS 14.4+) where it placed each op. `neural_engine_checked` is True only when the units
    allow the Neural Engine, the machine has one and (where the plan is known) Core ML put
    at least one op on it."""

    requested: str
    available: list[str]
    neural_engine_checked: bool
    placement: PlacementReport | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class BackendResult:
    outputs: dict[str, np.ndarray]
    backend: str  # the backend actually used: "coreml" or "mil"
    compute_units: str  # as requested; the MIL executor always runs on the CPU
    notes: list[str] = field(default_factory=list)


def _macos_version() -> tuple[int, ...] | None:
    """The macOS version, None on any other OS (tests replace this with the stand-in's)."""
    if platform.system() != "Darwin":
        return None
    release = platform.mac_ver()[0]
    return tuple(int(part) for part in release.split(".") if part.isdigit()) or (0,)


def _coreml_model_class() -> Any:
    """coremltools' MLModel (tests put the Core ML stand-in here)."""
    import coremltools as ct

    return ct.models.MLModel


def _compute_plan_class() -> Any | None:
    """coremltools' MLComputePlan (coremltools >= 8), None where it does not exist."""
    try:
        from coremltools.models.compute_plan import MLComputePlan
    except ImportError:
        return None
    return MLComputePlan


def resolve_backend(name: str) -> str:
    """'auto' -> 'coreml' on macOS, 'mil' elsewhere; explicit names are validated."""
    if name not in BACKENDS:
        raise DiarizeError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "auto":
        return "coreml" if _macos_version() is not None else "mil"
    return name


def _check_compute_units(compute_units: str) -> None:
    if compute_units not in COMPUTE_UNITS:
        raise DiarizeError(
            f"unknown compute units {compute_units!r} (choose from {', '.join(COMPUTE_UNITS)})"
        )


@dataclass
class PackageRunner:
    """A package loaded once, run many times (validation runs every package on many inputs)."""

    predict: Callable[[Mapping[str, Any]], dict[str, np.ndarray]]
    backend: str
    compute_units: str
    notes: list[str] = field(default_factory=list)
    # where it runs; computed on first request (a compute plan costs a load on a Mac)
    describe_devices: Callable[[], ComputeDevices] | None = None
    _devices: ComputeDevices | None = field(default=None, init=False, repr=False)

    def __call__(self, inputs: Mapping[str, Any]) -> BackendResult:
        return BackendResult(
            self.predict(inputs), self.backend, self.compute_units, list(self.notes)
        )

    def compute_devices(self) -> ComputeDevices:
        if self._devices is None:
            if self.describe_devices is None:
                self._devices = ComputeDevices(self.compute_units, [MIL_EXECUTOR_DEVICE], False)
            else:
                self._devices = self.describe_devices()
        return self._devices


def _one_line(exc: BaseException) -> str:
    """An exception as one short line (Core ML errors are multi-line NSError dumps)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _CoreMLPackage:
    """A package loaded by Core ML through coremltools' MLModel, with its failures as
    one-line ArtifactErrors.

    coremltools 9.0 (coremltools/models/model.py, `MLModel._get_proxy_and_spec`) catches the
    RuntimeError Core ML raises when it cannot compile or load a package, only warns
    ("You will not be able to run predict() on this Core ML model...") and keeps no compiled
    model (`__proxy__` is None, the error in `_framework_error`); a spec newer than the
    compiled-in framework gets no proxy and no warning at all. Either way the constructor
    succeeds and the failure would surface at the first `predict` as a bare
    RuntimeError/Exception (`MLModel.predict`'s "Error case"). So the proxy is checked here.
    """

    def __init__(self, path: Path, compute_units: str) -> None:
        import coremltools as ct

        self.path = path
        self.compute_units = compute_units
        self._units = {
            "all": ct.ComputeUnit.ALL,
            "cpu_only": ct.ComputeUnit.CPU_ONLY,
            "cpu_and_gpu": ct.ComputeUnit.CPU_AND_GPU,
            "cpu_and_ne": ct.ComputeUnit.CPU_AND_NE,
        }[compute_units]
        self._model_class = _coreml_model_class()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            try:
                self.model = self._model_class(str(path), compute_units=self._units)
            except Exception as exc:  # coremltools raises bare Exceptions for unreadable packages
                raise ArtifactError(
                    f"{path}: Core ML cannot load the package ({_one_line(exc)})"
                ) from exc
        if getattr(self.model, "__proxy__", None) is None:
            raise ArtifactError(f"{path}: {self._load_failure(caught)}")

    def _load_failure(self, caught: list[warnings.WarningMessage]) -> str:
        """Why Core ML kept no compiled model, in one line."""
        cause = getattr(self.model, "_framework_error", None)
        if cause is None:
            cause = next(
                (w.message for w in caught if issubclass(w.category, RuntimeWarning)), None
            )
        try:
            version = f" (specification version {self.model.get_spec().specificationVersion})"
        except Exception:
            version = ""
        detail = f": {_one_line(cause)}" if cause is not None else ""
        return (
            f"Core ML cannot load the package{version}{detail}; e.g. a spec newer than this "
            "OS (convert with an older --target) or a corrupt package"
        )

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        try:
            out = self.model.predict({k: np.asarray(v) for k, v in inputs.items()})
        except DiarizeError:
            raise
        except Exception as exc:  # Core ML reports every failure as a bare exception
            raise ArtifactError(
                f"{self.path}: Core ML prediction failed ({type(exc).__name__}: {_one_line(exc)})"
            ) from exc
        return {k: np.asarray(v) for k, v in out.items()}

    def compute_devices(self) -> ComputeDevices:
        """The units asked for, the devices Core ML offers, and the per-op placement."""
        notes: list[str] = []
        try:
            devices = list(self._model_class.get_available_compute_devices())
        except Exception as exc:  # macOS < 14 or coremltools < 8: no MLComputeDevice API
            devices = None
            notes.append(f"available compute devices unknown ({_one_line(exc)})")
        available = [] if devices is None else [describe_device(d) for d in devices]
        has_neural_engine = devices is not None and any(
            device_kind(d) == NEURAL_ENGINE for d in devices
        )
        placement = self._placement(notes)
        wants_ne = self.compute_units in NEURAL_ENGINE_REQUESTS
        checked = wants_ne and has_neural_engine
        if placement is not None and checked and not placement.ops_by_device.get(NEURAL_ENGINE):
            checked = False
            notes.append(
                f"compute_units={self.compute_units}: Core ML placed no op on the Neural "
                "Engine: not an ANE check"
            )
        if self.compute_units == "cpu_and_ne" and devices is not None and not has_neural_engine:
            notes.append(
                "compute_units=cpu_and_ne but this machine has no Neural Engine (Core ML "
                f"offers {', '.join(available) or 'no device'}): ran on the CPU, not an ANE check"
            )
        return ComputeDevices(self.compute_units, available, checked, placement, notes)

    def _placement(self, notes: list[str]) -> PlacementReport | None:
        """MLComputePlan's placement beside the static prediction, where the OS has it."""
        plan_class = _compute_plan_class()
        version = _macos_version() or ()
        if plan_class is None or version < COMPUTE_PLAN_MACOS:
            notes.append("per-op placement needs macOS 14.4+ and coremltools 8+ (MLComputePlan)")
            return None
        try:
            plan = plan_class.load_from_path(
                self.model.get_compiled_model_path(), compute_units=self._units
            )
            planned = planned_ops(plan)
            predicted = static_prediction(self.path)
        except Exception as exc:  # informative only: a missing plan never fails a validation
            notes.append(f"per-op placement unavailable ({_one_line(exc)})")
            return None
        return compare_placement(planned, predicted, self.compute_units)


def _load_coreml(path: Path, compute_units: str) -> _CoreMLPackage:
    if _macos_version() is None:
        raise DiarizeError(
            "Core ML prediction needs macOS (this is "
            f"{platform.system() or 'an unknown OS'}); use --backend mil to run the reference executor"
        )
    if not path.exists():
        raise ArtifactError(f"{path}: no such mlpackage")
    return _CoreMLPackage(path, compute_units)


def open_package(
    path: str | Path, *, backend: str = "auto", compute_units: str = "all"
) -> PackageRunner:
    """Load a saved package through the chosen backend, ready to run on many inputs."""
    from .mil import MILExecutor

    _check_compute_units(compute_units)
    used = resolve_backend(backend)
    path = Path(path)
    if used == "coreml":
        package = _load_coreml(path, compute_units)
        return PackageRunner(
            package.predict, "coreml", compute_units, describe_devices=package.compute_devices
        )
    notes = (
        []
        if compute_units == "all"
        else [f"compute_units={compute_units} ignored: the MIL executor runs on the CPU"]
    )
    return PackageRunner(MILExecutor.from_path(path).predict, "mil", compute_units, notes)


def run_mlpackage(
    path: str | Path,
    inputs: Mapping[str, Any],
    *,
    backend: str = "auto",
    compute_units: str = "all",
) -> BackendResult:
    """Run a saved package once (loads it on every call; see `open_package` for many runs)."""
    return open_package(path, backend=backend, compute_units=compute_units)(inputs)
