"""Audio I/O through soundfile (torchcodec does not load everywhere) and input checks."""

from __future__ import annotations

import os
import struct
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


# A truncated WAV (a recording cut off mid-write, a partial copy or download) is refused by
# default. ffmpeg and sox warn and carry on, which suits a converter; but every command here
# reports results *for a file* (a diarization, a DER, a validation verdict), and results for
# the first 41 s of a 60 s meeting, flagged only by a line that scrolls away, are wrong
# results with the file's name on them. So: one `error:` line (exit 4, like any unusable
# audio) naming how much is missing, and an explicit opt-in for whoever wants the remnant.
ALLOW_TRUNCATED_ENV = "COREML_DIARIZE_ALLOW_TRUNCATED"

_UNKNOWN_SIZES = (0, 0xFFFFFFFF)  # streaming writers: length not known when the header was written
_PCM_TAGS = (0x0001, 0x0003, 0x0006, 0x0007)  # PCM, IEEE float, A-law, mu-law: fixed frame size
_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class WavTruncation:
    """A WAV whose `data` chunk header promises more bytes than the file holds."""

    sample_rate: int
    declared_frames: int
    available_frames: int

    @property
    def declared_s(self) -> float:
        return self.declared_frames / self.sample_rate

    @property
    def available_s(self) -> float:
        return self.available_frames / self.sample_rate

    def describe(self, path: Path) -> str:
        missing = self.declared_s - self.available_s
        return (
            f"{path} is truncated: its header promises {self.declared_s:.2f} s "
            f"({self.declared_frames} frames) but the file holds {self.available_s:.2f} s; "
            f"{missing:.2f} s are missing"
        )


def wav_truncation(path: Path | str) -> WavTruncation | None:
    """Compare a WAV's declared `data` size with the bytes actually in the file.

    libsndfile silently returns only the frames present (and `sf.info().frames` agrees with
    it), so the header is read here with the stdlib. RIFF, RIFX and RF64/BW64 (64-bit sizes
    from `ds64`) are understood; WAVE_FORMAT_EXTENSIBLE uses the same block alignment as PCM.
    Returns None for anything that is not a WAV, a header this cannot make sense of (soundfile
    then decides), unknown lengths (streaming headers: 0 or 0xFFFFFFFF), or a complete data
    chunk whatever follows it (LIST, id3, a cut-off trailing chunk: the samples are all there).
    """
    path = Path(path)
    try:
        file_size = path.stat().st_size
        with path.open("rb") as f:
            return _scan_wav(f, file_size)
    except (OSError, struct.error, ValueError):
        return None


def _scan_wav(f, file_size: int) -> WavTruncation | None:
    head = f.read(12)
    if len(head) < 12 or head[8:12] != b"WAVE":
        return None
    magic = head[:4]
    if magic in (b"RIFF", b"RF64", b"BW64"):
        endian = "<"
    elif magic == b"RIFX":
        endian = ">"
    else:
        return None
    ds64_data_size: int | None = None
    fact_frames: int | None = None  # compressed formats state their frame count here
    fmt: tuple[int, int, int, int] | None = None  # tag, rate, byte rate, block align
    pos = 12
    while pos + 8 <= file_size:
        f.seek(pos)
        chunk_id, size = struct.unpack(endian + "4sI", f.read(8))
        body = pos + 8
        if chunk_id == b"ds64" and size >= 16:
            _, ds64_data_size = struct.unpack("<QQ", f.read(16))
        elif chunk_id == b"fmt " and size >= 16:
            tag, _, rate, byte_rate, block_align = struct.unpack(endian + "HHIIH", f.read(14))
            if tag == _EXTENSIBLE and size >= 40:
                f.seek(body + 24)  # SubFormat GUID: its first two bytes are the format tag
                (tag,) = struct.unpack(endian + "H", f.read(2))
            fmt = (tag, rate, byte_rate, block_align)
        elif chunk_id == b"fact" and size >= 4:
            (fact_frames,) = struct.unpack(endian + "I", f.read(4))
        elif chunk_id == b"data":
            if magic != b"RIFF" and magic != b"RIFX" and size == 0xFFFFFFFF:
                size = ds64_data_size if ds64_data_size is not None else 0
            if fmt is None or size in _UNKNOWN_SIZES:
                return None
            return _compare(fmt, size, file_size - body, fact_frames)
        pos = body + size + (size & 1)  # chunks are word-aligned
    return None


def _compare(
    fmt: tuple[int, int, int, int], declared: int, available: int, fact_frames: int | None
) -> WavTruncation | None:
    tag, rate, byte_rate, block_align = fmt
    if rate <= 0:
        return None
    if tag in _PCM_TAGS and block_align > 0:
        declared_frames, available_frames = declared // block_align, available // block_align
    elif fact_frames and fact_frames not in _UNKNOWN_SIZES:  # compressed, with a frame count
        declared_frames = fact_frames
        available_frames = available * fact_frames // declared
    elif byte_rate > 0:  # compressed, no `fact`: frames per byte only on average
        declared_frames = declared * rate // byte_rate
        available_frames = available * rate // byte_rate
    else:
        return None
    if available_frames >= declared_frames:
        return None
    return WavTruncation(rate, declared_frames, max(available_frames, 0))


def _allow_truncated_from_env() -> bool:
    return os.environ.get(ALLOW_TRUNCATED_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def read_audio(
    path: Path | str, *, sample_rate: int = 16000, allow_truncated: bool | None = None
) -> LoadedAudio:
    """Read a file as float32 mono at `sample_rate`, downmixing / resampling with a notice.

    Every user mistake is one AudioError line: missing file, directory, not audio, empty,
    truncated WAV, non-finite. A truncated WAV is an error unless `allow_truncated` (default:
    the COREML_DIARIZE_ALLOW_TRUNCATED environment variable), then a notice says what is missing.
    """
    import soundfile as sf

    path = Path(path)
    if path.is_dir():
        raise AudioError(f"{path} is a directory, not an audio file")
    if not path.exists():
        raise AudioError(f"audio file not found: {path}")
    if not path.is_file():
        raise AudioError(f"audio path is not a regular file: {path}")
    if allow_truncated is None:
        allow_truncated = _allow_truncated_from_env()
    notices: list[str] = []
    truncation = wav_truncation(path)
    if truncation is not None:
        if not allow_truncated:
            raise AudioError(
                f"{truncation.describe(path)} (set {ALLOW_TRUNCATED_ENV}=1 to use what is there)"
            )
        notices.append(
            f"truncated: header promises {truncation.declared_s:.2f} s, "
            f"using the {truncation.available_s:.2f} s present"
        )
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises several types for unreadable files
        raise AudioError(f"not a readable audio file: {path} ({exc.__class__.__name__})") from exc
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
