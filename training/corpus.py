"""A synthetic multi-speaker corpus spoken by espeak-ng, plus pyannote's bundled sample.

Everything is generated locally and deterministically from a seed: speakers are espeak-ng voices
(language + voice variant + pitch + speed), utterances are random picks from a fixed word list,
and conversations are mixed with turn-taking, pauses, overlaps of at most two speakers (what the
segmentation-3.0 powerset can express), gain changes and additive noise. Labels come from an
energy VAD on each clean utterance, so they mark where a voice really is audible.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

SAMPLE_RATE = 16000
ESPEAK = "espeak-ng"

# Voices are split by language *and* variant so held-out speakers share neither with training.
TRAIN_LANGUAGES = ("en", "en-us", "de", "fr", "es", "it", "nl", "pt", "pl", "ro")
TRAIN_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "klatt", "klatt3")
HELDOUT_LANGUAGES = ("sv", "cs", "da", "fi", "hu")
HELDOUT_VARIANTS = ("m6", "m7", "f4", "f5", "klatt2")

# A fixed word list; every third word is reserved for held-out texts.
_WORD_LIST = """
    time year people way day man thing woman life child world school state family student group
    country problem hand part place case week company system program question work government
    number night point home water room mother area money story fact month lot right study book
    eye job word business issue side kind head house service friend father power hour game line
    end member law car city community name president team minute idea kid body information back
    parent face others level office door health person art war history party result change
    morning reason research girl guy moment air teacher force education foot boy age policy
    music market sense nation plan college interest death experience effect class control care
    field development role effort rate heart drug show leader light voice wife police mind price
    report decision son view relationship town road arm difference value building action model
    season society tax director position player record paper space ground form event official
    matter center couple site project activity star table need court oil situation cost industry
    figure street image phone data picture practice piece land product doctor wall patient worker
    news test movie north love support technology step baby computer type attention film tree
    source organization hair window evidence population truth song garden river summer winter
    always never often quickly slowly really maybe perhaps today tomorrow yesterday together
    green yellow purple orange silver golden little bright happy quiet simple strong gentle
