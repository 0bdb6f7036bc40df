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
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.models import get_spec
from coreml_diarize.specs import ModelSpec, Options, Tolerance

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
                *judgement_lines(self),
                "PASSED" if self.passed else "FAILED",
            ]
        )


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
    from coreml_diarize.context import make_context

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


@dataclass
class Evaluation:
    """One validation run: the report, and what it was computed from."""

    report: ValidationReport
    spec: ModelSpec
    meta: dict[str, str]
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
    from coreml_diarize.converters.metadata import library_versions

    from .backends import open_package

    start = time.perf_counter()
    path = Path(path)
    spec, ctx, meta = _context(path, source=source, trust_checkpoint=trust_checkpoint, ctx=ctx)
    recipe = recipe_of(meta)
    runner = open_package(path, backend=backend, compute_units=compute_units)
    key, tolerances = judged_tolerances(
        spec, meta, runner.backend, compute_units, tolerance_overrides
    )
    cases = spec.example_inputs(ctx)
    if audio:
        cases.update(audio_cases(spec, ctx, next(iter(cases.values())), audio))
    refs, outs = _run_cases(spec, ctx, runner, cases, progress)
    judgement = judge(spec, tolerances, refs, outs)
    report = ValidationReport(
        **vars(judgement),
        package=str(path),
        model=spec.key,
        recipe=recipe,
        backend=runner.backend,
        compute_units=compute_units,
        trained=meta.get("source.trained", "n/a"),
        source=meta.get("source.location", meta.get("source.kind", "none")),
        versions=library_versions(),
        seconds=time.perf_counter() - start,
    )
    return Evaluation(report, spec, meta, key, tolerances, cases, refs, outs)


def _context(path: Path, *, source: str | None, trust_checkpoint: bool, ctx):
    """(spec, ctx, metadata): the given context, or one rebuilt from the package's record."""
    if ctx is None:
        return context_for_package(path, source=source, trust_checkpoint=trust_checkpoint)
    meta = package_metadata(path)
    if "model" not in meta:
        raise ArtifactError(f"{path} was not built by coreml-diarize (no model metadata)")
    return get_spec(meta["model"]), ctx, meta


def judged_tolerances(
    spec: ModelSpec,
    meta: dict[str, str],
    backend: str,
    compute_units: str,
    overrides: dict[str, float] | None = None,
) -> tuple[str, dict[str, Tolerance]]:
    """The tolerance-table key and the tolerances that judge this package on this backend."""
    recipe = recipe_of(meta)
    # the MIL executor computes in the program's own dtypes, whatever units were asked for
    units = compute_units if backend == "coreml" else "cpu_only"
    trained = meta.get("source.trained", "true") != "false"
    tolerances = dict(spec.tolerance_for(recipe, units, trained=trained))
    if overrides:
        tolerances = {k: _override(t, overrides) for k, t in tolerances.items()}
    return spec.tolerance_key(recipe, units), tolerances


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
