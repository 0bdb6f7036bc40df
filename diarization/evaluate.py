"""`evaluate`: every variant of a converted chain scored over a corpus, results that survive.

For each file, pyannote's PyTorch pipeline runs once (on the weights the packages record as
their provenance, compare.py `torch_models_for`) and is shared by every variant; each variant's
converted chain runs on the same audio. Scores are pyannote.metrics' DER (miss, false alarm,
confusion) and JER: converted vs PyTorch, and both vs the reference RTTM where there is one.

Results are keyed so that nothing mixes: a variant's result lives under
`<out>/results/<key>/<uri>.json`, `key` a hash of (variant, pipeline, the bundle's hash,
collar, skip-overlap, step, backend); the PyTorch annotation under its own key (pipeline, the
fp32 bundle's hash, step), so a new variant or collar reuses it. Each is written atomically
(atomic.py) when its file finishes: a re-run skips what is done, Ctrl-C loses only the files
in flight. A file that fails is recorded (`"status": "failed"`, its error) and retried on the
next run; the others go on.

`--workers 1` is this module's plain loop (`serial_outcomes`); more workers run the same
`EvaluationWorker` as Ray actors (evaluate_ray.py); evaluate_run.py drives either and stores
the outcomes. Each worker loads the packages and both pipelines once.
"""

from __future__ import annotations

import hashlib
import json
import time
import traceback
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from coreml_diarize.errors import ArtifactError, DiarizeError

from .chain import ChainPaths, find_packages
from .corpus import CorpusFile
from .pipelines import pipeline_recipe

# fp32: the plain packages; others: <stem>_<variant>; mixed: `build --recipe` (quantize/mixed.py)
VARIANTS = ("fp32", "fp16", "palettize8", "mixed")
# pyannote's published benchmarks are "full" DER: no forgiveness collar, overlapped speech
# scored (the pyannote/speaker-diarization-3.1 and -community-1 model cards: "evaluated ...
# with no forgiveness collar and evaluating overlapped speech")
DEFAULT_COLLAR = 0.0
DEFAULT_SKIP_OVERLAP = False
# what a results folder's key stands for; a dot file, so that no URI's `<uri>.json` is it
KEY_FILE = ".key.json"
RESULT_FORMAT = 1  # bumped when a result file's layout changes (part of every key)


@dataclass(frozen=True)
class EvaluationOptions:
    """What a result depends on besides the file and the packages."""

    pipeline: str = "3.1"
    variants: tuple[str, ...] = ("fp32",)
    collar: float = DEFAULT_COLLAR
    skip_overlap: bool = DEFAULT_SKIP_OVERLAP
    step_s: float | None = None
    backend: str = "auto"
    trust_checkpoint: bool = False


def parse_variants(text: str) -> tuple[str, ...]:
    """'fp32,fp16' -> ('fp32', 'fp16'); unknown names are a user error."""
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    unknown = [v for v in names if v not in VARIANTS]
    if unknown or not names:
        raise DiarizeError(
            f"unknown variant {', '.join(unknown) or '(none)'} (choose from {', '.join(VARIANTS)})"
        )
    return names


def variant_paths(models_dir: Path, variant: str, chain: str) -> ChainPaths:
    """The chain's packages for `variant`. find_packages falls back to the plain package where
    a model has no variant file; here a variant with no package of its own is an error, not a
    silent second fp32 run."""
    if variant == "fp32":
        return find_packages(models_dir, None, chain=chain)
    paths = find_packages(models_dir, variant, chain=chain)
    if not any(p.name.endswith(f"_{variant}.mlpackage") for p in paths.paths.values()):
        raise ArtifactError(f"{models_dir} has no {variant} packages for the {chain} chain")
    return paths


