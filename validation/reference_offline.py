"""Independent references and deterministic inputs for the offline model set (FluidAudio's
`OfflineDiarizerModels`, docs/offline_contract.md): Segmentation, FBank, Embedding, PldaRho.

Each reference is pyannote's own code, never a wrapper:
  Segmentation  pyannote's PyanNet forward on the batch (reference_segmentation's)
  FBank         the WeSpeaker model's own `compute_fbank` (torchaudio's kaldi.fbank, vmapped),
                laid out channels-first (batch, 1, mels, frames)
  Embedding     the WeSpeaker ResNet's own forward on that fbank with the weights:
                `resnet(fbank (B, T, F), weights=mask)[1]`, what `WeSpeakerResNet34.forward`
                does after `compute_fbank` (raw, not L2-normalised; L2-normalised in float64
                with the `embedding_output="l2"` option)
  PldaRho       pyannote's `PLDA(x)` (float64) times sqrt(`PLDA.phi`)
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from coreml_diarize import signals

from .reference_embedding import as_embedding_output, embedding_signals, mask_rows
from .reference_plda import speaker_embeddings

Arrays = dict[str, np.ndarray]
Reference = Callable[[Arrays], Arrays]


# --- Segmentation: (B, 1, samples), B in 1..32 ---------------------------------------------


def segmentation_batch_inputs(ctx) -> dict[str, Arrays]:
    """The standard signals stacked as one batch (B = 7: FluidAudio sends up to 32 windows per
    prediction), and three windows alone (B = 1): silence (FluidAudio's zero prewarm) and two
    chunks of real speech."""
    chunks = signals.standard_signals(ctx.geometry.samples)
    cases = {"batch": {"audio": np.stack(list(chunks.values()))[:, None, :]}}
    for name in ("silence", "speech_0s", "speech_15s"):
        cases[name] = {"audio": chunks[name][None, None, :]}
    return cases


# --- FBank: audio (1, 1, samples) -> fbank_features (1, 1, mels, fbank_frames) -------------


def pyannote_fbank(model, audio: np.ndarray) -> np.ndarray:
    """pyannote's `compute_fbank` of (B, 1, samples) audio, as (B, 1, mels, frames) float32."""
    with torch.inference_mode():
        features = model.compute_fbank(torch.from_numpy(np.asarray(audio, dtype=np.float32)))
    return features.transpose(1, 2).unsqueeze(1).numpy()  # (B, T, F) -> (B, 1, F, T)


def fbank_reference(ctx) -> Reference:
    model = ctx.weights.model.eval()

    def run(inputs: Arrays) -> Arrays:
        return {"fbank_features": pyannote_fbank(model, inputs["audio"])}

    return run


def fbank_inputs(ctx) -> dict[str, Arrays]:
    """The standard signals, one (1, 1, samples) window each (silence: FluidAudio's warm-up)."""
    chunks = signals.standard_signals(ctx.geometry.samples)
    return {name: {"audio": x[None, None, :]} for name, x in chunks.items()}


# --- Embedding: fbank_features (1, 1, mels, fbank_frames), weights (1, frames) -------------


def embedding_reference(ctx) -> Reference:
    """{"fbank_features", "weights"} -> {"embedding": (B, dim)}: pyannote's ResNet forward."""
    resnet = ctx.weights.model.resnet.eval()
    output = ctx.options.embedding_output

    def run(inputs: Arrays) -> Arrays:
        fbank = torch.from_numpy(np.asarray(inputs["fbank_features"], dtype=np.float32))
        weights = torch.from_numpy(np.asarray(inputs["weights"], dtype=np.float32))
        with torch.inference_mode():
            _, embedding = resnet(fbank[:, 0].transpose(1, 2), weights=weights)  # (B, T, F) in
        return {"embedding": as_embedding_output(embedding.numpy(), output)}

    return run


def embedding_inputs(ctx) -> dict[str, Arrays]:
    """pyannote's fbank of five signals, one window per call as FluidAudio sends them, with
    0/1 weights from `mask_rows` (full, two turns, one short turn, all-zero):
    {"fbank_features": (1, 1, mels, frames), "weights": (1, frames)}. Silence with all-zero
    weights is FluidAudio's warm-up call."""
    geometry = ctx.geometry
    model = ctx.weights.model.eval()
    full, turns, empty, short = mask_rows(4, geometry.frames)
    weights = {
        "silence": empty,
        "noise": full,
        "speech_0s": full,
        "speech_15s": turns,
        "speech_like": short,
    }
    chunks = embedding_signals(geometry.samples)
    return {
        name: {
            "fbank_features": pyannote_fbank(model, chunks[name][None, None, :]),
            "weights": mask[None].copy(),
        }
        for name, mask in weights.items()
    }


# --- PldaRho: embeddings (N, E), N in 1..32 -> rho (N, lda_dimension) ----------------------


def plda_rho_reference(ctx) -> Reference:
    """embeddings -> pyannote's PLDA(embeddings) * sqrt(PLDA.phi), float64 inside."""
    plda = ctx.weights.model
    sqrt_phi = np.sqrt(np.asarray(plda.phi, dtype=np.float64))

    def run(inputs: Arrays) -> Arrays:
        embeddings = np.asarray(inputs["embeddings"], dtype=np.float32)
        rho = np.asarray(plda(embeddings), dtype=np.float64) * sqrt_phi
        return {"rho": rho.astype(np.float32)}

    return run


def plda_rho_inputs(ctx, seed: int = 1234) -> dict[str, Arrays]:
    """Raw-embedding-like rows (norms 5..50), N from 1 to 32 (FluidAudio's batch limit):
    4 synthetic speakers x 8 (N = 32), random rows, a batch with an all-zero row (FluidAudio's
    (1, 256) zero warm-up is the `zero` case), small norms, and a single row."""
    E = ctx.geometry.embedding_dim
    rng = np.random.default_rng(seed)

    def scaled(n: int, lo: float, hi: float) -> np.ndarray:
        rows = rng.standard_normal((n, E)) * rng.uniform(lo, hi, size=(n, 1)) / np.sqrt(E)
        return rows.astype(np.float32)

    speakers, _ = speaker_embeddings(seed, speakers=4, per_speaker=8, embedding_dim=E)
    with_zero = scaled(8, 5.0, 50.0)
    with_zero[3] = 0.0
    return {
        "speakers_32": {"embeddings": speakers},
        "random_16": {"embeddings": scaled(16, 5.0, 50.0)},
        "zero_row": {"embeddings": with_zero},
        "small_norm": {"embeddings": scaled(8, 1e-3, 1e-1)},
        "zero": {"embeddings": np.zeros((1, E), dtype=np.float32)},
        "single": {"embeddings": scaled(1, 5.0, 50.0)},
    }
