"""pyannote's own pipeline in PyTorch vs the converted chain, on the same weights and audio.

The PyTorch side is rebuilt from the packages' recorded provenance (`source.*` metadata: seeded
random weights, a local checkpoint or a hub revision, checked by SHA-256), so the only
difference between the two runs is the networks' execution. Both pipelines are the same
pyannote `SpeakerDiarization` class with the same hyper-parameters (diarize.py).

Scores use pyannote.metrics with collar 0 and overlapped speech scored (the strictest setting),
restricted to the audio's extent (UEM [0, duration]).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError

from .diarize import (
    ChainModels,
    DiarizationResult,
    audio_file,
    diarize_samples,
    find_packages,
    make_pipeline,
    read_rttm,
    run_pipeline,
)


@dataclass
class Scores:
    der: float
    jer: float
    components: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"der": self.der, "jer": self.jer, "components": self.components}


def score(reference, hypothesis, duration_s: float) -> Scores:
    """DER and JER of `hypothesis` against `reference` (collar 0, overlap scored)."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    uem = Timeline([Segment(0.0, duration_s)])
    der = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    detail = der(reference, hypothesis, uem=uem, detailed=True)
    jer = JaccardErrorRate(collar=0.0, skip_overlap=False)
    jer_value = float(jer(reference, hypothesis, uem=uem))
    components = {k: float(v) for k, v in detail.items() if k != "diarization error rate"}
    return Scores(float(detail["diarization error rate"]), jer_value, components)


@dataclass
class TorchModels:
    """The PyTorch models a chain's packages were converted from."""

    segmentation: Any
    embedding: Any
    sources: dict[str, str]


def torch_models_for(chain_paths, *, trust_checkpoint: bool = False) -> TorchModels:
    """Rebuild the segmentation / embedding weights from the packages' provenance records."""
    from coreml_diarize.context import check_same_weights
    from coreml_diarize.record import PackageRecord
    from coreml_diarize.sources import load_weights

    models: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key in ("segmentation", "embedding"):
        path = chain_paths[key]
        record = PackageRecord.from_package(path)
        source = record.source_text()
        if source is None:
            raise ArtifactError(f"{path.name} records no weight source: cannot rebuild its weights")
        loaded = load_weights(key, source, trust_checkpoint=trust_checkpoint)
        check_same_weights(record, loaded, where=source, name=path.name)
        models[key], sources[key] = loaded.model, source
    return TorchModels(models["segmentation"], models["embedding"], sources)


@dataclass
class ComparisonResult:
    uri: str
    duration_s: float
    converted: DiarizationResult
    torch_annotation: Any  # pyannote.core.Annotation
    torch_seconds: float
    between: Scores  # converted chain scored against the PyTorch pipeline
    reference: dict[str, Scores] = field(default_factory=dict)  # "converted"/"torch" vs RTTM
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def torch_rtf(self) -> float:
        return self.torch_seconds / self.duration_s if self.duration_s > 0 else math.nan

    @property
    def rtf_ratio(self) -> float:
        """Converted chain RTF / PyTorch RTF (> 1: the chain is slower)."""
        return self.converted.seconds / self.torch_seconds if self.torch_seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "duration_s": self.duration_s,
            "weights": self.sources,
            "converted": self.converted.to_dict(),
            "torch": {
                "seconds": self.torch_seconds,
                "rtf": self.torch_rtf,
                "speakers": sorted(map(str, self.torch_annotation.labels())),
            },
            "rtf_ratio_converted_over_torch": self.rtf_ratio,
            "converted_vs_torch": self.between.to_dict(),
            "vs_reference": {k: v.to_dict() for k, v in self.reference.items()},
        }

    def table(self) -> str:
        c = self.converted
        lines = [
            f"{self.uri}: {self.duration_s:.1f} s, {c.windows} windows, backend {c.backend}"
            + (f", variant {c.variant}" if c.variant else ""),
            f"  converted vs torch:  DER {self.between.der:.2%}  JER {self.between.jer:.2%}",
        ]
        for name, s in self.reference.items():
            lines.append(f"  {name:9} vs reference: DER {s.der:.2%}  JER {s.jer:.2%}")
        lines.append(
            f"  RTF converted {c.rtf:.3f} ({c.seconds:.1f} s), torch {self.torch_rtf:.3f} "
            f"({self.torch_seconds:.1f} s), ratio {self.rtf_ratio:.2f}"
        )
        return "\n".join(lines)


def compare_samples(
    samples: np.ndarray,
    chain: ChainModels,
    torch_models: TorchModels,
    *,
    sample_rate: int = 16000,
    uri: str = "audio",
    step_s: float | None = None,
    reference=None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Both pipelines on `samples`, scored against each other (and `reference` if given)."""
    duration = samples.size / sample_rate
    if progress is not None:
        progress("running the converted chain")
    converted = diarize_samples(
        samples, chain, sample_rate=sample_rate, uri=uri, step_s=step_s, progress=progress
    )
    if progress is not None:
        progress("running pyannote's pipeline in PyTorch")
    pipeline = make_pipeline(
        torch_models.segmentation, torch_models.embedding, step_s=step_s, parameters=parameters
    )
    torch_annotation, torch_seconds = run_pipeline(pipeline, audio_file(samples, sample_rate, uri))
    torch_annotation.uri = uri
    result = ComparisonResult(
        uri=uri,
        duration_s=duration,
        converted=converted,
        torch_annotation=torch_annotation,
        torch_seconds=torch_seconds,
        between=score(torch_annotation, converted.annotation, duration),
        sources=dict(torch_models.sources),
    )
    if reference is not None:
        result.reference = {
            "converted": score(reference, converted.annotation, duration),
            "torch": score(reference, torch_annotation, duration),
        }
    return result


def compare_file(
    audio_path: Path | str,
    models_dir: Path | str,
    *,
    backend: str = "auto",
    variant: str | None = None,
    step_s: float | None = None,
    reference_rttm: Path | str | None = None,
    trust_checkpoint: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    from coreml_diarize.audio import read_audio

    paths = find_packages(models_dir, variant)
    uri = Path(audio_path).stem
    reference = read_rttm(reference_rttm, uri=uri) if reference_rttm is not None else None
    loaded = read_audio(audio_path)
    torch_models = torch_models_for(paths, trust_checkpoint=trust_checkpoint)
    chain = ChainModels.load(paths, backend)
    return compare_samples(
        loaded.samples,
        chain,
        torch_models,
        sample_rate=loaded.sample_rate,
        uri=uri,
        step_s=step_s,
        reference=reference,
        progress=progress,
    )
