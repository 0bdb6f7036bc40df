"""`coreml-diarize compare`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option, chain_options, json_option, trust_option, write_json


@click.command()
@click.argument("audio", type=click.Path(path_type=Path))
@chain_options
@click.option("--reference", type=click.Path(path_type=Path), default=None, help="Reference RTTM.")
@json_option
@backend_option
@trust_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
def compare(
    audio: Path,
    models_dir: Path,
    pipeline: str,
    reference: Path | None,
    json_path: Path | None,
    backend: str,
    variant: str | None,
    step_s: float | None,
    trust_checkpoint: bool,
    quiet: bool,
) -> None:
    """pyannote's pipeline in PyTorch vs the converted chain on AUDIO: DER/JER and RTF."""
    from coreml_diarize.diarization.compare import compare_file

    result = compare_file(
        audio,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        step_s=step_s,
        reference_rttm=reference,
        trust_checkpoint=trust_checkpoint,
        progress=None if quiet else (lambda line: click.echo(line, err=True)),
    )
    click.echo(result.table())
    if json_path:
        write_json(json_path, result.to_dict())
