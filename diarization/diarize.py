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
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, AudioError, DiarizeError
from coreml_diarize.sources import quiet_pyannote

# pyannote 3.1's tuned hyper-parameters for the agglomerative (centroid) clustering the offline
# pipeline can use without PLDA files; both pipelines of a comparison get exactly these.
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
    """The five packages of one chain, by spec key (segmentation, postprocessor, ...)."""

    paths: dict[str, Path]
    variant: str | None = None

    def __getitem__(self, key: str) -> Path:
        return self.paths[key]


def find_packages(
    models_dir: Path | str, variant: str | None = None, *, chain: str = "online"
) -> ChainPaths:
    """The packages of `chain` (the registry's models whose `chains` name it) in `models_dir`;
    `variant` (e.g. palettize8) picks `<stem>_<variant>.mlpackage` for the models that have
    device variants when present, else the plain one."""
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
        paths[key] = chosen
    if missing:
        raise ArtifactError(f"{models_dir} lacks {', '.join(missing)}")
    return ChainPaths(paths, variant)


@dataclass
class ChainModels:
    """Loaded runners for the five packages (reuse one per package across windows and files)."""

    paths: ChainPaths
    backend: str
    runners: dict[str, TimedRunner]

    @classmethod
    def load(cls, paths: ChainPaths, backend: str = "auto") -> ChainModels:
        runners = {key: TimedRunner(path, backend) for key, path in paths.paths.items()}
        used = next(iter(runners.values())).backend
        return cls(paths, used, runners)

    def model_seconds(self) -> dict[str, float]:
        return {key: runner.seconds for key, runner in self.runners.items()}

    def reset_timers(self) -> None:
        for runner in self.runners.values():
            runner.seconds, runner.calls = 0.0, 0


# --- the pipeline ---------------------------------------------------------------------------


def _uninitialised_plda():
    """`SpeakerDiarization` insists on a PLDA object even for agglomerative clustering, which
    never touches it; an instance without files passes its type check (notes.md)."""
    from pyannote.audio.core.plda import PLDA

    return PLDA.__new__(PLDA)


def make_pipeline(
    segmentation_model,
    embedding_model,
    *,
    step_s: float | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    cls: type | None = None,
    **kwargs: Any,
):
    """pyannote's `SpeakerDiarization` on in-memory models, offline, instantiated.

    `step_s` is the window step in seconds (pyannote's default: 10 % of the window duration).
    `cls` lets the converted chain substitute its subclass; every other argument is shared.
    """
    quiet_pyannote()
    from pyannote.audio.pipelines import SpeakerDiarization

    duration = float(segmentation_model.specifications.duration)
    if step_s is None:
        fraction = 0.1
    else:
        if not (step_s > 0 and step_s <= duration):
            raise DiarizeError(f"--step must be in (0, {duration:g}] seconds, got {step_s:g}")
        fraction = step_s / duration
    pipeline = (cls or SpeakerDiarization)(
        segmentation=segmentation_model,
        embedding=embedding_model,
        segmentation_step=fraction,
        # what the embedding preprocessor package implements (pyannote 3.1's setting too)
        embedding_exclude_overlap=True,
        plda=_uninitialised_plda(),
        clustering=CLUSTERING,
        **kwargs,
    )
    params = {k: dict(v) for k, v in (parameters or DEFAULT_PARAMETERS).items()}
    pipeline.instantiate(params)
    return pipeline


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
        return np.stack(out)

    return infer


def converted_pipeline(
    chain: ChainModels,
    *,
    step_s: float | None = None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
):
    """pyannote's pipeline whose neural inferences run the packages.

    The pipeline still needs pyannote model *objects* for their specifications, receptive field
    and audio settings (window timing, frame resolution): untrained architectures serve, their
    weights are never used.
    """
    from coreml_diarize.sources import build_architecture

    seg_arch = build_architecture("segmentation")
    emb_arch = build_architecture("embedding")
    pipeline = make_pipeline(
        seg_arch,
        emb_arch,
        step_s=step_s,
        parameters=parameters,
        cls=_converted_pipeline_class(),
    )
    pipeline.chain = chain
    pipeline.diagnostics = {}
    samples = pipeline._segmentation.model.audio.get_num_samples(pipeline._segmentation.duration)
    frames = int(seg_arch.num_frames(samples))
    classes = int(seg_arch.specifications.num_powerset_classes)
    # pyannote's slide() keeps its windowing; only the network call is substituted
    pipeline._segmentation.infer = _package_infer(chain, frames, classes)
    return pipeline


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

    @property
    def rtf(self) -> float:
        """Real-time factor: processing time / audio duration (< 1 is faster than real time)."""
        return self.seconds / self.duration_s if self.duration_s > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
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

    def hook(step_name, step_artefact, file=None, total=None, completed=None):
        if progress is None or total is None or completed is None or completed == 0:
            return
        if completed % every == 0 or completed >= total:
            progress(f"{step_name}: {min(completed, total)}/{total} windows")

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
    step_s: float | None = None,
    pipeline=None,
    progress: Callable[[str], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> DiarizationResult:
    """Diarize mono float32 `samples` with the converted chain (pyannote logic around it)."""
    pipeline = pipeline or converted_pipeline(chain, step_s=step_s)
    file = audio_file(samples, sample_rate, uri)
    chain.reset_timers()
    pipeline.diagnostics = {}
    annotation, seconds = run_pipeline(pipeline, file, hook=progress_hook(progress, progress_every))
    annotation.uri = uri
    valid = pipeline.diagnostics.get("valid")
    return DiarizationResult(
        annotation=annotation,
        uri=uri,
        duration_s=samples.size / sample_rate,
        seconds=seconds,
        windows=chain.runners["segmentation"].calls,
        backend=chain.backend,
        variant=chain.paths.variant,
        model_seconds=chain.model_seconds(),
        valid_speakers_per_window=[] if valid is None else [int(v.sum()) for v in valid],
    )


def diarize_file(
    audio_path: Path | str,
    models_dir: Path | str,
    *,
    backend: str = "auto",
    variant: str | None = None,
    step_s: float | None = None,
    progress: Callable[[str], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> DiarizationResult:
    """Read `audio_path` (any rate / channels: resampled, downmixed) and diarize it."""
    from coreml_diarize.audio import read_audio

    paths = find_packages(models_dir, variant)  # fail on a bad models dir before reading audio
    loaded = read_audio(audio_path)
    for notice in loaded.notices:
        if progress is not None:
            progress(f"note: {notice}")
    chain = ChainModels.load(paths, backend)
    return diarize_samples(
        loaded.samples,
        chain,
        sample_rate=loaded.sample_rate,
        uri=Path(audio_path).stem,
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
