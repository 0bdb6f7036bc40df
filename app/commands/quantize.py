"""`coreml-diarize quantize`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.errors import DiarizeError

from ..cli_options import backend_option, json_option, write_json


@click.command()
@click.argument("package_path", metavar="MODEL.mlpackage", type=click.Path(path_type=Path))
@click.option("--mode", default=None, help="fp16 | fp16-selective | palettize | linear.")
@click.option("--nbits", type=int, default=None, help="palettize: 1,2,3,4,6,8 (default 8).")
@click.option("--granularity", default=None, help="palettize: per_tensor | per_grouped_channel.")
@click.option(
    "--group-size", type=int, default=None, help="Channels per LUT (per_grouped_channel)."
)
@click.option("--weight-threshold", type=int, default=None, help="Leave tensors this small alone.")
@click.option("--seed", type=int, default=None, help="k-means++ seed (palettize).")
@click.option("--kmeans", default=None, help="palettize: numpy (seeded, default) | coremltools.")
@click.option(
    "--compute",
    default=None,
    help="palettize/linear: fp16 (default; can run on the Neural Engine) | fp32 (CPU/GPU only).",
)
@click.option(
    "--exclude",
    multiple=True,
    help="Weight to leave uncompressed (repeatable; default: the model's own list).",
)
@click.option(
    "--compress-all", is_flag=True, help="Compress every weight, even the model's own list."
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(path_type=Path),
    default=None,
    help="Recipe file (.yaml/.json); flags override its keys.",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output directory (or an explicit .mlpackage path).",
)
@click.option("--report", "with_report", is_flag=True, help="Score it against PyTorch.")
@json_option
@backend_option
def quantize(
    package_path: Path,
    config_file: Path | None,
    out: Path,
    with_report: bool,
    json_path: Path | None,
    backend: str,
    exclude: tuple[str, ...],
    compress_all: bool,
    **settings,
) -> None:
    """Quantize a saved MODEL.mlpackage into a new package (the input is never modified)."""
    from coreml_diarize.errors import ValidationFailed
    from coreml_diarize.quantize import QuantizeConfig, load_recipe_file, quantize_package
    from coreml_diarize.validation.backends import resolve_backend
    from coreml_diarize.validation.quantize_report import quantize_report

    recipe = load_recipe_file(config_file) if config_file else {}
    recipe.update({k: v for k, v in settings.items() if v is not None})
    if exclude and compress_all:
        raise DiarizeError("--exclude and --compress-all contradict each other")
    if exclude or compress_all:
        recipe["exclude"] = list(exclude)
    config = QuantizeConfig.from_mapping(recipe)
    if with_report:
        resolve_backend(backend)  # a bad --backend fails before minutes of k-means
    result = quantize_package(package_path, out, config)
    click.echo(
        f"{result.dst}  {result.size_before / 1e6:.2f} MB -> {result.size_after / 1e6:.2f} MB"
        f" ({result.ratio:.2f}x)  {config.name}  {result.seconds:.1f} s"
    )
    report = None
    if with_report:
        report = quantize_report(result.dst, source_package=result.src, backend=backend)
        click.echo(report.format_table())
    if json_path:
        payload = {"result": result.to_dict(), "report": report.to_dict() if report else None}
        write_json(json_path, payload)
    if report is not None and not report.passed:
        raise ValidationFailed(
            f"{result.dst.name} fails its '{report.tolerance_family}' tolerances "
            f"({report.failures[0]}); the package is kept for inspection"
        )
