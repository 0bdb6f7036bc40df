"""The `coreml-diarize` command: parses, calls library functions, prints. Nothing else.

User mistakes end in one line on stderr and a non-zero exit (`--debug` shows the traceback).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from coreml_diarize.converters.convert import PRECISIONS
from coreml_diarize.errors import DiarizeError
from coreml_diarize.validation.backends import BACKENDS, COMPUTE_UNITS

# options several commands share, declared once
backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="auto: Core ML on macOS, the MIL reference executor elsewhere.",
)
trust_option = click.option(
    "--trust-checkpoint",
    is_flag=True,
    help="Allow checkpoints that need full unpickling (can run code).",
)

json_option = click.option(
    "--json",
    "json_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Also write the machine-readable result here (JSON).",
)


def write_json(path: Path, payload) -> None:
    """JSON reports are artifacts too: written atomically."""
    from coreml_diarize.atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def _pipelines() -> tuple[str, ...]:
    from coreml_diarize.diarization.diarize import PIPELINE_NAMES

    return PIPELINE_NAMES


def chain_options(f):
    """--models/--pipeline/--variant/--step: which packages the diarization chain runs, how."""
    f = click.option(
        "--step", "step_s", type=float, default=None, help="Window step in seconds (default 1 s)."
    )(f)
    f = click.option(
        "--variant", default=None, help="e.g. palettize8: use <stem>_<variant>.mlpackage."
    )(f)
    f = click.option(
        "--pipeline",
        type=click.Choice(_pipelines()),
        default="3.1",
        show_default=True,
        help="3.1: agglomerative clustering, the online set; "
        "community-1: PLDA + VBx, the offline set (build --profile offline).",
    )(f)
    return click.option(
        "--models",
        "models_dir",
        type=click.Path(path_type=Path),
        required=True,
        help="Directory holding the pipeline's .mlpackages.",
    )(f)


class DiarizeGroup(click.Group):
    """Turns library errors and usage errors into one clear line + exit code."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        # bad option, missing argument...: one line, no usage dump
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        sys.exit(0)

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
        # coremltools' import-time warnings, silenced for this command only: the filters are
        # restored when the command's context closes (no process-wide state left behind)
        from coreml_diarize.mlpackage import quiet_warnings

        ctx.with_resource(quiet_warnings())


def _weight_families() -> list[str]:
    """The registry's weight families, in pipeline order (each gets a --<family>-source)."""
    from coreml_diarize.models import registry

    return list(dict.fromkeys(s.weights.name for s in registry().values() if s.weights))


def _profiles() -> tuple[str, ...]:
    from .build import profiles

    return profiles()


def _source_options(f):
    """--source, one --<family>-source per weight family of the registry, --trust-checkpoint
    and --hf-cache; the command receives `sources`: family -> source (default --source)."""
    families = _weight_families()

    @functools.wraps(f)
    def with_sources(*args, source: str, **kwargs):
        sources = {family: kwargs.pop(f"{family}_source") or source for family in families}
        return f(*args, sources=sources, **kwargs)

    for family in reversed(families):
        with_sources = click.option(
            f"--{family}-source", default=None, help=f"Override --source for the {family} weights."
        )(with_sources)
    with_sources = click.option(
        "--source",
        default="random",
        show_default=True,
        help="Weights: random[:SEED] (calibrated, untrained), hf:OWNER/REPO[@REV], or a checkpoint path.",
    )(with_sources)
    with_sources = trust_option(with_sources)
    return click.option(
        "--hf-cache", type=click.Path(path_type=Path), default=None, help="Hugging Face cache dir."
    )(with_sources)


def _options(**kw):
    from coreml_diarize.specs import Options

    return Options(**{k: v for k, v in kw.items() if v is not None})


