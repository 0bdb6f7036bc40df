"""`build`: every model of a profile, its device variants, validation of every package, the bundle.

Profiles are the registry's model sets (`ModelSpec.chains`): "online" (the 3.1-style chain of
five packages, ../shared/contract.md) and "offline" (pyannote community-1 as FluidAudio's offline
diarizer loads it, docs/offline_contract.md)."""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from coreml_diarize.context import make_context
from coreml_diarize.errors import DiarizeError
from coreml_diarize.specs import ModelSpec, Options

from .variants import ShipChoice

if TYPE_CHECKING:  # the quantizer is imported where it runs (listing profiles stays cheap)
    from coreml_diarize.quantize.mixed import MixedRecipe

DEFAULT_PROFILE = "online"


@dataclass
class BuildSummary:
    packages: list[Path] = field(default_factory=list)
    sidecars: list[Path] = field(default_factory=list)  # JSON files beside packages, bundled
    reports: dict[str, bool] = field(default_factory=dict)
    bundle: Path | None = None
    zip_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildSettings:
    """What `build_all` was asked for (one value for every stage)."""

    sources: dict[str, str]  # weight family -> --source
    options: Options | None = None
    quantize: bool = True
    backend: str = "auto"
    allow_untrained: bool = False
    trust_checkpoint: bool = False
    cache_dir: Path | None = None
    profile: str = DEFAULT_PROFILE
    ship: ShipChoice | None = None  # which variant takes each plain name (app/variants.py)
    # mixed recipe files (quantize/mixed.py), each applied to its model's fp32 package
    recipes: tuple[MixedRecipe, ...] = ()


def profiles() -> tuple[str, ...]:
    """The registry's profiles, in registry order."""
    from coreml_diarize.models import all_specs

    return tuple(dict.fromkeys(chain for spec in all_specs() for chain in spec.chains))


def profile_specs(profile: str) -> list[ModelSpec]:
    """The models of one profile, in registry order (an unknown profile is an error)."""
    from coreml_diarize.models import all_specs

    specs = [spec for spec in all_specs() if profile in spec.chains]
    if not specs:
        raise DiarizeError(f"unknown profile '{profile}' (choose from {', '.join(profiles())})")
    return specs


def bundle_name(profile: str) -> str:
    """The bundle folder / zip stem a profile's build writes (online keeps the historic name)."""
    return (
        "coreml-diarize-bundle"
        if profile == DEFAULT_PROFILE
        else f"coreml-diarize-{profile}-bundle"
    )


def build_all(
    out_dir: Path,
    *,
    sources: dict[str, str],
    profile: str = DEFAULT_PROFILE,
    options: Options | None = None,
    quantize: bool = True,
    backend: str = "auto",
    allow_untrained: bool = False,
    trust_checkpoint: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
    ship: ShipChoice | None = None,
    recipes: tuple[MixedRecipe, ...] = (),
) -> BuildSummary:
    """Every model of `profile` → its device variants (fp16, 8-bit in fp16) → validation of
    every package → golden I/O → bundle. Nothing is bundled unless every package passed.
    `recipes`: mixed recipes, each adding a `<stem>_mixed` variant of its model."""
    specs = profile_specs(profile)  # an unknown profile fails before any work
    _check_recipes(recipes, specs, profile)
    if (
        options is not None
        and options.embedding_output == "l2"
        and "plda-rho" in {s.key for s in specs}
    ):
        # PldaRho needs the raw vector: l2norm(l2norm(x) - mean1) != l2norm(x - mean1), and the
        # norm is gone once normalised (docs/offline_contract.md, "Embedding scale")
        raise DiarizeError(
            f"--embedding-output l2 cannot be bundled with PldaRho ({profile} profile): pyannote's"
            " PLDA needs the raw embedding, which a normalised one cannot give back"
        )
    settings = BuildSettings(
        sources,
        options,
        quantize,
        backend,
        allow_untrained,
        trust_checkpoint,
        cache_dir,
        profile,
        ship,
        tuple(recipes),
    )
    summary = BuildSummary()
    out_dir = Path(out_dir)
    contexts = _convert_all(out_dir, settings, summary, progress)
    _validate_all(settings, summary, contexts, progress)
    _bundle(out_dir, settings, summary, contexts, progress)
    return summary


def _check_recipes(recipes, specs: list[ModelSpec], profile: str) -> None:
    """Every recipe names a model of the profile, one recipe per model (both would be
    `<stem>_mixed`): checked before any work."""
    keys = [s.key for s in specs]
    seen: set[str] = set()
    for recipe in recipes:
        if recipe.model not in keys:
            raise DiarizeError(
                f"--recipe: the recipe is for model {recipe.model!r}, which the {profile} profile "
                f"does not build (models: {', '.join(keys)})"
            )
        if recipe.model in seen:
            raise DiarizeError(f"--recipe: two recipes for {recipe.model}; give one per model")
        seen.add(recipe.model)


