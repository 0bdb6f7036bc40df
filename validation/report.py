"""Validate a saved .mlpackage against its PyTorch reference: every output, every input.

The package says which model it is, which weights it was built from and with which recipe
(its metadata); the reference is rebuilt from that provenance (or from `source`), the package
is executed through a backend (Core ML on macOS, the MIL reference executor elsewhere), and
every output is compared with the spec's tolerance for the recipe. A reference that barely
depends on its input (degenerate weights) fails instead of passing trivially.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.specs import ModelSpec, Options, Tolerance, get_spec

from . import metrics


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
    fp32_floor: float | None = None  # |torch fp32 - torch fp64| on this input, when measured
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
class ValidationReport:
    package: str
    model: str
    recipe: str
    backend: str
    compute_units: str
    trained: str
    source: str
    versions: dict[str, str]
    reference_spread: dict[str, float]
    cases: list[CaseResult]
    failures: list[str]
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.failures and all(c.passed for c in self.cases)

    def summary(self) -> dict:
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
                if o.relative_to_spread is not None:
                    s["relative_to_spread"] = max(
                        s.get("relative_to_spread", 0.0), o.relative_to_spread
                    )
        return out

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        d["summary"] = self.summary()
        return json.loads(
            json.dumps(d, default=_json_default, allow_nan=True).replace("Infinity", "1e309")
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=_json_default)

    def table(self) -> str:
        """A readable terminal table: one row per (input, output)."""
        head = f"{'input':14} {'output':16} {'max_abs':>10} {'psnr':>7} {'cos_min':>8} {'argmax':>7} {'rel':>8}  ok"
        lines = [
            f"{self.package}: {self.model} [{self.recipe}] via {self.backend}"
            + (f" ({self.compute_units})" if self.backend == "coreml" else "")
            + f", weights {self.source} (trained: {self.trained})",
            head,
        ]
        for case in self.cases:
            for o in case.outputs:
                lines.append(
                    f"{case.input:14} {o.output:16} {o.max_abs:10.3g} {_fmt(o.psnr, '7.1f')} "
                    f"{_fmt(o.cosine_min, '8.5f')} {_fmt(o.argmax_agreement_confident, '7.4f')} "
                    f"{_fmt(o.relative_to_spread, '8.2g')}  {'ok' if o.passed else 'FAIL'}"
                )
        for failure in self.failures + [
            f for c in self.cases for o in c.outputs for f in o.failures
        ]:
            lines.append(f"  FAIL {failure}")
        lines.append("PASSED" if self.passed else "FAILED")
        return "\n".join(lines)


def _fmt(value: float | None, spec: str) -> str:
    width = int(spec.split(".")[0])
    if value is None:
        return "-".rjust(width)
    if math.isinf(value):
        return "inf".rjust(width)
    return format(value, spec)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(type(value))


# --- provenance -> context -------------------------------------------------------------------


def package_metadata(path: Path) -> dict[str, str]:
    from coreml_diarize.converters.metadata import read_metadata
    from coreml_diarize.mlpackage import load_mlmodel

    return read_metadata(dict(load_mlmodel(path).user_defined_metadata))


def source_from_metadata(meta: dict[str, str]) -> str | None:
    """The `--source` string that rebuilds the package's weights, from its provenance keys."""
    kind = meta.get("source.kind")
    location = meta.get("source.location", "")
    if kind == "random":
        return location.replace("random-init", "random")
    if kind == "local":
        return location
    if kind == "hf":
        revision = meta.get("source.revision")
        return f"hf:{location}" + (f"@{revision}" if revision else "")
    return None


def recipe_of(meta: dict[str, str]) -> str:
    compression = meta.get("compression", "none")
    return meta.get("precision", "fp32") if compression in ("", "none") else compression


def options_from_metadata(meta: dict[str, str]) -> Options:
    thresholds = json.loads(meta.get("thresholds", "{}"))
    geometry = json.loads(meta.get("geometry", "{}"))
    known = {k: v for k, v in thresholds.items() if k in Options.__dataclass_fields__}
    return Options(
        precision=meta.get("precision", "fp32"),
        minimum_deployment_target=meta.get("minimum_deployment_target", "iOS17"),
        embedding_batch=int(geometry.get("embedding_batch", 3)),
        **known,
    )


