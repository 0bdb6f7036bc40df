"""The quantization ladder's report (bench_quantize_ladder.py): the Pareto front, the
size-against-DER plot, the docs' markdown table and the material note."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ladder_judges import meetings
from ladder_packages import MODELS


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
    target = f", {result['target']} packages" if result.get("target") else ""
    ax.set_title(
        f"{result['model']}: size vs chain DER, held-out meetings{target}\n"
        "(dashed: Pareto front; both pipelines)",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


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


def material_note(model: str, args) -> str:
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
