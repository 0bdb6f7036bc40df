"""The one judge: a package's outputs against their references, per input and per output.

`judge` is the only place that turns tolerances into pass/fail. `validate` and the quantize
report both call it, so a package passes or fails the same way whichever command looks at it.

Rules (a `Tolerance` field that is unset is not checked):
- an output whose shape differs from the reference's, or that holds NaN or inf, fails;
- `min_cosine`: the smallest cosine over rows of the last axis;
- `min_argmax_agreement`: argmax agreement over the rows whose reference top-2 margin exceeds
  `argmax_margin` (decisive rows; near-ties are a coin toss for any precision);
- `max_abs`: the largest absolute error;
- `max_prob_abs`: for log-probability outputs, the largest |exp(got) - exp(ref)| (the error in
  probability space: near-impossible classes, where log-probabilities are ill-conditioned,
  weigh nothing, and every decision-relevant change still shows);
- `max_relative_to_spread`: mean absolute error / the reference's spread across inputs;
- `min_reference_spread`: the reference must move at least this much between inputs (else the
  weights are degenerate and every other check would pass trivially);
- every output the spec declares must be in every case's outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from coreml_diarize.specs import ModelSpec, Tolerance

from . import metrics

Arrays = Mapping[str, np.ndarray]


@dataclass
class OutputResult:
    output: str
    max_abs: float
    mean_abs: float
    psnr: float
    cosine_min: float | None = None
    cosine_mean: float | None = None
    argmax_agreement: float | None = None
    argmax_agreement_confident: float | None = None
    relative_to_spread: float | None = None
    prob_max_abs: float | None = None  # max |exp(got) - exp(ref)|, log-probability outputs
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class CaseResult:
    input: str
    outputs: list[OutputResult]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


@dataclass
class Judgement:
    """Per input x output results, the reference spread per output, and the failures that
    belong to no single output of one input (degenerate reference, missing outputs)."""

    reference_spread: dict[str, float]
    cases: list[CaseResult]
    failures: list[str]

    @property
    def passed(self) -> bool:
        return not self.failures and all(c.passed for c in self.cases)

    def all_failures(self) -> list[str]:
        """Every failure, the judgement's own first, then each case's outputs' in order."""
        return self.failures + [f for c in self.cases for o in c.outputs for f in o.failures]

    def summary(self) -> dict[str, dict[str, float]]:
        """Worst value of each metric per output, over all inputs."""
        out: dict[str, dict] = {}
        for case in self.cases:
            for o in case.outputs:
                s = out.setdefault(o.output, {})
                s["max_abs"] = max(s.get("max_abs", 0.0), o.max_abs)
                s["psnr_min"] = min(s.get("psnr_min", math.inf), o.psnr)
                for key in ("cosine_min", "argmax_agreement", "argmax_agreement_confident"):
                    value = getattr(o, key)
                    if value is not None:
                        s[key] = min(s.get(key, math.inf), value)
                if o.prob_max_abs is not None:
                    s["prob_max_abs"] = max(s.get("prob_max_abs", 0.0), o.prob_max_abs)
                if o.relative_to_spread is not None:
                    s["relative_to_spread"] = max(
                        s.get("relative_to_spread", 0.0), o.relative_to_spread
                    )
        return out


def judge(
    spec: ModelSpec,
    tolerances: Mapping[str, Tolerance],
    references: Mapping[str, Arrays],
    outputs: Mapping[str, Arrays],
) -> Judgement:
    """Judge every case (input name) x every output the spec declares.

    `references` and `outputs`: case -> output name -> array (the same cases in both)."""
    spreads, failures = reference_spreads(spec, tolerances, references)
    cases = []
    for name in references:
        missing = [t.name for t in spec.outputs if t.name not in outputs[name]]
        if missing:
            failures.append(f"{name}: package has no output(s) {', '.join(missing)}")
            continue
        results = [
            judge_output(
                t.name,
                references[name][t.name],
                outputs[name][t.name],
                tolerances[t.name],
                spreads[t.name],
            )
            for t in spec.outputs
        ]
        cases.append(CaseResult(name, results))
    return Judgement(reference_spread=spreads, cases=cases, failures=failures)


