"""pyannote community-1 with its neural and PLDA steps run by the offline packages.

The pipeline is pyannote's own `SpeakerDiarization` (VBx clustering, overlap-excluded
embeddings, community-1's parameters); `install` swaps three objects inside it, nothing else:

* segmentation: the segmentation model's `forward` (the network call in `Inference.infer`)
  runs `Segmentation.mlpackage` on pyannote's batches (split into the batch sizes the package
  declares, `batch_plan`); pyannote's `Inference` still slides the windows, and its own
  powerset-to-multilabel conversion (`Powerset.to_multilabel`) turns the log-probabilities
  into hard masks;
* embeddings: pyannote's `get_embeddings` (crops, overlap exclusion with its fallback to the
  whole mask, batching) is kept; the speaker-embedding object it calls,
  `PyannoteAudioPretrainedSpeakerEmbedding`, whose `__call__` is just
  `model(waveforms, weights=masks)` for a pyannote model (no NaN, no minimum length: those are
  the ONNX variant's), is wrapped: per (waveform, mask) pair, `FBank.mlpackage` then
  `Embedding.mlpackage` (raw 256-d, not normalised). Its other attributes (sample rate,
  dimension, metric, `min_num_samples`, which sets the fallback threshold) stay pyannote's,
  computed on the architecture;
* PLDA: `VBxClustering.plda`, of which VBx uses `plda(embeddings)` and `plda.phi`, becomes
  `PackagePLDA`: `PldaRho.mlpackage` (rho = PLDA(x) * sqrt(phi), batched alike) divided
  by sqrt(phi), with phi read from `plda-parameters.json` beside the package.

Runners are found by the package's file name (FluidAudio's names, docs/offline_contract.md),
not by registry key. Heavy modules (torch, pyannote) are imported inside the functions.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreml_diarize.errors import ArtifactError

if TYPE_CHECKING:
    from .chain import ChainModels

# The offline set's file stems (docs/offline_contract.md §1) -> the role they play here.
OFFLINE_ROLES = {
    "Segmentation": "segmentation",
    "FBank": "fbank",
    "Embedding": "embedding",
    "PldaRho": "plda",
}
PLDA_PARAMETERS_FILE = "plda-parameters.json"
# the largest batch sent to a package that declares no upper bound (ours: Segmentation's
# enumerated 1..32, PldaRho's range 1..32)
MAX_BATCH = 32
SEGMENTS_OUTPUTS = ("segments", "log_probs")  # the contract's two accepted names

Runner = Callable[..., Mapping[str, np.ndarray]]


# --- batching -------------------------------------------------------------------------------


def batch_plan(count: int, sizes: tuple[int, ...] | None = None) -> list[tuple[int, int, int]]:
    """`count` rows as package calls: (start, stop, batch sent) each, the largest allowed
    batch first. A package refuses batch sizes it does not declare, as Core ML does
    (enumerated shapes: only those; a range: only inside it), so when fewer rows are left than
    the smallest allowed size the last call is padded with zero rows (sent > stop - start).
    `sizes` None (no upper bound declared): batches of MAX_BATCH."""
    allowed = sorted(sizes) if sizes else list(range(1, MAX_BATCH + 1))
    plan: list[tuple[int, int, int]] = []
    start = 0
    while start < count:
        left = count - start
        fitting = [size for size in allowed if size <= left]
        take = fitting[-1] if fitting else left
        plan.append((start, start + take, take if fitting else allowed[0]))
        start += take
    return plan


def run_batched(run: Runner, name: str, rows: np.ndarray, sizes: tuple[int, ...] | None):
    """`run(**{name: batch})` over `rows` in the batches of `batch_plan`, padded calls cut back:
    a list of each call's result mapping, row-aligned with `rows`."""
    results = []
    for start, stop, sent in batch_plan(rows.shape[0], sizes):
        batch = rows[start:stop]
        if sent > stop - start:
            padding = np.zeros((sent - (stop - start), *rows.shape[1:]), dtype=rows.dtype)
            batch = np.concatenate([batch, padding])
        result = run(**{name: batch})
        results.append({k: np.asarray(v)[: stop - start] for k, v in result.items()})
    return results


def declared_batch_sizes(path: Path, name: str) -> tuple[int, ...] | None:
    """The batch sizes (axis 0) a package's input `name` accepts, read from its spec. None
    when there is no package file (a runner that stands in for one): MAX_BATCH a call."""
    from coreml_diarize.mlpackage import read_io

    if not Path(path).exists():
        return None
    inputs, _ = read_io(path)
    for tensor in inputs:
        if tensor.name == name:
            return tensor.sizes(0)
    raise ArtifactError(f"{path.name} has no input {name!r}")


