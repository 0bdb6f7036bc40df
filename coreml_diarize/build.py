"""Library entry points behind the CLI: contexts from sources, and converting models by key."""

from __future__ import annotations

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