def context_for_package(path: Path, *, source: str | None = None, trust_checkpoint: bool = False):
    """(spec, ctx, metadata) rebuilt from the package's own record, or `source` if given."""
    from coreml_diarize.build import make_context

    meta = package_metadata(path)
    if "model" not in meta:
        raise ArtifactError(
            f"{path} was not built by coreml-diarize (no coreml_diarize.model metadata)"
        )
    spec = get_spec(meta["model"])
    chosen = source or source_from_metadata(meta) or "random"
    ctx = make_context(
        spec, source=chosen, options=options_from_metadata(meta), trust_checkpoint=trust_checkpoint
    )
    recorded = meta.get("source.sha256", "")
    loaded = ctx.weights.provenance.sha256 if ctx.weights is not None else None
    if source is None and loaded and recorded and loaded != recorded:
        raise DiarizeError(
            f"weights at {chosen} differ from those {path.name} was built from (SHA-256 mismatch)"
        )
    return spec, ctx, meta


# --- comparison ------------------------------------------------------------------------------


def audio_cases(
    spec: ModelSpec, ctx, base: dict[str, np.ndarray], chunks: dict[str, np.ndarray]
) -> dict:
    """User audio as extra inputs: every audio-like input ("audio", "waveform") gets the chunk
    (tiled to its shape), the other inputs keep the values of a built-in case."""
    shapes = spec.input_shapes(ctx.geometry)
    cases = {}
    for name, chunk in chunks.items():
        case = dict(base)
        for key in ("audio", "waveform"):
            if key in shapes:
                case[key] = np.broadcast_to(chunk, shapes[key]).astype(np.float32).copy()
        cases[name] = case
    return cases


def compare_output(
    name: str,
    ref: np.ndarray,
    got: np.ndarray,
    tol: Tolerance,
    spread: float,
    fp32_floor: float | None = None,
) -> OutputResult:
    ref = np.asarray(ref, dtype=np.float32)
    got = np.asarray(got, dtype=np.float32)
    if ref.shape != got.shape:
        return OutputResult(
            name,
            math.inf,
            math.inf,
            -math.inf,
            failures=[f"{name}: shape {got.shape} != {ref.shape}"],
        )
    if not np.all(np.isfinite(got)):
        return OutputResult(
            name, math.inf, math.inf, -math.inf, failures=[f"{name}: NaN or inf in output"]
        )
    result = OutputResult(
        name, metrics.max_abs(ref, got), metrics.mean_abs(ref, got), metrics.psnr(ref, got)
    )
    if tol.min_cosine is not None:
        cos = metrics.row_cosines(ref, got)
        result.cosine_min, result.cosine_mean = float(cos.min()), float(cos.mean())
        if result.cosine_min < tol.min_cosine:
            result.failures.append(f"{name}: cosine {result.cosine_min:.6f} < {tol.min_cosine}")
    if tol.min_argmax_agreement is not None:
        result.argmax_agreement = metrics.argmax_agreement(ref, got)
        result.argmax_agreement_confident = metrics.argmax_agreement(
            ref, got, min_margin=tol.argmax_margin
        )
        if result.argmax_agreement_confident < tol.min_argmax_agreement:
            result.failures.append(
                f"{name}: argmax agreement {result.argmax_agreement_confident:.4f} < {tol.min_argmax_agreement}"
            )
    if tol.max_abs is not None:
        limit = tol.max_abs
        if fp32_floor is not None and tol.fp32_floor_factor:
            result.fp32_floor = fp32_floor
            limit = max(limit, tol.fp32_floor_factor * fp32_floor)
        if result.max_abs > limit:
            result.failures.append(f"{name}: max abs error {result.max_abs:.3g} > {limit:.3g}")
    if spread and math.isfinite(spread) and spread > 0:
        result.relative_to_spread = result.mean_abs / spread
        if (
            tol.max_relative_to_spread is not None
            and result.relative_to_spread > tol.max_relative_to_spread
        ):
            result.failures.append(
                f"{name}: error/spread {result.relative_to_spread:.3g} > {tol.max_relative_to_spread}"
            )
    return result


