"""Train pyannote's WeSpeaker ResNet34 embedding on synthetic espeak-ng voices (a test fixture).

Why: the 8-bit embedding chain is judged by DER against the fp32 chain, and with random embedding
weights clustering sits at its threshold, so every tiny numerical change flips it. A
*speaker-discriminative* embedding makes that comparison meaningful. The result is a test
fixture, not a usable speaker model: it tells espeak-ng voices apart, nothing more.

What: `WeSpeakerResNet34()` exactly as `coreml_diarize.sources` builds it (256-d), trained from
pyannote's default init with an angular prototypical loss (in-batch metric learning, no class
head) over 560 synthetic "speakers" = espeak-ng voice variant x pitch level (language and speed
drawn per speaker), plus the 2 speakers of pyannote's sample.wav in a quarter of the batches.
Each batch: 4 variants x 3 pitch levels x 2 one-second crops, so every batch
holds voices that differ only in pitch and voices that differ only in timbre. Crops get random
level and always some white/pink noise, and go through the model's own fbank path
(`model(waveforms)`). Held-out voices (other variants, languages, words) are scored by
`training/evaluate_embedding.py`. A CosFace classifier head (`--loss cosface`) is kept for
comparison: it did not learn within this budget (trial log in
tests/fixtures/embedding-synthetic/README.md).

How long: ~25 min on one CPU thread of a shared 2-core machine (450 steps) plus ~1.5 min of
speech synthesis; deterministic (one seed, one thread).

    OMP_NUM_THREADS=1 .venv/bin/python -m training.train_embedding
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.corpus import (
    SAMPLE_RATE,
    TRAIN_LANGUAGES,
    TRAIN_WORDS,
    Voice,
    load_sample,
    make_utterance,
    synthesize,
)
from training.fixtures import curve, save_fixture

if TYPE_CHECKING:  # torch is imported lazily: the CLI's --help stays instant
    import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "embedding-synthetic"
SCRIPT = "training/train_embedding.py"

# espeak-ng voice variants (`espeak-ng --voices=variant`, file names), split into training and
# held-out *families*. Exact duplicates (klatt6 = caleb = klatt, fast = Mr) and the unvoiced
# whisper variants (pitch does not change them) are left out. corpus.py's own split holds out
# m6, m7, f4, f5 and klatt2; a few named families are held out with them.
TRAIN_VARIANTS = (
    *("m1", "m2", "m3", "m4", "m5", "m8", "f1", "f2", "f3"),
    *("klatt", "klatt3", "klatt4", "klatt5"),
    *("adam", "Alex", "Alicia", "Andrea", "antonio", "aunty", "belinda", "benjamin", "boris"),
    *("david", "Demonic", "Denis", "Diogo", "ed", "edward", "edward2", "Gene", "Gene2"),
    *("gustave", "announcer", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky"),
    *("john", "kaukovalta", "linda", "marcelo", "Marco", "Mario", "max", "Michael", "michel"),
    *("miguel", "Mike", "Mr", "Nguyen", "pablo", "paul", "pedro", "quincy", "RicishayMax"),
    *("RicishayMax2", "RicishayMax3", "rob", "robert", "robosoft", "robosoft2", "robosoft3"),
    *("robosoft4", "robosoft5", "robosoft6", "robosoft7", "robosoft8", "Tweaky", "UniRobot"),
    *("zac", "anika", "anikaRobot", "norbert", "sandro", "shelby", "travis", "victor"),
)
HELDOUT_VARIANTS = (
    *("m6", "m7", "f4", "f5", "klatt2"),  # corpus.HELDOUT_VARIANTS
    *("Andy", "AnxiousAndy", "Lee", "steph", "steph2", "steph3", "croak", "grandpa"),
    *("Annie", "Storm"),
)
# espeak -p levels: adjacent levels are ~15-20 % apart in F0 (a few semitones)
TRAIN_PITCHES = (5, 20, 35, 50, 65, 80, 95)
PITCH_JITTER = 3  # +- per speaker, so a level is not one exact setting
SPEED = (125, 215)  # espeak -s, words per minute, drawn per speaker


@dataclass(frozen=True)
class SpeakerSet:
    """Which voices are "speakers" and how much they say."""

    languages: tuple[str, ...] = TRAIN_LANGUAGES
    variants: tuple[str, ...] = TRAIN_VARIANTS
    pitches: tuple[int, ...] = TRAIN_PITCHES
    words: tuple[str, ...] = TRAIN_WORDS
    utterances: int = 6
    words_per_utterance: tuple[int, int] = (4, 10)


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 14
    steps: int = 450
    loss: str = "prototypical"  # or "cosface" (a classifier head over all training speakers)
    # prototypical batches: `batch_variants` variants x `batch_pitches` pitch levels (the same
    # levels for every variant in the batch), `crops_per_speaker` crops each: every batch holds
    # voices that differ only in pitch and voices that differ only in timbre
    batch_variants: int = 4
    batch_pitches: int = 3
    crops_per_speaker: int = 2
    # share of batches that also hold pyannote's sample.wav speakers (2 more "speakers", their
    # single-speaker stretches): the only real voices the fixture sees
    sample_prob: float = 0.25
    batch_size: int = 16  # cosface only: distinct speakers per batch, one crop each
    crop_seconds: float = 1.0
    lr: float = 1e-3
    warmup_steps: int = 20
    final_lr_ratio: float = 0.05  # cosine decay to lr * this
    weight_decay: float = 1e-5
    scale: float = 30.0  # CosFace s
    margin: float = 0.2  # CosFace m, ramped in linearly over margin_warmup
    margin_warmup: float = 0.3  # share of the run
    utterances: int = 6
    noise_prob: float = 1.0  # always: espeak writes digital silence, whose log-fbank floor (-15.9)
    # dominated the features and kept a from-scratch run from learning anything (trials)
    snr_db: tuple[float, float] = (5.0, 50.0)
    gain_db: tuple[float, float] = (-30.0, -1.0)  # crop peak level
    log_every: int = 10


def voices_for(speakers: SpeakerSet, seed: int) -> list[Voice]:
    """One voice per (variant, pitch level); language, speed and a pitch jitter drawn per speaker.

    Speakers of one variant are a pitch level apart, so no two classes are the same voice.
    """
    rng = np.random.default_rng(seed)
    out = []
    for variant in speakers.variants:
        for pitch in speakers.pitches:
            jitter = int(rng.integers(-PITCH_JITTER, PITCH_JITTER + 1))
            out.append(
                Voice(
                    language=str(rng.choice(speakers.languages)),
                    variant=variant,
                    pitch=int(np.clip(pitch + jitter, 0, 99)),
                    speed=int(rng.integers(SPEED[0], SPEED[1] + 1)),
                )
            )
    return out


def draw_text(words: tuple[str, ...], n: tuple[int, int], rng: np.random.Generator) -> str:
    k = int(rng.integers(n[0], n[1] + 1))
    return " ".join(str(w) for w in rng.choice(words, size=k)) + "."


def synthesize_speakers(
    voices: list[Voice], speakers: SpeakerSet, seed: int
) -> list[list[np.ndarray]]:
    """`speakers.utterances` trimmed utterances (float32, 16 kHz) per voice, deterministic."""
    rng = np.random.default_rng(seed)
    out: list[list[np.ndarray]] = []
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        for voice in voices:
            utts: list[np.ndarray] = []
            while len(utts) < speakers.utterances:
                text = draw_text(speakers.words, speakers.words_per_utterance, rng)
                utt = make_utterance(synthesize(voice, text, Path(tmp)))
                if utt is not None and utt.duration >= 0.5:
                    utts.append(utt.audio)
            out.append(utts)
    return out


def speaker_streams(utterances: list[list[np.ndarray]], gap: float = 0.1) -> list[np.ndarray]:
    """Each speaker's utterances back to back (`gap` s of silence between): crops come from here."""
    silence = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    return [np.concatenate([x for u in utts for x in (u, silence)]) for utts in utterances]


