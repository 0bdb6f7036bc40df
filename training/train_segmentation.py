"""Train pyannote's segmentation-3.0 architecture on synthetic espeak-ng conversations.

The result is a *test fixture*, not a usable diarization model: weights that behave like trained
ones (decisive powerset outputs, real speech/speaker structure) so the conversion pipeline can be
checked on something better than random init. Deterministic: one seed, one CPU thread.

    OMP_NUM_THREADS=1 .venv/bin/python -m training.train_segmentation   # or: make fixture
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.corpus import (
    SAMPLE_RATE,
    Conversation,
    CorpusConfig,
    Utterance,
    build_pool,
    crop,
    frame_targets,
    load_sample,
    median_f0,
    mix_conversation,
)
from training.fixtures import curve, save_fixture

if TYPE_CHECKING:  # torch is imported lazily: the CLI's --help stays instant
    import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "segmentation-synthetic"
SCRIPT = "training/train_segmentation.py"


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 14
    steps: int = 720
    batch_size: int = 8
    lr: float = 1e-3  # pyannote's default Adam learning rate
    final_lr: float = 1e-4
    decay_from: float = 0.5  # cosine decay over the last half of the run
    clip_grad: float = 1.0  # LSTMs from scratch: keep early steps from blowing up
    # segmentation-3.0 trains with LSTM dropout 0.5 (kept in the checkpoint's hparams; it does not
    # exist at inference). Every chunk here is freshly mixed, and in a run this short dropout
    # mainly delays the point where the model learns to tell voices apart, so it is lowered.
    lstm_dropout: float = 0.0
    sample_prob: float = 0.125  # share of chunks cropped from pyannote's sample
    # Permutation-invariant training starts in a symmetric plateau (every speaker on one output)
    # that a short run did not leave in 300+ steps. For the first steps the targets are used
    # as given, speakers ordered by F0 (lowest = speaker#1), which breaks the symmetry; from then
    # on the loss is pyannote's permutation-invariant one.
    pit_warmup_steps: int = 150
    train_speakers: int = 60
    utterances_per_speaker: int = 10
    log_every: int = 10


def corpus_description(cfg: TrainConfig, corpus: CorpusConfig) -> str:
    return (
        f"synthetic speech: {cfg.train_speakers} espeak-ng voices "
        f"({'/'.join(corpus.languages)} x {'/'.join(corpus.variants)}, random pitch/speed) "
        f"reading random words, mixed into 10 s conversations of 0-3 speakers with pauses, "
        f"overlaps (max 2), gain changes and noise, voices of a chunk >= {corpus.min_f0_ratio}x "
        f"apart in F0; plus pyannote.audio's sample.wav"
    )


def lr_at(step: int, cfg: TrainConfig) -> float:
    start = int(cfg.decay_from * cfg.steps)
    if step < start:
        return cfg.lr
    progress = (step - start) / max(1, cfg.steps - start)
    return cfg.final_lr + 0.5 * (cfg.lr - cfg.final_lr) * (1 + math.cos(math.pi * progress))


def make_batch(
    model: Any,  # a pyannote PyanNet
    f0: Sequence[float],
    pool: Sequence[Sequence[Utterance]],
    sample: Conversation,
    rng: np.random.Generator,
    cfg: TrainConfig,
    corpus: CorpusConfig,
    use_sample: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(waveforms (B,1,N), targets (B,F,S)) for one step; synthetic speakers in F0 order."""
    import torch

    spec = model.specifications
    n = int(round(spec.duration * SAMPLE_RATE))
    frames = model.num_frames(n)
    step, half = model.receptive_field.step, 0.5 * model.receptive_field.duration
    xs, ys = [], []
    for _ in range(cfg.batch_size):
        if use_sample and rng.random() < cfg.sample_prob:
            conv = crop(
                sample,
                float(rng.uniform(0, len(sample.audio) / SAMPLE_RATE - spec.duration)),
                spec.duration,
            )
            conv.audio = conv.audio * np.float32(10 ** (rng.uniform(-10, 6) / 20))
        else:
            conv = mix_conversation(pool, rng, corpus, f0)
        xs.append(conv.audio[:n])
        ys.append(frame_targets(conv.segments, frames, step, half, len(spec.classes)))
    x = torch.from_numpy(np.stack(xs)).unsqueeze(1)
    y = torch.from_numpy(np.stack(ys))
    return x, y


