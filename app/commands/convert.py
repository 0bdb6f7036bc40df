"""`coreml-diarize convert`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.converters.convert import PRECISIONS
from coreml_diarize.specs import EMBEDDING_OUTPUTS, FBANK_FRONT_ENDS

from ..cli_options import options_from, source_options

# shared with `build` (app/commands/build.py)
embedding_output_option = click.option(
    "--embedding-output",
    type=click.Choice(EMBEDDING_OUTPUTS),
    default="raw",
    show_default=True,
    help="Embedding models: raw (pyannote's; what PldaRho expects) or l2 (unit norm, as "
    "FluidAudio documents). docs/offline_contract.md, 'Embedding scale'.",
)
# shared with `build`: wespeaker_v2's Kaldi fbank as one (514, 400) conv (dense, 0.86 MB of
# fp32 constants) or factored (29 k constants; docs/quantization.md, "Mixed-bit ladder")
fbank_front_end_option = click.option(
    "--fbank-front-end",
    type=click.Choice(FBANK_FRONT_ENDS),
    default="dense",
    show_default=True,
    help="wespeaker_v2's fbank: dense (one conv) or factored (29 k constants, 0.86 MB smaller; "
    "what the committed WeSpeaker mixed recipe needs).",
)


@click.command()
@click.argument("models", nargs=-1, required=True)
@source_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="fp32",
    show_default=True,
)
@click.option(
    "--target",
    "deployment_target",
    default="iOS17",
    show_default=True,
    help="Minimum deployment target.",
)
@click.option(
    "--min-activity-frames",
    type=float,
    default=None,
    help="post-embedding: valid threshold (frames).",
)
@click.option(
    "--min-speaker-duration", type=float, default=None, help="post-embedding: min speaker seconds."
)
@click.option(
    "--no-clean-fallback",
    is_flag=True,
    help="preprocessor: never fall back to the overlapping mask.",
)
@click.option(
    "--flexible-batch",
    is_flag=True,
    help="embedding: accept 1..32 speaker slots (default 3) as enumerated shapes; needs "
    "--target iOS18 or macOS15 (docs/ane.md, 'Batch shapes').",
)
@embedding_output_option
@fbank_front_end_option
def convert(
    models: tuple[str, ...],
    sources: dict[str, str],
    trust_checkpoint: bool,
    hf_cache: Path | None,
    out_dir: Path,
    precision: str,
    deployment_target: str,
    min_activity_frames: float | None,
    min_speaker_duration: float | None,
    no_clean_fallback: bool,
    flexible_batch: bool,
    embedding_output: str,
    fbank_front_end: str,
) -> None:
    """Convert MODELS (the registry's keys, or all)."""
    from coreml_diarize.atomic import ensure_writable_dir
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec, registry

    keys = tuple(registry()) if "all" in models else models
    specs = [get_spec(k) for k in keys]  # unknown names fail before any work
    options = options_from(
        precision=precision,
        minimum_deployment_target=deployment_target,
        min_activity_frames=min_activity_frames,
        min_speaker_duration_s=min_speaker_duration,
        clean_fallback=False if no_clean_fallback else None,
        flexible_batch=flexible_batch or None,
        embedding_output=embedding_output,
        fbank_front_end=fbank_front_end,
    )
    ensure_writable_dir(out_dir)
    for spec in specs:
        ctx = make_context(
            spec,
            source=sources[spec.weights.name] if spec.weights else "random",
            options=options,
            trust_checkpoint=trust_checkpoint,
            cache_dir=hf_cache,
        )
        if ctx.weights is not None and not ctx.weights.provenance.trained:
            click.echo(
                f"note: {spec.key}: UNTRAINED weights ({ctx.weights.provenance.location}, calibrated)",
                err=True,
            )
        if embedding_output == "l2" and spec.key == "offline-embedding":
            click.echo(
                f"note: {spec.filename}: L2-normalised output; PldaRho computes pyannote's PLDA"
                " of what it is given, so an offline chain with this Embedding is no longer"
                " pyannote's (docs/offline_contract.md, 'Embedding scale')",
                err=True,
            )
        result = convert_model(spec, ctx, out_dir)
        click.echo(
            f"{result.path}  {result.size_bytes / 1e6:.2f} MB  {result.precision}  {result.seconds:.1f} s"
        )
        for sidecar in result.sidecars:
            click.echo(f"{sidecar}")
