"""`evaluate --workers N` / `--address`: the same EvaluationWorker as a pool of Ray actors.

Ray (docs.ray.io, "Actors", "Specifying task or actor resource requirements"):
* without `--address`, `ray.init(num_cpus=os.cpu_count(), include_dashboard=False)` starts a
  local instance inside this process, sized to the machine; with it, `ray.init(address=...)`
  joins a cluster started with `ray start --head` (README);
* each actor asks for one CPU and `memory=` bytes: Ray's scheduler then never places more
  actors on a node than its CPUs and memory hold (memory is a logical resource: declared, not
  enforced, so the figure comes from the benchmark's measured peak per worker);
* every actor loads the packages and both pipelines once (`EvaluationWorker.__init__`), then
  takes one file at a time; the driver hands out files longest first and stores each outcome
  as it arrives (`ray.wait`), so Ctrl-C loses only the files in flight;
* a dead actor (killed, out of memory, its node lost) fails the file it held, recorded like
  any other failure; a fresh actor takes its place, up to `max_restarts` times in all.

Workers read the audio and the packages by path: on a cluster, the corpus and the models
directory must be at the same path on every node (a shared file system).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from coreml_diarize.errors import DiarizeError

from .evaluate import EvaluationPlan, EvaluationWorker, Job, JobOutcome, failed_record

DEFAULT_WORKER_MEMORY_GB = 2.0  # bench_evaluate.py: peak RSS of one worker, rounded up


def _start_ray(address: str | None, workers: int) -> bool:
    """Start (or join) Ray; True when this call started it (and so must shut it down)."""
    import ray

    if ray.is_initialized():
        return False
    env = {
        "env_vars": {
            "PYANNOTE_METRICS_ENABLED": os.environ.get("PYANNOTE_METRICS_ENABLED", "false")
        }
    }
    if address is None:
        # Ray starts worker processes at nice 15 (ray_config_def.h `worker_niceness`: "so
        # that the OS prioritizes CPU for other processes over worker"): on a machine shared
        # with other work, the actors would get less CPU than the serial loop, which runs at
        # the command's own priority. The local instance's actors run at that priority too
        # (RAY_worker_niceness=0, as Ray's job manager sets for its supervisor actor:
        # dashboard/modules/job/job_manager.py). A cluster keeps its own setting.
        env["env_vars"]["RAY_worker_niceness"] = "0"
        ray.init(
            num_cpus=max(os.cpu_count() or 1, workers),
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,  # no INFO lines between the progress lines
            runtime_env=env,
        )
    else:
        try:
            ray.init(address=address, log_to_driver=False, runtime_env=env)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise DiarizeError(f"cannot join the Ray cluster at {address}: {exc}") from exc
    return True


def _ask_live(actors: list[Any], method: str) -> list[Any]:
    """`method()` of each live actor (dead ones are left out)."""
    import ray
    from ray.exceptions import RayActorError

    answers = []
    for actor in actors:
        try:
            answers.append(ray.get(getattr(actor, method).remote(), timeout=60))
        except (RayActorError, ray.exceptions.GetTimeoutError):
            continue
    return answers


def _first_and_last_line(exc: BaseException) -> str:
    """Ray's actor errors: what happened on the first line, the cause (e.g. the exception its
    constructor raised, after the remote traceback) on the last."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return f"{text} ... {lines[-1]}" if len(lines) > 1 else text


def ray_outcomes(
    plan: EvaluationPlan,
    jobs: list[Job],
    *,
    workers: int,
    address: str | None = None,
    worker_memory_gb: float | None = None,
    max_restarts: int | None = None,
    stats: dict[str, Any] | None = None,
) -> Iterator[JobOutcome]:
    """Outcomes of `jobs` (already longest first) as the actors finish them.

    `stats`, when given, receives Ray's start-up time, the time until every actor has loaded
    its chains and pipelines (then waited for before the first job is sent), and each live
    actor's peak memory, niceness and thread pools (bench_evaluate.py).
    """
    if not jobs:
        return
    import ray
    from ray.exceptions import RayActorError, RayTaskError, WorkerCrashedError

    memory_gb = worker_memory_gb or DEFAULT_WORKER_MEMORY_GB
    clock = time.perf_counter()
    started = _start_ray(address, workers)
    if stats is not None:
        stats["ray_init_s"] = time.perf_counter() - clock
    try:
        available = ray.available_resources().get("memory", 0.0)
        need = workers * memory_gb * 2**30
        if address is None and available and need > available:
            raise DiarizeError(
                f"{workers} workers x {memory_gb:g} GB exceed the {available / 2**30:.1f} GB "
                "Ray sees on this machine: fewer --workers or a smaller --worker-memory"
            )
        actor_class = ray.remote(EvaluationWorker).options(
            num_cpus=1, memory=int(memory_gb * 2**30), max_restarts=0, max_task_retries=0
        )
        count = min(workers, len(jobs))
        restarts_left = count if max_restarts is None else max_restarts
        idle = [actor_class.remote(plan) for _ in range(count)]
        actors = list(idle)
        if stats is not None:
            ray.get([actor.ready.remote() for actor in idle])
            stats["actors_ready_s"] = time.perf_counter() - clock
        pending = list(jobs)
        running: dict[Any, tuple[Any, Job]] = {}

        def submit(actor) -> None:
            job = pending.pop(0)
            running[actor.run.remote(job)] = (actor, job)

        while idle and pending:
            submit(idle.pop())
        while running:
            ready, _ = ray.wait(list(running), num_returns=1)  # Ray lets Ctrl-C through
            ref = ready[0]
            actor, job = running.pop(ref)
            try:
                outcome = ray.get(ref)
            except (RayActorError, WorkerCrashedError) as exc:
                error = f"worker died: {_first_and_last_line(exc)}"
                outcome = JobOutcome(
                    job.file.uri,
                    None,
                    {v: failed_record(job.file.uri, error, variant=v) for v in job.variants},
                )
                actor = None
                if restarts_left > 0 and pending:
                    restarts_left -= 1
                    actor = actor_class.remote(plan)
                    actors.append(actor)
            except RayTaskError as exc:  # the worker's own code raised past its handler
                cause = exc.cause if exc.cause is not None else exc
                error = f"{type(cause).__name__}: {str(cause).strip().splitlines()[0]}"
                outcome = JobOutcome(
                    job.file.uri,
                    None,
                    {v: failed_record(job.file.uri, error, variant=v) for v in job.variants},
                )
            yield outcome
            if actor is not None and pending:
                submit(actor)
        # jobs nobody could take (every actor died and no restart was left)
        for job in pending:
            error = "no worker left to run it (every Ray actor died)"
            yield JobOutcome(
                job.file.uri,
                None,
                {v: failed_record(job.file.uri, error, variant=v) for v in job.variants},
            )
        if stats is not None:
            stats["worker_peak_rss_bytes"] = _ask_live(actors, "peak_memory_bytes")
            stats["worker_cpu_settings"] = _ask_live(actors, "cpu_settings")
    finally:
        if started:
            ray.shutdown()
