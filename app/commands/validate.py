"""`coreml-diarize validate`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.errors import DiarizeError
from coreml_diarize.validation.backends import COMPUTE_UNITS

from ..cli_options import (
    backend_option,
    json_option,
    trust_option,
    user_audio,
    write_json,
)


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--source",
    default=None,
    help="Weights for the reference (default: as recorded in the package).",
)
@trust_option
@backend_option
@click.option(
    "--compute-units",
    type=click.Choice(COMPUTE_UNITS),
    default="all",
    show_default=True,
)
@click.option(
    "--audio",
    "audio_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Extra WAV/FLAC inputs.",
)
@click.option("--max-abs", type=float, default=None, help="Override the max abs error threshold.")
@click.option("--min-cosine", type=float, default=None, help="Override the cosine threshold.")
@json_option
@click.option(
    "--save", is_flag=True, help="Store each report beside its package (what `package` requires)."
)
@click.option("--quiet", is_flag=True, help="No progress lines.")
def validate(
    paths: tuple[Path, ...],
    source: str | None,
    trust_checkpoint: bool,
    backend: str,
    compute_units: str,
    audio_files: tuple[Path, ...],
    max_abs: float | None,
    min_cosine: float | None,
    json_path: Path | None,
    save: bool,
    quiet: bool,
) -> None:
    """Run saved packages against their PyTorch references; exit 6 if any output fails."""
    from coreml_diarize.errors import ValidationFailed
    from coreml_diarize.mlpackage import collect_packages
    from coreml_diarize.validation.report import validate_package

    from ..bundle import save_report

    packages = collect_packages(paths)
    for name, value in (("--max-abs", max_abs), ("--min-cosine", min_cosine)):
        if value is not None and value < 0:
            raise DiarizeError(f"{name} must be >= 0")
    audio = user_audio(audio_files, 160000) if audio_files else None
    overrides = {
        k: v for k, v in (("max_abs", max_abs), ("min_cosine", min_cosine)) if v is not None
    }
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    reports = []
    for package in packages:
        report = validate_package(
            package,
            source=source,
            backend=backend,
            compute_units=compute_units,
            audio=audio,
            tolerance_overrides=overrides,
            trust_checkpoint=trust_checkpoint,
            progress=progress,
        )
        click.echo(report.table())
        # e.g. cpu_and_ne on a machine without a Neural Engine: one line a CI log shows
        for note in report.notes:
            click.echo(f"note: {package.name}: {note}", err=True)
        reports.append(report)
        if save:
            save_report(package, report.to_dict())
    if json_path:
        write_json(json_path, [r.to_dict() for r in reports])
    failed = [Path(r.package).name for r in reports if not r.passed]
    if failed:
        raise ValidationFailed("validation failed: " + ", ".join(failed))
