"""Per-layer sensitivity tables of the trained fixtures (issue #24): time, load, and the tables.

    python benchmarks/bench_sensitivity.py [--out FILE] [--docs docs/sensitivity]
        [--models segmentation,embedding] [--segmentation-package P] [--embedding-package P]
        [--target iOS18 --granularity per_grouped_channel --group-size 16 --suffix _g16]

Run from the repository root: the synthetic conversations come from `training/corpus.py`
(the TRAINING voice/word config, seed 24 — neither the fixtures' training seed 14 nor the
held-out seed 2014 — so the calibration audio is never audio the variants are judged on).
Calibration = pyannote's sample (real speech, 10 s at 0/5/10/15/20 s) interleaved with 5
synthetic 10 s conversations. Without --*-package, the fp32 packages are converted from the
fixtures (tests/fixtures/*-synthetic/pytorch_model.bin) into a temporary folder.
With --docs, writes `<docs>/<package stem><suffix>.json` and `.png` (the agreed table format).
`--granularity per_grouped_channel` (one LUT per `--group-size` output channels, default 16)
needs an iOS18 package: with it, the fixtures are converted at `--target iOS18` (the default
target then), and a given `--*-package` must be one.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))  # training/ is a folder of the checkout, not installed

from common import emit  # noqa: E402

FIXTURES = {
    "segmentation": ROOT / "tests/fixtures/segmentation-synthetic/pytorch_model.bin",
    "embedding": ROOT / "tests/fixtures/embedding-synthetic/pytorch_model.bin",
}
CALIBRATION_SEED = 24  # training seed 14, held-out seed 2014: neither
SAMPLE_OFFSETS = (0.0, 5.0, 10.0, 15.0, 20.0)


def synthetic_chunks(count: int, seed: int = CALIBRATION_SEED):
    """`count` 10 s conversations of training-config espeak-ng voices (training/corpus.py)."""
    import numpy as np

    from coreml_diarize.validation.sensitivity import CalibrationChunk
    from training.corpus import CorpusConfig, build_pool, median_f0, mix_conversation

    config = CorpusConfig(speakers=8, utterances_per_speaker=4)
    _, pool = build_pool(config, seed)
    f0 = [median_f0(u) for u in pool]
    rng = np.random.default_rng(seed + 1)
    chunks = []
    while len(chunks) < count:
        conv = mix_conversation(pool, rng, config, f0)
        speakers: dict[int, list[tuple[float, float]]] = {}
        for start, end, spk in conv.segments:
            speakers.setdefault(spk, []).append((start, end))
        if len(speakers) < 1:
            continue  # a silent chunk gives the embedding nothing to measure
        turns = tuple(tuple(v) for _, v in sorted(speakers.items()))
        chunks.append(CalibrationChunk(f"synthetic{len(chunks)}", conv.audio, turns))
    return chunks


def fixture_calibration(embedding_rows: int):
    from coreml_diarize.validation.sensitivity import Calibration, sample_calibration

    sample = sample_calibration(SAMPLE_OFFSETS).chunks
    synthetic = synthetic_chunks(len(sample))
    chunks = tuple(c for pair in zip(sample, synthetic, strict=True) for c in pair)
    return Calibration(
        f"pyannote sample.wav 10 s at {', '.join(f'{o:g}' for o in SAMPLE_OFFSETS)} s, "
        f"interleaved with {len(synthetic)} synthetic 10 s conversations "
        f"(training/corpus.py CorpusConfig(speakers=8, utterances_per_speaker=4), training "
        f"voices and words, seed {CALIBRATION_SEED}); embedding rows: one speaker's activity "
        "as the mask, round robin over chunks",
        chunks,
        embedding_rows=embedding_rows,
    )


def convert_fixture(key: str, out: Path, target: str | None = None) -> Path:
    """The fixture's fp32 package (`convert`, at `target` if given: the CLI's default else)."""
    import subprocess

    cli = Path(sys.executable).parent / "coreml-diarize"
    command = [str(cli), "convert", key, f"--{key}-source", str(FIXTURES[key]), "--out", str(out)]
    subprocess.run(
        command + (["--target", target] if target else []), check=True, capture_output=True
    )
    from coreml_diarize.models import get_spec

    return out / f"{get_spec(key).filename}.mlpackage"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--models", default="segmentation,embedding")
    parser.add_argument("--segmentation-package", type=Path, default=None)
    parser.add_argument("--embedding-package", type=Path, default=None)
    parser.add_argument("--embedding-rows", type=int, default=6)
    parser.add_argument("--widths", default="8,6,4,2")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--granularity", choices=("per_tensor", "per_grouped_channel"), default="per_tensor"
    )
    parser.add_argument("--group-size", type=int, default=None, help="grouped (default 16)")
    parser.add_argument(
        "--target", default=None, help="convert target (grouped default: iOS18; else the CLI's)"
    )
    parser.add_argument("--suffix", default="", help="--docs file names: <stem><suffix>.json")
    args = parser.parse_args(argv)
    grouped = args.granularity == "per_grouped_channel"
    if args.group_size is not None and not grouped:
        parser.error("--group-size goes with --granularity per_grouped_channel")
    group_size = (args.group_size or 16) if grouped else None
    target = args.target or ("iOS18" if grouped else None)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from coreml_diarize.atomic import atomic_path
    from coreml_diarize.validation.sensitivity import measure_sensitivity, plot_table

    widths = [int(w) for w in args.widths.split(",")]
    calibration = fixture_calibration(args.embedding_rows)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            package = getattr(args, f"{key}_package") or convert_fixture(key, Path(tmp), target)
            load_before = os.getloadavg()
            start = time.perf_counter()
            table = measure_sensitivity(
                package,
                widths=widths,
                granularity=args.granularity,
                group_size=group_size,
                calibration=calibration,
                progress=print,
            )
            seconds = time.perf_counter() - start
            results[key] = {
                "seconds": round(seconds, 1),
                "loadavg_before": [round(x, 2) for x in load_before],
                "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                "threads": torch.get_num_threads(),
                "layers": len(table.layers),
                "granularity": table.granularity,
                "group_size": table.group_size,
                "target": target,
                "skipped": table.skipped,
                "calibration": table.calibration,
                "top10_at_4": [x.name for x in table.most_sensitive(4)] if 4 in widths else [],
            }
            print(key, results[key], flush=True)
            if args.docs:
                stem = package.name.removesuffix(".mlpackage") + args.suffix
                with atomic_path(args.docs / f"{stem}.json") as path:
                    path.write_text(table.dumps())
                with atomic_path(args.docs / f"{stem}.png") as path:
                    plot_table(table, path)
    emit(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