@main.command()
@click.argument("models", nargs=-1, required=True)
@_source_options
@click.option(
    "--out", "out_dir", type=click.Path(path_type=Path), required=True, help="Output directory."
)
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
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
@click.option(
    "--flexible-batch", is_flag=True, help="embedding: accept 1..32 speaker slots (default 3)."
)
def convert(
    models: tuple[str, ...],
    sources: dict[str, str],
    trust_checkpoint: bool,
    hf_cache: Path | None,
    out_dir: Path,
    precision: str,
    deployment_target: str,
    min_activity_frames: float | None,
    min_speaker_duration: float | None,
    no_clean_fallback: bool,
    flexible_batch: bool,
) -> None:
    """Convert MODELS (the registry's keys, or all)."""
    from coreml_diarize.atomic import ensure_writable_dir
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec, registry

    keys = tuple(registry()) if "all" in models else models
    specs = [get_spec(k) for k in keys]  # unknown names fail before any work
    options = _options(
        precision=precision,
        minimum_deployment_target=deployment_target,
        min_activity_frames=min_activity_frames,
        min_speaker_duration_s=min_speaker_duration,
        clean_fallback=False if no_clean_fallback else None,
        flexible_batch=flexible_batch or None,
    )
    ensure_writable_dir(out_dir)
    for spec in specs:
        ctx = make_context(
            spec,
            source=sources[spec.weights.name] if spec.weights else "random",
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
        for sidecar in result.sidecars:
            click.echo(f"{sidecar}")


@main.command()
@_source_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(path_type=Path),
    default=Path("artifacts"),
    show_default=True,
)
@click.option(
    "--profile",
    type=click.Choice(_profiles()),
    default="online",
    show_default=True,
    help="Model set: online (3.1-style chain) or offline (community-1, FluidAudio's offline set).",
)
@backend_option
@click.option("--no-quantize", is_flag=True, help="Skip the 8-bit palettized variants.")
@click.option("--allow-untrained", is_flag=True, help="Bundle seeded random (untrained) weights.")
def build(
    sources: dict[str, str],
    trust_checkpoint: bool,
    hf_cache: Path | None,
    out_dir: Path,
    profile: str,
    backend: str,
    no_quantize: bool,
    allow_untrained: bool,
) -> None:
    """Convert a profile's models, quantize, validate every package, bundle (`make models`)."""
    import time

    from coreml_diarize.atomic import ensure_writable_dir
    from coreml_diarize.mlpackage import package_size

    from .build import build_all

    start = time.perf_counter()
    ensure_writable_dir(out_dir)
    summary = build_all(
        out_dir,
        sources=sources,
        profile=profile,
        quantize=not no_quantize,
        backend=backend,
        allow_untrained=allow_untrained,
        trust_checkpoint=trust_checkpoint,
        cache_dir=hf_cache,
        progress=lambda line: click.echo(line),
    )
    click.echo(
        f"\n{len(summary.packages)} packages, all validated ({time.perf_counter() - start:.0f} s):"
    )
    for package in summary.packages:
        click.echo(f"  {package.name:48} {package_size(package) / 1e6:7.2f} MB")
    for sidecar in summary.sidecars:
        click.echo(f"  {sidecar.name}")
    click.echo(f"bundle: {summary.bundle}\nzip:    {summary.zip_path}")


def _packages(paths: tuple[Path, ...]) -> list[Path]:
    """mlpackages named directly, or found inside build directories / bundles."""
    from coreml_diarize.errors import ArtifactError

    found: list[Path] = []
    for path in paths:
        if path.suffix == ".mlpackage" or (path / "Manifest.json").is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path.glob("*.mlpackage")))
        else:
            raise ArtifactError(f"not an .mlpackage or a directory of them: {path}")
    if not found:
        raise ArtifactError("no .mlpackage found in " + ", ".join(map(str, paths)))
    return found


def _user_audio(files: tuple[Path, ...], chunk: int) -> dict:
    """--audio files as 10 s chunks (resampled/downmixed with a notice, short ones padded)."""
    from coreml_diarize.audio import chunks, read_audio
    from coreml_diarize.errors import AudioError

    out = {}
    for file in files:
        loaded = read_audio(file)
        for notice in loaded.notices:
            click.echo(f"note: {file.name}: {notice}", err=True)
        if loaded.samples.size < loaded.sample_rate:
            raise AudioError(f"audio shorter than 1 s: {file}")
        for i, piece in enumerate(chunks(loaded.samples, chunk)):
            out[f"{file.stem}#{i}"] = piece
    return out


@main.command()
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
    from coreml_diarize.validation.report import validate_package

    from .bundle import save_report

    packages = _packages(paths)
    for name, value in (("--max-abs", max_abs), ("--min-cosine", min_cosine)):
        if value is not None and value < 0:
            raise DiarizeError(f"{name} must be >= 0")
    audio = _user_audio(audio_files, 160000) if audio_files else None
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
        reports.append(report)
        if save:
            save_report(package, report.to_dict())
    if json_path:
        write_json(json_path, [r.to_dict() for r in reports])
    failed = [Path(r.package).name for r in reports if not r.passed]
    if failed:
        raise ValidationFailed("validation failed: " + ", ".join(failed))


