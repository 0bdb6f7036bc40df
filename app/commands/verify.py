"""`coreml-diarize verify`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--run-golden",
    is_flag=True,
    help="Also run every package on its golden input against the recorded outputs (exit 6 if any fails).",
)
@backend_option
@click.option(
    "--target",
    type=click.Choice(("manifest", "fluidaudio")),
    default="manifest",
    show_default=True,
    help="fluidaudio: check a bundle, Hub download or export against FluidAudio's loader "
    "contract instead (docs/fluidaudio.md).",
)
def verify(bundle: Path, run_golden: bool, backend: str, target: str) -> None:
    """Re-check every file hash of a bundle directory or zip against its manifest."""
    from coreml_diarize.errors import ArtifactError, ValidationFailed

    if target == "fluidaudio":
        from ..fluidaudio import run_check

        run_check(bundle, lambda line: click.echo(line, err=line.startswith("  ")))
        return

    from ..bundle import verify_bundle

    problems = verify_bundle(bundle)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    if problems:
        raise ArtifactError(
            f"bundle {bundle} does not match its manifest ({len(problems)} problem(s))"
        )
    click.echo(f"{bundle}: all hashes match")
    if run_golden:
        from ..golden import check_bundle_golden

        reports = check_bundle_golden(bundle, backend=backend)
        for report in reports:
            click.echo(report.line())
        failed = [r.package for r in reports if not r.passed]
        if failed:
            raise ValidationFailed("golden check failed: " + ", ".join(failed))
