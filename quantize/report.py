"""How much a quantized SAVED package lost: its outputs against the fp32 PyTorch reference.

The package is executed as written to disk (`validation.backends.run_mlpackage`: Core ML on
macOS, the MIL reference executor elsewhere) on the spec's deterministic validation inputs
(silence, noise, sweep, clipping, synthetic and real speech); the reference is the spec's own
PyTorch reference, rebuilt from the package's recorded provenance unless a context is given.

Every error is also stated relative to how much the reference itself moves between different
inputs (its spread): a model whose output barely depends on its input would otherwise look
accurate under any compression. Pass/fail uses the spec's tolerances for the recipe family.
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError
from coreml_diarize.specs import Tolerance


@dataclass(frozen=True)
class Check:
    what: str
    value: float
    limit: float
    op: str  # "<=" or ">="

    @property
    def passed(self) -> bool:
        if math.isnan(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def __str__(self) -> str:
        return f"{'ok  ' if self.passed else 'FAIL'} {self.what} {self.value:.4g} {self.op} {self.limit:g}"


@dataclass(frozen=True)
class OutputAccuracy:
    """One output of the package against one reference, pooled over every validation input."""

    output: str
    against: str  # "torch" (fp32 PyTorch reference) or "float" (the unquantized package)
    max_abs: float
    mean_abs: float
    spread: float  # mean |difference| between the reference's outputs for different inputs
    relative_to_spread: float  # mean_abs / spread
    argmax_agreement: float | None = None  # over all frames
    argmax_agreement_confident: float | None = None  # frames with reference margin > 1e-3
    confident_share: float | None = None  # share of frames counted in the line above
    argmax_spread: float | None = None  # share of frames whose reference argmax differs by input
    argmax_relative: float | None = None  # (1 - argmax_agreement) / argmax_spread
    cosine_min: float | None = None
    cosine_mean: float | None = None
    cosine_spread: float | None = None  # mean (1 - cosine) between references of different inputs
    cosine_relative: float | None = None  # (1 - cosine_mean) / cosine_spread
    finite: bool = True


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
    accuracy: tuple[OutputAccuracy, ...]
    checks: tuple[Check, ...]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ratio(self) -> float | None:
        return self.size_before / self.size_after if self.size_before else None

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [str(c) for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["checks"] = [{**asdict(c), "passed": c.passed} for c in self.checks]
        d["ratio"] = self.ratio
        d["passed"] = self.passed
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
            f"  inputs: {', '.join(self.inputs)}",
            f"  {'output':12} {'vs':6} {'max_abs':>9} {'mean_abs':>9} {'spread':>8} {'rel':>7}"
            f" {'argmax':>7} {'confid':>7} {'am_rel':>7} {'cos_min':>8} {'cos_mean':>8} {'cos_rel':>7}",
        ]
        for a in self.accuracy:
            lines.append(
                f"  {a.output:12} {a.against:6} {_f(a.max_abs, '9.4g')} {_f(a.mean_abs, '9.3g')}"
                f" {_f(a.spread, '8.3g')} {_f(a.relative_to_spread, '7.3f')}"
                f" {_f(a.argmax_agreement, '7.4f')} {_f(a.argmax_agreement_confident, '7.4f')}"
                f" {_f(a.argmax_relative, '7.3f')} {_f(a.cosine_min, '8.5f')}"
                f" {_f(a.cosine_mean, '8.5f')} {_f(a.cosine_relative, '7.3f')}"
            )
        lines += [f"  {c}" for c in self.checks]
        lines += [f"  note: {n}" for n in self.notes]
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _f(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    if value is None:
        return "-".rjust(width)
    if not math.isfinite(value):
        return str(value).rjust(width)
    return format(value, spec)


def _finite_json(value: Any) -> Any:
    """JSON has no inf/nan: write them as strings so every parser reads the report."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


# --- metrics ---------------------------------------------------------------------------------


