"""Build contexts: the weights a model needs, the geometry every model shares, the options."""

from __future__ import annotations

from pathlib import Path

from .errors import DiarizeError
from .record import PackageRecord
from .sources import default_geometry, load_weights
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
    if spec.weights is not None and spec.weights.geometry is not None:
        geometry = spec.weights.geometry(weights.model, options.embedding_batch)
    else:
        geometry = default_geometry(embedding_batch=options.embedding_batch)
    return BuildContext(geometry=geometry, options=options, weights=weights)


def options_for(record: PackageRecord) -> Options:
    """The conversion options a package was built with, from its record."""
    known = {k: v for k, v in record.thresholds.items() if k in Options.__dataclass_fields__}
    return Options(
        precision=record.precision,
        minimum_deployment_target=record.minimum_deployment_target,
        embedding_batch=int(record.geometry.get("embedding_batch", 3)),
        **known,
    )


def check_same_weights(record: PackageRecord, weights, *, where: str, name: str) -> None:
    """Refuse weights whose checkpoint hash differs from the one the package records."""
    recorded = record.source.get("sha256", "")
    loaded = weights.provenance.sha256 if weights is not None else None
    if loaded and recorded and loaded != recorded:
        raise DiarizeError(
            f"weights at {where} differ from those {name} was built from (SHA-256 mismatch)"
        )


def context_for_package(
    path: Path, *, source: str | None = None, trust_checkpoint: bool = False
) -> tuple[ModelSpec, BuildContext, PackageRecord]:
    """(spec, ctx, record): the context a package was built from, rebuilt from its own record
    (same weights source, same options), or from `source` if given."""
    from .models import get_spec

    record = PackageRecord.from_package(path)
    spec = get_spec(record.model)
    chosen = source or record.source_text() or "random"
    ctx = make_context(
        spec, source=chosen, options=options_for(record), trust_checkpoint=trust_checkpoint
    )
    if source is None:
        check_same_weights(record, ctx.weights, where=chosen, name=Path(path).name)
    return spec, ctx, record
