"""`coreml-diarize export`."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--layout",
    type=click.Choice(("fluidaudio",)),
    required=True,
    help="fluidaudio: DIR/speaker-diarization/ as FluidAudio's offline mode reads it.",
)
def export(paths: tuple[Path, ...], layout: str) -> None:
    """Lay out BUNDLE... (directories or zips, one per model set) in DIR for an app:
    `export ONLINE_BUNDLE OFFLINE_BUNDLE --layout fluidaudio DIR`."""
    from coreml_diarize.errors import DiarizeError

    from ..export import export_fluidaudio

    if len(paths) < 2:
        raise DiarizeError(
            "usage: export BUNDLE... --layout fluidaudio DIR (name a bundle and DIR)"
        )
    *bundles, out_dir = paths
    result = export_fluidaudio(bundles, out_dir)
    click.echo(
        f"{result.directory}: {' + '.join(result.profiles)} set(s), {len(result.files)} entries "
        "(set ModelHub.offlineMode = true in the app, see docs/fluidaudio.md)"
    )
    if result.uncompiled:
        click.echo(
            f"note: not compiled (no .mlmodelc in the bundle): FluidAudio will not load the "
            f".mlpackage files written ({', '.join(result.uncompiled)}); on macOS run "
            f"`xcrun coremlcompiler compile <name>.mlpackage {result.directory}` for each and "
            "delete the .mlpackage",
            err=True,
        )
    for name in result.shadowing:
        click.echo(
            f"warning: {Path(out_dir) / name} exists: FluidAudio reads it before "
            f"{result.directory.name}/{name}",
            err=True,
        )
