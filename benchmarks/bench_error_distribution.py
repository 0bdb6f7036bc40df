"""How far saved packages are from their references, measured over a corpus: the numbers every
validation bound is derived from (docs/validation.md).

For each model x precision x weights source, the package is converted (fp32) or quantized from
the fp32 package (fp16, palettize8: `quantize_package`, as `build` makes them), run through the
MIL executor on every chunk of the corpus, and compared with the model's reference. For
segmentation the float32 rounding floor (the converted wrapper in torch fp32 vs float64) is
measured on every chunk too, and reported as its own backend row ("torch-fp32 vs fp64").

Corpus (10 s chunks): the built-in validation signals, pyannote's bundled sample in sliding
windows (`--hop` s), and synthetic espeak-ng conversations (training/corpus.py, held-out
voices and words, drawn deterministically from each seed). Sources default to random:0..4 plus
the trained fixture tests/fixtures/segmentation-synthetic when its checkpoint is present.

    python benchmarks/bench_error_distribution.py [--models segmentation,...] [--out FILE]
        [--sources random:0,random:1] [--synthetic 12] [--embedding-chunks 30] [--per-chunk]

Segmentation metrics per chunk (`segments`, log-probabilities): `log_max_abs`, `prob_max_abs`
(max |exp(got) - exp(ref)|), `log_mean_abs`, `rel_spread` (mean abs / the reference's spread
over the source's corpus), `argmax_decisive` (argmax agreement on frames whose reference top-2
margin is >= 1 nat), `argmax_1e-3` (margin > 1e-3, the fp32 rule's margin), and the judge's
verdict with the spec's tolerances (`judge_failures`). Each metric is summarised by its worst
case, 99th percentile, median and best case over the chunks.
"""

from __future__ import annotations

import argparse
import copy
import math
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # training/
from common import emit  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "segmentation-synthetic"
RECIPES = {
    "fp32": None,
    "fp16": {"mode": "fp16"},
    "palettize8": {"mode": "palettize", "nbits": 8},
}
# metrics where larger is worse (the rest: smaller is worse)
WORSE_HIGH = {
    "log_max_abs",
    "prob_max_abs",
    "log_mean_abs",
    "rel_spread",
    "max_abs",
    "mean_abs",
    "relative_max_abs",
    "floor_log_max_abs",
    "floor_prob_max_abs",
}


# --- corpus ------------------------------------------------------------------------------------


def sample_chunks(hop_s: float = 1.0, n: int = 160000) -> dict[str, np.ndarray]:
    """pyannote's 30 s sample in sliding 10 s windows."""
    from coreml_diarize import signals

    total = 30.0
    offsets = np.arange(0.0, total - n / signals.SAMPLE_RATE + 1e-9, hop_s)
    return {f"sample@{o:g}s": signals.real_speech(float(o), n) for o in offsets}


def synthetic_chunks(seed: int, count: int) -> dict[str, np.ndarray]:
    """`count` espeak-ng conversations (held-out voices and words), deterministic in `seed`."""
    if count <= 0 or shutil.which("espeak-ng") is None:
        return {}
    from training.corpus import CorpusConfig, build_pool, median_f0, mix_conversation

    cfg = replace(CorpusConfig.heldout(speakers=6, utterances_per_speaker=4), min_f0_ratio=1.1)
    _, pool = build_pool(cfg, seed=1000 + seed)
    f0 = [median_f0(utts) for utts in pool]
    rng = np.random.default_rng(2000 + seed)
    return {
        f"synthetic{seed}#{i}": mix_conversation(pool, rng, cfg, f0).audio for i in range(count)
    }


def corpus(seeds: list[int], synthetic: int, hop_s: float = 1.0) -> dict[str, np.ndarray]:
    """Built-in signals + sample windows + `synthetic` conversations per seed."""
    from coreml_diarize import signals

    chunks = dict(signals.standard_signals())
    chunks.update(sample_chunks(hop_s))
    for seed in seeds:
        chunks.update(synthetic_chunks(seed, synthetic))
    return chunks


# --- packages ----------------------------------------------------------------------------------


def make_packages(spec, ctx, recipes: list[str], out_dir: Path) -> dict[str, Path]:
    """recipe -> package: fp32 converted, the others quantized from it (as `build` does)."""
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    fp32 = convert_model(spec, ctx, out_dir).path
    packages = {"fp32": fp32}
    for recipe in recipes:
        if recipe == "fp32":
            continue
        if spec.weights is None:  # weightless models: an fp16 conversion
            fp16_ctx = replace(ctx, options=replace(ctx.options, precision="fp16"))
            sub = out_dir / recipe
            sub.mkdir(exist_ok=True)
            packages[recipe] = convert_model(spec, fp16_ctx, sub).path
        else:
            packages[recipe] = quantize_package(
                fp32, out_dir, QuantizeConfig(**RECIPES[recipe])
            ).dst
    return {r: packages[r] for r in recipes}