def bundle_hash(paths: ChainPaths) -> str:
    """One SHA-256 over every package's tree hash (mlpackage.py `tree_hash`) and the sidecar
    files the chain's specs write beside them (e.g. plda-parameters.json)."""
    from coreml_diarize.mlpackage import file_sha256, tree_hash
    from coreml_diarize.models import registry

    digest = hashlib.sha256()
    for key, path in sorted(paths.paths.items()):
        digest.update(f"{key}\0{path.name}\0{tree_hash(path)[0]}\n".encode())
        spec = registry().get(key)
        for sidecar in sorted(spec.sidecars if spec else ()):
            digest.update(f"{sidecar}\0{file_sha256(path.parent / sidecar)}\n".encode())
    return digest.hexdigest()


def _key(fields: dict[str, Any]) -> str:
    text = json.dumps({"format": RESULT_FORMAT, **fields}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class EvaluationPlan:
    """The packages, hashes and result keys of one `evaluate` command."""

    models_dir: Path
    options: EvaluationOptions
    bundles: dict[str, str]  # variant -> bundle hash
    keys: dict[str, str]  # variant -> result key
    torch_key: str
    # variant -> the package files it runs; a variant swaps only the models that have it
    # (e.g. community-1's fp16: Segmentation_fp16, Embedding_fp16, and the fp32-only FBank,
    # PldaRho), which the report says
    packages: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def make(cls, models_dir: Path | str, options: EvaluationOptions) -> EvaluationPlan:
        models_dir = Path(models_dir)
        recipe = pipeline_recipe(options.pipeline)
        chains = {v: variant_paths(models_dir, v, recipe.chain) for v in options.variants}
        bundles = {v: bundle_hash(paths) for v, paths in chains.items()}
        packages = {v: sorted(p.name for p in paths.paths.values()) for v, paths in chains.items()}
        # the PyTorch side is rebuilt from the fp32 packages' provenance (same weights)
        fp32 = bundles.get("fp32") or bundle_hash(variant_paths(models_dir, "fp32", recipe.chain))
        shared = {
            "pipeline": recipe.name,
            "collar": options.collar,
            "skip_overlap": options.skip_overlap,
            "step_s": options.step_s,
        }
        keys = {
            v: _key({**shared, "variant": v, "bundle": b, "backend": options.backend})
            for v, b in bundles.items()
        }
        torch_key = _key(
            {"side": "torch", "pipeline": recipe.name, "bundle": fp32, "step_s": options.step_s}
        )
        return cls(models_dir, options, bundles, keys, torch_key, packages)


# --- the stored results ---------------------------------------------------------------------


def segments_of(annotation) -> list[list[Any]]:
    """An Annotation as [[start, end, label], ...] (JSON); `annotation_of` reads it back."""
    return [
        [float(s.start), float(s.end), str(label)]
        for s, _, label in annotation.itertracks(yield_label=True)
    ]


def annotation_of(segments: Iterable[list[Any]], uri: str):
    from pyannote.core import Annotation, Segment

    annotation = Annotation(uri=uri)
    for track, (start, end, label) in enumerate(segments):
        annotation[Segment(start, end), track] = label
    return annotation


@dataclass
class ResultStore:
    """`<out>/results/<key>/<uri>.json`, one file per result, each written atomically."""

    out: Path
    plan: EvaluationPlan

    def path(self, key: str, uri: str) -> Path:
        return self.out / "results" / key / f"{uri}.json"

    def describe_keys(self) -> None:
        """`<key>/.key.json`: what each key stands for, for a person browsing the folder."""
        from coreml_diarize.atomic import atomic_path

        options = asdict(self.plan.options)
        entries = {
            k: {"variant": v, "bundle": self.plan.bundles[v]} for v, k in self.plan.keys.items()
        }
        entries[self.plan.torch_key] = {"side": "torch"}
        for key, what in entries.items():
            target = self.out / "results" / key / KEY_FILE
            if not target.is_file():
                with atomic_path(target) as tmp:
                    tmp.write_text(json.dumps({**what, "options": options}, indent=2) + "\n")

    def read(self, key: str, uri: str) -> dict[str, Any] | None:
        path = self.path(key, uri)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):  # a damaged result is recomputed
            return None

    def done(self, key: str, uri: str) -> bool:
        record = self.read(key, uri)
        return record is not None and record.get("status") == "ok"

    def write(self, key: str, uri: str, record: dict[str, Any]) -> None:
        from coreml_diarize.atomic import atomic_path

        with atomic_path(self.path(key, uri)) as tmp:
            tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


