"""A small synthetic meeting corpus for `evaluate`: WAVs with their RTTMs, reproducible.

Each meeting is `heldout_recording` (held-out espeak-ng voices, disjoint from the fixtures'
training data) with its own seed, written as `<uri>.wav` (16 kHz mono) and `<uri>.rttm`:

    python -m training.meetings --out corpus/ [--count 4] [--seconds 30] [--speakers 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .corpus import SAMPLE_RATE
from .heldout_recording import DEFAULT_SEED, heldout_recording, write_rttm


def write_meetings(
    out: Path,
    count: int = 4,
    seconds: float = 30.0,
    speakers: int = 2,
    seed: int = DEFAULT_SEED,
) -> list[Path]:
    """`count` meetings `meeting<i>.wav` + `.rttm` in `out` (meeting i uses seed + 100 i)."""
    import soundfile as sf

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(count):
        uri = f"meeting{i}"
        audio, segments = heldout_recording(seconds, speakers, seed=seed + 100 * i)
        sf.write(out / f"{uri}.wav", audio, SAMPLE_RATE, subtype="FLOAT")
        write_rttm(segments, uri, out / f"{uri}.rttm")
        written.append(out / f"{uri}.wav")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--speakers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    for path in write_meetings(args.out, args.count, args.seconds, args.speakers, args.seed):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