"""
WORDS = tuple(_WORD_LIST.split())
TRAIN_WORDS = tuple(w for i, w in enumerate(WORDS) if i % 3 != 2)
HELDOUT_WORDS = tuple(w for i, w in enumerate(WORDS) if i % 3 == 2)


@dataclass(frozen=True)
class Voice:
    language: str
    variant: str
    pitch: int  # espeak-ng -p, 0..99
    speed: int  # espeak-ng -s, words per minute

    def args(self) -> list[str]:
        return [
            "-v",
            f"{self.language}+{self.variant}",
            "-p",
            str(self.pitch),
            "-s",
            str(self.speed),
        ]

    def __str__(self) -> str:
        return f"{self.language}+{self.variant} -p {self.pitch} -s {self.speed}"


@dataclass(frozen=True)
class Utterance:
    audio: np.ndarray  # float32, SAMPLE_RATE, trimmed to its speech
    speech: tuple[tuple[float, float], ...]  # VAD intervals, seconds from the utterance start

    @property
    def duration(self) -> float:
        return len(self.audio) / SAMPLE_RATE


@dataclass(frozen=True)
class CorpusConfig:
    """How speakers, utterances and conversations are drawn."""

    languages: tuple[str, ...] = TRAIN_LANGUAGES
    variants: tuple[str, ...] = TRAIN_VARIANTS
    words: tuple[str, ...] = TRAIN_WORDS
    speakers: int = 60
    utterances_per_speaker: int = 10
    words_per_utterance: tuple[int, int] = (2, 9)
    pitch: tuple[int, int] = (10, 90)
    speed: tuple[int, int] = (130, 200)
    comma_prob: float = 0.12  # commas make espeak pause inside an utterance
    duration: float = 10.0  # seconds per conversation chunk
    # mostly two-speaker chunks: they are what teaches the model to tell voices apart
    speakers_per_chunk: tuple[float, float, float, float] = (0.02, 0.13, 0.55, 0.30)  # 0..3
    overlap_prob: float = 0.2
    # voices in one chunk differ at least this much in F0 (~4 semitones): a clear, frame-local
    # cue that lets a short run learn to tell speakers apart (variants alone were not enough)
    min_f0_ratio: float = 1.25
    pause: tuple[float, float] = (0.1, 1.2)
    gain_db: tuple[float, float] = (-6.0, 6.0)  # per utterance
    level_db: tuple[float, float] = (-26.0, -2.0)  # chunk peak
    noise_prob: float = 0.8
    snr_db: tuple[float, float] = (8.0, 35.0)

    @staticmethod
    def heldout(speakers: int = 16, utterances_per_speaker: int = 8) -> CorpusConfig:
        return CorpusConfig(
            languages=HELDOUT_LANGUAGES,
            variants=HELDOUT_VARIANTS,
            words=HELDOUT_WORDS,
            speakers=speakers,
            utterances_per_speaker=utterances_per_speaker,
        )


@dataclass
class Conversation:
    audio: np.ndarray  # float32 (samples,)
    segments: list[tuple[float, float, int]] = field(default_factory=list)  # start, end, speaker


# --- synthesis -----------------------------------------------------------------------------


def draw_voices(cfg: CorpusConfig, rng: np.random.Generator) -> list[Voice]:
    """`cfg.speakers` distinct voices."""
    voices: list[Voice] = []
    seen: set[tuple[str, str, int, int]] = set()
    while len(voices) < cfg.speakers:
        v = Voice(
            language=str(rng.choice(cfg.languages)),
            variant=str(rng.choice(cfg.variants)),
            pitch=int(rng.integers(cfg.pitch[0], cfg.pitch[1] + 1)),
            speed=int(rng.integers(cfg.speed[0], cfg.speed[1] + 1)),
        )
        key = (v.language, v.variant, v.pitch // 10, v.speed // 15)  # keep speakers apart
        if key not in seen:
            seen.add(key)
            voices.append(v)
    return voices


def draw_text(cfg: CorpusConfig, rng: np.random.Generator) -> str:
    n = int(rng.integers(cfg.words_per_utterance[0], cfg.words_per_utterance[1] + 1))
    words = [str(w) for w in rng.choice(cfg.words, size=n)]
    parts = [
        w + ("," if rng.random() < cfg.comma_prob and i < n - 1 else "")
        for i, w in enumerate(words)
    ]
    return " ".join(parts) + "."


def synthesize(voice: Voice, text: str, workdir: Path) -> np.ndarray:
    """espeak-ng → wav → float32 mono at SAMPLE_RATE."""
    wav = workdir / "utt.wav"
    subprocess.run([ESPEAK, *voice.args(), "-w", str(wav), text], check=True, capture_output=True)
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, sr)
        audio = resample_poly(audio, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return audio


def energy_vad(
    audio: np.ndarray,
    sample_rate: int = SAMPLE_RATE,
    *,
    floor_db: float = -40.0,
    min_gap: float = 0.2,
    min_speech: float = 0.06,
) -> list[tuple[float, float]]:
    """Speech intervals (s) of a *clean* utterance: 30 ms RMS above peak + floor_db.

    Gaps shorter than `min_gap` are bridged, as a human annotator would (word boundaries).
    """
    hop, win = int(0.01 * sample_rate), int(0.03 * sample_rate)
    if len(audio) < win:
        return []
    frames = np.lib.stride_tricks.sliding_window_view(audio, win)[::hop]
    rms = np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1))
    if rms.max() <= 0:
        return []
    active = rms > max(rms.max() * 10 ** (floor_db / 20), 1e-5)
    intervals: list[list[float]] = []
    for i in np.flatnonzero(active):
        start, end = i * hop / sample_rate, (i * hop + win) / sample_rate
        if intervals and start - intervals[-1][1] < min_gap:
            intervals[-1][1] = end
        else:
            intervals.append([start, end])
    return [(s, e) for s, e in intervals if e - s >= min_speech]


def make_utterance(audio: np.ndarray) -> Utterance | None:
    """Trim espeak's leading/trailing silence so turn-taking gaps are real gaps."""
    speech = energy_vad(audio)
    if not speech:
        return None
    margin = 0.05
    t0 = max(0.0, speech[0][0] - margin)
    t1 = min(len(audio) / SAMPLE_RATE, speech[-1][1] + margin)
    clip = audio[int(t0 * SAMPLE_RATE) : int(t1 * SAMPLE_RATE)]
    shifted = tuple((s - t0, min(e - t0, len(clip) / SAMPLE_RATE)) for s, e in speech)
    return Utterance(np.ascontiguousarray(clip, dtype=np.float32), shifted)


