"""One way to run a saved .mlpackage: Core ML on macOS, the MIL reference executor elsewhere.

result = run_mlpackage(path, {"waveform": x}, backend="auto", compute_units="all")
result.outputs["log_probs"], result.backend  # "coreml" or "mil"
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError

BACKENDS = ("auto", "coreml", "mil")
COMPUTE_UNITS = ("all", "cpu_only", "cpu_and_gpu", "cpu_and_ne")


@dataclass
class BackendResult:
    outputs: dict[str, np.ndarray]
    backend: str  # the backend actually used: "coreml" or "mil"
    compute_units: str  # as requested; the MIL executor always runs on the CPU
    notes: list[str] = field(default_factory=list)


def resolve_backend(name: str) -> str:
    """'auto' -> 'coreml' on macOS, 'mil' elsewhere; explicit names are validated."""
    if name not in BACKENDS:
        raise DiarizeError(f"unknown backend {name!r} (choose from {', '.join(BACKENDS)})")
    if name == "auto":
        return "coreml" if platform.system() == "Darwin" else "mil"
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

    def __call__(self, inputs: Mapping[str, Any]) -> BackendResult:
        return BackendResult(
            self.predict(inputs), self.backend, self.compute_units, list(self.notes)
        )


def _load_coreml(path: Path, compute_units: str):
    if platform.system() != "Darwin":
        raise DiarizeError(
            "Core ML prediction needs macOS (this is "
            f"{platform.system() or 'an unknown OS'}); use --backend mil to run the reference executor"
        )
    import coremltools as ct

    units = {
        "all": ct.ComputeUnit.ALL,
        "cpu_only": ct.ComputeUnit.CPU_ONLY,
        "cpu_and_gpu": ct.ComputeUnit.CPU_AND_GPU,
        "cpu_and_ne": ct.ComputeUnit.CPU_AND_NE,
    }[compute_units]
    if not path.exists():
        raise ArtifactError(f"{path}: no such mlpackage")
    try:
        model = ct.models.MLModel(str(path), compute_units=units)
    except Exception as exc:  # coremltools raises bare Exceptions for unreadable packages
        raise ArtifactError(f"{path}: Core ML cannot load the package ({exc})") from exc

    def predict(inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        out = model.predict({k: np.asarray(v) for k, v in inputs.items()})
        return {k: np.asarray(v) for k, v in out.items()}

    return predict


def open_package(
    path: str | Path, *, backend: str = "auto", compute_units: str = "all"
) -> PackageRunner:
    """Load a saved package through the chosen backend, ready to run on many inputs."""
    from .mil import MILExecutor

    _check_compute_units(compute_units)
    used = resolve_backend(backend)
    path = Path(path)
    if used == "coreml":
        return PackageRunner(_load_coreml(path, compute_units), "coreml", compute_units)
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
