"""The packages of one converted chain, found in a models directory and loaded as timed runners.

`find_packages` picks a chain's packages (registry models whose `chains` name it, with a device
variant when asked for and present) and the files their specs write beside them;
`ChainModels.load` opens each once, through the validation backend, for every window and file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError


class TimedRunner:
    """The validation backend's runner for one package (loaded once, kept for every window),
    timed: the chain reports where its time goes."""

    def __init__(self, path: Path, backend: str) -> None:
        from coreml_diarize.validation.backends import open_package

        self.path = Path(path)
        self._runner = open_package(self.path, backend=backend)
        self.backend = self._runner.backend
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self._runner.predict(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        )
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return {k: np.asarray(v) for k, v in out.items()}


@dataclass(frozen=True)
class ChainPaths:
    """The packages of one chain, by spec key (segmentation, postprocessor, ...)."""

    paths: dict[str, Path]
    variant: str | None = None
    chain: str = "online"  # the registry chain they were found for

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]


def find_packages(
    models_dir: Path | str, variant: str | None = None, *, chain: str = "online"
) -> ChainPaths:
    """The packages of `chain` (the registry's models whose `chains` name it) in `models_dir`,
    and the files their specs write beside them (e.g. plda-parameters.json); `variant` (e.g.
    palettize8) picks `<stem>_<variant>.mlpackage` for the models that have device variants
    when present, else the plain one."""
    from coreml_diarize.models import registry

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ArtifactError(f"models directory not found: {models_dir}")
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for key, spec in registry().items():
        if chain not in spec.chains:
            continue
        plain = models_dir / f"{spec.filename}.mlpackage"
        chosen = plain
        if variant and spec.device_variants:
            compressed = models_dir / f"{spec.filename}_{variant}.mlpackage"
            if compressed.is_dir():
                chosen = compressed
        if not chosen.is_dir():
            missing.append(chosen.name)
        missing.extend(name for name in spec.sidecars if not (models_dir / name).is_file())
        paths[key] = chosen
    if not paths:
        raise ArtifactError(f"no model of the registry belongs to the '{chain}' chain")
    if missing:
        raise ArtifactError(f"{models_dir} lacks {', '.join(dict.fromkeys(missing))}")
    return ChainPaths(paths, variant, chain)


@dataclass
class ChainModels:
    """Loaded runners for a chain's packages (reuse one per package across windows and files).

    `runners` maps spec keys to callables `(**inputs) -> {output: array}` with `seconds` and
    `calls` counters (TimedRunner; tests may put stand-ins with the same I/O there)."""

    paths: ChainPaths
    backend: str
    runners: dict[str, Any]
    windows: int = 0  # segmentation windows run since the last reset_timers

    @classmethod
    def load(cls, paths: ChainPaths, backend: str = "auto") -> ChainModels:
        runners = {key: TimedRunner(path, backend) for key, path in paths.paths.items()}
        used = next(iter(runners.values())).backend
        return cls(paths, used, runners)

    def model_seconds(self) -> dict[str, float]:
        return {key: runner.seconds for key, runner in self.runners.items()}

    def reset_timers(self) -> None:
        self.windows = 0
        for runner in self.runners.values():
            runner.seconds, runner.calls = 0.0, 0
