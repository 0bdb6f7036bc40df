"""`coreml-diarize sensitivity`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.errors import DiarizeError


def _widths(text: str) -> list[int]:
    try:
        return [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise DiarizeError(f"--widths must be comma-separated integers, got {text!r}") from None


@click.command()
@click.argument("package_path", metavar="MODEL.mlpackage", type=click.Path(path_type=Path))
@click.option(
    "--out", type=click.Path(path_type=Path), required=True, help="The table to write (JSON)."
)
@click.option("--widths", default="8,6,4,2", show_default=True, help="Palettization widths.")
@click.option(
    "--granularity",
    type=click.Choice(["per_tensor", "per_grouped_channel"]),
    default="per_tensor",
    show_default=True,
    help="per_grouped_channel: one LUT per --group-size output channels (iOS18 packages).",
)
@click.option("--group-size", type=int, default=None, help="per_grouped_channel (default 16).")
@click.option(
    "--audio",
    "audio_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Calibration audio (repeatable; speakers from <stem>.rttm beside it). "
    "Default: pyannote's bundled sample.",
)
@click.option("--chunks", type=int, default=10, show_default=True, help="10 s chunks at most.")
@click.option(
    "--embedding-rows",
    type=int,
    default=9,
    show_default=True,
    help="Embedding: (chunk, speaker) rows measured.",
)
@click.option(
    "--layers", default=None, help="Only these weights (comma-separated const names): quick looks."
)
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="Also a PNG plot.")
def sensitivity(
    package_path: Path,
    out: Path,
    widths: str,
    granularity: str,
    group_size: int | None,
    audio_paths: tuple[Path, ...],
    chunks: int,
    embedding_rows: int,
    layers: str | None,
    plot: Path | None,
) -> None:
    """Palettize each weighted layer of an fp32 MODEL.mlpackage alone at each width and
    measure the damage on calibration audio: the table `quantize --mode mixed` searches."""
    from coreml_diarize.atomic import atomic_path
    from coreml_diarize.validation.sensitivity import (
        calibration_from_files,
        measure_sensitivity,
        plot_table,
        sample_calibration,
    )

    if out.suffix != ".json":
        raise DiarizeError(f"--out must name a .json file, got {out}")
    if chunks < 1 or embedding_rows < 1:
        raise DiarizeError("--chunks and --embedding-rows must be >= 1")
    if granularity == "per_grouped_channel" and group_size is None:
        group_size = 16  # quantize's default (recipes.DEFAULT_GROUP_SIZE)
    if audio_paths:
        calibration = calibration_from_files(
            audio_paths, max_chunks=chunks, embedding_rows=embedding_rows
        )
    else:
        calibration = sample_calibration()
    table = measure_sensitivity(
        package_path,
        widths=_widths(widths),
        granularity=granularity,
        group_size=group_size,
        calibration=calibration,
        layers=[n.strip() for n in layers.split(",") if n.strip()] if layers else None,
        progress=lambda line: click.echo(f"  {line}", err=True),
    )
    with atomic_path(out) as tmp:
        tmp.write_text(table.dumps())
    if plot is not None:
        with atomic_path(plot) as tmp:
            plot_table(table, tmp)
    click.echo(
        f"{out}: {len(table.layers)} layers x {len(table.widths)} widths, {table.metric}, "
        f"baseline (fp16) {table.baseline_loss:.3g}, {table.seconds:.0f} s"
    )
    width = 4 if 4 in table.widths else min(table.widths)
    click.echo(f"most sensitive at {width} bits ({table.metric} above fp16):")
    for layer in table.most_sensitive(width):
        click.echo(f"  {layer.name:32} {layer.elements:>9}  {layer.loss[width]:.3g}")