def reference_spreads(
    spec: ModelSpec, tolerances: Mapping[str, Tolerance], references: Mapping[str, Arrays]
) -> tuple[dict[str, float], list[str]]:
    """Each output's spread across the inputs, and a failure per output whose reference barely
    depends on its input."""
    spreads, failures = {}, []
    for t in spec.outputs:
        spreads[t.name] = metrics.spread([refs[t.name] for refs in references.values()])
        floor = tolerances[t.name].min_reference_spread
        if floor is not None and not spreads[t.name] >= floor:
            failures.append(
                f"{t.name}: the reference barely depends on its input (spread {spreads[t.name]:.3g} < {floor}):"
                " degenerate weights would make this check meaningless"
            )
    return spreads, failures


def judge_output(
    name: str,
    ref: np.ndarray,
    got: np.ndarray,
    tol: Tolerance,
    spread: float,
) -> OutputResult:
    """One output on one input against its tolerance (`spread`: the reference's, across
    inputs)."""
    ref = np.asarray(ref, dtype=np.float32)
    got = np.asarray(got, dtype=np.float32)
    if ref.shape != got.shape:
        return _unusable(name, f"{name}: shape {got.shape} != {ref.shape}")
    if not np.all(np.isfinite(got)):
        return _unusable(name, f"{name}: NaN or inf in output")
    result = OutputResult(
        name, metrics.max_abs(ref, got), metrics.mean_abs(ref, got), metrics.psnr(ref, got)
    )
    if tol.min_cosine is not None:
        _check_cosine(result, ref, got, tol)
    if tol.min_argmax_agreement is not None:
        _check_argmax(result, ref, got, tol)
    if tol.max_abs is not None:
        _check_max_abs(result, tol)
    if tol.max_prob_abs is not None:
        _check_prob_abs(result, ref, got, tol)
    if spread and math.isfinite(spread) and spread > 0:
        _check_relative_to_spread(result, tol, spread)
    return result


def _unusable(name: str, failure: str) -> OutputResult:
    return OutputResult(name, math.inf, math.inf, -math.inf, failures=[failure])


def _check_cosine(result: OutputResult, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> None:
    cos = metrics.row_cosines(ref, got)
    result.cosine_min, result.cosine_mean = float(cos.min()), float(cos.mean())
    if result.cosine_min < tol.min_cosine:
        result.failures.append(
            f"{result.output}: cosine {result.cosine_min:.6f} < {tol.min_cosine}"
        )


def _check_argmax(result: OutputResult, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> None:
    result.argmax_agreement = metrics.argmax_agreement(ref, got)
    result.argmax_agreement_confident = metrics.argmax_agreement(
        ref, got, min_margin=tol.argmax_margin
    )
    if result.argmax_agreement_confident < tol.min_argmax_agreement:
        result.failures.append(
            f"{result.output}: argmax agreement {result.argmax_agreement_confident:.4f} < {tol.min_argmax_agreement}"
        )


def _check_max_abs(result: OutputResult, tol: Tolerance) -> None:
    if result.max_abs > tol.max_abs:
        result.failures.append(
            f"{result.output}: max abs error {result.max_abs:.3g} > {tol.max_abs:.3g}"
        )


def _check_prob_abs(result: OutputResult, ref: np.ndarray, got: np.ndarray, tol: Tolerance) -> None:
    """Log-probability outputs, compared as probabilities (in float64: exp of float32 values
    near 0 loses nothing there)."""
    diff = np.exp(ref.astype(np.float64)) - np.exp(got.astype(np.float64))
    result.prob_max_abs = float(np.max(np.abs(diff)))
    if result.prob_max_abs > tol.max_prob_abs:
        result.failures.append(
            f"{result.output}: max probability error {result.prob_max_abs:.3g} > {tol.max_prob_abs:.3g}"
        )


def _check_relative_to_spread(result: OutputResult, tol: Tolerance, spread: float) -> None:
    result.relative_to_spread = result.mean_abs / spread
    limit = tol.max_relative_to_spread
    if limit is not None and result.relative_to_spread > limit:
        result.failures.append(
            f"{result.output}: error/spread {result.relative_to_spread:.3g} > {limit}"
        )
