"""The quantization ladder of one trained fixture, judged on held-out material only (issue #24).

Rows: fp32, fp16, uniform palettize 8 / 6 / 4 (`quantize_package`, fp16 programs with fp16
tables, the spec's default exclusions) and every `--recipe FILE` (a mixed recipe, quantize/
mixed_recipes/*.json). Per row:

* size (bytes of the package) and bits per weight over the palettizable weights (the consts of
  more than `weight_threshold` elements that the spec does not keep uncompressed);
* held-out quality, through the MIL executor (validation/mil):
  - WeSpeaker: cosine to fp32 PyTorch (mean, worst) on held-out voices (training/
    evaluate_embedding's set, clean and 20 dB), each utterance tiled to the package's 10 s and
    pooled with a full mask; speaker-ID accuracy with evaluate_embedding's protocol (enrol 3,
    cosine to the mean), computed in PyTorch with the package's own dequantized weights (the
    executor runs one 3 x 10 s call in 2-8 s on this machine: 480 utterances per row would be
    an hour; the cosine rows say how close the executor is to that);
  - segmentation: decisive (top-2 margin >= 1 nat) argmax agreement and mean |error| / spread
    against fp32 PyTorch on evaluate_segmentation's held-out chunks (seed 2014);
* the same metrics on the spec's validation inputs (what `validate` judges), for tolerances;
* chain DER against the fp32 PyTorch pipeline on held-out synthetic meetings
  (training/heldout_recording.py), pipelines 3.1 (online chain) and community-1 (offline chain),
  only the judged model swapped for the row's variant (online and offline package alike);
  the other packages fp32; their calls are memoised across rows (same inputs, same outputs);
* `inspect --ane`'s static prediction: eligible share of ops and of FLOPs, CPU<->ANE switches.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize_ladder.py --model wespeaker_v2 \
        [--recipe quantize/mixed_recipes/X.json ...] [--front-end factored] \
        --out docs/ladder/wespeaker_v2.json [--plot docs/ladder/wespeaker_v2.png]

Built packages are cached under --cache (default /tmp/ladder).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402
from ladder_judges import (  # noqa: E402
    ChainJudge,
    const_values,
    embedding_material,
    embedding_quality,
    meetings,
    segmentation_material,
    segmentation_quality,
    validation_inputs_quality,
    weight_name,
)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = {
    "segmentation": REPO / "tests" / "fixtures" / "segmentation-synthetic",
    "embedding": REPO / "tests" / "fixtures" / "embedding-synthetic",
}
UNIFORM = {
    "fp32": None,
    "fp16": {"mode": "fp16"},
    "palettize8": {"mode": "palettize", "nbits": 8},
    "palettize6": {"mode": "palettize", "nbits": 6},
    "palettize4": {"mode": "palettize", "nbits": 4},
}
PIPELINES = ("3.1", "community-1")


@dataclass(frozen=True)
class Judged:
    """The model whose variants a ladder compares: its online and offline registry keys."""

    online: str
    offline: str
    family: str


MODELS = {
    "wespeaker_v2": Judged("embedding", "offline-embedding", "embedding"),
    "pyannote_segmentation": Judged("segmentation", "offline-segmentation", "segmentation"),
}


# --- packages -------------------------------------------------------------------------------


def fp32_dir(cache: Path, front_end: str) -> Path:
    """Every package of both chains, fp32, converted from the trained fixtures (PLDA seeded).
    With another `front_end`, the dense folder's packages linked, wespeaker_v2 converted anew
    with `Options(fbank_front_end=front_end)`."""
    dense = cache / "fp32"
    if front_end != "dense":
        out = cache / f"fp32_{front_end}"
        if not (out / "wespeaker_v2.mlpackage").is_dir():
            from coreml_diarize.context import make_context
            from coreml_diarize.converters.convert import convert_model
            from coreml_diarize.models import registry
            from coreml_diarize.specs import Options

            fp32_dir(cache, "dense")
            out.mkdir(parents=True, exist_ok=True)
            for item in dense.iterdir():
                if item.name != "wespeaker_v2.mlpackage" and not (out / item.name).exists():
                    (out / item.name).symlink_to(item.resolve())
            spec = registry()["embedding"]
            options = Options(fbank_front_end=front_end)
            ctx = make_context(spec, source=str(FIXTURES["embedding"]), options=options)
            convert_model(spec, ctx, out)
        return out
    out = dense
    if (out / "PldaRho.mlpackage").is_dir():
        return out
    command = [
        str(REPO / ".venv" / "bin" / "coreml-diarize"),
        "convert",
        "all",
        "--source",
        "random:0",
        "--segmentation-source",
        str(FIXTURES["segmentation"]),
        "--embedding-source",
        str(FIXTURES["embedding"]),
        "--plda-source",
        "random:0",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True)
    return out


def mixed_config(recipe: dict[str, Any], names: dict[str, str] | None = None):
    """A mixed recipe file as a QuantizeConfig (helper A's mode), its `bits` renamed for another
    package of the same weights (`names`: online const name -> this package's)."""
    from coreml_diarize.quantize import QuantizeConfig

    data = {k: v for k, v in recipe.items() if k not in ("schema", "model", "search")}
    if names is not None:
        data["bits"] = {names[k]: v for k, v in recipe["bits"].items() if k in names}
    return QuantizeConfig.from_mapping(data)


def same_weight_names(a: Path, b: Path) -> dict[str, str]:
    """Const name in package `a` -> the name of the identical constant in package `b` (the online
    and offline packages of one network number their consts differently)."""

    def digest(v: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()

    by_digest = {digest(v): k for k, v in const_values(b).items()}
    return {k: by_digest[digest(v)] for k, v in const_values(a).items() if digest(v) in by_digest}


def build_row(src: Path, row: str, setting: Any, cache: Path) -> Path:
    """The row's variant of the fp32 package `src` (cached)."""
    from coreml_diarize.quantize import QuantizeConfig, quantize_package

    if setting is None:
        return src
    dst = cache / "variants" / src.parent.name / f"{src.stem}_{row}.mlpackage"
    if dst.is_dir():
        return dst
    config = setting if isinstance(setting, QuantizeConfig) else QuantizeConfig(**setting)
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_package(src, dst, config)
    return dst


def bits_per_weight(variant: Path, fp32: Path, spec) -> dict[str, float]:
    """Mean stored bits per element over the palettizable weights (consts of > 2048 elements
    not in the spec's `uncompressed`), and over every weight of that size."""
    from coreml_diarize.mlpackage import load_program

    keep = set(spec.uncompressed_consts())
    sizes = {k: v.size for k, v in const_values(fp32).items()}
    bits: dict[str, float] = {}
    for op in load_program(variant).functions["main"].operations:
        name = weight_name(op)
        if name not in sizes or op.op_type not in ("const", "constexpr_lut_to_dense"):
            continue
        if op.op_type == "const":
            bits[name] = 8 * op.outputs[0].val.dtype.itemsize
        elif op.op_type == "constexpr_lut_to_dense":
            lut = op.lut.val
            bits[name] = float(np.log2(lut.shape[-2] if lut.ndim > 1 else lut.shape[0]))
        else:  # other compression ops: leave the row without a figure rather than guess
            bits[name] = float("nan")
    palettizable = [k for k in sizes if k not in keep]

    def mean(names: list[str]) -> float:
        return sum(bits[k] * sizes[k] for k in names) / sum(sizes[k] for k in names)

    return {
        "bits_per_weight": mean(palettizable),
        "bits_per_weight_all": mean(list(sizes)),
        "palettizable_elements": int(sum(sizes[k] for k in palettizable)),
        "widths": {
            str(b): int(sum(sizes[k] for k in palettizable if bits[k] == b))
            for b in set(bits[k] for k in palettizable)
        },
    }


def ane_figures(path: Path) -> dict[str, Any]:
    from coreml_diarize.validation.ane import ane_report

    report = ane_report(path)
    return {
        "ops": report.op_count,
        "eligible_ops": report.eligible_count,
        "eligible_op_share": report.eligible_share,
        "eligible_flop_share": report.eligible_flop_share,
        "switches": report.switches,
    }


# --- held-out quality -----------------------------------------------------------------------


# --- chain DER ------------------------------------------------------------------------------


# --- the ladder -----------------------------------------------------------------------------


def pareto(rows: list[dict[str, Any]], cost: str) -> list[str]:
    """Rows no other row beats on both size and `cost` (smaller is better for both)."""
    front = []
    for r in rows:
        if r.get(cost) is None:
            continue
        dominated = any(
            o is not r
            and o.get(cost) is not None
            and o["bytes"] <= r["bytes"]
            and o[cost] <= r[cost]
            and (o["bytes"] < r["bytes"] or o[cost] < r[cost])
            for o in rows
        )
        if not dominated:
            front.append(r["row"])
    return front


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, marker in zip(result["pipelines"], ("o", "s"), strict=False):
        cost = f"der_{name}"
        pts = [(r["bytes"] / 1e6, 100 * r[cost], r["row"]) for r in rows if r.get(cost) is not None]
        if not pts:
            continue
        ax.scatter(
            [p[0] for p in pts], [p[1] for p in pts], marker=marker, label=f"pipeline {name}"
        )
        for x, y, label in pts:
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        front = sorted((p for p in pts if p[2] in result["pareto"][name]), key=lambda p: p[0])
        ax.plot([p[0] for p in front], [p[1] for p in front], linestyle="--", linewidth=0.8)
    ax.axhline(1.0, color="grey", linewidth=0.6, linestyle=":")
    if "goal_mb" in result:
        ax.axvline(result["goal_mb"], color="grey", linewidth=0.6, linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("package size (MB, log scale)")
    ax.set_ylabel("chain DER vs fp32 PyTorch (%)")
    ax.set_title(
        f"{result['model']}: size vs chain DER, held-out meetings\n(dashed: Pareto front; both pipelines)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--recipe", type=Path, action="append", default=[], help="mixed recipe")
    parser.add_argument("--rows", default=",".join(UNIFORM), help="uniform rows to run")
    parser.add_argument("--front-end", choices=("dense", "factored"), default="dense")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ladder"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--meetings", type=int, default=2)
    parser.add_argument("--meeting-seconds", type=float, default=30.0)
    parser.add_argument("--step", type=float, default=2.5, help="window step (s), both sides")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--chunks", type=int, default=32, help="held-out segmentation chunks")
    parser.add_argument("--speakers", type=int, default=30, help="executor cosine: speakers")
    parser.add_argument("--no-chain", action="store_true")
    parser.add_argument("--no-speaker-id", action="store_true", help="WeSpeaker: skip speaker ID")
    parser.add_argument("--no-validation-inputs", action="store_true")
    parser.add_argument("--force", action="store_true", help="recompute cached rows")
    parser.add_argument("--cached-only", action="store_true", help="report only finished rows")
    parser.add_argument("--markdown", type=Path, default=None, help="write the docs table here")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO))
    import torch

    from coreml_diarize.models import registry
    from coreml_diarize.sources import load_weights

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    started = time.perf_counter()
    judged = MODELS[args.model]
    spec = registry()[judged.online]
    fp32 = fp32_dir(args.cache, args.front_end)
    online_fp32 = fp32 / f"{spec.filename}.mlpackage"
    offline_fp32 = fp32 / f"{registry()[judged.offline].filename}.mlpackage"
    settings: dict[str, tuple[Any, Any]] = {}
    for row in filter(None, args.rows.split(",")):
        settings[row] = (UNIFORM[row], UNIFORM[row])
    if args.recipe:
        names = same_weight_names(online_fp32, offline_fp32)
        for path in args.recipe:
            recipe = json.loads(path.read_text())
            settings[f"mixed_{path.stem}"] = (mixed_config(recipe), mixed_config(recipe, names))

    pipelines = tuple(p for p in args.pipelines.split(",") if p)
    lazy: dict[str, Any] = {}  # weights, material, chain: built at the first row not cached

    def judges() -> dict[str, Any]:
        if not lazy:
            lazy["weights"] = load_weights(judged.family, str(FIXTURES[judged.family]))
            model = lazy["weights"].model
            if judged.family == "embedding":
                lazy["material"] = embedding_material(model, args.speakers, args.cache)
            else:
                lazy["material"] = segmentation_material(model, args.chunks)
            lazy["chain"] = None
            if not args.no_chain:
                lazy["chain"] = ChainJudge(fp32, judged, args.step, pipelines, args.cache)
                lazy["meetings"] = meetings(args.cache, args.meetings, args.meeting_seconds)
        return lazy

    rows = []
    for row, (online_setting, offline_setting) in settings.items():
        t0 = time.perf_counter()
        package = build_row(online_fp32, row, online_setting, args.cache)
        offline = build_row(offline_fp32, row, offline_setting, args.cache)
        stored = row_cache(args, package, offline)
        if stored.is_file() and not args.force:
            rows.append(json.loads(stored.read_text()))
            continue
        if args.cached_only:  # the static figures only
            entry = {"row": row, "package": package.name, "bytes": _size(package)}
            entry.update(bits_per_weight(package, online_fp32, spec))
            entry["ane"] = ane_figures(package)
            rows.append(entry)
            continue
        weights, material, chain = (judges()[k] for k in ("weights", "material", "chain"))
        entry: dict[str, Any] = {"row": row, "package": package.name, "bytes": _size(package)}
        entry["offline_bytes"] = _size(offline)
        entry.update(bits_per_weight(package, online_fp32, spec))
        entry["ane"] = ane_figures(package)
        if judged.family == "embedding":
            entry["heldout"] = embedding_quality(
                package, online_fp32, weights.model, material, speaker_id=not args.no_speaker_id
            )
        else:
            entry["heldout"] = segmentation_quality(package, material)
        if not args.no_validation_inputs:
            entry["validation_inputs"] = validation_inputs_quality(package, judged.family)
        if chain is not None:
            for name in pipelines:
                is_fp32 = online_setting is None
                chosen = None if is_fp32 else (package if name == "3.1" else offline)
                entry[f"chain_{name}"] = chain.der(name, chosen, lazy["meetings"])
                entry[f"der_{name}"] = entry[f"chain_{name}"]["der_vs_torch"]
                entry[f"chain_{name}"]["torch_der_vs_reference"] = chain.torch_vs_reference(
                    name, lazy["meetings"]
                )
        entry["seconds"] = time.perf_counter() - t0
        entry["load_average"] = list(os.getloadavg())
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(entry, sort_keys=True))
        rows.append(entry)
        print(
            f"{row}: {entry['bytes'] / 1e6:.2f} MB, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    result: dict[str, Any] = {
        "model": args.model,
        "front_end": args.front_end,
        "pipelines": list(pipelines),
        "rows": rows,
        "goal_mb": 4.0 if judged.family == "embedding" else 1.0,
        "material": _material_note(args.model, args),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "seconds": time.perf_counter() - started,
    }
    if not args.no_chain:
        result["pareto"] = {name: pareto(rows, f"der_{name}") for name in pipelines}
        result["torch_der_vs_reference"] = {
            name: next(
                (
                    r[f"chain_{name}"]["torch_der_vs_reference"]
                    for r in rows
                    if f"chain_{name}" in r and "torch_der_vs_reference" in r[f"chain_{name}"]
                ),
                None,
            )
            or stored_torch_der(args, name)
            for name in pipelines
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emit(result, args.out)
    if args.plot is not None and not args.no_chain:
        plot(result, args.plot)
    if args.markdown is not None:
        args.markdown.write_text(markdown_table(result) + "\n")
    return 0


def row_cache(args, package: Path, offline: Path) -> Path:
    """Where a row's figures are kept: keyed by both packages' tree hashes and the material."""
    from coreml_diarize.mlpackage import tree_hash

    fields = [tree_hash(package)[0], tree_hash(offline)[0], _material_note(args.model, args)]
    fields.append(args.no_chain)
    if args.no_speaker_id or args.no_validation_inputs:  # (keys of full rows stay as they were)
        fields += [args.no_speaker_id, args.no_validation_inputs]
    key = json.dumps(fields)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return args.cache / "results" / args.model / f"{package.stem}_{digest}.json"


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f} %"