@dataclass
class Job:
    """One file's work: the variants still to do, and the PyTorch result if already stored."""

    file: CorpusFile
    variants: tuple[str, ...]
    torch: dict[str, Any] | None = None


@dataclass
class JobOutcome:
    uri: str
    torch: dict[str, Any] | None  # a new PyTorch record to store (None: reused or failed)
    variants: dict[str, dict[str, Any]]  # variant -> record (status ok or failed)
    seconds: float = 0.0


def failed_record(uri: str, error: str, **extra: Any) -> dict[str, Any]:
    return {"uri": uri, "status": "failed", "error": error, **extra}


def plan_jobs(files: list[CorpusFile], store: ResultStore, force: bool) -> list[Job]:
    """What is left to do, longest file first (the long files bound a parallel run's end)."""
    plan = store.plan
    jobs = []
    for item in files:
        todo = tuple(
            v for v in plan.options.variants if force or not store.done(plan.keys[v], item.uri)
        )
        if not todo:
            continue
        torch = None if force else store.read(plan.torch_key, item.uri)
        jobs.append(Job(item, todo, torch if torch and torch.get("status") == "ok" else None))
    return sorted(jobs, key=lambda j: (-j.file.duration_s, j.file.uri))


# --- the worker -----------------------------------------------------------------------------


