"""The embedding model's independent reference: pyannote's own WeSpeaker forward.

pyannote computes the fbank with `torch.vmap(kaldi.fbank)` and pools with `StatsPool`
(F.interpolate of the weights); the wrapper re-expresses both (strided conv, selection matrix),
so comparing against this forward checks those re-expressions, not just the copied ResNet.

With the `embedding_output="l2"` option the reference is that output divided by its L2 norm,
in float64 numpy (`as_embedding_output`), not the wrapper's fp16-safe formulation.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from coreml_diarize import signals


def as_embedding_output(raw: np.ndarray, embedding_output: str) -> np.ndarray:
    """pyannote's raw embeddings (B, dim) as the package emits them: unchanged for "raw"; for
    "l2" each row divided by its L2 norm in float64 (an all-zero row stays zero), float32 out."""
    if embedding_output == "raw":
        return raw
    rows = np.asarray(raw, dtype=np.float64)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return (rows / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def embedding_reference(ctx) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """{"waveform": (B, samples), "mask": (B, frames)} -> {"embedding": (B, dim)}, raw or
    L2-normalised as `ctx.options.embedding_output` says."""
    model = ctx.weights.model.eval()
    output = ctx.options.embedding_output

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        waveform = torch.from_numpy(np.asarray(inputs["waveform"], dtype=np.float32))
        mask = torch.from_numpy(np.asarray(inputs["mask"], dtype=np.float32))
        with torch.inference_mode():
            out = model(waveform[:, None, :], weights=mask)
        return {"embedding": as_embedding_output(out.numpy(), output)}

    return run


def mask_rows(batch: int, frames: int) -> np.ndarray:
    """(batch, frames) masks cycling through: full, partial (two speech turns), all-zero
    (an empty speaker slot), partial (one short turn), ..."""
    full = np.ones(frames, dtype=np.float32)
    turns = np.zeros(frames, dtype=np.float32)
    turns[int(0.10 * frames) : int(0.45 * frames)] = 1.0
    turns[int(0.60 * frames) : int(0.80 * frames)] = 1.0
    empty = np.zeros(frames, dtype=np.float32)
    short = np.zeros(frames, dtype=np.float32)
    short[int(0.70 * frames) : int(0.85 * frames)] = 1.0
    cycle = (full, turns, empty, short)
    return np.stack([cycle[i % len(cycle)] for i in range(batch)])


def embedding_signals(samples: int) -> dict[str, np.ndarray]:
    """The named test signals, one 10 s chunk each."""
    return {
        "noise": signals.noise(samples),
        "silence": signals.silence(samples),
        "clipped": signals.clipped(samples),
        "sine_sweep": signals.sine_sweep(samples),
        "speech_0s": signals.real_speech(0.0, samples),
        "speech_15s": signals.real_speech(15.0, samples),
        "speech_like": signals.speech_like(samples),
    }


def embedding_inputs(ctx) -> dict[str, dict[str, np.ndarray]]:
    """Each signal tiled over the speaker slots (as the embedding preprocessor does), with
    full, partial and all-zero masks: {"waveform": (B, samples), "mask": (B, frames)}."""
    geometry = ctx.geometry
    batch = geometry.embedding_batch
    masks = mask_rows(batch, geometry.frames)
    return {
        name: {"waveform": np.tile(x[None, :], (batch, 1)), "mask": masks.copy()}
        for name, x in embedding_signals(geometry.samples).items()
    }


def kaldi_fbank_float64(x: np.ndarray, opts) -> torch.Tensor:
    """(mels, frames): torchaudio's own `kaldi.fbank` in float64 on `x * 2^15`, with pyannote's
    WeSpeaker settings (`opts`: wrappers.fbank.KaldiFbankOptions) — the front end's reference."""
    import torchaudio.compliance.kaldi as kaldi

    waveform = torch.from_numpy(np.asarray(x)).double()[None] * opts.input_scale
    return kaldi.fbank(
        waveform,
        num_mel_bins=opts.num_mel_bins,
        frame_length=opts.frame_length_ms,
        frame_shift=opts.frame_shift_ms,
        dither=0.0,
        sample_frequency=opts.sample_rate,
        window_type="hamming",
        use_energy=False,
    ).T
