"""Calibration audio for sensitivity measurements: 10 s chunks and their speakers.

The chunks are what `measure_sensitivity` runs the model on; the speakers' intervals give the
embedding model its masks (one speaker per row, as pyannote's pipeline feeds WeSpeaker). The
default is pyannote's bundled sample (real speech, its own RTTM); `calibration_from_files`
takes any WAVs (+ RTTMs); benchmarks/bench_sensitivity.py adds synthetic conversations from
training/corpus.py's TRAINING configuration (never the held-out material variants are judged on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreml_diarize.errors import DiarizeError

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class CalibrationChunk:
    """One chunk of calibration audio (the model's chunk length, 16 kHz, float32) and the
    speech intervals of each speaker in it (seconds), which give the embedding masks."""

    name: str
    audio: np.ndarray
    speakers: tuple[tuple[tuple[float, float], ...], ...] = ()


@dataclass(frozen=True)
class Calibration:
    """The audio sensitivity is measured on, and what it is (recorded in the table).

    `embedding_rows`: how many (chunk, speaker) rows the embedding model is measured on
    (rounded up to whole calls of the package's batch)."""

    description: str
    chunks: tuple[CalibrationChunk, ...]
    embedding_rows: int = 9

    def segmentation_inputs(self, shape: tuple[int, ...]) -> list[dict[str, np.ndarray]]:
        return [{"audio": _fit(c.audio, shape[-1]).reshape(shape)} for c in self.chunks]

    def embedding_inputs(
        self, waveform_shape: tuple[int, ...], mask_shape: tuple[int, ...], *, min_speech_s=1.0
    ) -> list[dict[str, np.ndarray]]:
        """Rows of (chunk, one speaker's activity as the mask), as pyannote's pipeline feeds
        WeSpeaker, `batch` rows per call; speakers with less than `min_speech_s` are skipped."""
        batch, samples = waveform_shape
        frames = mask_shape[-1]
        duration = samples / SAMPLE_RATE
        centres = (np.arange(frames) + 0.5) * duration / frames
        rows = []  # round robin over chunks: every chunk's first speaker, then the second...
        for turn in range(max((len(c.speakers) for c in self.chunks), default=0)):
            for chunk in self.chunks:
                if turn >= len(chunk.speakers):
                    continue
                mask = np.zeros(frames, dtype=np.float32)
                for start, end in chunk.speakers[turn]:
                    mask[(centres >= start) & (centres < end)] = 1.0
                if mask.sum() * duration / frames >= min_speech_s:
                    rows.append((_fit(chunk.audio, samples), mask))
        if not rows:
            raise DiarizeError("calibration: no speaker speaks long enough for an embedding")
        rows = rows[: self.embedding_rows]
        rows += rows[: (-len(rows)) % batch]  # whole calls (repeats count once more)
        return [
            {
                "waveform": np.stack([w for w, _ in rows[i : i + batch]]),
                "mask": np.stack([m for _, m in rows[i : i + batch]]),
            }
            for i in range(0, len(rows), batch)
        ]


def _fit(audio: np.ndarray, samples: int) -> np.ndarray:
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)[:samples]
    return np.pad(audio, (0, samples - audio.size))


def read_rttm_speakers(text: str) -> dict[str, list[tuple[float, float]]]:
    """Speech intervals per speaker label of an RTTM text."""
    speakers: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8 and f[0] == "SPEAKER":
            start, dur = float(f[3]), float(f[4])
            speakers.setdefault(f[7], []).append((start, start + dur))
    return speakers


def chunks_of_recording(
    name: str,
    audio: np.ndarray,
    speakers: dict[str, list[tuple[float, float]]],
    offsets_s: Sequence[float],
    seconds: float = 10.0,
) -> list[CalibrationChunk]:
    """`seconds` windows of a recording at `offsets_s`, each with its speakers' intervals."""
    out = []
    n = int(round(seconds * SAMPLE_RATE))
    for offset in offsets_s:
        a = int(round(offset * SAMPLE_RATE))
        turns = []
        for intervals in speakers.values():
            inside = tuple(
                (max(s, offset) - offset, min(e, offset + seconds) - offset)
                for s, e in intervals
                if min(e, offset + seconds) > max(s, offset)
            )
            if inside:
                turns.append(inside)
        out.append(CalibrationChunk(f"{name}@{offset:g}s", _fit(audio[a : a + n], n), tuple(turns)))
    return out


def sample_calibration(offsets_s: Sequence[float] = (0.0, 5.0, 10.0, 15.0, 20.0)) -> Calibration:
    """pyannote.audio's bundled sample (real speech, 2 speakers, its own RTTM): never audio
    the fixtures are judged on (they are judged on held-out synthetic material)."""
    from coreml_diarize.audio import bundled_sample_path, read_audio

    wav = bundled_sample_path()
    speakers = read_rttm_speakers(wav.with_suffix(".rttm").read_text())
    chunks = chunks_of_recording("sample", read_audio(wav).samples, speakers, offsets_s)
    offsets = ", ".join(f"{o:g}" for o in offsets_s)
    return Calibration(f"pyannote sample.wav, 10 s at {offsets} s", tuple(chunks))


def calibration_from_files(
    paths: Sequence[Path], *, max_chunks: int = 10, step_s: float = 5.0, embedding_rows: int = 9
) -> Calibration:
    """10 s chunks every `step_s` of each audio file, round robin over files, at most
    `max_chunks`; speakers from a sibling `<stem>.rttm` (else the whole file is one speaker)."""
    from coreml_diarize.audio import read_audio

    per_file = []
    for path in map(Path, paths):
        audio = read_audio(path).samples
        rttm = path.with_suffix(".rttm")
        duration = audio.size / SAMPLE_RATE
        speakers = (
            read_rttm_speakers(rttm.read_text()) if rttm.is_file() else {"all": [(0.0, duration)]}
        )
        offsets = np.arange(0.0, max(duration - 10.0, 0.0) + 1e-9, step_s)
        per_file.append(chunks_of_recording(path.stem, audio, speakers, offsets))
    chunks = [
        c
        for k in range(max(map(len, per_file), default=0))
        for f in per_file
        if k < len(f)
        for c in [f[k]]
    ]
    if not chunks:
        raise DiarizeError("calibration: no audio given")
    return Calibration(
        f"{len(paths)} file(s): {', '.join(Path(p).name for p in paths)}; 10 s every {step_s:g} s",
        tuple(chunks[:max_chunks]),
        embedding_rows=embedding_rows,
    )