@main.command()
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
def package(
    paths: tuple[Path, ...], out_dir: Path, name: str, allow_untrained: bool, with_golden: bool
) -> None:
    """Bundle validated packages with a manifest (hashes, provenance, validation) and a zip."""
    import contextlib
    import tempfile

    from .bundle import make_bundle
    from .golden import write_bundle_golden

    packages = _packages(paths)
    with contextlib.ExitStack() as stack:
        golden = None
        if with_golden:  # scratch space, gone once the bundle holds a copy
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix=".golden."))
            golden = write_bundle_golden(packages, Path(scratch))
        result = make_bundle(
            packages, out_dir, name=name, allow_untrained=allow_untrained, golden=golden
        )
    for a in result.manifest["artifacts"]:
        click.echo(f"  {a['name']:45} {a['size_bytes'] / 1e6:7.2f} MB  {a['tree_sha256'][:16]}")
    click.echo(f"{result.directory}\n{result.zip_path}")


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option(
    "--run-golden",
    is_flag=True,
    help="Also run every package on its golden input against the recorded outputs (exit 6 if any fails).",
)
@backend_option
def verify(bundle: Path, run_golden: bool, backend: str) -> None:
    """Re-check every file hash of a bundle directory or zip against its manifest."""
    from coreml_diarize.errors import ArtifactError, ValidationFailed

    from .bundle import verify_bundle

    problems = verify_bundle(bundle)
    for problem in problems:
        click.echo(f"  {problem}", err=True)
    if problems:
        raise ArtifactError(
            f"bundle {bundle} does not match its manifest ({len(problems)} problem(s))"
        )
    click.echo(f"{bundle}: all hashes match")
    if run_golden:
        from .golden import check_bundle_golden

        reports = check_bundle_golden(bundle, backend=backend)
        for report in reports:
            click.echo(report.line())
        failed = [r.package for r in reports if not r.passed]
        if failed:
            raise ValidationFailed("golden check failed: " + ", ".join(failed))


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--repo", "repo_id", required=True, help="Hub model repo, OWNER/NAME.")
@click.option("--revision", default=None, help="Branch to commit to (created if missing).")
@click.option("--private", is_flag=True, help="Create the repo private (if it does not exist).")
@click.option("--create-pr", is_flag=True, help="Open a pull request instead of committing.")
@click.option("--dry-run", is_flag=True, help="Print the file plan and the card; no network.")
@click.option("--allow-untrained", is_flag=True, help="Publish seeded random (untrained) weights.")
def publish(
    bundle: Path,
    repo_id: str,
    revision: str | None,
    private: bool,
    create_pr: bool,
    dry_run: bool,
    allow_untrained: bool,
) -> None:
    """Verify BUNDLE (directory or .zip) and upload it to the Hub in one commit (HF_TOKEN)."""
    from .publish import check_repo_id, plan_publish, resolve_token
    from .publish import publish as publish_plan

    check_repo_id(repo_id)
    if not dry_run:
        resolve_token()  # fail before hashing the bundle
    with plan_publish(bundle, repo_id=repo_id, allow_untrained=allow_untrained) as plan:
        if dry_run:
            click.echo(plan.describe())
            click.echo(f"\n--- README.md (model card) ---\n{plan.card}")
            click.echo("dry run: nothing was uploaded", err=True)
            return
        result = publish_plan(
            plan,
            repo_id,
            revision=revision,
            private=private,
            create_pr=create_pr,
            progress=lambda line: click.echo(line, err=True),
        )
    click.echo(
        f"published {result.files} files ({result.total_bytes / 1e6:.2f} MB) to {repo_id}"
        + (f", removed {len(result.deleted)} stale" if result.deleted else "")
    )
    click.echo(result.pr_url or result.commit_url or f"https://huggingface.co/{repo_id}")


@main.command()
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


@main.command()
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


@main.command()
@click.argument("audio", type=click.Path(path_type=Path))
@chain_options
@backend_option
@click.option("--rttm", "rttm_out", type=click.Path(path_type=Path), default=None)
@click.option("--every", type=int, default=10, show_default=True, help="Windows per progress line.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
def diarize(
    audio: Path,
    models_dir: Path,
    pipeline: str,
    backend: str,
    variant: str | None,
    rttm_out: Path | None,
    step_s: float | None,
    every: int,
    quiet: bool,
) -> None:
    """Diarize AUDIO with the converted models (pyannote's pipeline logic around them)."""
    from coreml_diarize.diarization.diarize import diarize_file, write_rttm

    if every < 1:
        raise DiarizeError("--every must be >= 1")
    result = diarize_file(
        audio,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        step_s=step_s,
        progress=None if quiet else (lambda line: click.echo(line, err=True)),
        progress_every=every,
    )
    for segment, _, speaker in result.annotation.itertracks(yield_label=True):
        click.echo(f"{segment.start:9.3f} {segment.end:9.3f}  {speaker}")
    if rttm_out is not None:
        write_rttm(result.annotation, rttm_out)
    click.echo(
        f"{len(result.annotation.labels())} speakers, {result.windows} windows, "
        f"RTF {result.rtf:.3f} ({result.seconds:.1f} s, {result.backend})",
        err=True,
    )


@main.command()
@click.argument("audio", type=click.Path(path_type=Path))
@chain_options
@click.option("--reference", type=click.Path(path_type=Path), default=None, help="Reference RTTM.")
@json_option
@backend_option
@trust_option
@click.option("--quiet", is_flag=True, help="No progress lines.")
def compare(
    audio: Path,
    models_dir: Path,
    pipeline: str,
    reference: Path | None,
    json_path: Path | None,
    backend: str,
    variant: str | None,
    step_s: float | None,
    trust_checkpoint: bool,
    quiet: bool,
) -> None:
    """pyannote's pipeline in PyTorch vs the converted chain on AUDIO: DER/JER and RTF."""
    from coreml_diarize.diarization.compare import compare_file

    result = compare_file(
        audio,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        step_s=step_s,
        reference_rttm=reference,
        trust_checkpoint=trust_checkpoint,
        progress=None if quiet else (lambda line: click.echo(line, err=True)),
    )
    click.echo(result.table())
    if json_path:
        write_json(json_path, result.to_dict())


if __name__ == "__main__":  # pragma: no cover
    main()
