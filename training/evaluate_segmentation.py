"""Figures for the synthetic segmentation fixture: local DER and decisiveness.

"Local" DER is pyannote's training-time measure: per 10 s chunk, the model's hard powerset
decision (→ multilabel) is matched to the reference speakers with the best permutation, and
missed speech + false alarm + confusion are summed over all chunks and divided by the reference
speech (frames × speakers). It says nothing about cross-chunk clustering.

    OMP_NUM_THREADS=1 .venv/bin/python -m training.evaluate_segmentation
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.corpus import (
    SAMPLE_RATE,
    Conversation,
    CorpusConfig,
    build_pool,
    crop,
    frame_targets,
    load_sample,
    median_f0,
    mix_conversation,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / "tests" / "fixtures" / "segmentation-synthetic"
DECISIVE_NATS = 1.0  # top powerset class must lead the runner-up by this many nats


@dataclass(frozen=True)
class EvalConfig:
    heldout_seed: int = 2014  # voices, words and seed all disjoint from training
    heldout_conversations: int = 64
    sample_step: float = 1.0  # sliding 10 s chunks over pyannote's 30 s sample
    batch_size: int = 8


def chunk_targets(model: Any, convs: list[Conversation]) -> tuple[np.ndarray, np.ndarray]:
    """Waveforms (B, 1, N) and frame targets (B, F, S) at the model's own frame geometry."""
    spec = model.specifications
    n = int(round(spec.duration * SAMPLE_RATE))
    frames = model.num_frames(n)
    step, half = model.receptive_field.step, 0.5 * model.receptive_field.duration
    x = np.stack([c.audio[:n] for c in convs])[:, None, :]
    y = np.stack([frame_targets(c.segments, frames, step, half, len(spec.classes)) for c in convs])
    return x.astype(np.float32), y


def predict(model: Any, waveforms: np.ndarray, batch_size: int = 8) -> np.ndarray:
    """Log-probabilities (B, F, C) of the powerset classes."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(waveforms), batch_size):
            out.append(model(torch.from_numpy(waveforms[i : i + batch_size])).numpy())
    return np.concatenate(out)


def score(model: Any, logprobs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Local DER (with components), decisiveness and speech/non-speech agreement."""
    import torch
    from pyannote.audio.torchmetrics.functional.audio.diarization_error_rate import (
        diarization_error_rate,
    )
    from pyannote.audio.utils.powerset import Powerset

    spec = model.specifications
    powerset = Powerset(len(spec.classes), spec.powerset_max_classes)
    lp = torch.from_numpy(logprobs)
    hard = powerset.to_multilabel(lp)  # argmax class → its speakers, (B, F, S)
    ref = torch.from_numpy(targets).float()
    der, (fa, miss, conf, total) = diarization_error_rate(
        hard.transpose(1, 2), ref.transpose(1, 2), threshold=0.5, return_components=True
    )
    top2 = np.sort(logprobs, axis=-1)[..., -2:]
    margin = top2[..., 1] - top2[..., 0]
    hyp_speech = hard.sum(-1).numpy() > 0
    ref_speech = targets.sum(-1) > 0
    return {
        "chunks": int(len(logprobs)),
        "frames": int(logprobs.shape[0] * logprobs.shape[1]),
        "local_der": float(der),
        "false_alarm": float(fa / total),
        "missed": float(miss / total),
        "confusion": float(conf / total),
        "decisive_share": float(np.mean(margin >= DECISIVE_NATS)),
        "median_margin_nats": float(np.median(margin)),
        "speech_agreement": float(np.mean(hyp_speech == ref_speech)),
        "reference_speech_share": float(np.mean(ref_speech)),
    }


def heldout_chunks(cfg: EvalConfig) -> list[Conversation]:
    corpus = CorpusConfig.heldout()
    _, pool = build_pool(corpus, cfg.heldout_seed)
    f0 = [median_f0(utts) for utts in pool]
    rng = np.random.default_rng(cfg.heldout_seed + 1)
    return [mix_conversation(pool, rng, corpus, f0) for _ in range(cfg.heldout_conversations)]


def sample_chunks(duration: float, step: float) -> list[Conversation]:
    """Sliding `duration` windows over pyannote's sample, every `step` seconds."""
    sample = load_sample()
    total = len(sample.audio) / SAMPLE_RATE
    starts = np.arange(0.0, total - duration + 1e-6, step)
    return [crop(sample, float(s), duration) for s in starts]


def evaluate(model: Any, cfg: EvalConfig) -> dict[str, dict[str, float]]:
    out = {}
    duration = float(model.specifications.duration)
    for name, convs in (
        ("heldout_synthetic", heldout_chunks(cfg)),
        ("pyannote_sample", sample_chunks(duration, cfg.sample_step)),
    ):
        x, y = chunk_targets(model, convs)
        out[name] = score(model, predict(model, x, cfg.batch_size), y)
    return out


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {
        k: (round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v)
        for k, v in d.items()
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from coreml_diarize.sources import load_weights

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_DIR)
    p.add_argument("--json", type=Path, default=None, help="default: <checkpoint-dir>/fixture.json")
    p.add_argument("--training-json", type=Path, default=None, help="training figures to merge")
    p.add_argument("--baseline", action="store_true", help="also score random:0 weights")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = EvalConfig()
    weights = load_weights("segmentation", str(args.checkpoint_dir))  # the project's real loader
    out_path = args.json or args.checkpoint_dir / "fixture.json"
    report = json.loads(out_path.read_text()) if out_path.exists() else {}
    if args.training_json is not None:
        report["training"] = json.loads(args.training_json.read_text())
    report["evaluation"] = {
        "measure": "local (per 10 s chunk, permutation-invariant) frame DER; decisive = top "
        f"powerset log-prob leads runner-up by >= {DECISIVE_NATS} nat",
        "config": {k: v for k, v in cfg.__dict__.items()},
        "trained": _rounded(evaluate(weights.model, cfg)),
    }
    if args.baseline:
        report["evaluation"]["random_init_baseline"] = _rounded(
            evaluate(load_weights("segmentation", "random:0").model, cfg)
        )
    report["checkpoint_sha256"] = weights.provenance.sha256
    out_path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["evaluation"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
