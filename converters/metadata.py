"""The record a converted package carries (contract.md: "Metadata every artifact carries").

The record type and its reading/writing live in the ground layer (`coreml_diarize.record`);
this builds the record of a freshly converted package from its spec and build context.
"""

from __future__ import annotations

from dataclasses import asdict

from coreml_diarize.record import PackageRecord, git_revision, library_versions

AUTHOR = "coreml-diarize (converted from pyannote.audio)"
# provenance of a model without weights
NO_WEIGHTS = {"kind": "none", "trained": "n/a (no weights)"}


def conversion_record(
    *, spec, ctx, precision: str, wrapper_constants: dict[str, str] | None = None
) -> PackageRecord:
    """The record of `spec` converted from `ctx` in `precision` (no compression yet)."""
    if ctx.weights is not None:
        source = {
            k.removeprefix("source."): v for k, v in ctx.weights.provenance.as_metadata().items()
        }
    else:
        source = dict(NO_WEIGHTS)
    return PackageRecord(
        model=spec.key,
        role=spec.role,
        precision=precision,
        compression="none",
        recipe={"precision": precision},
        geometry=asdict(ctx.geometry),
        thresholds=ctx.options.thresholds(),
        minimum_deployment_target=ctx.options.minimum_deployment_target,
        source=source,
        git_revision=git_revision(),
        versions=library_versions(),
        wrapper=wrapper_constants or {},
    )
