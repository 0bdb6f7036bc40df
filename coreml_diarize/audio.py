"""Audio I/O through soundfile (torchcodec does not load everywhere) and input checks."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import AudioError


@dataclass(frozen=True)
class LoadedAudio:
    samples: np.ndarray  # float32 mono, (n,)
    sample_rate: int
    notices: tuple[str, ...] = ()  # what was done to it (downmix, resample...)


def bundled_sample_path() -> Path:
    """pyannote.audio's own 30 s, 2-speaker, 16 kHz sample (ships inside the wheel)."""
    import importlib.util

    spec = importlib.util.find_spec("pyannote.audio")
    if spec is None or not spec.submodule_search_locations:
        raise AudioError("pyannote.audio is not installed: its bundled sample is unavailable")
    path = Path(next(iter(spec.submodule_search_locations))) / "sample" / "sample.wav"
    if not path.is_file():
        raise AudioError(f"pyannote.audio's bundled sample is missing: {path}")
    return path


def read_audio(path: Path | str, *, sample_rate: int = 16000) -> LoadedAudio:
    """Read a file as float32 mono at `sample_rate`, downmixing / resampling with a notice.

    Every user mistake is one AudioError line: missing file, not audio, empty, non-finite.
    """
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio file not found: {path}")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise AudioError(f"not a readable audio file: {path} ({exc.__class__.__name__})") from exc
    notices: list[str] = []
    if data.shape[0] == 0:
        raise AudioError(f"audio file is empty: {path}")
    if not np.all(np.isfinite(data)):
        raise AudioError(f"audio file contains NaN or infinite samples: {path}")
    if data.shape[1] > 1:
        notices.append(f"downmixed {data.shape[1]} channels to mono")
        data = data.mean(axis=1, keepdims=True)
    mono = data[:, 0]
    if rate != sample_rate:
        mono = resample(mono, rate, sample_rate)
        notices.append(f"resampled {rate} Hz to {sample_rate} Hz")
    return LoadedAudio(np.ascontiguousarray(mono, dtype=np.float32), sample_rate, tuple(notices))


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling with torchaudio's sinc interpolation."""
    import torch
    import torchaudio.functional as AF

    out = AF.resample(torch.from_numpy(samples.astype(np.float32)), source_rate, target_rate)
    return out.numpy()


def chunks(samples: np.ndarray, size: int) -> list[np.ndarray]:
    """Cut into `size`-sample chunks; the last (or only) one zero-padded to `size`."""
    if samples.size == 0:
        raise AudioError("audio is empty")
    out = []
    for start in range(0, samples.size, size):
        piece = samples[start : start + size]
        if piece.size < size:
            piece = np.pad(piece, (0, size - piece.size))
        out.append(piece.astype(np.float32))
    return out
