"""Independent references and deterministic inputs for the three auxiliary models.

Nothing here calls a wrapper: each reference is pyannote's own code where pyannote has it
(`Powerset.to_multilabel`, `SpeakerDiarization.get_embeddings`, its `min_num_samples` search)
and plain numpy / scipy otherwise, so a wrapper that drifts from pyannote fails validation.

Inputs are named cases covering the edge cases the Swift side meets: silence, all speakers
overlapping, one speaker, exact ties, empty database, zero embeddings, D = 1 and D = 256.
All arrays are float32 with the contract's shapes (taken from the geometry, never literals).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np

from coreml_diarize import signals
from coreml_diarize.specs import BuildContext

Arrays = dict[str, np.ndarray]
Reference = Callable[[Arrays], Arrays]

# pyannote's min_num_samples for WeSpeaker ResNet34 is one 25 ms kaldi fbank window (400 samples
# at 16 kHz). Only used to place inputs on the fallback boundary; the reference asks pyannote.
WESPEAKER_WINDOW_S = 0.025


# --- powerset_postprocessor ------------------------------------------------------------------


def pyannote_powerset(speakers: int, classes: int):
    """pyannote's `Powerset` with `classes` powerset classes over `speakers` speakers."""
    from pyannote.audio.utils.powerset import Powerset

    for max_set_size in range(speakers + 1):
        powerset = Powerset(speakers, max_set_size)
        if powerset.num_powerset_classes == classes:
            return powerset
    raise ValueError(f"no Powerset({speakers}, k) has {classes} classes")


def postprocessor_reference(ctx: BuildContext) -> Reference:
    """pyannote's hard powerset -> multilabel conversion (torch.argmax: first max on ties)."""
    import torch

    powerset = pyannote_powerset(ctx.geometry.speakers, ctx.geometry.classes)

    def run(inputs: Arrays) -> Arrays:
        segments = torch.from_numpy(np.asarray(inputs["segments"], dtype=np.float32))
        with torch.inference_mode():
            masks = powerset.to_multilabel(segments, soft=False)
        return {"speaker_masks": masks.numpy().astype(np.float32)}

    return run


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _dominant(frames: int, classes: int, winners: np.ndarray, rng: np.random.Generator):
    """Log-probs where class winners[f] clearly dominates frame f."""
    logits = rng.standard_normal((frames, classes))
    logits[np.arange(frames), winners] += 8.0
    return _log_softmax(logits)


def _ties(frames: int, classes: int, rng: np.random.Generator) -> np.ndarray:
    """Every frame has an exact tie for the maximum between >= 2 classes (all of them on some
    frames), with distinct, non-maximal values elsewhere; ties of the last two classes too."""
    out = np.empty((frames, classes), dtype=np.float32)
    for f in range(frames):
        if f % 7 == 0:
            tied = np.arange(classes)  # a uniform frame: pyannote picks class 0 (silence)
        elif f % 7 == 1:
            tied = np.array([classes - 2, classes - 1])
        else:
            size = int(rng.integers(2, classes + 1))
            tied = np.sort(rng.choice(classes, size=size, replace=False))
        top = np.float32(-rng.uniform(0.1, 3.0))
        row = top - rng.uniform(0.5, 5.0, size=classes).astype(np.float32)
        row[tied] = top
        out[f] = row
    return out


