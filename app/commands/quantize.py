"""`coreml-diarize quantize`."""

from __future__ import annotations

from pathlib import Path

import click

from coreml_diarize.errors import DiarizeError

from ..cli_options import backend_option, json_option, write_json


@click.command()
@click.argument("package_path", metavar="MODEL.mlpackage", type=click.Path(path_type=Path))
@click.option("--mode", default=None, help="fp16 | fp16-selective | palettize | linear | mixed.")
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
    help="Recipe file (.yaml/.json; or a mixed recipe file); flags override its keys.",
)
@click.option(
    "--sensitivity",
    "sensitivity_path",
    type=click.Path(path_type=Path),
    default=None,
    help="mixed: the package's sensitivity table (JSON) to search a recipe from.",
)
@click.option(
    "--target-mb", type=float, default=None, help="mixed: the best model within this size."
)
@click.option(
    "--max-loss", type=float, default=None, help="mixed: the smallest model within this loss."
)
@click.option(
    "--recipe-out",
    type=click.Path(path_type=Path),
    default=None,
    help="mixed: write the recipe file here (commit it: quantize/mixed_recipes/).",
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
    sensitivity_path: Path | None,
    target_mb: float | None,
    max_loss: float | None,
    recipe_out: Path | None,
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
    mixed = _mixed_recipe(
        package_path, recipe, config_file, sensitivity_path, target_mb, max_loss, recipe_out
    )
    config = mixed.config if mixed is not None else QuantizeConfig.from_mapping(recipe)
    if with_report:
        resolve_backend(backend)  # a bad --backend fails before minutes of k-means
    provenance = dict(mixed.search or {}) if mixed is not None else None
    result = quantize_package(package_path, out, config, search=provenance)
    if mixed is not None and recipe_out is not None:
        mixed.write(recipe_out)  # after the package: a recipe that could not be applied is not kept
        click.echo(f"recipe: {recipe_out}")
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


def _mixed_recipe(
    package_path: Path,
    recipe: dict,
    config_file: Path | None,
    sensitivity_path: Path | None,
    target_mb: float | None,
    max_loss: float | None,
    recipe_out: Path | None,
):
    """The MixedRecipe to apply (searched from --sensitivity, or read from a mixed recipe
    --config), or None for the other modes; misplaced mixed options are one-line errors."""
    from coreml_diarize.quantize.mixed import (
        MixedRecipe,
        check_recipe_model,
        is_mixed_recipe,
        search_recipe,
    )

    searching = sensitivity_path is not None or target_mb is not None or max_loss is not None
    if is_mixed_recipe(recipe):
        if searching:
            raise DiarizeError(
                "--config gives a mixed recipe already; --sensitivity/--target-mb/--max-loss "
                "search a new one: use one or the other"
            )
        mixed = MixedRecipe.from_mapping(recipe, origin=config_file.name)
        check_recipe_model(mixed, package_path)
        return mixed
    if recipe.get("mode") != "mixed":
        if searching or recipe_out is not None:
            raise DiarizeError(
                "--sensitivity, --target-mb, --max-loss and --recipe-out go with --mode mixed"
            )
        return None
    if sensitivity_path is None:
        raise DiarizeError(
            "--mode mixed needs --sensitivity TABLE.json with --target-mb or --max-loss "
            "(or --config RECIPE.json, a recipe searched before)"
        )
    if (target_mb is None) == (max_loss is None):
        raise DiarizeError("--mode mixed searches with one limit: --target-mb or --max-loss")
    settings = {k: v for k, v in recipe.items() if k != "mode"}
    mixed, _ = search_recipe(
        package_path, sensitivity_path, target_mb=target_mb, max_loss=max_loss, settings=settings
    )
    return mixed