def build_pool(
    cfg: CorpusConfig, seed: int, workdir: Path | None = None
) -> tuple[list[Voice], list[list[Utterance]]]:
    """Voices and their utterances (one list per speaker), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    voices = draw_voices(cfg, rng)
    pool: list[list[Utterance]] = []
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        work = Path(workdir or tmp)
        for voice in voices:
            utts: list[Utterance] = []
            while len(utts) < cfg.utterances_per_speaker:
                utt = make_utterance(synthesize(voice, draw_text(cfg, rng), work))
                if utt is not None:
                    utts.append(utt)
            pool.append(utts)
    return voices, pool


# --- mixing --------------------------------------------------------------------------------


def _noise(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if rng.random() < 0.5:
        return white
    # pink-ish: 1/sqrt(f) spectral shaping of white noise
    spec = np.fft.rfft(white)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n=n)


def median_f0(utterances: Sequence[Utterance], sample_rate: int = SAMPLE_RATE) -> float:
    """A voice's median fundamental frequency (Hz): autocorrelation peak on loud 40 ms frames.

    espeak's `-p` is relative to each variant's own base pitch, so voices are compared by
    what they actually sound like.
    """
    win, hop = int(0.04 * sample_rate), int(0.02 * sample_rate)
    lo, hi = int(sample_rate / 400), int(sample_rate / 60)
    lags: list[np.ndarray] = []
    for utt in utterances:
        if len(utt.audio) < win:
            continue
        frames = np.lib.stride_tricks.sliding_window_view(utt.audio.astype(np.float64), win)[::hop]
        energy = np.mean(frames**2, axis=1)
        loud = frames[energy > 0.1 * energy.max()]
        loud = loud - loud.mean(axis=1, keepdims=True)
        ac = np.fft.irfft(np.abs(np.fft.rfft(loud, n=2 * win, axis=1)) ** 2, axis=1)[:, :win]
        ac /= ac[:, :1] + 1e-12
        lag = lo + np.argmax(ac[:, lo:hi], axis=1)
        lags.append(lag[ac[np.arange(len(ac)), lag] > 0.3])  # clearly periodic frames only
    found = np.concatenate(lags) if lags else np.zeros(0)
    return float(sample_rate / np.median(found)) if len(found) else 0.0


def draw_speakers(
    f0: Sequence[float], n: int, rng: np.random.Generator, cfg: CorpusConfig
) -> list[int]:
    """`n` pool indices whose voices are pairwise `cfg.min_f0_ratio` apart, lowest F0 first."""
    while True:
        picks = sorted(
            (int(s) for s in rng.choice(len(f0), size=n, replace=False)), key=f0.__getitem__
        )
        if all(f0[b] >= cfg.min_f0_ratio * f0[a] for a, b in zip(picks, picks[1:], strict=False)):
            return picks


def mix_conversation(
    pool: Sequence[Sequence[Utterance]],
    rng: np.random.Generator,
    cfg: CorpusConfig,
    f0: Sequence[float] | None = None,
) -> Conversation:
    """One `cfg.duration` chunk of turn-taking between 0-3 speakers, at most 2 at a time.

    With `f0` (each pool voice's `median_f0`), the voices of a chunk are pairwise distinct and
    their speaker indices follow F0 order (0 = lowest), which training can use as a warm-up.
    """
    n = int(round(cfg.duration * SAMPLE_RATE))
    speech = np.zeros(n, dtype=np.float64)
    n_spk = int(rng.choice(len(cfg.speakers_per_chunk), p=np.asarray(cfg.speakers_per_chunk)))
    if f0 is not None:
        speakers = draw_speakers(f0, n_spk, rng, cfg)
    else:
        speakers = [int(s) for s in rng.choice(len(pool), size=n_spk, replace=False)]
    segments: list[tuple[float, float, int]] = []
    ends: list[float] = []  # end time of every placed utterance, in order
    t = float(rng.uniform(-1.5, 1.0))  # may start mid-utterance, like a crop of a longer talk
    prev = -1
    while n_spk and t < cfg.duration:
        choices = [k for k in range(n_spk) if k != prev] if n_spk > 1 else [0]
        local = int(rng.choice(choices))
        pool_utts = pool[speakers[local]]
        utt = pool_utts[int(rng.integers(len(pool_utts)))]
        gain = 10 ** (rng.uniform(*cfg.gain_db) / 20)
        start = int(round(t * SAMPLE_RATE))
        a, b = max(start, 0), min(start + len(utt.audio), n)
        if b > a:
            speech[a:b] += gain * utt.audio[a - start : b - start]
        for s, e in utt.speech:
            s, e = max(t + s, 0.0), min(t + e, cfg.duration)
            if e > s:
                segments.append((s, e, local))
        ends.append(t + utt.duration)
        prev = local
        # next turn: overlap the tail of this one (never a third voice), or pause
        if n_spk > 1 and rng.random() < cfg.overlap_prob:
            nxt = ends[-1] - rng.uniform(0.2, min(1.5, 0.6 * utt.duration))
        else:
            nxt = ends[-1] + rng.uniform(*cfg.pause)
        floor = max(ends[:-1], default=-np.inf)  # earlier voices must be over
        t = max(nxt, floor + 0.05, t + 0.3)
    peak = np.abs(speech).max()
    level = 10 ** (rng.uniform(*cfg.level_db) / 20)
    if peak > 0:
        speech *= level / peak
    audio = speech
    if rng.random() < cfg.noise_prob or peak == 0:
        noise = _noise(n, rng)
        ref = np.sqrt(np.mean(speech[speech != 0] ** 2)) if peak > 0 else level * 0.1
        snr = rng.uniform(*cfg.snr_db)
        audio = speech + noise * ref / (np.sqrt(np.mean(noise**2)) + 1e-12) * 10 ** (-snr / 20)
    return Conversation(audio.astype(np.float32), sorted(segments))


# --- pyannote's bundled sample -------------------------------------------------------------


def sample_paths() -> tuple[Path, Path]:
    """pyannote.audio's bundled sample.wav and sample.rttm, from the installed package."""
    import pyannote.audio

    root = Path(pyannote.audio.__file__).parent / "sample"
    return root / "sample.wav", root / "sample.rttm"


def load_sample() -> Conversation:
    wav, rttm = sample_paths()
    audio, sr = sf.read(wav, dtype="float32", always_2d=True)
    if sr != SAMPLE_RATE:
        raise ValueError(f"{wav}: expected {SAMPLE_RATE} Hz, got {sr}")
    labels: dict[str, int] = {}
    segments: list[tuple[float, float, int]] = []
    for line in rttm.read_text().splitlines():
        f = line.split()
        if len(f) < 8 or f[0] != "SPEAKER":
            continue
        start, dur = float(f[3]), float(f[4])
        spk = labels.setdefault(f[7], len(labels))
        segments.append((start, start + dur, spk))
    return Conversation(audio.mean(axis=1), sorted(segments))


def crop(conv: Conversation, start: float, duration: float) -> Conversation:
    """A `duration` window of `conv` from `start` (s), zero-padded, speakers renumbered 0..k."""
    n = int(round(duration * SAMPLE_RATE))
    a = int(round(start * SAMPLE_RATE))
    audio = np.zeros(n, dtype=np.float32)
    piece = conv.audio[a : a + n]
    audio[: len(piece)] = piece
    mapping: dict[int, int] = {}
    segments = []
    for s, e, spk in conv.segments:
        s, e = max(s, start) - start, min(e, start + duration) - start
        if e > s:
            segments.append((s, e, mapping.setdefault(spk, len(mapping))))
    return Conversation(audio, segments)


# --- frame targets -------------------------------------------------------------------------


def frame_targets(
    segments: Sequence[tuple[float, float, int]],
    num_frames: int,
    step: float,
    half: float,
    num_speakers: int,
) -> np.ndarray:
    """(num_frames, num_speakers) uint8 activity, discretised as pyannote's SpeakerDiarization
    task does (`prepare_chunk`): frame index = round((t - receptive_field.duration / 2) / step).
    """
    y = np.zeros((num_frames, num_speakers), dtype=np.uint8)
    for s, e, spk in segments:
        if spk >= num_speakers:
            continue  # the powerset cannot hold more speakers; the mixer never makes them
        i0 = max(0, int(np.round((s - half) / step)))
        i1 = int(np.round((e - half) / step))
        y[i0 : i1 + 1, spk] = 1
    return y
