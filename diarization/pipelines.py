"""pyannote's diarization pipelines with their neural steps run by the converted packages.

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
pipeline swaps its steps; `make_pipeline`, `converted_pipeline`, `diarize_file` (diarize.py)
and compare.py take its name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from coreml_diarize.checkpoints import quiet_pyannote
from coreml_diarize.errors import ArtifactError, DiarizeError

from . import community
from .chain import ChainModels

# pyannote 3.1's tuned hyper-parameters for the agglomerative (centroid) clustering the online
# pipeline uses without PLDA files; both pipelines of a comparison get exactly these.
DEFAULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "segmentation": {"min_duration_off": 0.0},
    "clustering": {"method": "centroid", "min_cluster_size": 12, "threshold": 0.7},
}
CLUSTERING = "AgglomerativeClustering"


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
