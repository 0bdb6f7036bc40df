"""A held-out synthetic "meeting": one long conversation between a few held-out espeak-ng voices.

The voices, words and seed are disjoint from everything the fixtures were trained on
(`CorpusConfig.heldout()`), and the same speakers talk for the whole recording (unlike the 10 s
training chunks), so it is a diarization test: `compare` scores the converted chain against the
PyTorch pipeline (and both against the written RTTM) on it.

    python -m training.heldout_recording --out heldout.wav [--seconds 60] [--speakers 3]

Writes `<out>` (16 kHz mono float32 WAV) and `<out stem>.rttm` beside it. Deterministic in
`--seed`.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from .corpus import SAMPLE_RATE, CorpusConfig, build_pool, median_f0, mix_conversation

DEFAULT_SEED = 2014  # evaluate_segmentation's held-out seed


def heldout_recording(
    seconds: float = 60.0, speakers: int = 3, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, list[tuple[float, float, int]]]:
    """(audio, [(start, end, speaker)]): `speakers` held-out voices talking for `seconds`."""
    if not 1 <= speakers <= 3:
        raise ValueError(f"speakers must be 1..3 (mix_conversation's range), got {speakers}")
    shares = [0.0, 0.0, 0.0, 0.0]
    shares[speakers] = 1.0
    corpus = replace(
        CorpusConfig.heldout(speakers=8, utterances_per_speaker=12),
        duration=float(seconds),
        speakers_per_chunk=tuple(shares),
        noise_prob=1.0,
        snr_db=(20.0, 30.0),
    )
    _, pool = build_pool(corpus, seed)
    f0 = [median_f0(utts) for utts in pool]
    conversation = mix_conversation(pool, np.random.default_rng(seed + 1), corpus, f0)
    return conversation.audio, conversation.segments


def write_rttm(segments: list[tuple[float, float, int]], uri: str, path: Path) -> None:
    lines = [
        f"SPEAKER {uri} 1 {start:.3f} {end - start:.3f} <NA> <NA> spk{speaker} <NA> <NA>"
        for start, end, speaker in segments
    ]
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    import soundfile as sf

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the WAV file to write")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--speakers", type=int, default=3)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    audio, segments = heldout_recording(args.seconds, args.speakers, args.seed)
    sf.write(args.out, audio, SAMPLE_RATE, subtype="FLOAT")
    write_rttm(segments, args.out.stem, args.out.with_suffix(".rttm"))
    print(f"{args.out}: {len(audio) / SAMPLE_RATE:.1f} s, {len(segments)} speech segments")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