def sample_streams(min_seconds: float = 0.3) -> list[np.ndarray]:
    """pyannote's sample.wav, one stream per sample.rttm speaker: the stretches where that
    speaker talks alone (>= `min_seconds`), back to back."""
    sample = load_sample()
    frame = 0.01
    n_frames = int(np.ceil(len(sample.audio) / SAMPLE_RATE / frame))
    n_spk = 1 + max(spk for _, _, spk in sample.segments)
    act = np.zeros((n_frames, n_spk), dtype=bool)
    for s, e, spk in sample.segments:
        act[int(round(s / frame)) : int(round(e / frame)), spk] = True
    streams = []
    for spk in range(n_spk):
        alone = act[:, spk] & (act.sum(1) == 1)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], alone.astype(int), [0]])))
        hop = int(frame * SAMPLE_RATE)
        pieces = [
            sample.audio[a * hop : b * hop]
            for a, b in zip(edges[::2], edges[1::2], strict=True)
            if (b - a) * frame >= min_seconds
        ]
        streams.append(np.concatenate(pieces).astype(np.float32))
    return streams


def noise(n: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if rng.random() < 0.5:
        return white
    spec = np.fft.rfft(white)  # pink-ish: 1/sqrt(f)
    f = np.arange(len(spec), dtype=np.float64)
    f[0] = 1.0
    return np.fft.irfft(spec / np.sqrt(f), n=n)


def random_crop(
    stream: np.ndarray, n: int, rng: np.random.Generator, cfg: TrainConfig
) -> np.ndarray:
    """An `n`-sample window of a speaker stream, at a random level, maybe with noise."""
    if len(stream) < n:
        stream = np.pad(stream, (0, n - len(stream)))
    a = int(rng.integers(0, len(stream) - n + 1))
    x = stream[a : a + n].astype(np.float64)
    peak = np.abs(x).max()
    if peak > 0:
        x *= 10 ** (rng.uniform(*cfg.gain_db) / 20) / peak
    if rng.random() < cfg.noise_prob:
        nz = noise(n, rng)
        speech = x[np.abs(x) > 1e-6]
        ref = np.sqrt(np.mean(speech**2)) if len(speech) else 1e-3
        snr = rng.uniform(*cfg.snr_db)
        x = x + nz * ref / (np.sqrt(np.mean(nz**2)) + 1e-12) * 10 ** (-snr / 20)
    return x.astype(np.float32)


def make_batch(
    streams: list[np.ndarray], rng: np.random.Generator, cfg: TrainConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(waveforms (B, 1, N), labels (B,)): B distinct speakers, one crop each (cosface)."""
    n = int(round(cfg.crop_seconds * SAMPLE_RATE))
    labels = rng.choice(len(streams), size=cfg.batch_size, replace=False)
    x = np.stack([random_crop(streams[i], n, rng, cfg) for i in labels])[:, None, :]
    return x, labels.astype(np.int64)


def make_episode(
    streams: list[np.ndarray],
    n_pitches: int,
    rng: np.random.Generator,
    cfg: TrainConfig,
    extra: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(waveforms (K*P, 1, N), speakers (K*P,)), crop k of speaker p at row k*P + p.

    Speakers are indexed variant-major (`voices_for`): speaker = variant * n_pitches + level.
    With `extra` streams (pyannote's sample speakers, indexed after the synthetic ones), a share
    `cfg.sample_prob` of batches holds them too.
    """
    n = int(round(cfg.crop_seconds * SAMPLE_RATE))
    n_variants = (len(streams) - len(extra or [])) // n_pitches
    variants = rng.choice(n_variants, size=cfg.batch_variants, replace=False)
    levels = rng.choice(n_pitches, size=cfg.batch_pitches, replace=False)
    speakers = np.array([v * n_pitches + p for v in variants for p in levels], dtype=np.int64)
    if extra and rng.random() < cfg.sample_prob:
        first = len(streams) - len(extra)
        speakers = np.concatenate([speakers, np.arange(first, len(streams))])
    x = np.stack(
        [
            random_crop(streams[s], n, rng, cfg)
            for _ in range(cfg.crops_per_speaker)
            for s in speakers
        ]
    )[:, None, :]
    return x, np.tile(speakers, cfg.crops_per_speaker)


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    low = cfg.lr * cfg.final_lr_ratio
    return low + 0.5 * (cfg.lr - low) * (1 + math.cos(math.pi * progress))


def margin_at(step: int, cfg: TrainConfig) -> float:
    return cfg.margin * min(1.0, step / max(1.0, cfg.margin_warmup * cfg.steps))


def cosface_loss(
    embeddings: torch.Tensor, head: torch.Tensor, labels: torch.Tensor, scale: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Additive-margin softmax on cosine logits; returns (loss, accuracy without margin)."""
    import torch.nn.functional as F

    cos = F.normalize(embeddings, dim=1) @ F.normalize(head, dim=1).T
    onehot = F.one_hot(labels, cos.shape[1]).to(cos.dtype)
    loss = F.cross_entropy(scale * (cos - margin * onehot), labels)
    return loss, (cos.argmax(1) == labels).float().mean()


def prototypical_loss(
    embeddings: torch.Tensor, crops: int, scale: torch.Tensor, bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Angular prototypical loss (Chung et al., 2020), every crop in turn the query.

    `embeddings` (K*P, D), crop k of speaker p at row k*P + p. Each crop is scored against
    every speaker's prototype (mean of that speaker's *other* crops) by scaled cosine; softmax
    over the P speakers of the batch. Returns (loss, in-batch accuracy).
    """
    import torch
    import torch.nn.functional as F

    e = F.normalize(embeddings, dim=1).reshape(crops, -1, embeddings.shape[1])  # (K, P, D)
    total = e.sum(0)
    labels = torch.arange(e.shape[1])
    losses, correct = [], []
    for k in range(crops):
        protos = F.normalize((total - e[k]) / (crops - 1), dim=1)  # leave the query out
        logits = scale * (e[k] @ protos.T) + bias
        losses.append(F.cross_entropy(logits, labels))
        correct.append((logits.argmax(1) == labels).float().mean())
    return torch.stack(losses).mean(), torch.stack(correct).mean()


def corpus_description(speakers: SpeakerSet, n_voices: int, cfg: TrainConfig) -> str:
    return (
        f"synthetic speech: {n_voices} espeak-ng voices ({len(speakers.variants)} voice variants x "
        f"{len(speakers.pitches)} pitch levels, language drawn from "
        f"{'/'.join(speakers.languages)}, random speed) reading random words, "
        f"{speakers.utterances} utterances each; {cfg.crop_seconds:g} s crops with gain changes "
        f"and white/pink noise"
        + (
            f"; plus pyannote.audio's sample.wav (its 2 speakers, in {cfg.sample_prob:.0%} of "
            "batches)"
            if cfg.sample_prob > 0
            else ""
        )
    )


def train(cfg: TrainConfig, out_dir: Path, work_dir: Path | None = None) -> dict[str, Any]:
    import torch

    from coreml_diarize.sources import CHECKPOINT_NAME, build_architecture

    torch.set_num_threads(1)
    torch.manual_seed(cfg.seed)
    speakers = SpeakerSet(utterances=cfg.utterances)
    t0 = time.monotonic()
    voices = voices_for(speakers, cfg.seed)
    streams = speaker_streams(synthesize_speakers(voices, speakers, cfg.seed + 1))
    seconds = sum(len(s) for s in streams) / SAMPLE_RATE
    real = sample_streams() if cfg.sample_prob > 0 else []
    streams += real
    print(
        f"corpus: {len(voices)} voices, {seconds / 60:.0f} min of speech "
        f"({time.monotonic() - t0:.0f} s)",
        flush=True,
    )

    model = build_architecture("embedding").train()
    dim = int(model.dimension)
    if cfg.loss == "cosface":
        extra = [torch.nn.Parameter(torch.randn(len(voices), dim) * 0.01)]  # class centres
    else:
        extra = [torch.nn.Parameter(torch.tensor(10.0)), torch.nn.Parameter(torch.tensor(-5.0))]
    opt = torch.optim.AdamW(
        [{"params": list(model.parameters())}, {"params": extra, "weight_decay": 0.0}],
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
    )
    rng = np.random.default_rng(cfg.seed + 2)
    losses: list[float] = []
    accs: list[float] = []
    t_train = time.monotonic()
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        if cfg.loss == "cosface":
            x, y = make_batch(streams, rng, cfg)
            loss, acc = cosface_loss(
                model(torch.from_numpy(x)),
                extra[0],
                torch.from_numpy(y),
                cfg.scale,
                margin_at(step, cfg),
            )
        else:
            x, _ = make_episode(streams, len(speakers.pitches), rng, cfg, real)
            loss, acc = prototypical_loss(
                model(torch.from_numpy(x)), cfg.crops_per_speaker, extra[0], extra[1]
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        accs.append(acc.item())
        if (step + 1) % cfg.log_every == 0:
            print(
                f"step {step + 1}/{cfg.steps} loss {np.mean(losses[-cfg.log_every :]):.3f} "
                f"acc {np.mean(accs[-cfg.log_every :]):.2f} lr {lr_at(step, cfg):.1e} "
                f"{'m' if cfg.loss == 'cosface' else 'scale'} "
                f"{margin_at(step, cfg) if cfg.loss == 'cosface' else extra[0].item():.2f} "
                f"{time.monotonic() - t_train:.0f} s",
                flush=True,
            )
        if work_dir is not None and (step + 1) % 100 == 0:
            save_fixture(
                model.eval(), work_dir / f"step{step + 1}.bin", {"partial": True, "steps": step + 1}
            )
            model.train()
    train_seconds = time.monotonic() - t_train
    model.eval()
    window = 5 * cfg.log_every
    record = {
        "purpose": "test fixture: WeSpeaker ResNet34 trained to tell synthetic espeak-ng voices "
        "apart, not a real speaker-embedding model",
        "trained_on": corpus_description(speakers, len(voices), cfg),
        "script": SCRIPT,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "batch_size": cfg.batch_size,
        "crop_seconds": cfg.crop_seconds,
        "speakers": len(voices),
        "loss": (
            f"CosFace s={cfg.scale:g} m={cfg.margin:g} (head not saved)"
            if cfg.loss == "cosface"
            else f"angular prototypical, {cfg.batch_variants} variants x {cfg.batch_pitches} "
            f"pitch levels x {cfg.crops_per_speaker} crops per batch"
        ),
        "final_loss": round(float(np.mean(losses[-window:])), 4),
        "final_train_accuracy": round(float(np.mean(accs[-window:])), 4),
        "dtype": "float16",
    }
    path = save_fixture(model, out_dir / CHECKPOINT_NAME, record)
    return {
        "record": record,
        "config": asdict(cfg),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.monotonic() - t0, 1),
        "loss_curve": curve(losses, cfg.log_every),
        "accuracy_curve": curve(accs, cfg.log_every),
        "checkpoint": str(path.relative_to(REPO) if path.is_relative_to(REPO) else path),
        "checkpoint_bytes": path.stat().st_size,
    }


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--steps", type=int, default=TrainConfig.steps)
    p.add_argument("--seed", type=int, default=TrainConfig.seed)
    p.add_argument("--loss", choices=("prototypical", "cosface"), default=TrainConfig.loss)
    p.add_argument("--batch-variants", type=int, default=TrainConfig.batch_variants)
    p.add_argument("--batch-pitches", type=int, default=TrainConfig.batch_pitches)
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--sample-prob", type=float, default=TrainConfig.sample_prob)
    p.add_argument("--crop-seconds", type=float, default=TrainConfig.crop_seconds)
    p.add_argument("--lr", type=float, default=TrainConfig.lr)
    p.add_argument("--margin", type=float, default=TrainConfig.margin)
    p.add_argument("--work-dir", type=Path, default=None, help="keep a checkpoint every 100 steps")
    p.add_argument("--skip-eval", action="store_true")
    args = p.parse_args(argv)
    cfg = TrainConfig(
        seed=args.seed,
        steps=args.steps,
        loss=args.loss,
        batch_variants=args.batch_variants,
        batch_pitches=args.batch_pitches,
        batch_size=args.batch_size,
        sample_prob=args.sample_prob,
        crop_seconds=args.crop_seconds,
        lr=args.lr,
        margin=args.margin,
    )
    summary = train(cfg, args.out, args.work_dir)
    print(
        json.dumps({k: v for k, v in summary.items() if not k.endswith("_curve")}, indent=2),
        flush=True,
    )
    # the sidecar starts over with this run's training figures; evaluation adds its own
    (args.out / "fixture.json").write_text(json.dumps({"training": summary}, indent=2) + "\n")
    if not args.skip_eval:
        from training.evaluate_embedding import main as evaluate

        return evaluate(["--checkpoint-dir", str(args.out), "--baseline"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
