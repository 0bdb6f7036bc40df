"""Diarize audio with a converted pipeline: a file or samples in, a `DiarizationResult` out.

The pipelines themselves (pyannote's `SpeakerDiarization` with its neural steps swapped for the
packages, one `PipelineRecipe` each) are in pipelines.py, the packages of a chain in chain.py;
this module reads the audio, runs the pipeline with progress lines and times it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import AudioError

from .chain import ChainModels, find_packages
from .pipelines import PipelineRecipe, converted_pipeline, pipeline_recipe

PROGRESS_EVERY = 10  # windows between progress lines


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
