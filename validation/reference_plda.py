"""Independent reference and deterministic inputs for the PLDA model (VBx features).

The reference is pyannote's own `PLDA` object, loaded from the npz files with pyannote's own
loader (`PLDA.from_pretrained(directory)`, what `pipelines.utils.get_plda` calls), applied to
the embeddings. Nothing here calls the wrapper. pyannote computes in float64 (its constants are
float64, so float32 embeddings are promoted); the reference output is cast to float32 last.

The named cases cover what the Swift side feeds the model: random embeddings of the scale
WeSpeaker produces, speaker-clustered embeddings, an all-zero row (pyannote: finite, since
x - mean1 != 0), large- and small-norm rows, a single row. Also here: pyannote's whole VBx
clustering (`VBxClustering`, AHC + VBx) on synthetic speakers, to check that a PLDA really
separates speakers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
Reference = Callable[[Arrays], Arrays]

INPUT = "embeddings"  # (N, E) float32, N flexible
OUTPUT = "features"  # (N, lda_dimension) float32

PYANNOTE_LDA_DIMENSION = 128  # PLDA.__init__'s default; from_pretrained always uses it


def load_pyannote_plda(directory: str | Path, lda_dimension: int | None = None) -> Any:
    """pyannote's PLDA from a folder holding xvec_transform.npz and plda.npz.

    `PLDA.from_pretrained` (the pipeline's path) does not forward lda_dimension, so a
    non-default cut goes through the constructor with the same two files.
    """
    from pyannote.audio.core.plda import PLDA

    directory = Path(directory)
    if lda_dimension is None or lda_dimension == PYANNOTE_LDA_DIMENSION:
        return PLDA.from_pretrained(str(directory))
    return PLDA(
        directory / "xvec_transform.npz", directory / "plda.npz", lda_dimension=lda_dimension
    )


def plda_reference(plda: Any) -> Reference:
    """embeddings -> pyannote's PLDA(embeddings), float64 inside, float32 out."""

    def run(inputs: Arrays) -> Arrays:
        embeddings = np.asarray(inputs[INPUT], dtype=np.float32)
        return {OUTPUT: np.asarray(plda(embeddings), dtype=np.float64).astype(np.float32)}

    return run


def speaker_embeddings(
    seed: int,
    speakers: int,
    per_speaker: int,
    noise: float = 0.6,
    embedding_dim: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic "speakers": (embeddings (speakers * per_speaker, E) float32, labels).

    Each speaker is a random direction (N(0, I) centre); its embeddings add N(0, noise^2 I)
    (noise 0.6: within-speaker cosine ~0.74, across speakers ~0, roughly WeSpeaker's picture)
    and a random overall gain in [0.5, 2] (norms vary, as raw embeddings' do). Rows are
    shuffled, so speakers are interleaved.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((speakers, embedding_dim))
    labels = rng.permutation(np.repeat(np.arange(speakers), per_speaker))
    noise_rows = noise * rng.standard_normal((labels.size, embedding_dim))
    gains = rng.uniform(0.5, 2.0, size=(labels.size, 1))
    return ((centres[labels] + noise_rows) * gains).astype(np.float32), labels


def plda_inputs(embedding_dim: int = 256, seed: int = 1234) -> dict[str, Arrays]:
    """Named cases, float32 (N, E) with N varying per case."""
    rng = np.random.default_rng(seed)
    E = embedding_dim

    def scaled(n: int, lo: float, hi: float) -> np.ndarray:
        return rng.standard_normal((n, E)) * rng.uniform(lo, hi, size=(n, 1)) / np.sqrt(E)

    def case(x: np.ndarray) -> Arrays:
        return {INPUT: np.asarray(x, dtype=np.float32)}

    zero_row = scaled(8, 5.0, 50.0)
    zero_row[3] = 0.0
    large = scaled(8, 5.0, 50.0)
    large[1::2] *= np.array([1e2, 1e4, 1e5, 1e6])[:, None]  # row norms up to ~5e7
    clustered, _ = speaker_embeddings(seed, speakers=3, per_speaker=20, embedding_dim=E)
    return {
        "random": case(scaled(64, 5.0, 50.0)),  # norms 5..50, like raw WeSpeaker embeddings
        "clustered_speakers": case(clustered),
        "zero_row": case(zero_row),
        "large_norm": case(large),
        "small_norm": case(scaled(8, 1e-3, 1e-1)),  # x - mean1 ~ -mean1: still finite
        "single": case(scaled(1, 5.0, 50.0)),
    }


def pyannote_vbx_clustering(
    plda: Any, embeddings: np.ndarray, num_frames: int = 30
) -> tuple[np.ndarray, int]:
    """pyannote's VBxClustering (AHC init + VBx) with the pipeline's default parameters.

    Embeddings (N, E) are laid out as pyannote's (chunks, local speakers, E) with one local
    speaker per chunk, active on every frame (so every embedding passes `filter_embeddings`,
    and the constrained assignment is a plain argmax). Returns (hard cluster of each embedding
    (N,), number of clusters VBx kept).
    """
    from pyannote.audio.pipelines.clustering import VBxClustering
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    n, dim = embeddings.shape
    data = np.ones((n, num_frames, 1), dtype=np.float32)
    segmentations = SlidingWindowFeature(data, SlidingWindow(start=0.0, duration=10.0, step=1.0))

    clustering = VBxClustering(plda)
    clustering.instantiate(SpeakerDiarization.default_parameters(None)["clustering"])
    num_clusters, min_clusters, max_clusters = clustering.set_num_clusters(n)
    hard, _, centroids = clustering(
        embeddings.reshape(n, 1, dim).astype(np.float32),
        segmentations=segmentations,
        num_clusters=num_clusters,
        min_clusters=min_clusters,
        max_clusters=max_clusters,
    )
    return np.asarray(hard).reshape(n), int(centroids.shape[0])


def pyannote_vbx_from_singletons(plda: Any, embeddings: np.ndarray) -> tuple[np.ndarray, int]:
    """pyannote's `cluster_vbx` on the PLDA features, every embedding its own initial cluster.

    VBx can only merge its initial clusters, so starting from singletons shows what VBx itself
    (PLDA features + Phi + Fa/Fb) decides, without AHC's help. Returns (cluster of each
    embedding, number of speakers VBx kept).
    """
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.audio.utils.vbx import cluster_vbx

    params = SpeakerDiarization.default_parameters(None)["clustering"]
    n = embeddings.shape[0]
    q, sp = cluster_vbx(
        np.arange(n), plda(embeddings), plda.phi, Fa=params["Fa"], Fb=params["Fb"], maxIters=20
    )
    kept = sp > 1e-7  # as VBxClustering
    return q[:, kept].argmax(axis=1), int(kept.sum())
