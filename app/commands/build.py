"""`coreml-diarize build`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import backend_option, profiles_choice, ship_option, source_options
from .convert import embedding_output_option, fbank_front_end_option


@click.command()
@source_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("artifacts"),
    show_default=True,
)
@click.option(
    "--profile",
    type=click.Choice(profiles_choice()),
    default="online",
    show_default=True,
    help="Model set: online (3.1-style chain) or offline (community-1, FluidAudio's offline set).",
)
@backend_option
@click.option("--no-quantize", is_flag=True, help="Skip the 8-bit palettized variants.")
@click.option("--allow-untrained", is_flag=True, help="Bundle seeded random (untrained) weights.")
@ship_option
@embedding_output_option
@fbank_front_end_option
@click.option(
    "--recipe",
    "recipe_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Mixed recipe file (repeatable; it names its model): adds that model's mixed variant.",
)
def build(
    sources: dict[str, str],
    trust_checkpoint: bool,
    hf_cache: Path | None,
    out_dir: Path,
    profile: str,
    backend: str,
    no_quantize: bool,
    allow_untrained: bool,
    ship,
    embedding_output: str,
    fbank_front_end: str,
    recipe_files: tuple[Path, ...],
) -> None:
    """Convert a profile's models, quantize, validate every package, bundle (`make models`)."""
    import time

    from coreml_diarize.atomic import ensure_writable_dir
    from coreml_diarize.mlpackage import package_size
    from coreml_diarize.quantize.mixed import MixedRecipe
    from coreml_diarize.specs import Options

    from ..build import build_all

    start = time.perf_counter()
    recipes = tuple(MixedRecipe.from_file(path) for path in recipe_files)  # bad files fail first
    ensure_writable_dir(out_dir)
    summary = build_all(
        out_dir,
        sources=sources,
        profile=profile,
        options=Options(embedding_output=embedding_output, fbank_front_end=fbank_front_end),
        quantize=not no_quantize,
        backend=backend,
        allow_untrained=allow_untrained,
        ship=ship,
        trust_checkpoint=trust_checkpoint,
        cache_dir=hf_cache,
        progress=lambda line: click.echo(line),
        recipes=recipes,
    )
    click.echo(
        f"\n{len(summary.packages)} packages, all validated ({time.perf_counter() - start:.0f} s):"
    )
    for package in summary.packages:
        click.echo(f"  {package.name:48} {package_size(package) / 1e6:7.2f} MB")
    for sidecar in summary.sidecars:
        click.echo(f"  {sidecar.name}")
    click.echo(f"bundle: {summary.bundle}\nzip:    {summary.zip_path}")