@contextlib.contextmanager
def _timed(summary: BuildSummary, label: str) -> Iterator[None]:
    """Record how long the block takes under `label` in the summary."""
    start = time.perf_counter()
    yield
    summary.seconds[label] = time.perf_counter() - start


def _check_recipes_have_trained_weights(recipes, spec: ModelSpec, ctx) -> None:
    """A mixed recipe is searched on one set of trained weights' measured sensitivity
    (quantize/mixed.py); on seeded random weights it means nothing, and the `mixed` tolerance is
    derived for trained models only (docs/quantization.md), so such a build is refused."""
    weights = ctx.weights
    if weights is None or weights.provenance.trained:
        return
    if any(r.model == spec.key for r in recipes):
        raise DiarizeError(
            f"--recipe: a mixed recipe is searched on trained weights; {spec.key}'s weights "
            f"({weights.provenance.location}) are untrained: give trained weights "
            f"(--{spec.weights.name}-source) or drop the recipe"
        )


def _convert_all(out_dir: Path, settings: BuildSettings, summary: BuildSummary, progress):
    """Convert every registered model and make its device variants; returns package name ->
    the context it was built from (validation and golden I/O reuse it: no second load)."""
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    specs = profile_specs(settings.profile)
    loaded = {}  # every model's weights first: a refused recipe leaves no package behind
    for spec in specs:
        with _timed(summary, f"load {spec.key}"):
            source = settings.sources.get(spec.weights.name, "random") if spec.weights else "random"
            loaded[spec.key] = make_context(
                spec,
                source=source,
                options=settings.options,
                trust_checkpoint=settings.trust_checkpoint,
                cache_dir=settings.cache_dir,
            )
        _check_recipes_have_trained_weights(settings.recipes, spec, loaded[spec.key])
    contexts = {}
    for spec in specs:
        ctx = loaded[spec.key]
        with _timed(summary, f"convert {spec.key}"):
            result = convert_model(spec, ctx, out_dir)
        summary.packages.append(result.path)
        summary.sidecars.extend(result.sidecars)
        contexts[result.path.name] = ctx
        progress(
            f"converted {result.path.name} ({result.size_bytes / 1e6:.2f} MB, {result.seconds:.1f} s)"
        )
        for recipe in spec.device_variants if settings.quantize else ():
            config = QuantizeConfig.from_mapping(recipe)
            with _timed(summary, f"{config.name} {spec.key}"):
                # exclude unset: the quantizer leaves the spec's `uncompressed` constants alone
                q = quantize_package(result.path, out_dir, config)
            summary.packages.append(q.dst)
            contexts[q.dst.name] = ctx
            progress(f"quantized {q.dst.name} ({q.size_after / 1e6:.2f} MB, {q.seconds:.1f} s)")
        for recipe in (r for r in settings.recipes if r.model == spec.key):
            with _timed(summary, f"{recipe.config.name} {spec.key}"):
                q = quantize_package(result.path, out_dir, recipe.config, search=recipe.search)
            summary.packages.append(q.dst)
            contexts[q.dst.name] = ctx
            progress(
                f"applied recipe {q.dst.name} ({q.size_after / 1e6:.2f} MB, {q.seconds:.1f} s)"
            )
    return contexts


def _validate_all(settings: BuildSettings, summary: BuildSummary, contexts, progress) -> None:
    """Validate every package, store each report beside it; raise if any failed."""
    from coreml_diarize.errors import ValidationFailed
    from coreml_diarize.validation.report import validate_package

    from .bundle import save_report

    failed = []
    for package in summary.packages:
        with _timed(summary, f"validate {package.name}"):
            report = validate_package(package, backend=settings.backend, ctx=contexts[package.name])
            save_report(package, report.to_dict())
        summary.reports[package.name] = report.passed
        progress(report.table())
        if not report.passed:
            failed.append(package.name)
    if failed:
        raise ValidationFailed(
            "validation failed: " + ", ".join(failed) + " (nothing was packaged)"
        )


def _bundle(out_dir: Path, settings: BuildSettings, summary: BuildSummary, contexts, progress):
    """Golden I/O (computed here, where every package's weights are still in memory), then
    the bundle and its zip."""
    from .bundle import make_bundle
    from .golden import write_bundle_golden

    with tempfile.TemporaryDirectory(prefix=".golden.", dir=out_dir) as staging:
        with _timed(summary, "golden"):
            golden = write_bundle_golden(summary.packages, Path(staging), contexts=contexts)
        bundle = make_bundle(
            summary.packages,
            out_dir,
            name=bundle_name(settings.profile),
            allow_untrained=settings.allow_untrained,
            golden=golden,
            notify=progress,
            ship=settings.ship,
        )
    summary.bundle, summary.zip_path = bundle.directory, bundle.zip_path