def _pairs(items: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    return list(itertools.combinations(items, 2))


def _rows(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1, np.shape(x)[-1])


def compare(
    output: str,
    against: str,
    refs: list[np.ndarray],
    outs: list[np.ndarray],
    tol: Tolerance,
) -> OutputAccuracy:
    """Pool every input's (reference, package) pair of one output into one set of metrics."""
    from coreml_diarize.validation import metrics

    finite = all(bool(np.all(np.isfinite(o))) for o in outs)
    diffs = [
        np.abs(np.asarray(r, np.float64) - np.asarray(o, np.float64))
        for r, o in zip(refs, outs, strict=True)
    ]
    max_abs = float(max(d.max() for d in diffs)) if finite else math.inf
    mean_abs = float(np.mean(np.concatenate([d.ravel() for d in diffs]))) if finite else math.inf
    spread = metrics.spread(refs)
    fields: dict[str, Any] = {}
    if tol.min_argmax_agreement is not None:
        r = np.concatenate([_rows(x) for x in refs])
        g = np.concatenate([_rows(x) for x in outs])
        top2 = np.sort(r, axis=1)[:, -2:]
        confident = (top2[:, 1] - top2[:, 0]) > tol.argmax_margin
        agree = r.argmax(1) == g.argmax(1)
        moves = [float(np.mean(_rows(a).argmax(1) != _rows(b).argmax(1))) for a, b in _pairs(refs)]
        fields["argmax_agreement"] = float(agree.mean())
        fields["argmax_agreement_confident"] = (
            float(agree[confident].mean()) if confident.any() else 1.0
        )
        fields["confident_share"] = float(confident.mean())
        fields["argmax_spread"] = float(np.mean(moves)) if moves else math.nan
        fields["argmax_relative"] = _ratio(
            1.0 - fields["argmax_agreement"], fields["argmax_spread"]
        )
    if tol.min_cosine is not None:
        cos = np.concatenate([metrics.row_cosines(r, o) for r, o in zip(refs, outs, strict=True)])
        between = [float(np.mean(1.0 - metrics.row_cosines(a, b))) for a, b in _pairs(refs)]
        fields["cosine_min"] = float(cos.min())
        fields["cosine_mean"] = float(cos.mean())
        fields["cosine_spread"] = float(np.mean(between)) if between else math.nan
        fields["cosine_relative"] = _ratio(1.0 - fields["cosine_mean"], fields["cosine_spread"])
    return OutputAccuracy(
        output=output,
        against=against,
        max_abs=max_abs,
        mean_abs=mean_abs,
        spread=spread,
        relative_to_spread=_ratio(mean_abs, spread),
        finite=finite,
        **fields,
    )


def _ratio(error: float, spread: float) -> float:
    if math.isnan(spread):
        return math.nan
    if spread <= 0:
        return 0.0 if error == 0 else math.inf
    return error / spread


def checks_for(acc: OutputAccuracy, tol: Tolerance) -> list[Check]:
    """The spec's tolerance for this output, as explicit checks."""
    name = acc.output
    out = [Check(f"{name}: all values finite", float(acc.finite), 1.0, ">=")]
    if tol.min_reference_spread is not None:
        # a reference that barely moves would make every other check pass trivially
        out.append(Check(f"{name}: reference spread", acc.spread, tol.min_reference_spread, ">="))
    if tol.max_abs is not None:
        out.append(Check(f"{name}: max abs error", acc.max_abs, tol.max_abs, "<="))
    if tol.min_argmax_agreement is not None and acc.argmax_agreement_confident is not None:
        out.append(
            Check(
                f"{name}: argmax agreement (confident frames)",
                acc.argmax_agreement_confident,
                tol.min_argmax_agreement,
                ">=",
            )
        )
    if tol.min_cosine is not None and acc.cosine_min is not None:
        out.append(Check(f"{name}: min cosine", acc.cosine_min, tol.min_cosine, ">="))
    if tol.max_relative_to_spread is not None:
        out.append(
            Check(
                f"{name}: error / spread", acc.relative_to_spread, tol.max_relative_to_spread, "<="
            )
        )
    return out


# --- the report ------------------------------------------------------------------------------


def _weights_statement(meta: Mapping[str, str]) -> tuple[str, bool | None]:
    trained = meta.get("source.trained")
    where = meta.get("source.location") or meta.get("source.kind", "unknown")
    if trained == "false":
        calibration = meta.get("source.calibration")
        how = f"calibrated: {calibration}" if calibration else "calibrated"
        return (
            f"seeded random weights ({where}, {how}), NOT trained: the numbers measure the "
            "quantization error on this network, not diarization quality",
            False,
        )
    if trained == "true":
        return f"trained weights ({where})", True
    return f"no weights ({where})", None


def quantize_report(
    package: Path,
    *,
    source_package: Path | None = None,
    ctx=None,
    backend: str = "auto",
) -> QuantizeReport:
    """Score the quantized `package` against the fp32 PyTorch reference (and, if given, against
    the unquantized `source_package`, for information) on the spec's validation inputs.

    `ctx` (a BuildContext) skips rebuilding the reference from the package's provenance.
    """
    from coreml_diarize.converters.metadata import read_metadata
    from coreml_diarize.mlpackage import load_mlmodel, package_size
    from coreml_diarize.specs import get_spec
    from coreml_diarize.validation.backends import resolve_backend
    from coreml_diarize.validation.report import context_for_package, recipe_of

    start = time.perf_counter()
    package = Path(package)
    meta = read_metadata(dict(load_mlmodel(package).user_defined_metadata))
    if "model" not in meta:
        raise ArtifactError(f"{package} was not built by coreml-diarize (no model metadata)")
    if ctx is None:
        spec, ctx, _ = context_for_package(package)
    else:
        spec = get_spec(meta["model"])
    recipe_name = recipe_of(meta)
    trained = meta.get("source.trained", "true") != "false"
    tolerances = spec.tolerance_for(recipe_name, trained=trained)
    recipe = _json_or_empty(meta.get("recipe", "{}"))
    used = resolve_backend(backend)

    reference = spec.build_reference(ctx)
    cases = spec.example_inputs(ctx)
    refs = {name: reference(inputs) for name, inputs in cases.items()}
    outs = _run_all(package, cases, used)
    floats = _run_all(Path(source_package), cases, used) if source_package is not None else None

    accuracy: list[OutputAccuracy] = []
    checks: list[Check] = []
    for t in spec.outputs:
        tol = tolerances[t.name]
        ref_list = [refs[c][t.name] for c in cases]
        acc = compare(t.name, "torch", ref_list, [outs[c][t.name] for c in cases], tol)
        accuracy.append(acc)
        checks += checks_for(acc, tol)
        if floats is not None:
            accuracy.append(
                compare(
                    t.name,
                    "float",
                    [floats[c][t.name] for c in cases],
                    [outs[c][t.name] for c in cases],
                    tol,
                )
            )
    size_before = (
        package_size(source_package)
        if source_package is not None
        else recipe.get("source", {}).get("size_bytes")
    )
    weights, trained = _weights_statement(meta)
    return QuantizeReport(
        package=package.name,
        model=spec.key,
        recipe_name=recipe_name,
        recipe=recipe,
        tolerance_family=spec.tolerance_key(recipe_name),
        backend=used,
        weights=weights,
        trained=trained,
        size_before=size_before,
        size_after=package_size(package),
        inputs=tuple(cases),
        accuracy=tuple(accuracy),
        checks=tuple(checks),
        seconds=time.perf_counter() - start,
        notes=(
            (
                "executed by the MIL reference executor (every op rounded to its declared "
                "dtype); Core ML on a device may round differently",
            )
            if used == "mil"
            else ()
        ),
    )


def _run_all(package: Path, cases: Mapping[str, Mapping[str, np.ndarray]], backend: str) -> dict:
    """Every case through one backend; the MIL executor is built once per package (its
    constructor decompresses the weights, which dominates a palettized package's run)."""
    from coreml_diarize.validation.backends import run_mlpackage

    if backend == "mil":
        from coreml_diarize.validation.mil import MILExecutor

        executor = MILExecutor.from_path(package)
        return {name: executor.predict(inputs) for name, inputs in cases.items()}
    return {
        name: run_mlpackage(package, inputs, backend=backend).outputs
        for name, inputs in cases.items()
    }


def _json_or_empty(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
