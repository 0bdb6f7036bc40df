"""`evaluate` at scale on this machine: 1 vs 2 workers on one corpus, peak memory per worker,
and what Ray costs against the plain serial loop on one file (JSON).

    python benchmarks/bench_evaluate.py --models DIR [--corpus DIR | --count 6 --seconds 60]
        [--pipeline 3.1] [--step S] [--variants fp32] [--ray-one-worker] [--out FILE]

Every run scores the same files into its own fresh results folder (nothing is skipped):
* `serial_one_file` / `ray_one_file`: the longest file alone, by the plain loop (`--workers 1`)
  and by one Ray actor: the difference is Ray's overhead (start-up, actor start, transfers);
  `ray_init_s` and `actors_ready_s` split it (Ray up; every actor has loaded its chains);
* `serial_all` / `ray_2_workers`: the whole corpus, by the plain loop and by two actors; the
  speed-up is their ratio (issue #23's goal: >= 1.7x on 2 cores); `--ray-one-worker` adds the
  corpus on one Ray actor (`ray_1_worker`), so that 1 -> 2 is also measured inside Ray;
* `worker_peak_rss_bytes`: each actor's peak resident set (getrusage), what `--worker-memory`
  should declare; `worker_cpu_settings`: each actor's niceness (the driver's, evaluate_ray.py)
  and torch and BLAS/OpenMP pool sizes (1 each: evaluate.py `pin_threads`). Numbers of the serial and Ray runs are checked identical.
The machine's load average (1, 5, 15 min) is recorded before and after every run: on a shared
machine a speed-up means little without it.
Without `--corpus`, `--count` synthetic meetings are generated (training/meetings.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # training/ (the corpus)
from common import emit  # noqa: E402


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run(files, plan, out: Path, workers: int, stats: dict | None = None) -> dict:
    """`workers` 1: the plain loop; with `stats` given, Ray actors (`workers` 1: one actor,
    driven here since evaluate_corpus runs one worker serially)."""
    from coreml_diarize.diarization.evaluate import ResultStore, plan_jobs
    from coreml_diarize.diarization.evaluate_ray import ray_outcomes
    from coreml_diarize.diarization.evaluate_run import (
        EvaluationRun,
        evaluate_corpus,
        store_outcome,
    )

    load_before = _load()
    start = time.perf_counter()
    if workers == 1 and stats is not None:  # one Ray actor (evaluate_corpus would run serially)
        out.mkdir(parents=True, exist_ok=True)
        store = ResultStore(out, plan)
        run = EvaluationRun(files=len(files), skipped=0)
        jobs = plan_jobs(files, store, force=True)
        for outcome in ray_outcomes(plan, jobs, workers=1, stats=stats):
            store_outcome(store, outcome, run)
    else:
        run = evaluate_corpus(files, plan, out, workers=workers, force=True, ray_stats=stats)
    wall = time.perf_counter() - start
    audio = sum(f.duration_s for f in files)
    return {
        "wall_s": wall,
        "files": len(files),
        "audio_s": audio,
        "rtf_wall": wall / audio if audio else None,
        "scored": run.scored,
        "failures": run.failures,
        "load_before": load_before,
        "load_after": _load(),
    }


def _partial_writer(out: str | None):
    """Writes the stages done so far to `<out>.partial` (the final JSON goes to `out`)."""

    def write(result: dict) -> None:
        if out:
            Path(f"{out}.partial").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")

    return write


def _numbers(out: Path) -> dict:
    """Every stored result's scores and segments (the RTFs differ from run to run)."""
    numbers = {}
    for path in sorted((out / "results").glob("*/*.json")):
        if path.name.startswith("."):  # the key's description
            continue
        record = json.loads(path.read_text())
        record.pop("seconds", None)
        record.pop("rtf", None)
        for side in ("converted", "torch"):
            if isinstance(record.get(side), dict):
                record[side] = {
                    k: v for k, v in record[side].items() if k not in ("seconds", "rtf")
                }
        numbers[f"{path.parent.name}/{path.stem}"] = record
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--corpus", type=Path, default=None)
    parser.add_argument("--count", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--step", type=float, default=None)
    parser.add_argument("--pipeline", default="3.1")
    parser.add_argument("--variants", default="fp32")
    parser.add_argument("--backend", default="mil")
    parser.add_argument("--worker-memory", type=float, default=2.0)
    parser.add_argument("--ray-one-worker", action="store_true", help="also the corpus on 1 actor")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate import (
        EvaluationOptions,
        EvaluationPlan,
        parse_variants,
    )

    with tempfile.TemporaryDirectory(prefix="bench_evaluate.") as scratch:
        scratch = Path(scratch)
        corpus = args.corpus
        if corpus is None:
            from training.meetings import write_meetings

            corpus = scratch / "corpus"
            write_meetings(corpus, count=args.count, seconds=args.seconds, speakers=2)
        files = load_corpus(corpus)
        options = EvaluationOptions(
            pipeline=args.pipeline,
            variants=parse_variants(args.variants),
            step_s=args.step,
            backend=args.backend,
        )
        plan = EvaluationPlan.make(args.models, options)
        longest = [max(files, key=lambda f: f.duration_s)]
        result: dict = {
            "machine": {"cpus": os.cpu_count(), "load_at_start": _load()},
            "corpus": {"files": len(files), "audio_s": sum(f.duration_s for f in files)},
            "options": {"pipeline": args.pipeline, "variants": list(options.variants)}
            | {"step_s": args.step, "backend": args.backend},
        }
        partial = _partial_writer(args.out)  # a long run's finished stages survive a kill
        result["serial_one_file"] = _run(longest, plan, scratch / "s1", 1)
        partial(result)
        one: dict = {}
        # workers=2 on one file starts one actor (no more actors than files): Ray's overhead
        result["ray_one_file"] = _run(longest, plan, scratch / "r1", 2, one) | one
        result["ray_overhead_s"] = (
            result["ray_one_file"]["wall_s"] - result["serial_one_file"]["wall_s"]
        )
        partial(result)
        result["serial_all"] = _run(files, plan, scratch / "s", 1)
        partial(result)
        if args.ray_one_worker:
            single: dict = {}
            result["ray_1_worker"] = _run(files, plan, scratch / "ray1", 1, single) | single
            partial(result)
        two: dict = {}
        result["ray_2_workers"] = _run(files, plan, scratch / "r2", 2, two) | two
        result["speedup_2_workers"] = (
            result["serial_all"]["wall_s"] / result["ray_2_workers"]["wall_s"]
        )
        if args.ray_one_worker:
            result["speedup_ray_1_to_2_workers"] = (
                result["ray_1_worker"]["wall_s"] / result["ray_2_workers"]["wall_s"]
            )
        result["worker_peak_rss_bytes"] = two.get("worker_peak_rss_bytes", [])
        result["worker_cpu_settings"] = two.get("worker_cpu_settings", [])
        result["identical_numbers_serial_vs_ray"] = _numbers(scratch / "s") == _numbers(
            scratch / "r2"
        )
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
