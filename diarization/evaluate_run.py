"""`evaluate`'s driver: what is left to do, run serially or on Ray, stored as it finishes.

`evaluate_corpus` plans the jobs (evaluate.py `plan_jobs`: skips stored results, longest file
first), runs them with the plain loop (`serial_outcomes`, `workers == 1` and no `--address`) or
the Ray actor pool (evaluate_ray.py), writes each outcome atomically as it arrives and prints one
progress line per file with an ETA (by audio time done: files differ in length).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coreml_diarize.errors import DiarizeError

from .corpus import CorpusFile
from .evaluate import EvaluationPlan, Job, JobOutcome, ResultStore, plan_jobs, serial_outcomes


@dataclass
class EvaluationRun:
    """What a command did: counts, and the failures (uri, variant, error)."""

    files: int
    skipped: int  # files with nothing left to do
    scored: int = 0  # (file, variant) results written with status ok
    failures: list[tuple[str, str, str]] = field(default_factory=list)
    seconds: float = 0.0


class Progress:
    """One line per finished file to `emit`: count, failures, elapsed and ETA by audio time."""

    def __init__(self, jobs: list[Job], emit: Callable[[str], None] | None) -> None:
        self.emit = emit
        self.total = len(jobs)
        self.audio_total = sum(j.file.duration_s for j in jobs) or float(len(jobs))
        self.audio_done = 0.0
        self.count = 0
        self.start = time.perf_counter()

    def finished(self, job: Job | None, outcome: JobOutcome, failed: int) -> None:
        self.count += 1
        self.audio_done += (job.file.duration_s or 1.0) if job else 0.0
        if self.emit is None:
            return
        elapsed = time.perf_counter() - self.start
        share = min(self.audio_done / self.audio_total, 1.0) if self.audio_total else 1.0
        eta = elapsed * (1 - share) / share if share > 0 else float("nan")
        status = (
            "failed" if any(r.get("status") != "ok" for r in outcome.variants.values()) else "ok"
        )
        self.emit(
            f"[{self.count}/{self.total}] {outcome.uri} {status} ({outcome.seconds:.1f} s); "
            f"{failed} failed; elapsed {_clock(elapsed)}, ETA {_clock(eta)}"
        )


def _clock(seconds: float) -> str:
    if seconds != seconds:  # nan
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def store_outcome(store: ResultStore, outcome: JobOutcome, run: EvaluationRun) -> None:
    plan = store.plan
    if outcome.torch is not None:
        store.write(plan.torch_key, outcome.uri, outcome.torch)
    for variant, record in outcome.variants.items():
        store.write(plan.keys[variant], outcome.uri, record)
        if record.get("status") == "ok":
            run.scored += 1
        else:
            run.failures.append((outcome.uri, variant, str(record.get("error"))))


def evaluate_corpus(
    files: list[CorpusFile],
    plan: EvaluationPlan,
    out: Path | str,
    *,
    workers: int = 1,
    address: str | None = None,
    worker_memory_gb: float | None = None,
    force: bool = False,
    progress: Callable[[str], None] | None = None,
    ray_stats: dict | None = None,
) -> EvaluationRun:
    """Score what is left of `files` and store each result as its file finishes
    (`ray_stats`: see evaluate_ray.py `ray_outcomes`)."""
    from coreml_diarize.atomic import ensure_writable_dir

    if workers < 1:
        raise DiarizeError(f"--workers must be at least 1, got {workers}")
    store = ResultStore(ensure_writable_dir(Path(out)), plan)
    store.describe_keys()
    jobs = plan_jobs(files, store, force)
    run = EvaluationRun(files=len(files), skipped=len(files) - len(jobs))
    if progress is not None and run.skipped:
        progress(f"{run.skipped} of {len(files)} files already done (--force recomputes them)")
    by_uri = {j.file.uri: j for j in jobs}
    meter = Progress(jobs, progress)
    start = time.perf_counter()
    if workers == 1 and address is None:
        outcomes = serial_outcomes(plan, jobs)
    else:
        from .evaluate_ray import ray_outcomes

        outcomes = ray_outcomes(
            plan,
            jobs,
            workers=workers,
            address=address,
            worker_memory_gb=worker_memory_gb,
            stats=ray_stats,
        )
    try:
        for outcome in outcomes:
            store_outcome(store, outcome, run)
            meter.finished(by_uri.get(outcome.uri), outcome, len(run.failures))
    finally:  # Ctrl-C: what is stored stays; Ray (if this run started it) is shut down now
        outcomes.close()
    run.seconds = time.perf_counter() - start
    return run