def validate_package(
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
) -> ValidationReport:
    """Run the saved package on every validation input and compare every output.

    `ctx`: the BuildContext the package was just built from (a build validates what it made
    without loading and calibrating the same weights again); by default it is rebuilt from
    the provenance recorded in the package."""
    from coreml_diarize.converters.metadata import library_versions

    from .backends import open_package

    start = time.perf_counter()
    path = Path(path)
    if ctx is None:
        spec, ctx, meta = context_for_package(
            path, source=source, trust_checkpoint=trust_checkpoint
        )
    else:
        meta = package_metadata(path)
        spec = get_spec(meta["model"])
    recipe = recipe_of(meta)
    runner = open_package(path, backend=backend, compute_units=compute_units)
    used_backend = runner.backend
    # the MIL executor computes in the program's own dtypes, whatever units were asked for
    judged_units = compute_units if used_backend == "coreml" else "cpu_only"
    trained = meta.get("source.trained", "true") != "false"
    tolerances = dict(spec.tolerance_for(recipe, judged_units, trained=trained))
    if tolerance_overrides:
        tolerances = {k: _override(t, tolerance_overrides) for k, t in tolerances.items()}
    reference = spec.build_reference(ctx)
    cases = spec.example_inputs(ctx)
    if audio:
        cases.update(audio_cases(spec, ctx, next(iter(cases.values())), audio))

    rounding_floor = _rounding_floor(spec, ctx, tolerances) if recipe == "fp32" else None

    refs, outs, floors = {}, {}, {}
    for i, (name, inputs) in enumerate(cases.items()):
        if progress:
            progress(f"[{i + 1}/{len(cases)}] {spec.key}: {name}")
        refs[name] = reference(inputs)
        outs[name] = runner(inputs).outputs
        if rounding_floor is not None:
            floors[name] = rounding_floor(inputs)

    failures: list[str] = []
    spreads = {}
    for t in spec.outputs:
        spreads[t.name] = metrics.spread([refs[c][t.name] for c in cases])
        floor = tolerances[t.name].min_reference_spread
        if floor is not None and not spreads[t.name] >= floor:
            failures.append(
                f"{t.name}: the reference barely depends on its input (spread {spreads[t.name]:.3g} < {floor}):"
                " degenerate weights would make this check meaningless"
            )
    results = []
    for name in cases:
        missing = [t.name for t in spec.outputs if t.name not in outs[name]]
        if missing:
            failures.append(f"{name}: package has no output(s) {', '.join(missing)}")
            continue
        results.append(
            CaseResult(
                name,
                [
                    compare_output(
                        t.name,
                        refs[name][t.name],
                        outs[name][t.name],
                        tolerances[t.name],
                        spreads[t.name],
                        floors.get(name, {}).get(t.name),
                    )
                    for t in spec.outputs
                ],
            )
        )
    return ValidationReport(
        package=str(path),
        model=spec.key,
        recipe=recipe,
        backend=used_backend,
        compute_units=compute_units,
        trained=meta.get("source.trained", "n/a"),
        source=meta.get("source.location", meta.get("source.kind", "none")),
        versions=library_versions(),
        reference_spread=spreads,
        cases=results,
        failures=failures,
        seconds=time.perf_counter() - start,
    )


def _rounding_floor(spec: ModelSpec, ctx, tolerances: dict[str, Tolerance]):
    """How far fp32 arithmetic alone moves each output: the spec's wrapper (the exact graph
    that was converted, weights as stored) run in float32 and in float64 on the same input."""
    import copy

    import torch

    if not any(t.fp32_floor_factor for t in tolerances.values()):
        return None
    wrapper32 = spec.build_wrapper(ctx).eval()
    wrapper64 = copy.deepcopy(wrapper32).double()
    names = [t.name for t in spec.inputs]
    outputs = [t.name for t in spec.outputs]

    def run(inputs: dict[str, np.ndarray]) -> dict[str, float]:
        args = [torch.from_numpy(np.asarray(inputs[n], dtype=np.float32)) for n in names]
        with torch.inference_mode():
            a = wrapper32(*args)
            b = wrapper64(*[x.double() for x in args])
        a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
        return {
            k: metrics.max_abs(x.numpy(), y.numpy()) for k, x, y in zip(outputs, a, b, strict=True)
        }

    return run


def _override(tol: Tolerance, overrides: dict[str, float]) -> Tolerance:
    from dataclasses import replace

    fields = {k: v for k, v in overrides.items() if getattr(tol, k, None) is not None}
    return replace(tol, **fields)