def powerset_loss(
    model: Any,
    prediction: torch.Tensor,
    target: torch.Tensor,
    permutation_invariant: bool = True,
) -> torch.Tensor:
    """pyannote's SpeakerDiarization powerset loss: permutation-invariant NLL on log-probs."""
    import torch
    from pyannote.audio.utils.permutation import permutate
    from torch.nn.functional import nll_loss

    permutated = target.float()
    if permutation_invariant:
        multilabel = model.powerset.to_multilabel(prediction)
        permutated, _ = permutate(multilabel, target.float())
    target_powerset = model.powerset.to_powerset(permutated.float())
    return nll_loss(
        prediction.reshape(-1, prediction.shape[-1]),
        torch.argmax(target_powerset, dim=-1).reshape(-1),
    )


def attach_powerset(model: Any) -> None:
    """What pyannote's SpeakerDiarization.setup() does for a powerset model."""
    from pyannote.audio.utils.powerset import Powerset

    spec = model.specifications
    model.powerset = Powerset(len(spec.classes), spec.powerset_max_classes)


def train(cfg: TrainConfig, out_dir: Path, work_dir: Path | None = None) -> dict[str, Any]:
    import torch

    from coreml_diarize.sources import CHECKPOINT_NAME, build_architecture

    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    corpus = replace(
        CorpusConfig(),
        speakers=cfg.train_speakers,
        utterances_per_speaker=cfg.utterances_per_speaker,
    )
    t0 = time.monotonic()
    voices, pool = build_pool(corpus, cfg.seed)
    f0 = [median_f0(utts) for utts in pool]
    sample = load_sample()
    print(
        f"corpus: {len(voices)} voices, {sum(map(len, pool))} utterances ({time.monotonic() - t0:.0f} s)",
        flush=True,
    )

    model = build_architecture("segmentation").train()
    model.lstm.dropout = cfg.lstm_dropout  # a runtime attribute of nn.LSTM; hparams unchanged
    attach_powerset(model)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng(cfg.seed + 1)
    losses: list[float] = []
    t_train = time.monotonic()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        pit = step >= cfg.pit_warmup_steps
        # pyannote's sample has no F0 order, so it joins once training is permutation-invariant
        x, y = make_batch(model, f0, pool, sample, rng, cfg, corpus, use_sample=pit)
        loss = powerset_loss(model, model(x), y, permutation_invariant=pit)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % cfg.log_every == 0:
            el = time.monotonic() - t_train
            print(
                f"step {step + 1}/{cfg.steps} loss {np.mean(losses[-cfg.log_every :]):.4f} "
                f"lr {lr_at(step, cfg):.2e} {el:.0f} s",
                flush=True,
            )
        if work_dir is not None and (step + 1) % 100 == 0:
            save_fixture(
                model, work_dir / f"step{step + 1}.bin", {"partial": True, "steps": step + 1}
            )
    train_seconds = time.monotonic() - t_train
    model.eval()
    final_loss = float(np.mean(losses[-cfg.log_every :]))
    record = {
        "purpose": "test fixture: segmentation-3.0 architecture trained on synthetic speech, not a real diarization model",
        "trained_on": corpus_description(cfg, corpus),
        "script": SCRIPT,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "chunk_seconds": float(model.specifications.duration),
        "final_loss": round(final_loss, 4),
        "dtype": "float16",
        "lstm_dropout_in_training": cfg.lstm_dropout,
        "pit_warmup_steps": cfg.pit_warmup_steps,
    }
    path = save_fixture(model, out_dir / CHECKPOINT_NAME, record)
    return {
        "record": record,
        "config": asdict(cfg),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "final_loss": final_loss,
        "loss_curve": curve(losses, cfg.log_every, digits=4),
        "checkpoint": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
        "checkpoint_bytes": path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--work-dir", type=Path, default=None, help="keep a checkpoint every 100 steps")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args(argv)
    cfg = TrainConfig(seed=args.seed, steps=args.steps)
    summary = train(cfg, args.out, args.work_dir)
    print(json.dumps({k: v for k, v in summary.items() if k != "loss_curve"}, indent=2), flush=True)
    # the sidecar starts over with this run's training figures; evaluation adds its own
    (args.out / "fixture.json").write_text(json.dumps({"training": summary}, indent=2) + "\n")
    if not args.skip_eval:
        from training.evaluate_segmentation import main as evaluate

        return evaluate(["--checkpoint-dir", str(args.out), "--baseline"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