# --- finding the packages -------------------------------------------------------------------


def _stem(key: str, path: Path, variant: str | None) -> str:
    """A package's contract file stem: the registry's filename, else the path's own stem
    without the `_<variant>` suffix."""
    from coreml_diarize.models import registry

    spec = registry().get(key)
    if spec is not None:
        return spec.filename
    stem = path.name.removesuffix(".mlpackage")
    if variant and stem.endswith(f"_{variant}"):
        stem = stem[: -len(variant) - 1]
    return stem


def offline_keys(chain: ChainModels) -> dict[str, str]:
    """role (segmentation, fbank, embedding, plda) -> the chain's key of that package."""
    keys: dict[str, str] = {}
    for key, path in chain.paths.paths.items():
        role = OFFLINE_ROLES.get(_stem(key, path, chain.paths.variant))
        if role is not None:
            keys[role] = key
    missing = sorted(set(OFFLINE_ROLES.values()) - set(keys))
    if missing:
        names = [stem for stem, role in OFFLINE_ROLES.items() if role in missing]
        raise ArtifactError(
            f"the community-1 chain needs {', '.join(n + '.mlpackage' for n in names)}"
        )
    return keys


# --- PLDA -----------------------------------------------------------------------------------


def read_plda_phi(path: Path | str) -> np.ndarray:
    """VBx's Phi from a `plda-parameters.json`: its plain `phi` list (float64, as pyannote's
    `PLDA.phi`) when present, else the contract's `tensors.psi.data_base64` (float32 LE, what
    FluidAudio reads), cut to `lda_dimension` when the file gives one."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"PLDA parameters not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a JSON file ({exc})") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: expected a JSON object")
    phi: np.ndarray | None = None
    plain = data.get("phi")
    if isinstance(plain, list) and plain:
        phi = np.asarray(plain, dtype=np.float64)
    else:
        try:
            encoded = data["tensors"]["psi"]["data_base64"]
            phi = np.frombuffer(base64.b64decode(encoded), dtype="<f4").astype(np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{path}: neither 'phi' nor tensors.psi.data_base64") from exc
    lda_dimension = data.get("lda_dimension")
    if isinstance(lda_dimension, int) and 0 < lda_dimension <= phi.size:
        phi = phi[:lda_dimension]
    if phi.ndim != 1 or phi.size == 0 or not np.all(np.isfinite(phi)) or np.any(phi <= 0):
        raise ArtifactError(f"{path}: phi must be positive finite numbers, got {phi.size} values")
    return phi


class PackagePLDA:
    """pyannote's `PLDA` interface (`__call__`, `phi`, `lda_dimension`) on `PldaRho`:
    features = rho / sqrt(phi), rho computed in the batches PldaRho accepts (`batch_plan`)."""

    def __init__(
        self,
        rho: Runner,
        phi: np.ndarray,
        *,
        name: str = "PldaRho",
        batch_sizes: tuple[int, ...] | None = None,
    ) -> None:
        self._rho = rho
        self._batch_sizes = batch_sizes  # what the package accepts (None: 1..MAX_BATCH)
        self._phi = np.asarray(phi, dtype=np.float64)
        self._sqrt_phi = np.sqrt(self._phi)
        self.lda_dimension = int(self._phi.size)
        self.name = name

    @property
    def phi(self) -> np.ndarray:
        return self._phi

    def __call__(self, embeddings: np.ndarray) -> np.ndarray:
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2:
            raise ArtifactError(f"PLDA input must be (N, dimension), got {embeddings.shape}")
        if embeddings.shape[0] == 0:
            return np.zeros((0, self.lda_dimension))
        calls = run_batched(self._rho, "embeddings", embeddings, self._batch_sizes)
        rho = np.concatenate([call["rho"] for call in calls]).astype(np.float64)
        if rho.shape != (embeddings.shape[0], self.lda_dimension):
            raise ArtifactError(
                f"{self.name} returns {rho.shape} for {embeddings.shape[0]} embeddings, "
                f"its PLDA parameters give {self.lda_dimension} dimensions"
            )
        return rho / self._sqrt_phi


# --- embeddings -----------------------------------------------------------------------------


class PackageSpeakerEmbedding:
    """pyannote's speaker-embedding object with its model call done by FBank -> Embedding.

    Every attribute but `__call__` is the wrapped pyannote object's (sample_rate, dimension,
    metric, min_num_samples)."""

    def __init__(self, pyannote_embedding: Any, fbank: Runner, embedding: Runner) -> None:
        self._pyannote = pyannote_embedding
        self._fbank = fbank
        self._embedding = embedding

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_pyannote", "_fbank", "_embedding"):
            raise AttributeError(name)
        return getattr(self._pyannote, name)

    def __call__(self, waveforms, masks=None) -> np.ndarray:
        """(B, 1, samples) waveforms, (B, frames) masks -> (B, dimension) float32 embeddings,
        one FBank + Embedding call per pair (the packages' batch is 1)."""
        waves = np.asarray(waveforms, dtype=np.float32)
        if waves.ndim != 3 or waves.shape[1] != 1:
            raise ArtifactError(f"waveforms must be (batch, 1, samples), got {waves.shape}")
        batch = waves.shape[0]
        if masks is None:  # pyannote's get_embeddings always passes masks
            raise ArtifactError("the Embedding package needs frame weights (masks)")
        weights = np.asarray(masks, dtype=np.float32).reshape(batch, -1)
        out = np.empty((batch, int(self._pyannote.dimension)), dtype=np.float32)
        for b in range(batch):
            features = self._fbank(audio=waves[b : b + 1])["fbank_features"]
            embedding = self._embedding(fbank_features=features, weights=weights[b : b + 1])
            out[b] = np.asarray(embedding["embedding"], dtype=np.float32).reshape(-1)
        return out


# --- segmentation ---------------------------------------------------------------------------


def package_segmentation_forward(
    run: Runner,
    frames: int,
    classes: int,
    *,
    name: str,
    count: Callable[[int], None],
    batch_sizes: tuple[int, ...] | None = None,
):
    """A replacement for the segmentation model's `forward`: (B, 1, samples) chunks ->
    (B, frames, classes) powerset log-probabilities, in the batches the package accepts
    (`batch_plan`; None: <= 32 windows a call)."""

    def forward(waveforms):
        import torch

        chunks = waveforms.detach().cpu().numpy().astype(np.float32)
        outputs = []
        for result in run_batched(run, "audio", chunks, batch_sizes):
            key = next((k for k in SEGMENTS_OUTPUTS if k in result), None)
            if key is None and len(result) == 1:
                key = next(iter(result))
            if key is None:
                raise ArtifactError(f"{name} has no 'segments' output: {sorted(result)}")
            outputs.append(np.asarray(result[key], dtype=np.float32))
        segments = np.concatenate(outputs)
        if segments.shape != (chunks.shape[0], frames, classes):
            raise ArtifactError(
                f"{name} returns {segments.shape} for {chunks.shape[0]} windows, pyannote's "
                f"architecture expects ({chunks.shape[0]}, {frames}, {classes})"
            )
        count(chunks.shape[0])
        return torch.from_numpy(segments)

    return forward


# --- the swap -------------------------------------------------------------------------------


def install(pipeline: Any, chain: ChainModels) -> None:
    """Swap the segmentation network, the embedding model call and the PLDA of pyannote's
    community-1 pipeline (VBx) for the offline packages of `chain`."""
    keys = offline_keys(chain)
    runners, paths = chain.runners, chain.paths

    model = pipeline._segmentation.model
    samples = model.audio.get_num_samples(pipeline._segmentation.duration)
    frames = int(model.num_frames(samples))
    classes = int(model.specifications.num_powerset_classes)

    def count(windows: int) -> None:
        chain.windows += windows

    # nn.Module.__call__ looks `forward` up on the instance first: only the network changes
    model.forward = package_segmentation_forward(
        runners[keys["segmentation"]],
        frames,
        classes,
        name=paths[keys["segmentation"]].name,
        count=count,
        batch_sizes=declared_batch_sizes(paths[keys["segmentation"]], "audio"),
    )
    pipeline._embedding = PackageSpeakerEmbedding(
        pipeline._embedding, runners[keys["fbank"]], runners[keys["embedding"]]
    )
    rho_path = paths[keys["plda"]]
    plda = PackagePLDA(
        runners[keys["plda"]],
        read_plda_phi(rho_path.parent / PLDA_PARAMETERS_FILE),
        name=rho_path.name,
        batch_sizes=declared_batch_sizes(rho_path, "embeddings"),
    )
    pipeline._plda = plda
    pipeline.clustering.plda = plda
