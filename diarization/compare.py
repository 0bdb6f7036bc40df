"""pyannote's own pipeline in PyTorch vs the converted chain, on the same weights and audio.

The PyTorch side is rebuilt from the packages' recorded provenance (`source.*` metadata: seeded
random weights, a local checkpoint or a hub revision, checked by SHA-256; for community-1 also
the PLDA), so the only difference between the two runs is the networks' execution. Both
pipelines are the same pyannote `SpeakerDiarization` with the same clustering and
hyper-parameters: the recipe named by `pipeline` ("3.1" or "community-1", diarize.py).

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

from .chain import ChainModels, ChainPaths
from .diarize import (
    DiarizationResult,
    audio_file,
    diarize_samples,
    open_file_and_chain,
    run_pipeline,
)
from .pipelines import PipelineRecipe, converted_pipeline, make_pipeline, pipeline_recipe
from .rttm import read_rttm


@dataclass
class Scores:
    der: float
    jer: float
    components: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"der": self.der, "jer": self.jer, "components": self.components}


def score(
    reference,
    hypothesis,
    duration_s: float,
    *,
    collar: float = 0.0,
    skip_overlap: bool = False,
    uem=None,
) -> Scores:
    """DER and JER of `hypothesis` against `reference` (default: collar 0, overlap scored),
    over `uem` (a pyannote Timeline; default [0, duration_s])."""
    from pyannote.core import Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    uem = uem if uem is not None else Timeline([Segment(0.0, duration_s)])
    der = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
    detail = der(reference, hypothesis, uem=uem, detailed=True)
    jer = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)
    jer_value = float(jer(reference, hypothesis, uem=uem))
    components = {k: float(v) for k, v in detail.items() if k != "diarization error rate"}
    return Scores(float(detail["diarization error rate"]), jer_value, components)


@dataclass
class TorchModels:
    """The PyTorch models (and PLDA) a chain's packages were converted from."""

    segmentation: Any
    embedding: Any
    sources: dict[str, str]
    plda: Any = None  # pyannote's PLDA, for community-1's VBx clustering


def _is_pyannote_plda(model: Any) -> bool:
    from pyannote.audio.core.plda import PLDA

    return isinstance(model, PLDA)


def torch_models_for(chain_paths: ChainPaths, *, trust_checkpoint: bool = False) -> TorchModels:
    """Rebuild the weights of every package with weights (segmentation, embedding and, for the
    offline chain, the PLDA) from the packages' provenance records, one per weight family."""
    from coreml_diarize.context import check_same_weights
    from coreml_diarize.models import registry
    from coreml_diarize.record import PackageRecord
    from coreml_diarize.sources import load_weights

    specs = registry()
    models: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, path in chain_paths.paths.items():
        spec = specs.get(key)
        if spec is None or spec.weights is None:
            continue
        family = spec.weights.name
        record = PackageRecord.from_package(path)
        source = record.source_text()
        if source is None:
            raise ArtifactError(f"{path.name} records no weight source: cannot rebuild its weights")
        if family in models:  # e.g. FBank and Embedding share the embedding model's weights
            if sources[family] != source:
                raise ArtifactError(
                    f"{path.name} was built from {source}, another {family} package from "
                    f"{sources[family]}: the chain mixes weights"
                )
            continue
        loaded = load_weights(family, source, trust_checkpoint=trust_checkpoint)
        check_same_weights(record, loaded, where=source, name=path.name)
        models[family], sources[family] = loaded.model, source
    for family in ("segmentation", "embedding"):
        if family not in models:
            raise ArtifactError(f"the {chain_paths.chain} chain has no {family} package")
    plda = next((m for m in models.values() if _is_pyannote_plda(m)), None)
    return TorchModels(models["segmentation"], models["embedding"], sources, plda)


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
    pipeline: str = "3.1"

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
            "pipeline": self.pipeline,
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
            f"{self.uri}: {self.duration_s:.1f} s, pipeline {self.pipeline}, {c.windows} windows, "
            f"backend {c.backend}" + (f", variant {c.variant}" if c.variant else ""),
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
    pipeline: str | PipelineRecipe = "3.1",
    step_s: float | None = None,
    reference=None,
    parameters: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Both versions of `pipeline` on `samples`, scored against each other (and `reference`
    if given). Each run's wall time gives its RTF."""
    recipe = pipeline_recipe(pipeline)
    if recipe.uses_plda and torch_models.plda is None:
        raise ArtifactError(f"the {recipe.name} pipeline needs the PLDA its package came from")
    duration = samples.size / sample_rate
    if progress is not None:
        progress(f"running the converted chain ({recipe.name})")
    built = converted_pipeline(chain, pipeline=recipe, step_s=step_s, parameters=parameters)
    converted = diarize_samples(
        samples,
        chain,
        sample_rate=sample_rate,
        uri=uri,
        pipeline=recipe,
        built=built,
        progress=progress,
    )
    if progress is not None:
        progress(f"running pyannote's pipeline in PyTorch ({recipe.name})")
    torch_pipeline = make_pipeline(
        torch_models.segmentation,
        torch_models.embedding,
        pipeline=recipe,
        plda=torch_models.plda if recipe.uses_plda else None,
        step_s=step_s,
        parameters=parameters,
    )
    torch_annotation, torch_seconds = run_pipeline(
        torch_pipeline, audio_file(samples, sample_rate, uri)
    )
    torch_annotation.uri = uri
    result = ComparisonResult(
        uri=uri,
        duration_s=duration,
        converted=converted,
        torch_annotation=torch_annotation,
        torch_seconds=torch_seconds,
        between=score(torch_annotation, converted.annotation, duration),
        sources=dict(torch_models.sources),
        pipeline=recipe.name,
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
    pipeline: str = "3.1",
    backend: str = "auto",
    variant: str | None = None,
    step_s: float | None = None,
    reference_rttm: Path | str | None = None,
    trust_checkpoint: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """`compare_samples` on a file, the PyTorch side rebuilt from the packages' provenance."""
    recipe, chain, loaded = open_file_and_chain(
        audio_path,
        models_dir,
        pipeline=pipeline,
        backend=backend,
        variant=variant,
        progress=progress,
    )
    uri = Path(audio_path).stem
    reference = read_rttm(reference_rttm, uri=uri) if reference_rttm is not None else None
    torch_models = torch_models_for(chain.paths, trust_checkpoint=trust_checkpoint)
    return compare_samples(
        loaded.samples,
        chain,
        torch_models,
        sample_rate=loaded.sample_rate,
        uri=uri,
        pipeline=recipe,
        step_s=step_s,
        reference=reference,
        progress=progress,
    )
