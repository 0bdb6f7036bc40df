"""How much a quantized SAVED package lost: the validation judgement, plus what it cost and saved.

The package is validated exactly as `validate` does it (`report.evaluate_package`: executed as
written to disk, Core ML on macOS, the MIL reference executor elsewhere, on the spec's
deterministic validation inputs, every output judged per input by `judge.judge` with the
spec's tolerances for the recipe). Its pass/fail IS that judgement.

On top, for information only (nothing here is judged): the sizes before and after, and each
output's metrics pooled over every input, against the PyTorch reference ("torch") and, when
the unquantized package is given, against it ("float"), each also stated relative to how much
the reference itself moves between inputs (its spread).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.record import PackageRecord
from coreml_diarize.specs import Tolerance

from . import metrics
from .report import Evaluation, ValidationReport, evaluate_package, fmt, judgement_lines


@dataclass(frozen=True)
class OutputAccuracy:
    """One output of the package against one reference, pooled over every validation input
    (information: the judgement is per input, in `QuantizeReport.validation`)."""

    output: str
    against: str  # "torch" (fp32 PyTorch reference) or "float" (the unquantized package)
    max_abs: float
    mean_abs: float
    spread: float  # mean |difference| between the reference's outputs for different inputs
    relative_to_spread: float  # mean_abs / spread
    argmax_agreement: float | None = None  # over all frames
    argmax_agreement_confident: float | None = None  # frames with reference margin > the spec's
    confident_share: float | None = None  # share of frames counted in the line above
    argmax_spread: float | None = None  # share of frames whose reference argmax differs by input
    argmax_relative: float | None = None  # (1 - argmax_agreement) / argmax_spread
    cosine_min: float | None = None
    cosine_mean: float | None = None
    cosine_spread: float | None = None  # mean (1 - cosine) between references of different inputs
    cosine_relative: float | None = None  # (1 - cosine_mean) / cosine_spread
    finite: bool = True  # every value finite and every shape the reference's


@dataclass(frozen=True)
class QuantizeReport:
    package: str
    model: str
    recipe_name: str  # e.g. palettize8
    recipe: dict[str, Any]
    tolerance_family: str
    backend: str
    weights: str  # human statement of where the weights came from
    trained: bool | None
    size_before: int | None
    size_after: int
    inputs: tuple[str, ...]
    validation: ValidationReport  # the judgement: pass/fail is this
    accuracy: tuple[OutputAccuracy, ...]  # pooled over inputs, for information
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ratio(self) -> float | None:
        return self.size_before / self.size_after if self.size_before else None

    @property
    def passed(self) -> bool:
        return self.validation.passed

    @property
    def failures(self) -> list[str]:
        return self.validation.all_failures()

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "validation"}
        d["validation"] = self.validation.to_dict()
        d["ratio"] = self.ratio
        d["passed"] = self.passed
        d["failures"] = self.failures
        return _finite_json(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def format_table(self) -> str:
        size = f"{self.size_after / 1e6:.2f} MB"
        if self.size_before:
            size = f"{self.size_before / 1e6:.2f} MB -> {size} ({self.ratio:.2f}x smaller)"
        lines = [
            f"{self.package}: {self.model} [{self.recipe_name}] via {self.backend}, "
            f"tolerances '{self.tolerance_family}'",
            f"  weights: {self.weights}",
            f"  size: {size}",
            "  judged per input against torch:",
            *judgement_lines(self.validation, indent="  "),
            "  pooled over all inputs (information, not judged):",
            f"  {'output':12} {'vs':6} {'max_abs':>9} {'mean_abs':>9} {'spread':>8} {'rel':>7}"
            f" {'argmax':>7} {'confid':>7} {'am_rel':>7} {'cos_min':>8} {'cos_mean':>8} {'cos_rel':>7}",
        ]
        for a in self.accuracy:
            lines.append(
                f"  {a.output:12} {a.against:6} {fmt(a.max_abs, '9.4g')} {fmt(a.mean_abs, '9.3g')}"
                f" {fmt(a.spread, '8.3g')} {fmt(a.relative_to_spread, '7.3f')}"
                f" {fmt(a.argmax_agreement, '7.4f')} {fmt(a.argmax_agreement_confident, '7.4f')}"
                f" {fmt(a.argmax_relative, '7.3f')} {fmt(a.cosine_min, '8.5f')}"
                f" {fmt(a.cosine_mean, '8.5f')} {fmt(a.cosine_relative, '7.3f')}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _finite_json(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so every parser reads the report."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _finite_json(value.item())
    if isinstance(value, Path):
        return str(value)
    return value


# --- pooled information metrics ----------------------------------------------------------------


def pooled_accuracy(
    output: str, against: str, refs: list[np.ndarray], outs: list[np.ndarray], tol: Tolerance
) -> OutputAccuracy:
    """Every input's (reference, package) pair of one output pooled into one set of metrics;
    the argmax metrics where the tolerance speaks of argmax, the cosine ones where of cosine."""
    usable = all(
        np.shape(r) == np.shape(o) and bool(np.all(np.isfinite(o)))
        for r, o in zip(refs, outs, strict=True)
    )
    spread = metrics.spread(refs)
    if not usable:
        return OutputAccuracy(output, against, math.inf, math.inf, spread, math.inf, finite=False)
    r, g = metrics.pooled(refs), metrics.pooled(outs)
    mean_abs = metrics.mean_abs(r, g)
    fields: dict[str, Any] = {}
    if tol.min_argmax_agreement is not None:
        fields["argmax_agreement"] = metrics.argmax_agreement(r, g)
        fields["argmax_agreement_confident"] = metrics.argmax_agreement(
            r, g, min_margin=tol.argmax_margin
        )
        fields["confident_share"] = float(metrics.decisive_rows(r, tol.argmax_margin).mean())
        fields["argmax_spread"] = metrics.spread(refs, metrics.argmax_disagreement)
        fields["argmax_relative"] = metrics.relative(
            1.0 - fields["argmax_agreement"], fields["argmax_spread"]
        )
    if tol.min_cosine is not None:
        cos = metrics.row_cosines(r, g)
        fields["cosine_min"], fields["cosine_mean"] = float(cos.min()), float(cos.mean())
        fields["cosine_spread"] = metrics.spread(refs, metrics.cosine_distance)
        fields["cosine_relative"] = metrics.relative(
            1.0 - fields["cosine_mean"], fields["cosine_spread"]
        )
    return OutputAccuracy(
        output=output,
        against=against,
        max_abs=metrics.max_abs(r, g),
        mean_abs=mean_abs,
        spread=spread,
        relative_to_spread=metrics.relative(mean_abs, spread),
        **fields,
    )


def _accuracy_rows(
    evaluation: Evaluation, floats: Mapping[str, Mapping[str, np.ndarray]] | None
) -> tuple[OutputAccuracy, ...]:
    """Per output: pooled against torch, then (with the unquantized package's outputs)
    pooled against the float package."""
    cases, outs = list(evaluation.inputs), evaluation.outputs
    rows = []
    for t in evaluation.spec.outputs:
        if any(t.name not in outs[c] for c in cases):
            continue  # the judgement fails the package for it
        got = [outs[c][t.name] for c in cases]
        tol = evaluation.tolerances[t.name]
        refs = [evaluation.references[c][t.name] for c in cases]
        rows.append(pooled_accuracy(t.name, "torch", refs, got, tol))
        if floats is not None:
            base = [floats[c][t.name] for c in cases]
            rows.append(pooled_accuracy(t.name, "float", base, got, tol))
    return tuple(rows)


# --- the report ------------------------------------------------------------------------------


def _weights_statement(record: PackageRecord) -> tuple[str, bool | None]:
    where = record.source.get("location") or record.source.get("kind", "unknown")
    if record.trained is False:
        calibration = record.source.get("calibration")
        how = f"calibrated: {calibration}" if calibration else "calibrated"
        return (
            f"seeded random weights ({where}, {how}), NOT trained: the numbers measure the "
            "quantization error on this network, not diarization quality",
            False,
        )
    if record.trained:
        return f"trained weights ({where})", True
    return f"no weights ({where})", None


def quantize_report(
    package: Path,
    *,
    source_package: Path | None = None,
    ctx=None,
    backend: str = "auto",
    compute_units: str = "all",
) -> QuantizeReport:
    """Validate the quantized `package` (its pass/fail) and add its sizes and pooled metrics
    against the fp32 PyTorch reference and, if given, the unquantized `source_package`.

    `ctx` (a BuildContext) skips rebuilding the reference from the package's provenance.
    """
    from coreml_diarize.mlpackage import package_size

    start = time.perf_counter()
    package = Path(package)
    evaluation = evaluate_package(package, ctx=ctx, backend=backend, compute_units=compute_units)
    validation = evaluation.report
    floats = None
    if source_package is not None:
        floats = _run_all(
            Path(source_package), evaluation.inputs, validation.backend, compute_units
        )
    recipe = dict(evaluation.record.recipe)
    size_before = (
        package_size(source_package)
        if source_package is not None
        else recipe.get("source", {}).get("size_bytes")
    )
    weights, trained = _weights_statement(evaluation.record)
    return QuantizeReport(
        package=package.name,
        model=validation.model,
        recipe_name=validation.recipe,
        recipe=recipe,
        tolerance_family=evaluation.tolerance_key,
        backend=validation.backend,
        weights=weights,
        trained=trained,
        size_before=size_before,
        size_after=package_size(package),
        inputs=tuple(evaluation.inputs),
        validation=validation,
        accuracy=_accuracy_rows(evaluation, floats),
        seconds=time.perf_counter() - start,
        notes=_notes(validation.backend),
    )


def _notes(backend: str) -> tuple[str, ...]:
    if backend != "mil":
        return ()
    return (
        "executed by the MIL reference executor (every op rounded to its declared "
        "dtype); Core ML on a device may round differently",
    )


def _run_all(
    package: Path, cases: Mapping[str, Mapping[str, np.ndarray]], backend: str, compute_units: str
) -> dict:
    """Every case through one backend, the package loaded once (the MIL executor's
    constructor decompresses the weights, which dominates a palettized package's run)."""
    from .backends import open_package

    runner = open_package(package, backend=backend, compute_units=compute_units)
    return {name: runner(inputs).outputs for name, inputs in cases.items()}