def markdown_table(result: dict[str, Any]) -> str:
    """One docs table: variant, size, bits/weight, held-out quality, chain DER, ANE share."""
    embedding = MODELS[result["model"]].family == "embedding"
    quality = (
        "cosine mean / worst (executor) | speaker ID clean / 20 dB (fp32: see first row)"
        if embedding
        else "decisive agreement pooled / worst chunk | error/spread worst"
    )
    head = (
        f"| variant | MB | bits/weight | {quality} | DER 3.1 | DER community-1 | ANE ops (FLOPs) |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in result["rows"]:
        h = r.get("heldout")
        if h is None:
            q = "– | –"
        elif embedding:
            sid = h.get("speaker_id") or {}
            acc = [sid.get(k, {}).get("accuracy") for k in ("clean", "snr20")]
            q = f"{h['cosine_mean']:.5f} / {h['cosine_worst']:.5f} | " + " / ".join(
                _pct(a, 1) for a in acc
            )
        else:
            q = (
                f"{_pct(h['decisive_agreement_pooled'])} / {_pct(h['decisive_agreement_worst'])}"
                f" | {h['rel_worst']:.4f}"
            )
        ane = r.get("ane")
        ane_text = (
            f"{100 * ane['eligible_op_share']:.1f} % ({100 * ane['eligible_flop_share']:.1f} %)"
            if ane
            else "–"
        )
        bits = f"{r['bits_per_weight']:.2f}" if "bits_per_weight" in r else "–"
        lines.append(
            f"| {r['row']} | {r['bytes'] / 1e6:.3f} | {bits} | {q} | {_pct(r.get('der_3.1'))} "
            f"| {_pct(r.get('der_community-1'))} | {ane_text} |"
        )
    return "\n".join(lines)


def stored_torch_der(args, name: str) -> float | None:
    """DER of the cached PyTorch annotations (ChainJudge) against the meetings' RTTMs."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.metrics.diarization import DiarizationErrorRate

    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
    for m in meetings(args.cache, args.meetings, args.meeting_seconds):
        stored = args.cache / "torch" / f"{name}_{m.uri}_step{args.step}.json"
        if not stored.is_file():
            return None
        torch_annotation = Annotation(uri=m.uri)
        for start, end, track, label in json.loads(stored.read_text()):
            torch_annotation[Segment(start, end), track] = label
        uem = Timeline([Segment(0.0, m.audio.size / 16000)])
        metric(m.reference, torch_annotation, uem=uem)
    return float(abs(metric))


def _size(path: Path) -> int:
    from coreml_diarize.mlpackage import package_size

    return package_size(path)


def _material_note(model: str, args) -> str:
    family = MODELS[model].family
    meetings_note = (
        f"chain: {args.meetings} held-out meetings x {args.meeting_seconds:g} s "
        f"(heldout_recording seeds 2014 + 100 i, 2/3 speakers), step {args.step:g} s"
    )
    if family == "embedding":
        return (
            "held-out voices (evaluate_embedding seed 2014: 30 speakers x 8 utterances, clean and "
            f"20 dB); executor cosine on the first utterance of {args.speakers} speakers per "
            "condition, tiled to 10 s, full mask; speaker ID in PyTorch with the package's "
            "dequantized weights; " + meetings_note
        )
    return (
        f"held-out chunks (evaluate_segmentation seed 2014, first {args.chunks}); " + meetings_note
    )


if __name__ == "__main__":
    raise SystemExit(main())