def fp32_floor(spec, ctx):
    """inputs -> (float32 outputs, float64 outputs) of the converted wrapper in torch."""
    import torch

    w32 = spec.build_wrapper(ctx).eval()
    w64 = copy.deepcopy(w32).double()
    names = [t.name for t in spec.inputs]
    outputs = [t.name for t in spec.outputs]

    def run(inputs):
        args = [torch.from_numpy(np.asarray(inputs[n], dtype=np.float32)) for n in names]
        with torch.inference_mode():
            a = w32(*args)
            b = w64(*[x.double() for x in args])
        a, b = (a,) if torch.is_tensor(a) else a, (b,) if torch.is_tensor(b) else b
        return (
            {k: x.numpy() for k, x in zip(outputs, a, strict=True)},
            {k: y.numpy() for k, y in zip(outputs, b, strict=True)},
        )

    return run


# --- metrics -----------------------------------------------------------------------------------


def segment_metrics(ref: np.ndarray, got: np.ndarray, spread: float) -> dict[str, float]:
    from coreml_diarize.validation import metrics

    ref64, got64 = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    mean_abs = float(np.mean(np.abs(ref64 - got64)))
    return {
        "log_max_abs": float(np.max(np.abs(ref64 - got64))),
        "prob_max_abs": float(np.max(np.abs(np.exp(ref64) - np.exp(got64)))),
        "log_mean_abs": mean_abs,
        "rel_spread": mean_abs / spread if spread > 0 else math.nan,
        "argmax_decisive": metrics.argmax_agreement(ref, got, min_margin=1.0),
        "argmax_1e-3": metrics.argmax_agreement(ref, got, min_margin=1e-3),
    }


