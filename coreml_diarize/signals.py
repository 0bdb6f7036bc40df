"""Deterministic test signals (10 s at 16 kHz unless told): same call, same samples, everywhere."""

from __future__ import annotations

import numpy as np

from coreml_diarize.audio import bundled_sample_path, read_audio

SAMPLE_RATE = 16000
CHUNK = 160000


def silence(n: int = CHUNK) -> np.ndarray:
    return np.zeros(n, dtype=np.float32)


def noise(n: int = CHUNK, *, seed: int = 0, scale: float = 0.1) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(n) * scale).astype(np.float32)


def sine_sweep(
    n: int = CHUNK, *, f0: float = 50.0, f1: float = 7500.0, amp: float = 0.5
) -> np.ndarray:
    """Exponential sweep f0 → f1 over the whole signal."""
    t = np.arange(n) / SAMPLE_RATE
    duration = n / SAMPLE_RATE
    k = np.log(f1 / f0) / duration
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return (amp * np.sin(phase)).astype(np.float32)


def clipped(n: int = CHUNK, *, seed: int = 1) -> np.ndarray:
    """A full-scale signal hard-clipped at ±1 (tones + noise driven far past 0 dBFS)."""
    t = np.arange(n) / SAMPLE_RATE
    x = 3.0 * np.sin(2 * np.pi * 220 * t) + np.random.default_rng(seed).standard_normal(n)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def speech_like(n: int = CHUNK, *, seed: int = 2) -> np.ndarray:
    """Synthetic voiced speech: a pitch-modulated pulse train through moving formants, in
    syllable-rate bursts with pauses. No real speech needed."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + 20 * np.sin(2 * np.pi * 3.1 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    source = sum(np.sin(k * phase) / k for k in range(1, 30))
    formants = [
        (700 + 200 * np.sin(2 * np.pi * 1.3 * t)),
        (1200 + 400 * np.sin(2 * np.pi * 0.9 * t)),
    ]
    voiced = source * sum(np.cos(2 * np.pi * np.cumsum(f) / SAMPLE_RATE) for f in formants)
    envelope = np.clip(np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 6)) * 1.5, 0, 1)
    gate = (np.sin(2 * np.pi * 0.23 * t) > -0.3).astype(np.float64)
    x = voiced * envelope * gate + 0.003 * rng.standard_normal(n)
    return (0.3 * x / np.max(np.abs(x))).astype(np.float32)


def real_speech(offset_s: float = 0.0, n: int = CHUNK) -> np.ndarray:
    """A chunk of pyannote.audio's bundled 2-speaker sample (zero-padded past its end)."""
    audio = read_audio(bundled_sample_path()).samples
    start = int(offset_s * SAMPLE_RATE)
    piece = audio[start : start + n]
    return np.pad(piece, (0, n - piece.size)).astype(np.float32)


def standard_signals(n: int = CHUNK) -> dict[str, np.ndarray]:
    """The built-in validation set, by name."""
    return {
        "silence": silence(n),
        "noise": noise(n),
        "sine_sweep": sine_sweep(n),
        "clipped": clipped(n),
        "speech_like": speech_like(n),
        "speech_0s": real_speech(0.0, n),
        "speech_15s": real_speech(15.0, n),
    }
