"""`coreml-diarize package`."""

from __future__ import annotations

from pathlib import Path

import click

from ..cli_options import ship_option


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", type=click.Path(path_type=Path), required=True)
@click.option("--name", default="coreml-diarize-bundle", show_default=True)
@click.option("--allow-untrained", is_flag=True, help="Package seeded random (untrained) weights.")
@click.option(
    "--golden",
    "with_golden",
    is_flag=True,
    help="Add golden I/O (rebuilds each reference from the packages' provenance; `build` always does).",
)
@ship_option
def package(
    paths: tuple[Path, ...],
    out_dir: Path,
    name: str,
    allow_untrained: bool,
    with_golden: bool,
    ship,
) -> None:
    """Bundle validated packages with a manifest (hashes, provenance, validation) and a zip."""
    import contextlib
    import tempfile

    from coreml_diarize.mlpackage import collect_packages

    from ..bundle import make_bundle
    from ..golden import write_bundle_golden

    packages = collect_packages(paths)
    with contextlib.ExitStack() as stack:
        golden = None
        if with_golden:  # scratch space, gone once the bundle holds a copy
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=".golden."))
            golden = write_bundle_golden(packages, Path(scratch))
        result = make_bundle(
            packages,
            out_dir,
            name=name,
            allow_untrained=allow_untrained,
            golden=golden,
            ship=ship,
        )
    for a in result.manifest["artifacts"]:
        click.echo(f"  {a['name']:45} {a['size_bytes'] / 1e6:7.2f} MB  {a['tree_sha256'][:16]}")
    click.echo(f"{result.directory}\n{result.zip_path}")
