"""FluidAudio's loader contract, as data: which files it loads, under which names, with which
tensor names, shapes and dtypes (checked by `fluidaudio.py`, written by `export.py`).

Read from FluidAudio's Swift source, FluidInference/FluidAudio v0.15.6, commit
8a2bf2c074a227b25baef2185a00faa3f6865d10 (paths below are under `Sources/FluidAudio/`; every rule
carries its file:line). Explained in docs/fluidaudio.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fluidaudio_psi import PLDA_PARAMETERS, RHO_DIMENSION

FLUIDAUDIO = "FluidInference/FluidAudio@8a2bf2c (v0.15.6)"
# Repo.diarizer = "FluidInference/speaker-diarization-coreml"; name "speaker-diarization-coreml";
# folderName strips "-coreml" (ModelNames.swift:43, 141-142, 312); repoPath = directory/folderName
# (Shared/Download/ModelHub.swift:324)
REPO_FOLDER = "speaker-diarization"
# PLDATransform's hard-coded widths (Diarizer/Offline/Extraction/PLDATransform.swift:13-15)
EMBEDDING_DIMENSION = 256
BATCH_1_TO_32 = tuple(range(1, 33))


@dataclass(frozen=True)
class TensorRule:
    """One tensor FluidAudio feeds or reads. `dims`: int = that size, None = any. `batch`: the
    sizes FluidAudio sends on axis 0 (each must be accepted). `resolved`: FluidAudio builds the
    input from the model's own description (first enumerated shape, else the default shape,
    else each range's lower bound), so that shape must be `dims`."""

    names: tuple[str, ...]  # accepted names, looked up in this order
    dims: tuple[int | None, ...] | None
    cite: str
    batch: tuple[int, ...] = ()
    resolved: bool = False

    @property
    def name(self) -> str:
        return self.names[0]


@dataclass(frozen=True)
class ModelRule:
    stem: str
    inputs: tuple[TensorRule, ...]
    outputs: tuple[TensorRule, ...]
    cite: str

    @property
    def compiled(self) -> str:
        return f"{self.stem}.mlmodelc"


@dataclass(frozen=True)
class ModelSetRule:
    """One of FluidAudio's model sets: every file of `required` must be in the repo folder."""

    profile: str
    models: tuple[ModelRule, ...]
    sidecars: tuple[str, ...]
    cite: str

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(m.compiled for m in self.models) + self.sidecars


_SEG = "Diarizer/Segmentation/SegmentationProcessor.swift"
_EMB = "Diarizer/Extraction/EmbeddingExtractor.swift"
_OSEG = "Diarizer/Offline/Segmentation/OfflineSegmentationProcessor.swift"
OFFLINE_EMBEDDING_SWIFT = "Diarizer/Offline/Extraction/OfflineEmbeddingExtractor.swift"
_PLDA = "Diarizer/Offline/Extraction/PLDATransform.swift"

ONLINE_SET = ModelSetRule(
    profile="online",
    models=(
        ModelRule(
            "pyannote_segmentation",
            inputs=(TensorRule(("audio",), (1, 1, 160000), f"{_SEG}:31-34, 59-61", batch=(1,)),),
            outputs=(TensorRule(("segments",), (1, None, None), f"{_SEG}:71-73, 81-82, 91"),),
            cite="ModelNames.swift:345-356",
        ),
        ModelRule(
            "wespeaker_v2",
            inputs=(
                TensorRule(("waveform",), (3, 160000), f"{_EMB}:36-47, 88-91", batch=(3,)),
                TensorRule(("mask",), (3, None), f"{_EMB}:37, 88-91", batch=(3,)),
            ),
            # row 0 read as 256 floats (extractEmbeddingOptimized, speakerIndex 0)
            outputs=(
                TensorRule(("embedding",), (None, EMBEDDING_DIMENSION), f"{_EMB}:101-106, 201-212"),
            ),
            cite="ModelNames.swift:345-356",
        ),
    ),
    sidecars=(),
    cite="ModelNames.swift:345-356, 1572-1576; Diarizer/Core/DiarizerModels.swift:52-62",
)

OFFLINE_SET = ModelSetRule(
    profile="offline",
    models=(
        ModelRule(
            "Segmentation",
            inputs=(
                TensorRule(
                    ("audio",),
                    (None, 1, 160000),
                    f"{_OSEG}:86, 97-116, 204-239",
                    batch=BATCH_1_TO_32,
                ),
            ),
            # "segments", then "log_probs", then any multiarray; (B, frames, classes <= 7)
            outputs=(TensorRule(("segments", "log_probs"), (None, None, 7), f"{_OSEG}:253-295"),),
            cite="ModelNames.swift:359-382",
        ),
        ModelRule(
            "FBank",
            inputs=(
                TensorRule(
                    ("audio",),
                    (1, 1, 160000),
                    f"{OFFLINE_EMBEDDING_SWIFT}:92-115, 806-832, 942-969",
                    resolved=True,
                ),
            ),
            outputs=(TensorRule(("fbank_features",), None, f"{OFFLINE_EMBEDDING_SWIFT}:117-125"),),
            cite="ModelNames.swift:359-382; Diarizer/Offline/Core/OfflineDiarizerModels.swift:114-125",
        ),
        ModelRule(
            "Embedding",
            inputs=(
                # FBank's output, handed over as it is (checked against FBank's declaration)
                TensorRule(
                    ("fbank_features",), None, f"{OFFLINE_EMBEDDING_SWIFT}:127-137, 872-880"
                ),
                TensorRule(
                    ("weights",),
                    (1, None),
                    f"{OFFLINE_EMBEDDING_SWIFT}:139-160, 844-870, 942-969",
                    resolved=True,
                ),
            ),
            # 256 floats per call: PLDATransform rejects any other count
            outputs=(
                TensorRule(
                    ("embedding",),
                    (1, EMBEDDING_DIMENSION),
                    f"{OFFLINE_EMBEDDING_SWIFT}:164-168, 886-895; {_PLDA}:29-35",
                ),
            ),
            cite="ModelNames.swift:359-382",
        ),
        ModelRule(
            "PldaRho",
            inputs=(
                TensorRule(
                    ("embeddings",),
                    (None, EMBEDDING_DIMENSION),
                    f"{_PLDA}:13-15, 46-54, 117-147, 180-197",
                    batch=BATCH_1_TO_32,
                ),
            ),
            outputs=(TensorRule(("rho",), (None, RHO_DIMENSION), f"{_PLDA}:149-175"),),
            cite="ModelNames.swift:359-382",
        ),
    ),
    sidecars=(PLDA_PARAMETERS,),
    cite="ModelNames.swift:359-382, 1572-1576; Diarizer/Offline/Core/OfflineDiarizerModels.swift:89-127",
)

MODEL_SETS = (ONLINE_SET, OFFLINE_SET)
LOAD_CITE = "Shared/Download/ModelHub.swift:335-368; Shared/Download/ModelCache.swift:84-117"
DTYPE_CITE = (
    "MLMultiArray(dataType: .float32) in, dataPointer.assumingMemoryBound(to: Float.self) out"
)
