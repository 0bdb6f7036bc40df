"""The `coreml-diarize` command: parses, calls library functions, prints. Nothing else.

User mistakes end in one line on stderr and a non-zero exit (`--debug` shows the traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import DiarizeError

MODEL_KEYS = ("segmentation", "postprocessor", "preprocessor", "embedding", "post-embedding")


class DiarizeGroup(click.Group):
    """Turns library errors into one clear line + exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DiarizeError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


@click.group(cls=DiarizeGroup)
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.version_option(package_name="coreml-diarize")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Convert pyannote diarization models to Core ML and prove they match PyTorch."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if not debug:
        quiet_libraries()


def quiet_libraries() -> None:
    """coremltools logs a page of import-time warnings on Linux (no libcoremlpython, untested
    torch, scikit-learn): a CLI's output should show only what the user asked for."""
    import logging
    import warnings

    logging.getLogger("coremltools").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _source_options(f):
    f = click.option(
        "--source",
        default="random",
        show_default=True,
        help="Weights: random[:SEED] (calibrated, untrained), hf:OWNER/REPO[@REV], or a checkpoint path.",
    )(f)
    f = click.option(
        "--segmentation-source", default=None, help="Override --source for the segmentation model."
    )(f)
    f = click.option(
        "--embedding-source", default=None, help="Override --source for the embedding model."
    )(f)
    f = click.option(
        "--trust-checkpoint",
        is_flag=True,
        help="Allow checkpoints that need full unpickling (can execute code).",
    )(f)
    f = click.option(
        "--hf-cache", type=click.Path(path_type=Path), default=None, help="Hugging Face cache dir."
    )(f)
    return f


def _options(**kw):
    from .specs import Options

    return Options(**{k: v for k, v in kw.items() if v is not None})


@main.command()
@click.argument("models", nargs=-1, required=True)
@_source_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--precision",
    type=click.Choice(["fp32", "fp16", "fp16-selective"]),
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
def convert(
    models: tuple[str, ...],
    source: str,
    segmentation_source: str | None,
    embedding_source: str | None,
    trust_checkpoint: bool,
    hf_cache: Path | None,
    out_dir: Path,
    precision: str,
    deployment_target: str,
    min_activity_frames: float | None,
    min_speaker_duration: float | None,
    no_clean_fallback: bool,
) -> None:
    """Convert MODELS (segmentation, embedding, postprocessor, preprocessor, post-embedding, all)."""
    from .atomic import ensure_writable_dir
    from .build import make_context
    from .converters.convert import convert_model
    from .specs import get_spec

    keys = MODEL_KEYS if "all" in models else models
    specs = [get_spec(k) for k in keys]  # unknown names fail before any work
    if min_activity_frames is not None and min_activity_frames < 0:
        raise DiarizeError("--min-activity-frames must be >= 0")
    if min_speaker_duration is not None and min_speaker_duration < 0:
        raise DiarizeError("--min-speaker-duration must be >= 0")
    options = _options(
        precision=precision,
        minimum_deployment_target=deployment_target,
        min_activity_frames=min_activity_frames,
        min_speaker_duration_s=min_speaker_duration,
        clean_fallback=False if no_clean_fallback else None,
    )
    ensure_writable_dir(out_dir)
    sources = {
        "segmentation": segmentation_source or source,
        "embedding": embedding_source or source,
    }
    for spec in specs:
        ctx = make_context(
            spec,
            source=sources.get(spec.weights or "", source),
            options=options,
            trust_checkpoint=trust_checkpoint,
            cache_dir=hf_cache,
        )
        if ctx.weights is not None and not ctx.weights.provenance.trained:
            click.echo(
                f"note: {spec.key}: UNTRAINED weights ({ctx.weights.provenance.location}, calibrated)",
                err=True,
            )
        result = convert_model(spec, ctx, out_dir)
        click.echo(
            f"{result.path}  {result.size_bytes / 1e6:.2f} MB  {result.precision}  {result.seconds:.1f} s"
        )


@main.command()
@_source_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("artifacts"),
    show_default=True,
)
@click.pass_context
def build(ctx: click.Context, out_dir: Path, **source_kw) -> None:
    """Build every model (what `make models` runs)."""
    ctx.invoke(convert, models=("all",), out_dir=out_dir, **source_kw)


@main.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def inspect(package: Path, as_json: bool) -> None:
    """Show an mlpackage's I/O, metadata, op histogram and size."""
    from .mlpackage import inspect_package

    info = inspect_package(package)
    if as_json:
        click.echo(json.dumps(info.as_dict(), indent=2, sort_keys=True))
        return
    click.echo(f"{info.path}  ({info.size_bytes / 1e6:.2f} MB, spec v{info.specification_version})")
    click.echo(f"  {info.description}")
    for label, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            flex = "".join(f" axis{a}:{lo}..{hi}" for a, (lo, hi) in t.flexible.items())
            click.echo(f"  {label:6} {t.name:16} {str(t.shape):18} {t.dtype}{flex}")
    click.echo(f"  author: {info.author}  license: {info.license}  version: {info.version}")
    for key, value in sorted(info.metadata.items()):
        click.echo(f"  meta   {key} = {value}")
    total = sum(info.op_histogram.values())
    click.echo(f"  ops ({total}): " + ", ".join(f"{k}={v}" for k, v in info.op_histogram.items()))


if __name__ == "__main__":  # pragma: no cover
    main()
