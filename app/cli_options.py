"""Options and helpers several commands share, declared once (the commands are in commands/)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import click

from coreml_diarize.validation.backends import BACKENDS

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


def pipelines_choice() -> tuple[str, ...]:
    from coreml_diarize.diarization.pipelines import PIPELINE_NAMES

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
        type=click.Choice(pipelines_choice()),
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


def weight_families() -> list[str]:
    """The registry's weight families, in pipeline order (each gets a --<family>-source)."""
    from coreml_diarize.models import registry

    return list(dict.fromkeys(s.weights.name for s in registry().values() if s.weights))


def profiles_choice() -> tuple[str, ...]:
    from .build import profiles

    return profiles()


def source_options(f):
    """--source, one --<family>-source per weight family of the registry, --trust-checkpoint
    and --hf-cache; the command receives `sources`: family -> source (default --source)."""
    families = weight_families()

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


def options_from(**kw):
    from coreml_diarize.specs import Options

    return Options(**{k: v for k, v in kw.items() if v is not None})


def ship_option(f):
    """--ship MODEL=VARIANT (repeatable) or --ship device: which variant of each model takes its
    plain name (app/variants.py); the command receives `ship`, a ShipChoice or None."""

    def parse(ctx, param, values):
        from coreml_diarize.errors import DiarizeError

        from .variants import ShipChoice

        try:
            return ShipChoice.parse(values) if values else None
        except DiarizeError as exc:
            raise click.BadParameter(str(exc)) from exc

    return click.option(
        "--ship",
        multiple=True,
        callback=parse,
        metavar="MODEL=VARIANT|device",
        help="Put this variant under the model's plain name (e.g. wespeaker_v2=palettize8); "
        "'device': 8-bit where the model has it, fp32 elsewhere. Default: fp32 (docs/shipping.md).",
    )(f)


def user_audio(files: tuple[Path, ...], chunk: int) -> dict:
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
