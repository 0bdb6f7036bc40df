"""Library entry points behind the CLI: contexts from sources, and converting models by key."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .sources import default_geometry, load_weights, segmentation_geometry
from .specs import BuildContext, ModelSpec, Options


def make_context(
    spec: ModelSpec,
    *,
    source: str = "random",
    options: Options | None = None,
    trust_checkpoint: bool = False,
    cache_dir: Path | None = None,
) -> BuildContext:
    """Weights for the spec (if it has any) and the geometry every model shares."""
    options = options or Options()
    weights = None
    if spec.weights is not None:
        weights = load_weights(
            spec.weights, source, trust_checkpoint=trust_checkpoint, cache_dir=cache_dir
        )
    if spec.weights == "segmentation":
        geometry = segmentation_geometry(weights.model, embedding_batch=options.embedding_batch)
    else:
        geometry = default_geometry(embedding_batch=options.embedding_batch)
    return BuildContext(geometry=geometry, options=options, weights=weights)


@dataclass
class BuildSummary:
    packages: list[Path] = field(default_factory=list)
    reports: dict[str, bool] = field(default_factory=dict)
    bundle: Path | None = None
    zip_path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)


def build_all(
    out_dir: Path,
    *,
    sources: dict[str, str],
    options: Options | None = None,
    quantize: bool = True,
    backend: str = "auto",
    allow_untrained: bool = False,
    trust_checkpoint: bool = False,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> BuildSummary:
    """Every model → its device variants (fp16, 8-bit in fp16) → validation of every package
    → bundle."""
    from .bundle import make_bundle, save_report
    from .converters.convert import convert_model
    from .errors import ValidationFailed
    from .golden import write_bundle_golden
    from .quantize.apply import quantize_package
    from .quantize.recipes import QuantizeConfig
    from .specs import registry
    from .validation.report import validate_package

    summary = BuildSummary()
    out_dir = Path(out_dir)
    contexts = {}  # package name -> the context it was built from (validation reuses it)
    for spec in registry().values():
        start = time.perf_counter()
        ctx = make_context(
            spec,
            source=sources.get(spec.weights or "", "random"),
            options=options,
            trust_checkpoint=trust_checkpoint,
            cache_dir=cache_dir,
        )
        result = convert_model(spec, ctx, out_dir)
        summary.packages.append(result.path)
        contexts[result.path.name] = ctx
        summary.seconds[f"convert {spec.key}"] = time.perf_counter() - start
        progress(
            f"converted {result.path.name} ({result.size_bytes / 1e6:.2f} MB, {result.seconds:.1f} s)"
        )
        for settings in spec.device_variants if quantize else ():
            start = time.perf_counter()
            config = QuantizeConfig.from_mapping(settings)
            # exclude unset: the quantizer leaves the spec's `uncompressed` constants alone
            q = quantize_package(result.path, out_dir, config)
            summary.packages.append(q.dst)
            contexts[q.dst.name] = ctx
            summary.seconds[f"{config.name} {spec.key}"] = time.perf_counter() - start
            progress(f"quantized {q.dst.name} ({q.size_after / 1e6:.2f} MB, {q.seconds:.1f} s)")
    failed = []
    for package in summary.packages:
        start = time.perf_counter()
        report = validate_package(package, backend=backend, ctx=contexts[package.name])
        save_report(package, report.to_dict())
        summary.reports[package.name] = report.passed
        summary.seconds[f"validate {package.name}"] = time.perf_counter() - start
        progress(report.table())
        if not report.passed:
            failed.append(package.name)
    if failed:
        raise ValidationFailed(
            "validation failed: " + ", ".join(failed) + " (nothing was packaged)"
        )
    # golden I/O: computed here, where every package's weights are still in memory
    with tempfile.TemporaryDirectory(prefix=".golden.", dir=out_dir) as staging:
        start = time.perf_counter()
        golden = write_bundle_golden(summary.packages, Path(staging), contexts=contexts)
        summary.seconds["golden"] = time.perf_counter() - start
        bundle = make_bundle(
            summary.packages,
            out_dir,
            allow_untrained=allow_untrained,
            golden=golden,
            notify=progress,
        )
    summary.bundle, summary.zip_path = bundle.directory, bundle.zip_path
    return summary
