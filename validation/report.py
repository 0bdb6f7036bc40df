"""Validate a saved .mlpackage against its PyTorch reference: every output, every input.

The package says which model it is, which weights it was built from and with which recipe
(its metadata); the reference is rebuilt from that provenance (or from `source`), the package
is executed through a backend (Core ML on macOS, the MIL reference executor elsewhere), and
every output is judged by `judge.judge` (the one judge, shared with the quantize report) with
the spec's tolerance for the recipe. A reference that barely depends on its input (degenerate
weights) fails instead of passing trivially.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from coreml_diarize.context import context_for_package
from coreml_diarize.models import get_spec
from coreml_diarize.record import PackageRecord
from coreml_diarize.specs import ModelSpec, Tolerance

from .compute_plan import PlacementReport
from .judge import Judgement, judge


@dataclass
class ValidationReport(Judgement):
    """The judgement of one saved package, with what it was judged as and where."""

    package: str
    model: str
    recipe: str
    backend: str
    compute_units: str
    trained: str
    source: str
    versions: dict[str, str]
    seconds: float
    # where it ran (validation/backends.py, ComputeDevices): the devices Core ML says it can
    # use ("cpu (MIL executor)" on the executor), whether this was really a Neural Engine
    # check, Core ML's per-op placement beside `inspect --ane`'s prediction (macOS 14.4+)
    available_devices: list[str] = field(default_factory=list)
    neural_engine_checked: bool = False
    placement: PlacementReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["summary"] = self.summary()
        return json.loads(
            json.dumps(d, default=json_default, allow_nan=True).replace("Infinity", "1e309")
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=json_default)

    def table(self) -> str:
        """A readable terminal table: one row per (input, output)."""
        return "\n".join(
            [
                f"{self.package}: {self.model} [{self.recipe}] via {self.backend}"
                + (f" ({self.compute_units})" if self.backend == "coreml" else "")
                + f", weights {self.source} (trained: {self.trained})",
                *self.device_lines(),
                *judgement_lines(self),
                "PASSED" if self.passed else "FAILED",
            ]
        )

    def device_lines(self) -> list[str]:
        """Where it ran: devices, whether the Neural Engine was checked, the placement."""
        if self.backend != "coreml":
            return [f"  note: {note}" for note in self.notes]
        lines = [
            f"  devices: {', '.join(self.available_devices) or 'unknown'}; Neural Engine "
            + ("checked" if self.neural_engine_checked else "NOT checked")
        ]
        if self.placement is not None:
            lines.append("  " + self.placement.line())
            lines += [
                f"    {d.output} ({d.op_type}): predicted {d.predicted}, Core ML {d.planned}"
                for d in self.placement.disagreements
            ]
        return lines + [f"  note: {note}" for note in self.notes]


def judgement_lines(judgement: Judgement, indent: str = "") -> list[str]:
    """The judgement as table rows, one per (input, output), then a line per failure."""
    lines = [
        f"{'input':14} {'output':16} {'max_abs':>10} {'prob_abs':>9} {'psnr':>7} {'cos_min':>8} {'argmax':>7} {'rel':>8}  ok"
    ]
    for case in judgement.cases:
        for o in case.outputs:
            lines.append(
                f"{case.input:14} {o.output:16} {o.max_abs:10.3g} {fmt(o.prob_max_abs, '9.3g')} "
                f"{fmt(o.psnr, '7.1f')} "
                f"{fmt(o.cosine_min, '8.5f')} {fmt(o.argmax_agreement_confident, '7.4f')} "
                f"{fmt(o.relative_to_spread, '8.2g')}  {'ok' if o.passed else 'FAIL'}"
            )
    lines += [f"  FAIL {failure}" for failure in judgement.all_failures()]
    return [indent + line for line in lines]


def fmt(value: float | None, spec: str) -> str:
    """`value` in a fixed-width column: '-' for none, 'inf' for an infinite one."""
    width = int(spec.split(".")[0])
    if value is None:
        return "-".rjust(width)
    if math.isinf(value):
        return "inf".rjust(width)
    return format(value, spec)


def json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


# --- comparison ------------------------------------------------------------------------------


def audio_cases(
    spec: ModelSpec, ctx, base: dict[str, np.ndarray], chunks: dict[str, np.ndarray]
) -> dict:
    """User audio as extra inputs: every audio-like input ("audio", "waveform") gets the chunk
    tiled to the shape the built-in case gives it, so it stays paired with that case's other
    inputs; a model whose only input is the audio gets it once, at the smallest size of a
    flexible axis (one window, not the default batch of 32 identical ones)."""
    shapes = {name: np.shape(value) for name, value in base.items()}
    if len(spec.inputs) == 1:
        (t,) = spec.inputs
        shape = list(ctx.geometry.resolve(t.shape))
        for axis, sizes in t.enumerated.items():
            shape[axis] = min(sizes)
        for axis, (lower, _) in t.flexible.items():
            shape[axis] = lower
        shapes[t.name] = tuple(shape)
    cases = {}
    for name, chunk in chunks.items():
        case = dict(base)
        for key in ("audio", "waveform"):
            if key in shapes:
                case[key] = np.broadcast_to(chunk, shapes[key]).astype(np.float32).copy()
        cases[name] = case
    return cases


@dataclass
class Evaluation:
    """One validation run: the report, and what it was computed from."""

    report: ValidationReport
    spec: ModelSpec
    record: PackageRecord
    tolerance_key: str  # which entry of the spec's tolerance tables judged it
    tolerances: dict[str, Tolerance]
    inputs: dict[str, dict[str, np.ndarray]]  # case -> input name -> array
    references: dict[str, dict[str, np.ndarray]]  # case -> output name -> array
    outputs: dict[str, dict[str, np.ndarray]]  # case -> output name -> array


def validate_package(path: Path, **options) -> ValidationReport:
    """Run the saved package on every validation input and judge every output (the options
    are `evaluate_package`'s)."""
    return evaluate_package(path, **options).report


def evaluate_package(
    path: Path,
    *,
    source: str | None = None,
    backend: str = "auto",
    compute_units: str = "all",
    audio: dict[str, np.ndarray] | None = None,
    tolerance_overrides: dict[str, float] | None = None,
    trust_checkpoint: bool = False,
    progress: Callable[[str], None] | None = None,
    ctx=None,
) -> Evaluation:
    """Run the saved package on every validation input and judge every output.

    `ctx`: the BuildContext the package was just built from (a build validates what it made
    without loading and calibrating the same weights again); by default it is rebuilt from
    the provenance recorded in the package."""
    from coreml_diarize.record import library_versions

    from .backends import open_package

    start = time.perf_counter()
    path = Path(path)
    spec, ctx, record = _context(path, source=source, trust_checkpoint=trust_checkpoint, ctx=ctx)
    runner = open_package(path, backend=backend, compute_units=compute_units)
    key, tolerances = judged_tolerances(
        spec, record, runner.backend, compute_units, tolerance_overrides
    )
    cases = spec.example_inputs(ctx)
    if audio:
        cases.update(audio_cases(spec, ctx, next(iter(cases.values())), audio))
    refs, outs = _run_cases(spec, ctx, runner, cases, progress)
    judgement = judge(spec, tolerances, refs, outs)
    devices = runner.compute_devices()
    report = ValidationReport(
        **vars(judgement),
        package=str(path),
        model=spec.key,
        recipe=record.variant,
        backend=runner.backend,
        compute_units=compute_units,
        trained=record.source.get("trained", "n/a"),
        source=record.source.get("location", record.source.get("kind", "none")),
        versions=library_versions(),
        seconds=time.perf_counter() - start,
        available_devices=devices.available,
        neural_engine_checked=devices.neural_engine_checked,
        placement=devices.placement,
        notes=[*runner.notes, *devices.notes],
    )
    return Evaluation(report, spec, record, key, tolerances, cases, refs, outs)


def _context(path: Path, *, source: str | None, trust_checkpoint: bool, ctx):
    """(spec, ctx, record): the given context, or one rebuilt from the package's record."""
    if ctx is None:
        return context_for_package(path, source=source, trust_checkpoint=trust_checkpoint)
    record = PackageRecord.from_package(path)
    return get_spec(record.model), ctx, record


def judged_tolerances(
    spec: ModelSpec,
    record: PackageRecord,
    backend: str,
    compute_units: str,
    overrides: dict[str, float] | None = None,
) -> tuple[str, dict[str, Tolerance]]:
    """The tolerance-table key and the tolerances that judge this package on this backend."""
    recipe = record.variant
    # the MIL executor computes in the program's own dtypes, whatever units were asked for
    units = compute_units if backend == "coreml" else "cpu_only"
    tolerances = dict(spec.tolerance_for(recipe, units, trained=record.trained is not False))
    if overrides:
        tolerances = {k: _override(t, overrides) for k, t in tolerances.items()}
    return spec.tolerance_key(recipe), tolerances


def _run_cases(spec: ModelSpec, ctx, runner, cases, progress):
    """The reference's and the package's outputs on every case: case -> output name -> value."""
    reference = spec.build_reference(ctx)
    refs, outs = {}, {}
    for i, (name, inputs) in enumerate(cases.items()):
        if progress:
            progress(f"[{i + 1}/{len(cases)}] {spec.key}: {name}")
        refs[name] = reference(inputs)
        outs[name] = runner(inputs).outputs
    return refs, outs


def _override(tol: Tolerance, overrides: dict[str, float]) -> Tolerance:
    from dataclasses import replace

    fields = {k: v for k, v in overrides.items() if getattr(tol, k, None) is not None}
    return replace(tol, **fields)