def postprocessor_inputs(ctx: BuildContext) -> dict[str, Arrays]:
    g = ctx.geometry
    frames, classes = g.frames, g.classes
    powerset = pyannote_powerset(g.speakers, classes)
    cardinality = powerset.mapping.sum(dim=1).numpy()
    overlap_classes = np.flatnonzero(cardinality >= 2)
    rng = np.random.default_rng(1234)

    def case(log_probs: np.ndarray) -> Arrays:
        return {"segments": log_probs.astype(np.float32)[None]}

    blocks = np.repeat(rng.integers(0, classes, size=frames // 20 + 1), 20)[:frames]
    saturated = np.full((frames, classes), -80.0)  # fp32 log-probs of ~0 (no -inf: finite I/O)
    saturated[np.arange(frames), blocks] = 0.0
    return {
        "random": case(_log_softmax(rng.standard_normal((frames, classes)) * 2.0)),
        "segmented": case(_dominant(frames, classes, blocks, rng)),
        "silent": case(_dominant(frames, classes, np.zeros(frames, dtype=int), rng)),
        "single_speaker": case(_dominant(frames, classes, np.ones(frames, dtype=int), rng)),
        "all_overlap": case(
            _dominant(
                frames, classes, overlap_classes[np.arange(frames) % overlap_classes.size], rng
            )
        ),
        "exact_ties": case(_ties(frames, classes, rng)),
        "uniform": case(np.full((frames, classes), -math.log(classes))),
        "saturated": case(saturated),
    }


# --- embedding_preprocessor ------------------------------------------------------------------


def pyannote_min_num_samples() -> tuple[int, int]:
    """(min_num_samples, sample_rate) by pyannote's own binary search on WeSpeaker ResNet34.

    The search only looks for the shortest input the model runs on, so the (random) weights do
    not matter; the RNG is forked so the caller's torch random state is left untouched.
    """
    import torch
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.pipelines.speaker_verification import (
        PyannoteAudioPretrainedSpeakerEmbedding,
    )

    from coreml_diarize.checkpoints import quiet_pyannote

    quiet_pyannote()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        embedding = PyannoteAudioPretrainedSpeakerEmbedding(WeSpeakerResNet34().eval())
        return int(embedding.min_num_samples), int(embedding.sample_rate)


class _RecordingEmbedding:
    """Stands in for pyannote's embedding model: records what get_embeddings feeds it."""

    def __init__(self, min_num_samples: int, sample_rate: int) -> None:
        self.min_num_samples = min_num_samples
        self.sample_rate = sample_rate
        self.waveforms: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []

    def __call__(self, waveforms: Any, masks: Any = None) -> np.ndarray:
        self.waveforms.append(waveforms.numpy())
        self.masks.append(masks.numpy())
        return np.zeros((waveforms.shape[0], 1), dtype=np.float32)


def preprocessor_reference(
    ctx: BuildContext, *, min_num_samples: tuple[int, int] | None = None
) -> Reference:
    """With the fallback: pyannote 4.0.7's `SpeakerDiarization.get_embeddings(exclude_overlap=
    True)` itself, run on one chunk with a recording stand-in for the embedding model (so the
    masks and waveforms are exactly what pyannote would embed). Without it: the plain product
    speaker_mask * (sum over speakers < 2) in numpy.

    `min_num_samples`: a (samples, sample_rate) result of `pyannote_min_num_samples()` already
    computed by the caller (the search takes seconds); computed here when needed and not given.
    """
    run_one = (
        _pyannote_get_embeddings(ctx, min_num_samples or pyannote_min_num_samples())
        if ctx.options.clean_fallback
        else _plain_clean_masks
    )

    def run(inputs: Arrays) -> Arrays:
        audio = np.asarray(inputs["audio"], dtype=np.float32)
        masks = np.asarray(inputs["speaker_masks"], dtype=np.float32)
        out = run_one(audio, masks)
        return {
            "waveform": np.ascontiguousarray(out["waveform"], dtype=np.float32),
            "mask": np.ascontiguousarray(out["mask"], dtype=np.float32),
        }

    return run


def _plain_clean_masks(audio: np.ndarray, masks: np.ndarray) -> Arrays:
    """No fallback: every speaker's mask loses its overlapped frames, however few remain."""
    speakers = masks.shape[-1]
    clean = (masks.sum(axis=2, keepdims=True) < 2).astype(np.float32)
    return {"waveform": np.tile(audio.reshape(1, -1), (speakers, 1)), "mask": (masks * clean)[0].T}


def _pyannote_get_embeddings(
    ctx: BuildContext, min_num_samples: tuple[int, int]
) -> Callable[[np.ndarray, np.ndarray], Arrays]:
    import torch
    from pyannote.audio import Audio
    from pyannote.audio.pipelines.speaker_diarization import SpeakerDiarization
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    g = ctx.geometry
    min_samples, embedding_rate = min_num_samples
    if embedding_rate != g.sample_rate:
        raise ValueError(
            f"embedding model runs at {embedding_rate} Hz, geometry at {g.sample_rate}"
        )
    duration = g.samples / g.sample_rate

    def run(audio: np.ndarray, masks: np.ndarray) -> Arrays:
        recorder = _RecordingEmbedding(min_samples, embedding_rate)
        # get_embeddings only reads these attributes of the pipeline (not training: no cache)
        pipeline = SimpleNamespace(
            training=False,
            _embedding=recorder,
            _audio=Audio(sample_rate=g.sample_rate, mono="downmix"),
            embedding_batch_size=g.speakers,
        )
        chunk = SlidingWindow(start=0.0, duration=duration, step=duration)
        file = {"waveform": torch.from_numpy(audio.reshape(1, -1)), "sample_rate": g.sample_rate}
        SpeakerDiarization.get_embeddings(
            pipeline, file, SlidingWindowFeature(masks, chunk), exclude_overlap=True
        )
        # one (1, 1, N) waveform and one (1, F) mask per (chunk, speaker), in speaker order
        return {
            "waveform": np.vstack(recorder.waveforms)[:, 0, :],
            "mask": np.vstack(recorder.masks),
        }

    return run


def _random_masks(frames: int, speakers: int, rng: np.random.Generator, p: float = 0.35):
    """Blocky binary speaker activity (runs of 1..40 frames), as a segmentation gives."""
    out = np.zeros((frames, speakers), dtype=np.float32)
    for s in range(speakers):
        f = 0
        while f < frames:
            run = int(rng.integers(1, 41))
            out[f : f + run, s] = float(rng.random() < p)
            f += run
    return out


def _boundary_masks(frames: int, speakers: int, threshold: int) -> np.ndarray:
    """Speaker s has threshold - 1 + s clean frames, the rest of its activity in overlap: the
    fallback switches between speaker 0/1 (<= threshold clean frames) and speaker 2 (above)."""
    out = np.zeros((frames, speakers), dtype=np.float32)
    start = 0
    for s in range(speakers):
        clean = max(threshold - 1 + s, 0)
        out[start : start + clean, s] = 1.0
        start += clean + 5
    out[start : start + 50, :2] = 1.0  # a two-speaker overlap (speakers 0 and 1)
    out[start + 60 : start + 90, :] = 1.0  # everyone at once
    return out


def preprocessor_inputs(ctx: BuildContext) -> dict[str, Arrays]:
    g = ctx.geometry
    frames, speakers = g.frames, g.speakers
    rng = np.random.default_rng(5678)
    audio = signals.speech_like(g.samples)[None, None, :]
    threshold = math.ceil(frames * round(WESPEAKER_WINDOW_S * g.sample_rate) / g.samples)

    def case(masks: np.ndarray, wave: np.ndarray = audio) -> Arrays:
        return {"audio": wave.astype(np.float32), "speaker_masks": masks.astype(np.float32)[None]}

    single = np.zeros((frames, speakers), dtype=np.float32)
    single[:, 0] = 1.0
    mostly_overlap = np.zeros((frames, speakers), dtype=np.float32)
    mostly_overlap[: frames // 2, :2] = 1.0  # speakers 0 and 1 only ever together
    mostly_overlap[frames // 2 :, 2] = 1.0
    return {
        "random": case(_random_masks(frames, speakers, rng)),
        "random_dense": case(
            _random_masks(frames, speakers, rng, p=0.7), signals.noise(g.samples)[None, None]
        ),
        "silent": case(np.zeros((frames, speakers)), signals.silence(g.samples)[None, None]),
        "all_overlap": case(np.ones((frames, speakers))),
        "single_speaker": case(single),
        "overlap_only_pair": case(mostly_overlap),
        "fallback_boundary": case(_boundary_masks(frames, speakers, threshold)),
    }


# --- unified_post_embedding ------------------------------------------------------------------


def cosine_distances(embedding: np.ndarray, speaker_db: np.ndarray) -> np.ndarray:
    """scipy's cosine distance (what pyannote's clustering uses), with the contract's rule for
    zero vectors (scipy gives NaN there): a zero embedding or zero row is at distance 1.0."""
    from scipy.spatial.distance import cdist

    e = np.asarray(embedding, dtype=np.float64)
    d = np.asarray(speaker_db, dtype=np.float64)
    out = np.ones((e.shape[0], d.shape[0]), dtype=np.float64)
    e_ok = np.linalg.norm(e, axis=1) > 0
    d_ok = np.linalg.norm(d, axis=1) > 0
    if e_ok.any() and d_ok.any():
        out[np.ix_(e_ok, d_ok)] = cdist(e[e_ok], d[d_ok], metric="cosine")
    return out


def post_embedding_reference(ctx: BuildContext) -> Reference:
    """numpy/scipy, float64: activity in frames, durations in seconds (activity * step)."""
    options = ctx.options
    step = ctx.geometry.frame_step_s

    def run(inputs: Arrays) -> Arrays:
        masks = np.asarray(inputs["speaker_masks"], dtype=np.float64)  # (1, F, S)
        activity = masks[0].sum(axis=0)  # (S,)
        valid = activity >= options.min_activity_frames
        long_enough = activity * step >= options.min_speaker_duration_s
        return {
            "distances": cosine_distances(inputs["embedding"], inputs["speaker_db"]).astype(
                np.float32
            ),
            "activity": activity.astype(np.float32),
            "valid": valid.astype(np.float32),
            "filtered_masks": (masks * long_enough[None, None, :]).astype(np.float32),
        }

    return run


def post_embedding_inputs(ctx: BuildContext) -> dict[str, Arrays]:
    g = ctx.geometry
    options = ctx.options
    frames, speakers, dim = g.frames, g.speakers, g.embedding_dim
    rng = np.random.default_rng(91011)

    def embeddings(rows: int) -> np.ndarray:
        # raw WeSpeaker-like vectors: non-zero mean, norms in the tens
        return (rng.standard_normal((rows, dim)) * 2.0 + rng.standard_normal(dim)).astype(
            np.float32
        )

    def case(emb: np.ndarray, db: np.ndarray, masks: np.ndarray) -> Arrays:
        return {
            "embedding": emb.astype(np.float32),
            "speaker_db": db.astype(np.float32),
            "speaker_masks": masks.astype(np.float32)[None],
        }

    random_masks = _random_masks(frames, speakers, rng)
    emb = embeddings(speakers)

    zero_emb = emb.copy()
    zero_emb[1] = 0.0
    db_with_zero = embeddings(8)
    db_with_zero[3] = 0.0

    # the same speaker in the database (distance ~0) and its opposite (distance ~2)
    self_db = np.concatenate([emb, -emb, embeddings(2)])

    # activity on both sides of each threshold: just too short / just long enough to keep,
    # just valid / just not (counts derived from the options and the frame step)
    keep_frames = math.ceil(options.min_speaker_duration_s / g.frame_step_s)
    valid_frames = math.ceil(options.min_activity_frames)
    counts = [keep_frames - 1, keep_frames, valid_frames, valid_frames - 1]
    boundary = np.zeros((frames, speakers), dtype=np.float32)
    boundary_b = np.zeros((frames, speakers), dtype=np.float32)
    for s in range(speakers):
        boundary[s * 3 : s * 3 + counts[s], s] = 1.0
        boundary_b[: counts[(s + speakers) % len(counts)], s] = 1.0

    single = np.zeros((frames, speakers), dtype=np.float32)
    single[100:400, 0] = 1.0
    return {
        "random_d256": case(emb, embeddings(256), random_masks),
        "d1": case(emb, embeddings(1), random_masks),
        "d1024": case(emb, embeddings(1024), random_masks),
        "empty_db": case(emb, np.zeros((1, dim)), random_masks),
        "zero_embedding": case(zero_emb, db_with_zero, random_masks),
        "all_zero": case(
            np.zeros((speakers, dim)), np.zeros((4, dim)), np.zeros((frames, speakers))
        ),
        "self_match": case(emb, self_db, random_masks),
        "silent": case(emb, embeddings(16), np.zeros((frames, speakers))),
        "all_overlap": case(emb, embeddings(16), np.ones((frames, speakers))),
        "single_speaker": case(emb, embeddings(16), single),
        "threshold_boundary": case(emb, embeddings(4), boundary),
        "threshold_boundary_b": case(emb, embeddings(4), boundary_b),
    }