def output_metrics(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    from coreml_diarize.validation import metrics

    ref, got = np.asarray(ref, np.float32), np.asarray(got, np.float32)
    out = {"max_abs": metrics.max_abs(ref, got), "mean_abs": metrics.mean_abs(ref, got)}
    scale = float(np.max(np.abs(ref)))
    out["relative_max_abs"] = out["max_abs"] / scale if scale > 0 else out["max_abs"]
    return out


def summarise(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """metric -> worst, p99 (worst side), median, best, over the chunks."""
    out = {}
    for key in rows[0] if rows else ():
        values = np.array([r[key] for r in rows if r.get(key) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        if not values.size:
            continue
        high = key in WORSE_HIGH
        out[key] = {
            "worst": float(values.max() if high else values.min()),
            "p99": float(np.percentile(values, 99 if high else 1)),
            "median": float(np.median(values)),
            "best": float(values.min() if high else values.max()),
        }
    return out


# --- one model -------------------------------------------------------------------------------


def run_segmentation(sources, recipes, chunks, workdir, per_chunk, log) -> list[dict]:
    from coreml_diarize.context import make_context
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation import metrics
    from coreml_diarize.validation.judge import judge_output
    from coreml_diarize.validation.mil import MILExecutor

    spec = get_spec("segmentation")
    results: dict[tuple[str, str], dict] = {}
    for source, source_chunks in sources:
        ctx = make_context(spec, source=source)
        trained = ctx.weights.provenance.trained
        kind = "trained" if trained else "random"
        reference = spec.build_reference(ctx)
        floor = fp32_floor(spec, ctx)
        names = list(source_chunks)
        inputs = {n: {"audio": source_chunks[n][None, None, :]} for n in names}
        refs = {n: reference(inputs[n])["segments"] for n in names}
        spread = metrics.spread(list(refs.values()))
        floors = {n: floor(inputs[n]) for n in names}
        packages = make_packages(spec, ctx, recipes, Path(tempfile.mkdtemp(dir=workdir)))
        log(f"segmentation {source}: {len(names)} chunks, spread {spread:.3f}")
        rows_floor = []
        for n in names:
            f32, f64 = floors[n][0]["segments"], floors[n][1]["segments"]
            rows_floor.append({"chunk": n, **segment_metrics(f64, f32, spread)})
        _collect(results, ("torch-fp32 vs fp64", "fp32", kind), source, rows_floor, None)
        for recipe, path in packages.items():
            executor = MILExecutor.from_path(path)
            tol = spec.tolerance_for(recipe, trained=trained)["segments"]
            rows = []
            start = time.perf_counter()
            for n in names:
                got = executor.predict(inputs[n])["segments"]
                row = {"chunk": n, **segment_metrics(refs[n], got, spread)}
                if recipe == "fp32":
                    f32, f64 = floors[n][0]["segments"], floors[n][1]["segments"]
                    row["floor_log_max_abs"] = float(np.max(np.abs(f32 - f64)))
                    row["floor_prob_max_abs"] = float(
                        np.max(np.abs(np.exp(f32.astype(np.float64)) - np.exp(f64)))
                    )
                verdict = judge_output("segments", refs[n], got, tol, spread)
                row["failures"] = verdict.failures
                rows.append(row)
            log(f"  {recipe}: {time.perf_counter() - start:.1f} s")
            _collect(results, ("mil", recipe, kind), source, rows, tol)
    return _finish("segmentation", results, per_chunk)


def _collect(results, key, source, rows, tol) -> None:
    entry = results.setdefault(key, {"sources": [], "rows": [], "tolerance": None})
    entry["sources"].append(source)
    entry["rows"].extend(rows)
    if tol is not None:
        entry["tolerance"] = {k: v for k, v in vars(tol).items() if v is not None}


def _finish(model: str, results, per_chunk: bool) -> list[dict]:
    out = []
    for (backend, recipe, kind), entry in results.items():
        rows = entry["rows"]
        numeric = [
            {k: v for k, v in r.items() if isinstance(v, (int, float)) and k != "chunk"}
            for r in rows
        ]
        failed = [r for r in rows if r.get("failures")]
        item = {
            "model": model,
            "backend": backend,
            "precision": recipe,
            "weights": kind,
            "sources": entry["sources"],
            "chunks": len(rows),
            "metrics": summarise(numeric),
        }
        if entry["tolerance"] is not None:
            item["tolerance"] = entry["tolerance"]
            item["judge_failures"] = len(failed)
            item["judge_failure_examples"] = [
                f"{r['chunk']}: {r['failures'][0]}" for r in failed[:5]
            ]
        if per_chunk:
            item["per_chunk"] = rows
        out.append(item)
    return out


def run_embedding(seeds, recipes, chunks_per_seed, chunks, workdir, per_chunk, log) -> list[dict]:
    from coreml_diarize.context import make_context
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.judge import judge_output
    from coreml_diarize.validation.mil import MILExecutor
    from coreml_diarize.validation.reference_embedding import mask_rows

    spec = get_spec("embedding")
    results: dict = {}
    names = list(chunks)
    rng = np.random.default_rng(0)
    for seed in seeds:
        ctx = make_context(spec, source=f"random:{seed}")
        reference = spec.build_reference(ctx)
        g = ctx.geometry
        masks = mask_rows(g.embedding_batch, g.frames)
        active = masks.sum(1) > 0
        picked = [names[i] for i in sorted(rng.choice(len(names), chunks_per_seed, replace=False))]
        cases = {
            n: {"waveform": np.tile(chunks[n][None], (g.embedding_batch, 1)), "mask": masks}
            for n in picked
        }
        refs = {n: reference(cases[n])["embedding"] for n in picked}
        packages = make_packages(spec, ctx, recipes, Path(tempfile.mkdtemp(dir=workdir)))
        for recipe, path in packages.items():
            executor = MILExecutor.from_path(path)
            tol = spec.tolerance_for(recipe, trained=False)["embedding"]
            rows = []
            start = time.perf_counter()
            for n in picked:
                got = executor.predict(cases[n])["embedding"]
                verdict = judge_output("embedding", refs[n][active], got[active], tol, math.nan)
                rows.append(
                    {
                        "chunk": n,
                        "cosine_min": verdict.cosine_min,
                        **output_metrics(refs[n], got),
                        "failures": verdict.failures,
                    }
                )
            log(f"embedding random:{seed} {recipe}: {time.perf_counter() - start:.1f} s")
            _collect(results, ("mil", recipe, "random"), f"random:{seed}", rows, tol)
    return _finish("embedding", results, per_chunk)


def aux_cases(key: str, ctx, chunks, seg_logprobs) -> dict[str, dict[str, np.ndarray]]:
    """The spec's own inputs, plus inputs derived from the corpus (segmentation reference
    log-probabilities of random:0 weights -> masks, audio) or seeded random embeddings."""
    from coreml_diarize.models import get_spec

    spec = get_spec(key)
    cases = dict(spec.example_inputs(ctx))
    g = ctx.geometry
    rng = np.random.default_rng(0)
    for n, logp in seg_logprobs.items():
        masks = _powerset_masks(logp)
        if key == "postprocessor":
            cases[n] = {"segments": logp}
        elif key == "preprocessor":
            cases[n] = {"audio": chunks[n][None, None, :], "speaker_masks": masks}
        else:
            emb = rng.standard_normal((g.speakers, g.embedding_dim)).astype(np.float32)
            db = rng.standard_normal((int(rng.integers(1, 9)), g.embedding_dim)).astype(np.float32)
            cases[n] = {"embedding": emb, "speaker_db": db, "speaker_masks": masks}
    return cases


def _powerset_masks(logp: np.ndarray) -> np.ndarray:
    mapping = np.array(
        [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], np.float32
    )
    return mapping[np.argmax(logp, axis=-1)]


def run_aux(recipes, chunks, workdir, per_chunk, log) -> list[dict]:
    from coreml_diarize.context import make_context
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.judge import judge_output
    from coreml_diarize.validation.mil import MILExecutor

    seg = get_spec("segmentation")
    seg_ctx = make_context(seg, source="random:0")
    seg_ref = seg.build_reference(seg_ctx)
    logprobs = {n: seg_ref({"audio": x[None, None, :]})["segments"] for n, x in chunks.items()}
    out = []
    for key in ("postprocessor", "preprocessor", "post-embedding"):
        spec = get_spec(key)
        ctx = make_context(spec)
        reference = spec.build_reference(ctx)
        cases = aux_cases(key, ctx, chunks, logprobs)
        refs = {n: reference(c) for n, c in cases.items()}
        packages = make_packages(
            spec,
            ctx,
            [r for r in recipes if r in ("fp32", "fp16")],
            Path(tempfile.mkdtemp(dir=workdir)),
        )
        for recipe, path in packages.items():
            executor = MILExecutor.from_path(path)
            tols = spec.tolerance_for(recipe, trained=False)
            start = time.perf_counter()
            for t in spec.outputs:
                results: dict = {}
                rows = []
                for n, c in cases.items():
                    got = executor.predict(c)[t.name]
                    verdict = judge_output(t.name, refs[n][t.name], got, tols[t.name], math.nan)
                    rows.append(
                        {
                            "chunk": n,
                            **output_metrics(refs[n][t.name], got),
                            "failures": verdict.failures,
                        }
                    )
                _collect(results, ("mil", recipe, "none"), "-", rows, tols[t.name])
                (item,) = _finish(f"{key}.{t.name}", results, per_chunk)
                out.append(item)
            log(f"{key} {recipe}: {len(cases)} cases, {time.perf_counter() - start:.1f} s")
    return out


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="segmentation,embedding,auxiliary")
    parser.add_argument("--recipes", default="fp32,fp16,palettize8")
    parser.add_argument(
        "--sources",
        default=None,
        help="segmentation weights, comma-separated (default random:0..4 + the trained fixture)",
    )
    parser.add_argument("--synthetic", type=int, default=12, help="conversations per seed")
    parser.add_argument("--hop", type=float, default=1.0, help="sample window hop (s)")
    parser.add_argument("--embedding-seeds", default="0,1,2")
    parser.add_argument("--embedding-chunks", type=int, default=10, help="per seed")
    parser.add_argument("--per-chunk", action="store_true", help="keep every chunk's row")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def _corpora(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """(segmentation source, its chunks): random seeds get the shared chunks and that seed's
    conversations; a trained source gets the conversations of every seed."""
    if args.sources:
        source_names = args.sources.split(",")
    else:
        source_names = [f"random:{s}" for s in range(5)]
        if (FIXTURE / "pytorch_model.bin").exists():
            source_names.append(str(FIXTURE))
    sources = []
    for source in source_names:
        seeds = [int(source.split(":")[1])] if source.startswith("random:") else list(range(5))
        sources.append((source, corpus(seeds, args.synthetic, args.hop)))
    return sources


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    import torch

    torch.set_num_threads(1)
    models = args.models.split(",")
    recipes = args.recipes.split(",")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    sources = _corpora(args)
    first = sources[0][1]
    corpus_info = {source: len(chunks) for source, chunks in sources}
    result: dict = {
        "corpus": {
            "chunks_per_source": corpus_info,
            "synthetic_per_seed": args.synthetic,
            "sample_hop_s": args.hop,
        },
        "results": [],
    }
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="errdist-") as tmp:
        if "segmentation" in models:
            result["results"] += run_segmentation(
                sources, recipes, first, Path(tmp), args.per_chunk, log
            )
        if "auxiliary" in models:
            result["results"] += run_aux(recipes, first, Path(tmp), args.per_chunk, log)
        if "embedding" in models:
            seeds = [int(s) for s in args.embedding_seeds.split(",")]
            result["results"] += run_embedding(
                seeds, recipes, args.embedding_chunks, first, Path(tmp), args.per_chunk, log
            )
    result["seconds"] = time.perf_counter() - start
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
