"""`coreml-diarize inspect`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.argument("package", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--ane", is_flag=True, help="Neural Engine readiness: per-op eligibility, partitions, FLOPs."
)
def inspect(package: Path, as_json: bool, ane: bool) -> None:
    """Show an mlpackage's I/O, metadata, op histogram and size."""
    from coreml_diarize.mlpackage import inspect_package

    if ane:
        _inspect_ane(package, as_json)
        return
    info = inspect_package(package)
    if as_json:
        click.echo(json.dumps(info.as_dict(), indent=2, sort_keys=True))
        return
    click.echo(f"{info.path}  ({info.size_bytes / 1e6:.2f} MB, spec v{info.specification_version})")
    click.echo(f"  {info.description}")
    for label, tensors in (("input", info.inputs), ("output", info.outputs)):
        for t in tensors:
            flex = "".join(f" axis{a}:{lo}..{hi}" for a, (lo, hi) in t.flexible.items())
            flex += "".join(f" axis{a}:{{{_sizes(sizes)}}}" for a, sizes in t.enumerated.items())
            click.echo(f"  {label:6} {t.name:16} {str(t.shape):18} {t.dtype}{flex}")
    click.echo(f"  author: {info.author}  license: {info.license}  version: {info.version}")
    for key, value in sorted(info.metadata.items()):
        click.echo(f"  meta   {key} = {value}")
    total = sum(info.op_histogram.values())
    click.echo(f"  ops ({total}): " + ", ".join(f"{k}={v}" for k, v in info.op_histogram.items()))


def _inspect_ane(package: Path, as_json: bool) -> None:
    """`inspect --ane`: the static Neural Engine readiness report (docs/ane.md)."""
    from coreml_diarize.validation.ane import ane_report

    report = ane_report(package)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
        return
    click.echo(f"{report.path}  Neural Engine readiness (static prediction, docs/ane.md)")
    bound = " (lower bound: flexible dims counted as 1)" if report.flops_lower_bound else ""
    click.echo(
        f"  ops {report.op_count}  ANE-eligible {report.eligible_count}"
        f" ({report.eligible_share:.1%}; FLOP-weighted {report.eligible_flop_share:.1%})"
        f"  switches {report.switches}"
    )
    click.echo(
        f"  FLOPs {report.flops / 1e9:.3f} G{bound}  weights {report.weight_bytes / 1e6:.3f} MB"
    )
    for name, kind in report.flexible_inputs.items():
        click.echo(f"  flexible input {name} ({kind})")
    if report.shape_alternative is not None:
        click.echo(f"  {report.shape_alternative.sentence()}")
    click.echo(f"  {'op type':18} {'count':>5}  {'dtype':10} {'ANE':>7}  reasons")
    for row in report.by_op_type():
        click.echo(
            f"  {row.op_type:18} {row.count:5}  {','.join(row.dtypes):10}"
            f" {f'{row.eligible}/{row.count}':>7}  {','.join(row.reasons)}".rstrip()
        )
    click.echo("  partitions:")
    for part in report.partitions:
        click.echo(
            f"    {part.device:3} ops {part.first_index}-{part.last_index} ({part.op_count})"
            f"  {part.first_op} .. {part.last_op}  {part.flops / 1e9:.3f} GFLOPs"
        )


def _sizes(sizes: tuple[int, ...]) -> str:
    """Enumerated sizes, a run of consecutive ones as lo..hi: {1..32}, {1,2,4}."""
    if len(sizes) > 2 and list(sizes) == list(range(sizes[0], sizes[-1] + 1)):
        return f"{sizes[0]}..{sizes[-1]}"
    return ",".join(map(str, sizes))