class EvaluationWorker:
    """Loads every variant's chain and both pipelines once, then scores file after file.

    Used as is by the serial loop and as a Ray actor (evaluate_ray.py). Torch and the BLAS
    under numpy (the MIL executor's matmuls) run on `torch_threads` threads (`pin_threads`):
    one per worker, so that N workers on N cores do not spin on each other, and so that a
    serial run and a Ray run compute the very same numbers."""

    def __init__(self, plan: EvaluationPlan, torch_threads: int = 1) -> None:
        from .chain import ChainModels
        from .compare import torch_models_for
        from .pipelines import converted_pipeline, make_pipeline

        self._blas_limits = pin_threads(torch_threads)
        options = plan.options
        self.plan = plan
        self.recipe = pipeline_recipe(options.pipeline)
        self.chains = {}
        self.pipelines = {}
        for variant in options.variants:
            paths = variant_paths(plan.models_dir, variant, self.recipe.chain)
            chain = ChainModels.load(paths, options.backend)
            self.chains[variant] = chain
            self.pipelines[variant] = converted_pipeline(
                chain, pipeline=self.recipe, step_s=options.step_s
            )
        fp32_paths = variant_paths(plan.models_dir, "fp32", self.recipe.chain)
        models = torch_models_for(fp32_paths, trust_checkpoint=options.trust_checkpoint)
        self.weights = dict(models.sources)
        self.torch_pipeline = make_pipeline(
            models.segmentation,
            models.embedding,
            pipeline=self.recipe,
            plda=models.plda if self.recipe.uses_plda else None,
            step_s=options.step_s,
        )

    def ready(self) -> bool:
        return True

    def cpu_settings(self) -> dict[str, Any]:
        """This process's niceness and thread pools: torch's and each BLAS/OpenMP library's
        (threadpoolctl's `internal_api` name -> threads). bench_evaluate.py records them."""
        import os

        import torch
        from threadpoolctl import threadpool_info

        pools = {p["internal_api"]: p["num_threads"] for p in threadpool_info()}
        return {"nice": os.nice(0), "threads": {"torch": torch.get_num_threads(), **pools}}

    def peak_memory_bytes(self) -> int:
        """This process's peak resident set (getrusage(2): ru_maxrss, KiB on Linux, bytes on
        macOS): what a Ray actor should declare as its `memory`."""
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)

    def _score(self, reference, hypothesis, item: CorpusFile, duration: float):
        from .compare import score

        o = self.plan.options
        return score(
            reference,
            hypothesis,
            duration,
            collar=o.collar,
            skip_overlap=o.skip_overlap,
            uem=item.uem,
        ).to_dict()

    def run(self, job: Job) -> JobOutcome:
        """Score `job`; every error becomes a failed record (the caller stores it)."""
        from coreml_diarize.audio import read_audio

        from .diarize import audio_file, diarize_samples, run_pipeline

        start = time.perf_counter()
        item = job.file
        try:
            loaded = read_audio(item.audio)
            samples, rate = loaded.samples, loaded.sample_rate
            duration = samples.size / rate
            if job.torch is not None:
                torch_record = job.torch
                new_torch = None
            else:
                annotation, seconds = run_pipeline(
                    self.torch_pipeline, audio_file(samples, rate, item.uri)
                )
                torch_record = new_torch = {
                    "uri": item.uri,
                    "status": "ok",
                    "pipeline": self.recipe.name,
                    "duration_s": duration,
                    "seconds": seconds,
                    "rtf": seconds / duration,
                    "weights": self.weights,
                    "segments": segments_of(annotation),
                }
        except Exception as exc:  # noqa: BLE001 - recorded, the corpus goes on
            error = _one_line(exc)
            return JobOutcome(
                item.uri,
                None,
                {v: failed_record(item.uri, error, variant=v) for v in job.variants},
                time.perf_counter() - start,
            )
        torch_annotation = annotation_of(torch_record["segments"], item.uri)
        records = {}
        for variant in job.variants:
            try:
                result = diarize_samples(
                    samples,
                    self.chains[variant],
                    sample_rate=rate,
                    uri=item.uri,
                    pipeline=self.recipe,
                    built=self.pipelines[variant],
                )
                record = {
                    "uri": item.uri,
                    "status": "ok",
                    "variant": variant,
                    "pipeline": self.recipe.name,
                    "bundle": self.plan.bundles[variant],
                    "packages": self.plan.packages.get(variant, []),
                    "duration_s": duration,
                    "converted": {
                        "seconds": result.seconds,
                        "rtf": result.rtf,
                        "windows": result.windows,
                        "backend": result.backend,
                        "segments": segments_of(result.annotation),
                    },
                    "torch": {"seconds": torch_record["seconds"], "rtf": torch_record["rtf"]},
                    "converted_vs_torch": self._score(
                        torch_annotation, result.annotation, item, duration
                    ),
                    "vs_reference": {},
                }
                if item.reference is not None:
                    record["vs_reference"] = {
                        "converted": self._score(item.reference, result.annotation, item, duration),
                        "torch": self._score(item.reference, torch_annotation, item, duration),
                    }
            except Exception as exc:  # noqa: BLE001
                record = failed_record(item.uri, _one_line(exc), variant=variant)
            records[variant] = record
        return JobOutcome(item.uri, new_torch, records, time.perf_counter() - start)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = (
        f" (at {Path(where[0].filename).name}:{where[0].lineno})"
        if where and not isinstance(exc, DiarizeError)
        else ""
    )
    return f"{type(exc).__name__}: {text[0] if text else ''}{at}"


# --- running ---------------------------------------------------------------------------------


def pin_threads(threads: int):
    """Torch's intra-op pool and every BLAS/OpenMP pool threadpoolctl finds (OpenBLAS under
    numpy) limited to `threads` for the rest of this process; returns threadpoolctl's limiter
    (its `restore_original_limits()` undoes the BLAS part).

    Why BLAS too: Ray sets OMP_NUM_THREADS for an actor only once the worker process runs it
    (ray/_private/utils.py `set_omp_num_threads_if_unset`), after the worker has imported
    numpy, so OpenBLAS has already sized its pool to every core; two actors on two cores then
    run four BLAS threads."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    return threadpool_limits(limits=threads)


def serial_outcomes(plan: EvaluationPlan, jobs: list[Job]) -> Iterator[JobOutcome]:
    """The plain loop (`--workers 1`): one worker in this process, no Ray. The worker pins
    this process's thread pools (`pin_threads`): they are put back when the loop ends."""
    if not jobs:
        return
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # restores the BLAS pools' sizes on exit
            worker = EvaluationWorker(plan)
            for job in jobs:
                yield worker.run(job)
    finally:
        torch.set_num_threads(threads)
