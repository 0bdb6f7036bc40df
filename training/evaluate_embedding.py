"""Figures for the synthetic embedding fixture: speaker ID on held-out voices, and pyannote's sample.

- held-out synthetic voices (variants, languages, words and seed none of which training saw):
  each speaker is enrolled with the mean of its first `enrol` utterance embeddings, every other
  utterance is given to the enrolment with the highest cosine -> accuracy; plus the cosine
  distributions of same- vs different-speaker utterance pairs and their equal error rate;
- pyannote's bundled sample.wav against sample.rttm: (a) single-speaker stretches cut into
  <= 3 s pieces, embedded alone; (b) as the diarization pipeline does it, 10 s chunks embedded
  with each RTTM speaker's activity as statistics-pooling weights. Same- vs different-speaker
  cosines for both. (The sample is not part of this fixture's training data.)

    OMP_NUM_THREADS=1 .venv/bin/python -m training.evaluate_embedding
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.corpus import HELDOUT_LANGUAGES, HELDOUT_WORDS, SAMPLE_RATE, load_sample
from training.train_embedding import SpeakerSet, noise, synthesize_speakers, voices_for

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "tests" / "fixtures" / "embedding-synthetic"

# one variant per held-out family (train_embedding.HELDOUT_VARIANTS), three pitch levels each
EVAL_VARIANTS = ("m6", "m7", "f4", "f5", "klatt2", "Andy", "steph", "croak", "Annie", "Storm")
EVAL_PITCHES = (20, 50, 80)


@dataclass(frozen=True)
class EvalConfig:
    heldout_seed: int = 2014
    utterances: int = 8
    enrol: int = 3
    noisy_snr_db: float = 20.0
    sample_piece_seconds: float = 3.0
    sample_min_seconds: float = 1.0
    sample_chunk_seconds: float = 10.0
    sample_chunk_step: float = 5.0


def heldout_speakers(utterances: int = 8) -> SpeakerSet:
    return SpeakerSet(
        languages=HELDOUT_LANGUAGES,
        variants=EVAL_VARIANTS,
        pitches=EVAL_PITCHES,
        words=HELDOUT_WORDS,
        utterances=utterances,
        words_per_utterance=(4, 9),
    )


def heldout_utterances(
    seed: int, utterances: int = 8, speakers: SpeakerSet | None = None
) -> list[list[np.ndarray]]:
    speakers = speakers or heldout_speakers(utterances)
    return synthesize_speakers(voices_for(speakers, seed), speakers, seed + 1)


def with_noise(
    utterances: list[list[np.ndarray]], snr_db: float, seed: int
) -> list[list[np.ndarray]]:
    """The same utterances with seeded white/pink noise at `snr_db` (espeak writes exact digital
    silence, which real recordings never contain)."""
    rng = np.random.default_rng(seed)
    out = []
    for utts in utterances:
        noisy = []
        for u in utts:
            nz = noise(len(u), rng)
            ref = np.sqrt(np.mean(u[np.abs(u) > 1e-6].astype(np.float64) ** 2))
            scale = ref / (np.sqrt(np.mean(nz**2)) + 1e-12) * 10 ** (-snr_db / 20)
            noisy.append((u + nz * scale).astype(np.float32))
        out.append(noisy)
    return out


def embed(model: Any, audio: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Embeddings (n, D) of one waveform (samples,), one per row of `weights` (n, frames)."""
    import torch

    x = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, None]
    with torch.inference_mode():
        if weights is None:
            return model(x).numpy()
        w = torch.from_numpy(weights.astype(np.float32))
        return model(x.expand(len(w), 1, -1), weights=w).numpy()


def _unit(x: np.ndarray) -> np.ndarray:
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + 1e-12)


