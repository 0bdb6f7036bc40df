"""Speaker diarization with the converted models, sharing everything else with pyannote 4.0.7.

The chain is pyannote's own `SpeakerDiarization` pipeline with its two neural inferences
substituted by functions backed by the five .mlpackages:

* segmentation: pyannote's `Inference.slide` cuts the windows (10 s, step = 10 % of the
  duration, last window zero-padded) exactly as in PyTorch; only its `infer` is replaced, by
  `pyannote_segmentation` (powerset log-probabilities) -> `powerset_postprocessor` (argmax ->
  hard per-speaker masks, what pyannote's `Powerset.to_multilabel` does in `infer`);
* embeddings: per window, the audio cropped by pyannote's `Audio.crop` and the binarized
  masks go through `embedding_preprocessor` (overlap-free masks with pyannote's fallback, i.e.
  `get_embeddings(exclude_overlap=True)`) -> `wespeaker_v2` -> `unified_post_embedding`
  (per-speaker activity / validity, recorded as diagnostics: pyannote's own logic decides).

Everything after that (speaker counting, clustering, `reconstruct`, aggregation,
`to_annotation`, label naming) is pyannote's code, run on the same numpy arrays the PyTorch
pipeline produces. So a difference between the two pipelines comes from the networks alone.

That is the "3.1" pipeline (the online chain, agglomerative clustering). The "community-1"
pipeline (the offline chain: pyannote's VBx clustering with a PLDA) swaps its neural and PLDA
steps the same way, in community.py. Each pipeline is one `PipelineRecipe` (`PIPELINES`): the
chain of packages it runs, pyannote's clustering and parameters, and how the converted
pipeline swaps its steps; `make_pipeline`, `converted_pipeline`, `diarize_file` and
compare.py take its name.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.checkpoints import quiet_pyannote
from coreml_diarize.errors import ArtifactError, AudioError, DiarizeError

from . import community

# pyannote 3.1's tuned hyper-parameters for the agglomerative (centroid) clustering the online
# pipeline uses without PLDA files; both pipelines of a comparison get exactly these.
DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7},
}
CLUSTERING = "AgglomerativeClustering"
PROGRESS_EVERY = 10  # windows between progress lines


# --- packages ------------------------------------------------------------------------------


class TimedRunner:
    """The validation backend's runner for one package (loaded once, kept for every window),
    timed: the chain reports where its time goes."""

    def __init__(self, path: Path, backend: str) -> None:
        from coreml_diarize.validation.backends import open_package

        self.path = Path(path)
        self._runner = open_package(self.path, backend=backend)
        self.backend = self._runner.backend
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self._runner.predict(
            {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        )
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return {k: np.asarray(v) for k, v in out.items()}


@dataclass(frozen=True)
class ChainPaths:
    """The packages of one chain, by spec key (segmentation, postprocessor, ...)."""

    paths: dict[str, Path]
    variant: str | None = None
    chain: str = "online"  # the registry chain they were found for

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]


def find_packages(
    models_dir: Path | str, variant: str | None = None, *, chain: str = "online"
) -> ChainPaths:
    """The packages of `chain` (the registry's models whose `chains` name it) in `models_dir`,
    and the files their specs write beside them (e.g. plda-parameters.json); `variant` (e.g.
    palettize8) picks `<stem>_<variant>.mlpackage` for the models that have device variants
    when present, else the plain one."""
    from coreml_diarize.models import registry

    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ArtifactError(f"models directory not found: {models_dir}")
    paths: dict[str, Path] = {}
    missing: list[str] = []
    for key, spec in registry().items():
        if chain not in spec.chains:
            continue
        plain = models_dir / f"{spec.filename}.mlpackage"
        chosen = plain
        if variant and spec.device_variants:
            compressed = models_dir / f"{spec.filename}_{variant}.mlpackage"
            if compressed.is_dir():
                chosen = compressed
        if not chosen.is_dir():
            missing.append(chosen.name)
        missing.extend(name for name in spec.sidecars if not (models_dir / name).is_file())
        paths[key] = chosen
    if not paths:
        raise ArtifactError(f"no model of the registry belongs to the '{chain}' chain")
    if missing:
        raise ArtifactError(f"{models_dir} lacks {', '.join(dict.fromkeys(missing))}")
    return ChainPaths(paths, variant, chain)


@dataclass
class ChainModels:
    """Loaded runners for a chain's packages (reuse one per package across windows and files).

    `runners` maps spec keys to callables `(**inputs) -> {output: array}` with `seconds` and
    `calls` counters (TimedRunner; tests may put stand-ins with the same I/O there)."""

    paths: ChainPaths
    backend: str
    runners: dict[str, Any]
    windows: int = 0  # segmentation windows run since the last reset_timers

    @classmethod
    def load(cls, paths: ChainPaths, backend: str = "auto") -> ChainModels:
        runners = {key: TimedRunner(path, backend) for key, path in paths.paths.items()}
        used = next(iter(runners.values())).backend
        return cls(paths, used, runners)

    def model_seconds(self) -> dict[str, float]:
        return {key: runner.seconds for key, runner in self.runners.items()}

    def reset_timers(self) -> None:
        self.windows = 0
        for runner in self.runners.values():
            runner.seconds, runner.calls = 0.0, 0


# --- the pipeline ---------------------------------------------------------------------------


def _uninitialised_plda():
    """`SpeakerDiarization` insists on a PLDA object even for agglomerative clustering, which
    never touches it; an instance without files passes its type check (notes.md). The
    converted community-1 pipeline starts from one too, then swaps in the PldaRho package."""
    from pyannote.audio.core.plda import PLDA

    return PLDA.__new__(PLDA)


@dataclass(frozen=True)
class PipelineRecipe:
    """One pyannote diarization pipeline this toolkit reproduces with converted packages."""

    name: str  # "3.1" | "community-1": what --pipeline takes
    chain: str  # the registry chain whose packages the converted pipeline runs
    clustering: str  # pyannote's `Clustering` member
    # what `instantiate` gets; None = pyannote's own `SpeakerDiarization.default_parameters()`
    parameters: Mapping[str, Mapping[str, Any]] | None
    # whether the clustering needs a real PLDA (the PyTorch side must be given one)
    uses_plda: bool
    # the converted pipeline's class (a SpeakerDiarization subclass), built lazily
    converted_class: Callable[[], type]
    # (pipeline, chain) -> None: swaps the pipeline's neural (and PLDA) steps for the packages
    install: Callable[[Any, ChainModels], None]
    # SpeakerDiarization's segmentation_batch_size / embedding_batch_size
    batch_size: int = 1
    description: str = ""


def _pyannote_class() -> type:
    from pyannote.audio.pipelines import SpeakerDiarization

    return SpeakerDiarization


def _converted_pipeline_class():
    """Defined lazily: importing pyannote costs seconds, listing CLI commands should not."""
    from pyannote.audio.pipelines import SpeakerDiarization

    class ConvertedSpeakerDiarization(SpeakerDiarization):
        """pyannote's pipeline with segmentation and embedding inference done by the packages."""

        chain: ChainModels
        diagnostics: dict[str, Any]

        def get_embeddings(self, file, binary_segmentations, exclude_overlap=False, hook=None):
            if not exclude_overlap:  # the preprocessor package bakes overlap exclusion in
                raise DiarizeError("the converted chain always excludes overlap from embeddings")
            runners = self.chain.runners
            num_chunks, num_frames, num_speakers = binary_segmentations.data.shape
            if hook is not None:
                hook("embeddings", None, total=num_chunks, completed=0)
            zero_db = np.zeros((1, self._embedding.dimension), dtype=np.float32)
            embeddings, activity, valid = [], [], []
            for c, (chunk, masks) in enumerate(binary_segmentations, 1):
                # the same crop pyannote's get_embeddings makes (zero-padded past the end)
                waveform, _ = self._audio.crop(file, chunk, mode="pad")
                masks = np.nan_to_num(masks, nan=0.0).astype(np.float32)[None]  # (1, F, S)
                audio = waveform.numpy().reshape(1, 1, -1)
                pre = runners["preprocessor"](audio=audio, speaker_masks=masks)
                emb = runners["embedding"](waveform=pre["waveform"], mask=pre["mask"])["embedding"]
                post = runners["post-embedding"](
                    embedding=emb, speaker_db=zero_db, speaker_masks=masks
                )
                embeddings.append(emb[:num_speakers])
                activity.append(post["activity"])
                valid.append(post["valid"])
                if hook is not None:
                    hook("embeddings", None, total=num_chunks, completed=c)
            self.diagnostics["activity"] = np.stack(activity)
            self.diagnostics["valid"] = np.stack(valid)
            return np.stack(embeddings)

    return ConvertedSpeakerDiarization


def _package_infer(chain: ChainModels, frames: int, classes: int):
    """A replacement for `Inference.infer`: chunks (B, 1, N) -> hard masks (B, F, S)."""

    def infer(chunks) -> np.ndarray:
        out = []
        for chunk in chunks.numpy().astype(np.float32):
            segments = chain.runners["segmentation"](audio=chunk[None])["segments"]
            if segments.shape[1:] != (frames, classes):
                raise ArtifactError(
                    f"{chain.paths['segmentation'].name} returns {segments.shape[1:]} per chunk, "
                    f"pyannote's architecture expects ({frames}, {classes})"
                )
            masks = chain.runners["postprocessor"](segments=segments)["speaker_masks"]
            out.append(masks[0])
            chain.windows += 1
        return np.stack(out)

    return infer


def _install_online(pipeline, chain: ChainModels) -> None:
    """3.1: embeddings by the subclass's get_embeddings; segmentation's `infer` replaced
    (pyannote's slide() keeps its windowing, the postprocessor package does the argmax)."""
    model = pipeline._segmentation.model
    samples = model.audio.get_num_samples(pipeline._segmentation.duration)
    frames = int(model.num_frames(samples))
    classes = int(model.specifications.num_powerset_classes)
    pipeline._segmentation.infer = _package_infer(chain, frames, classes)


PIPELINES: dict[str, PipelineRecipe] = {
    recipe.name: recipe
    for recipe in (
        PipelineRecipe(
            name="3.1",
            chain="online",
            clustering=CLUSTERING,
            parameters=DEFAULT_PARAMETERS,
            uses_plda=False,
            converted_class=_converted_pipeline_class,
            install=_install_online,
            description="pyannote 3.1-style: agglomerative clustering, the five online packages",
        ),
        PipelineRecipe(
            name="community-1",
            chain="offline",
            clustering="VBxClustering",
            parameters=None,  # SpeakerDiarization.default_parameters(): community-1's
            uses_plda=True,
            converted_class=_pyannote_class,
            install=community.install,
            # community-1's config.yaml (docs/offline_contract.md §7)
            batch_size=32,
            description="pyannote community-1: VBx clustering with PLDA, the offline packages",
        ),
    )
}
PIPELINE_NAMES = tuple(PIPELINES)


def pipeline_recipe(pipeline: str | PipelineRecipe) -> PipelineRecipe:
    """The recipe named `pipeline` ("3.1" | "community-1"); a recipe is returned as is."""
    if isinstance(pipeline, PipelineRecipe):
        return pipeline
    try:
        return PIPELINES[pipeline]
    except KeyError:
        raise DiarizeError(
            f"unknown pipeline '{pipeline}' (choose from {', '.join(PIPELINE_NAMES)})"
        ) from None


def make_pipeline(
    segmentation_model,
    embedding_model,
    *,
    pipeline: str | PipelineRecipe = "3.1",
    plda=None,
    step_s: float | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    cls: type | None = None,
    **kwargs: Any,
):
    """pyannote's `SpeakerDiarization` on in-memory models, offline, instantiated.

    `pipeline` names the recipe (clustering, parameters, batch sizes); `plda` is the pyannote
    `PLDA` object its VBx clustering needs (required for community-1, unused by 3.1).
    `step_s` is the window step in seconds (pyannote's default: 10 % of the window duration).
    `parameters` overrides the recipe's. `cls` lets the converted chain substitute its class;
    every other argument is shared.
    """
    quiet_pyannote()
    from pyannote.audio.pipelines import SpeakerDiarization

    recipe = pipeline_recipe(pipeline)
    if plda is None:
        if recipe.uses_plda:
            raise DiarizeError(f"the {recipe.name} pipeline needs a PLDA ({recipe.clustering})")
        plda = _uninitialised_plda()
    duration = float(segmentation_model.specifications.duration)
    if step_s is None:
        fraction = 0.1
    else:
        if not (step_s > 0 and step_s <= duration):
            raise DiarizeError(f"--step must be in (0, {duration:g}] seconds, got {step_s:g}")
        fraction = step_s / duration
    options: dict[str, Any] = {
        "segmentation_batch_size": recipe.batch_size,
        "embedding_batch_size": recipe.batch_size,
        **kwargs,
    }
    built = (cls or SpeakerDiarization)(
        segmentation=segmentation_model,
        embedding=embedding_model,
        segmentation_step=fraction,
        # what both converted chains implement (pyannote 3.1's and community-1's setting)
        embedding_exclude_overlap=True,
        plda=plda,
        clustering=recipe.clustering,
        **options,
    )
    chosen = parameters or recipe.parameters or built.default_parameters()
    built.instantiate({k: dict(v) for k, v in chosen.items()})
    return built


def converted_pipeline(
    chain: ChainModels,
    *,
    pipeline: str | PipelineRecipe = "3.1",
    step_s: float | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
):
    """pyannote's pipeline `pipeline` whose neural (and PLDA) steps run the chain's packages.

    The pipeline still needs pyannote model *objects* for their specifications, receptive field
    and audio settings (window timing, frame resolution): untrained architectures serve, their
    weights are never used.
    """
    from coreml_diarize.sources import build_architecture

    recipe = pipeline_recipe(pipeline)
    if chain.paths.chain != recipe.chain:
        raise DiarizeError(
            f"the {recipe.name} pipeline runs the {recipe.chain} packages, "
            f"these are the {chain.paths.chain} ones"
        )
    built = make_pipeline(
        build_architecture("segmentation"),
        build_architecture("embedding"),
        pipeline=recipe,
        plda=_uninitialised_plda(),  # community-1: replaced by the PLDA package in install
        step_s=step_s,
        parameters=parameters,
        cls=recipe.converted_class(),
    )
    built.chain = chain
    built.diagnostics = {}
    built.recipe = recipe
    recipe.install(built, chain)
    return built


# --- running it -----------------------------------------------------------------------------


@dataclass
class DiarizationResult:
    annotation: Any  # pyannote.core.Annotation
    uri: str
    duration_s: float
    seconds: float  # wall time of the whole pipeline
    windows: int
    backend: str
    variant: str | None = None
    model_seconds: dict[str, float] = field(default_factory=dict)
    valid_speakers_per_window: list[int] = field(default_factory=list)
    pipeline: str = "3.1"

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / audio duration (< 1 is faster than real time)."""
        return self.seconds / self.duration_s if self.duration_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "pipeline": self.pipeline,
            "duration_s": self.duration_s,
            "seconds": self.seconds,
            "rtf": self.rtf,
            "windows": self.windows,
            "backend": self.backend,
            "variant": self.variant,
            "speakers": sorted(map(str, self.annotation.labels())),
            "speech_s": float(self.annotation.get_timeline().support().duration()),
            "model_seconds": self.model_seconds,
            "valid_speakers_per_window": self.valid_speakers_per_window,
        }


def progress_hook(progress: Callable[[str], None] | None, every: int = PROGRESS_EVERY):
    """A pyannote pipeline hook printing one line per `every` windows of each step."""

    last: dict[str, int] = {}

    def hook(step_name, step_artefact, file=None, total=None, completed=None):
        if progress is None or total is None or completed is None or completed == 0:
            return
        # batched steps report whole batches (pyannote's slide even `batch_size` past the
        # end, then the padded window again): print when a multiple of `every` is passed
        done = min(completed, total)
        before = last.get(step_name, 0)
        if done == before or (done < total and done // every <= before // every):
            return
        last[step_name] = done
        progress(f"{step_name}: {done}/{total} windows")

    return hook


def audio_file(samples: np.ndarray, sample_rate: int, uri: str) -> dict[str, Any]:
    """The in-memory AudioFile both pipelines take."""
    import torch

    if samples.ndim != 1 or samples.size == 0:
        raise AudioError("audio must be a non-empty mono signal")
    return {
        "waveform": torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None],
        "sample_rate": int(sample_rate),
        "uri": uri,
    }


def run_pipeline(pipeline, file: Mapping[str, Any], hook=None):
    """Apply a pipeline, returning (annotation, seconds)."""
    import warnings

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyannote warns about speaker-count bounds, telemetry
        output = pipeline(dict(file), hook=hook)
    seconds = time.perf_counter() - start
    annotation = getattr(output, "speaker_diarization", output)
    return annotation, seconds


def diarize_samples(
    samples: np.ndarray,
    chain: ChainModels,
    *,
    sample_rate: int = 16000,
    uri: str = "audio",
    pipeline: str | PipelineRecipe = "3.1",
    step_s: float | None = None,
    built=None,
    progress: Callable[[str], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> DiarizationResult:
    """Diarize mono float32 `samples` with the converted chain (pyannote logic around it).

    `pipeline` names the recipe ("3.1" on the online chain, "community-1" on the offline one);
    `built` is a pipeline `converted_pipeline` already made for `chain` (reused across files).
    """
    built = built or converted_pipeline(chain, pipeline=pipeline, step_s=step_s)
    file = audio_file(samples, sample_rate, uri)
    chain.reset_timers()
    built.diagnostics = {}
    annotation, seconds = run_pipeline(built, file, hook=progress_hook(progress, progress_every))
    annotation.uri = uri
    valid = built.diagnostics.get("valid")
    return DiarizationResult(
        annotation=annotation,
        uri=uri,
        duration_s=samples.size / sample_rate,
        seconds=seconds,
        windows=chain.windows,
        backend=chain.backend,
        variant=chain.paths.variant,
        model_seconds=chain.model_seconds(),
        valid_speakers_per_window=[] if valid is None else [int(v.sum()) for v in valid],
        pipeline=getattr(built, "recipe", pipeline_recipe(pipeline)).name,
    )


def open_file_and_chain(
    audio_path: Path | str,
    models_dir: Path | str,
    *,
    pipeline: str | PipelineRecipe = "3.1",
    backend: str = "auto",
    variant: str | None = None,
    progress: Callable[[str], None] | None = None,
):
    """(recipe, loaded chain, audio) for running `pipeline` on a file: the packages are found
    before the audio is read (a bad models dir fails first), and the audio's notices
    (resampled, downmixed...) go to `progress`."""
    from coreml_diarize.audio import read_audio

    recipe = pipeline_recipe(pipeline)
    paths = find_packages(models_dir, variant, chain=recipe.chain)
    loaded = read_audio(audio_path)
    for notice in loaded.notices:
        if progress is not None:
            progress(f"note: {notice}")
    return recipe, ChainModels.load(paths, backend), loaded


def diarize_file(
    audio_path: Path | str,
    models_dir: Path | str,
    *,
    pipeline: str = "3.1",
    backend: str = "auto",
    variant: str | None = None,
    step_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> DiarizationResult:
    """Read `audio_path` (any rate / channels: resampled, downmixed) and diarize it with the
    converted `pipeline` ("3.1": the online packages, "community-1": the offline ones)."""

    recipe, chain, loaded = open_file_and_chain(
        audio_path,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        progress=progress,
    )
    return diarize_samples(
        loaded.samples,
        chain,
        sample_rate=loaded.sample_rate,
        uri=Path(audio_path).stem,
        pipeline=recipe,
        step_s=step_s,
        progress=progress,
        progress_every=progress_every,
    )


def write_rttm(annotation, path: Path | str) -> Path:
    """RTTM through pyannote.core's own writer, written atomically."""
    from coreml_diarize.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        annotation.write_rttm(handle)
    return path


def read_rttm(path: Path | str, uri: str | None = None):
    """An RTTM file as one Annotation: the SPEAKER lines of `uri` when the file has them,
    else all SPEAKER lines (a reference for one file is usually the whole RTTM)."""
    from pyannote.core import Annotation, Segment

    path = Path(path)
    if not path.is_file():
        raise DiarizeError(f"RTTM file not found: {path}")
    rows: list[tuple[str, float, float, str, int]] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration, speaker = float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError) as exc:
            raise DiarizeError(f"{path}:{number}: not an RTTM SPEAKER line") from exc
        rows.append((fields[1], start, duration, speaker, number))
    if not rows:
        raise DiarizeError(f"{path}: no RTTM SPEAKER lines")
    keep = uri if uri is not None and any(r[0] == uri for r in rows) else None
    annotation = Annotation(uri=uri)
    for file_uri, start, duration, speaker, number in rows:
        if keep is None or file_uri == keep:
            annotation[Segment(start, start + duration), number] = speaker
    return annotation
