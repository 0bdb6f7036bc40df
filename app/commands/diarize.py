"""`coreml-diarize diarize`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.errors import DiarizeError

from ..cli_options import backend_option, chain_options


@click.command()
@click.argument("audio", type=click.Path(path_type=Path))
@chain_options
@backend_option
@click.option("--rttm", "rttm_out", type=click.Path(path_type=Path), default=None)
@click.option("--every", type=int, default=10, show_default=True, help="Windows per progress line.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def diarize(
    audio: Path,
    models_dir: Path,
    pipeline: str,
    backend: str,
    variant: str | None,
    rttm_out: Path | None,
    step_s: float | None,
    every: int,
    quiet: bool,
) -> None:
    """Diarize AUDIO with the converted models (pyannote's pipeline logic around them)."""
    from coreml_diarize.diarization.diarize import diarize_file
    from coreml_diarize.diarization.rttm import write_rttm

    if every < 1:
        raise DiarizeError("--every must be >= 1")
    result = diarize_file(
        audio,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        step_s=step_s,
        progress=None if quiet else (lambda line: click.echo(line, err=True)),
        progress_every=every,
    )
    for segment, _, speaker in result.annotation.itertracks(yield_label=True):
        click.echo(f"{segment.start:9.3f} {segment.end:9.3f}  {speaker}")
    if rttm_out is not None:
        write_rttm(result.annotation, rttm_out)
    click.echo(
        f"{len(result.annotation.labels())} speakers, {result.windows} windows, "
        f"RTF {result.rtf:.3f} ({result.seconds:.1f} s, {result.backend})",
        err=True,
    )