def eer(same: np.ndarray, diff: np.ndarray) -> float:
    """Equal error rate of cosine scores (same-speaker should score higher)."""
    thresholds = np.unique(np.concatenate([same, diff]))
    far = np.array([np.mean(diff >= t) for t in thresholds])
    frr = np.array([np.mean(same < t) for t in thresholds])
    i = int(np.argmin(np.abs(far - frr)))
    return float((far[i] + frr[i]) / 2)


def pair_stats(embeddings: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Cosine statistics of same- vs different-speaker pairs."""
    e = _unit(embeddings)
    cos = e @ e.T
    iu = np.triu_indices(len(e), k=1)
    same_mask = (labels[:, None] == labels[None, :])[iu]
    same, diff = cos[iu][same_mask], cos[iu][~same_mask]
    out = {
        "same_pairs": int(len(same)),
        "different_pairs": int(len(diff)),
        "same_cosine_mean": float(same.mean()) if len(same) else float("nan"),
        "same_cosine_min": float(same.min()) if len(same) else float("nan"),
        "different_cosine_mean": float(diff.mean()) if len(diff) else float("nan"),
        "different_cosine_max": float(diff.max()) if len(diff) else float("nan"),
    }
    if len(same) and len(diff):
        out["eer"] = eer(same, diff)
    return out


def speaker_id(embeddings: list[np.ndarray], enrol: int) -> dict[str, float]:
    """Enrol each speaker with its first `enrol` embeddings (mean of unit vectors); classify the
    rest by the highest cosine. `embeddings[s]` is (utterances, D) for speaker s."""
    centroids = _unit(np.stack([_unit(e[:enrol]).mean(0) for e in embeddings]))
    tests = [(s, t) for s, e in enumerate(embeddings) for t in _unit(e[enrol:])]
    scores = np.stack([t for _, t in tests]) @ centroids.T
    truth = np.array([s for s, _ in tests])
    return {
        "speakers": len(embeddings),
        "trials": len(tests),
        "accuracy": float(np.mean(scores.argmax(1) == truth)),
    }


def evaluate_heldout(model: Any, utterances: list[list[np.ndarray]], enrol: int) -> dict[str, Any]:
    embeddings = [np.concatenate([embed(model, u) for u in utts]) for utts in utterances]
    labels = np.concatenate([[s] * len(e) for s, e in enumerate(embeddings)])
    return {**speaker_id(embeddings, enrol), **pair_stats(np.concatenate(embeddings), labels)}


def sample_activity(frame: float = 0.01) -> tuple[np.ndarray, np.ndarray, int]:
    """(audio, activity (frames, speakers) on a `frame` s grid, number of speakers) of the sample."""
    sample = load_sample()
    n_frames = int(np.ceil(len(sample.audio) / SAMPLE_RATE / frame))
    n_spk = 1 + max(s for _, _, s in sample.segments)
    act = np.zeros((n_frames, n_spk), dtype=bool)
    for s, e, spk in sample.segments:
        act[int(round(s / frame)) : int(round(e / frame)), spk] = True
    return sample.audio, act, n_spk


def sample_pieces(cfg: EvalConfig, frame: float = 0.01) -> list[tuple[int, float, float]]:
    """(speaker, start, end) single-speaker stretches of the sample, cut into <= piece_seconds."""
    _, act, n_spk = sample_activity(frame)
    pieces = []
    for spk in range(n_spk):
        alone = act[:, spk] & (act.sum(1) == 1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], alone.astype(int), [0]])))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start, end = a * frame, b * frame
            k = int(np.ceil((end - start) / cfg.sample_piece_seconds))
            bounds = np.linspace(start, end, k + 1)
            pieces += [
                (spk, float(s), float(e))
                for s, e in zip(bounds, bounds[1:], strict=False)
                if e - s >= cfg.sample_min_seconds
            ]
    return sorted(pieces, key=lambda p: p[1])


def evaluate_sample(model: Any, cfg: EvalConfig) -> dict[str, Any]:
    audio, act, n_spk = sample_activity()
    pieces = sample_pieces(cfg)
    emb = np.concatenate(
        [embed(model, audio[int(s * SAMPLE_RATE) : int(e * SAMPLE_RATE)]) for _, s, e in pieces]
    )
    out: dict[str, Any] = {"pieces": pair_stats(emb, np.array([p[0] for p in pieces]))}
    out["pieces"]["count"] = len(pieces)
    # pipeline-style: 10 s chunks, each active speaker's mask as pooling weights
    n = int(cfg.sample_chunk_seconds * SAMPLE_RATE)
    frames = int(cfg.sample_chunk_seconds / 0.01)
    chunk_emb, chunk_lab, cross = [], [], []
    start = 0.0
    while start * SAMPLE_RATE + n <= len(audio) + 1:
        a = int(round(start / 0.01))
        mask = act[a : a + frames].T.astype(np.float32)  # (speakers, frames)
        mask = np.pad(mask, ((0, 0), (0, frames - mask.shape[1])))
        spks = [k for k in range(n_spk) if mask[k].sum() * 0.01 >= cfg.sample_min_seconds]
        if spks:
            x = audio[int(start * SAMPLE_RATE) : int(start * SAMPLE_RATE) + n]
            e = embed(model, np.pad(x, (0, n - len(x))), mask[spks])
            chunk_emb.append(e)
            chunk_lab += spks
            if len(spks) == 2:  # the two speakers of one chunk: what clustering must separate
                u = _unit(e)
                cross.append(float(u[0] @ u[1]))
        start += cfg.sample_chunk_step
    out["masked_chunks"] = pair_stats(np.concatenate(chunk_emb), np.array(chunk_lab))
    out["masked_chunks"]["count"] = len(chunk_lab)
    out["masked_chunks"]["within_chunk_different_cosines"] = [round(c, 4) for c in cross]
    return out


def evaluate(model: Any, cfg: EvalConfig, utterances: list[list[np.ndarray]]) -> dict[str, Any]:
    noisy = with_noise(utterances, cfg.noisy_snr_db, cfg.heldout_seed + 2)
    return {
        "heldout_synthetic": evaluate_heldout(model, utterances, cfg.enrol),
        f"heldout_synthetic_snr{cfg.noisy_snr_db:g}db": evaluate_heldout(model, noisy, cfg.enrol),
        "pyannote_sample": evaluate_sample(model, cfg),
    }


def _rounded(d: Any) -> Any:
    if isinstance(d, float):
        return round(d, 4)
    if isinstance(d, dict):
        return {k: _rounded(v) for k, v in d.items()}
    return d


def main(argv: list[str] | None = None) -> int:
    import torch

    from coreml_diarize.sources import load_weights

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--json", type=Path, default=None, help="default: <checkpoint-dir>/fixture.json")
    p.add_argument("--baseline", action="store_true", help="also score random:0 weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = EvalConfig()
    weights = load_weights("embedding", str(args.checkpoint_dir))  # the project's real loader
    utterances = heldout_utterances(cfg.heldout_seed, cfg.utterances)
    out_path = args.json or args.checkpoint_dir / "fixture.json"
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    report["evaluation"] = {
        "measure": f"held-out: speaker ID by cosine to the mean of {cfg.enrol} enrolment "
        "utterances, EER of utterance pairs; sample: same- vs different-speaker cosines",
        "heldout_voices": [str(v) for v in voices_for(heldout_speakers(), cfg.heldout_seed)],
        "config": dict(cfg.__dict__),
        "trained": _rounded(evaluate(weights.model, cfg, utterances)),
    }
    if args.baseline:
        report["evaluation"]["random_init_baseline"] = _rounded(
            evaluate(load_weights("embedding", "random:0").model, cfg, utterances)
        )
    report["checkpoint_sha256"] = weights.provenance.sha256
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {k: v for k, v in report["evaluation"].items() if k != "heldout_voices"}, indent=2
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
