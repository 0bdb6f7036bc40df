"""`coreml-diarize evaluate`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option, pipelines_choice, trust_option


@click.command()
@click.argument("corpus")
@click.option(
    "--models",
    "models_dir",
    type=click.Path(path_type=Path),
    required=True,
    help="Directory holding the pipeline's .mlpackages (and their variants).",
)
@click.option(
    "--pipeline",
    type=click.Choice(pipelines_choice()),
    default="3.1",
    show_default=True,
    help="3.1: the online packages; community-1: the offline ones (VBx + PldaRho).",
)
@click.option(
    "--variants",
    default="fp32",
    show_default=True,
    help="Comma-separated: fp32,fp16,palettize8,mixed (a variant swaps only the models that "
    "have it; mixed: build --recipe).",
)
@click.option(
    "--collar",
    type=float,
    default=0.0,
    show_default=True,
    help="Forgiveness collar (s); pyannote reports collar 0.",
)
@click.option(
    "--skip-overlap", is_flag=True, help="Do not score overlapped speech (pyannote scores it)."
)
@click.option("--step", "step_s", type=float, default=None, help="Window step in seconds.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("evaluation"),
    show_default=True,
    help="Results, tables and report go here.",
)
@click.option("--workers", type=int, default=1, show_default=True, help=">1: run on Ray.")
@click.option("--address", default=None, help="Join this Ray cluster (e.g. HOST:6379 or auto).")
@click.option(
    "--worker-memory", type=float, default=None, help="GB declared to Ray per worker (default 2)."
)
@click.option("--subset", default="test", show_default=True, help="A protocol's subset.")
@click.option(
    "--database-yml", type=click.Path(path_type=Path), default=None, help="pyannote database.yml."
)
@click.option("--force", is_flag=True, help="Recompute results already stored.")
@backend_option
@trust_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
def evaluate(
    corpus: str,
    models_dir: Path,
    pipeline: str,
    variants: str,
    collar: float,
    skip_overlap: bool,
    step_s: float | None,
    out: Path,
    workers: int,
    address: str | None,
    worker_memory: float | None,
    subset: str,
    database_yml: Path | None,
    force: bool,
    backend: str,
    trust_checkpoint: bool,
    quiet: bool,
) -> None:
    """DER/JER and RTF of every variant over CORPUS (a directory, a list file or a
    pyannote.database protocol), against pyannote's PyTorch pipeline and the reference RTTMs."""
    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate import (
        EvaluationOptions,
        EvaluationPlan,
        parse_variants,
    )
    from coreml_diarize.diarization.evaluate_report import (
        aggregate_table,
        build_report,
        write_report,
    )
    from coreml_diarize.diarization.evaluate_run import evaluate_corpus
    from coreml_diarize.errors import DiarizeError

    if collar < 0:
        raise click.BadParameter("must be >= 0", param_hint="--collar")
    progress = None if quiet else (lambda line: click.echo(line, err=True))
    files = load_corpus(corpus, subset=subset, database_yml=database_yml)
    options = EvaluationOptions(
        pipeline=pipeline,
        variants=parse_variants(variants),
        collar=collar,
        skip_overlap=skip_overlap,
        step_s=step_s,
        backend=backend,
        trust_checkpoint=trust_checkpoint,
    )
    plan = EvaluationPlan.make(models_dir, options)
    try:
        run = evaluate_corpus(
            files,
            plan,
            out,
            workers=workers,
            address=address,
            worker_memory_gb=worker_memory,
            force=force,
            progress=progress,
        )
    finally:  # Ctrl-C too: the report covers every result stored so far
        report = build_report(files, plan, out)
        written = write_report(report, out)
    click.echo(aggregate_table(report))
    click.echo(f"report: {written['report.md']}", err=True)
    if run.failures:
        for uri, variant, error in run.failures:
            click.echo(f"failed: {uri} ({variant}): {error}", err=True)
        raise DiarizeError(
            f"{len(run.failures)} of {run.files * len(options.variants)} results failed"
        )
