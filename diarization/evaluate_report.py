"""The tables and report of `evaluate`, read back from the stored results.

The aggregate of a variant is pyannote.metrics' accumulated rate over all its files,
`abs(metric)` (pyannote/metrics/base.py `BaseMetric.__abs__`: the components summed over
files, then the rate), not a mean of per-file DERs: a long file weighs by its speech time.
Every metric is recomputed here from the stored segments, so per-file and aggregate figures
come from one code path. Written: report.json, per_file.csv, aggregate.csv, report.md and its
PNG plots beside it (matplotlib's object API, no pyplot state), each atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .corpus import CorpusFile
from .evaluate import EvaluationPlan, ResultStore, annotation_of

COMPONENTS = ("missed detection", "false alarm", "confusion")
SIDES = ("converted_vs_torch", "converted_vs_reference", "torch_vs_reference")


@dataclass
class EvaluationReport:
    options: dict[str, Any]
    per_file: list[dict[str, Any]] = field(default_factory=list)
    aggregate: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "options": self.options,
            "aggregate": self.aggregate,
            "per_file": self.per_file,
            "failures": self.failures,
        }


class _Accumulator:
    """DER (with components) and JER accumulated over files, pyannote.metrics' way."""

    def __init__(self, collar: float, skip_overlap: bool) -> None:
        from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

        self.der = DiarizationErrorRate(collar=collar, skip_overlap=skip_overlap)
        self.jer = JaccardErrorRate(collar=collar, skip_overlap=skip_overlap)
        self.files = 0

    def add(self, reference, hypothesis, uem) -> dict[str, float]:
        detail = self.der(reference, hypothesis, uem=uem, detailed=True)
        jer = float(self.jer(reference, hypothesis, uem=uem))
        self.files += 1
        return _scores(detail, jer)

    def total(self) -> dict[str, float] | None:
        if not self.files:
            return None
        totals = dict(self.der.accumulated_)
        return _scores({**totals, "diarization error rate": abs(self.der)}, abs(self.jer))


def _scores(detail: dict[str, float], jer: float) -> dict[str, float]:
    total = float(detail["total"])
    out = {"der": float(detail["diarization error rate"]), "jer": jer, "total_s": total}
    for name in COMPONENTS:  # as shares of the scored speech, like the DER
        out[name.replace(" ", "_")] = float(detail[name]) / total if total > 0 else math.nan
    return out


def build_report(
    files: list[CorpusFile], plan: EvaluationPlan, out: Path | str
) -> EvaluationReport:
    """Per-file rows and per-variant aggregates for `files`, from the results under `out`."""
    from pyannote.core import Segment, Timeline

    o = plan.options
    store = ResultStore(Path(out), plan)
    report = EvaluationReport(options={**_options(plan)})
    for variant in o.variants:
        acc = {side: _Accumulator(o.collar, o.skip_overlap) for side in SIDES}
        seconds = {"converted": 0.0, "torch": 0.0, "audio": 0.0}
        for item in files:
            record = store.read(plan.keys[variant], item.uri)
            if record is None:
                continue
            if record.get("status") != "ok":
                report.failures.append(
                    {"uri": item.uri, "variant": variant, "error": record.get("error")}
                )
                continue
            torch = store.read(plan.torch_key, item.uri)
            if torch is None or torch.get("status") != "ok":
                continue
            duration = float(record["duration_s"])
            uem = item.uem if item.uem is not None else Timeline([Segment(0.0, duration)])
            hyp = annotation_of(record["converted"]["segments"], item.uri)
            ref_torch = annotation_of(torch["segments"], item.uri)
            row: dict[str, Any] = {
                "uri": item.uri,
                "variant": variant,
                "duration_s": duration,
                "rtf_converted": record["converted"]["rtf"],
                "rtf_torch": torch["rtf"],
            }
            scored = {"converted_vs_torch": acc["converted_vs_torch"].add(ref_torch, hyp, uem)}
            if item.reference is not None:
                scored["converted_vs_reference"] = acc["converted_vs_reference"].add(
                    item.reference, hyp, uem
                )
                scored["torch_vs_reference"] = acc["torch_vs_reference"].add(
                    item.reference, ref_torch, uem
                )
            for side, values in scored.items():
                for name, value in values.items():
                    row[f"{side}.{name}"] = value
            report.per_file.append(row)
            seconds["converted"] += record["converted"]["seconds"]
            seconds["torch"] += torch["seconds"]
            seconds["audio"] += duration
        aggregate: dict[str, Any] = {
            "variant": variant,
            "files": acc["converted_vs_torch"].files,
            "audio_s": seconds["audio"],
            "rtf_converted": seconds["converted"] / seconds["audio"] if seconds["audio"] else None,
            "rtf_torch": seconds["torch"] / seconds["audio"] if seconds["audio"] else None,
        }
        for side in SIDES:
            total = acc[side].total()
            for name, value in (total or {}).items():
                aggregate[f"{side}.{name}"] = value
        report.aggregate.append(aggregate)
    _deltas(report.aggregate)
    return report


def _deltas(aggregate: list[dict[str, Any]]) -> None:
    """Per variant: its DER vs the reference minus fp32's, and minus PyTorch's (same files)."""
    fp32 = next((a for a in aggregate if a["variant"] == "fp32"), None)
    for row in aggregate:
        der = row.get("converted_vs_reference.der")
        torch = row.get("torch_vs_reference.der")
        base = fp32.get("converted_vs_reference.der") if fp32 else None
        row["der_delta_vs_fp32"] = der - base if der is not None and base is not None else None
        row["der_delta_vs_torch"] = der - torch if der is not None and torch is not None else None


def _options(plan: EvaluationPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        **asdict(plan.options),
        "models_dir": str(plan.models_dir),
        "bundles": plan.bundles,
        "keys": plan.keys,
        "torch_key": plan.torch_key,
        "packages": plan.packages,
    }


def packages_section(report: EvaluationReport) -> str:
    """Which packages each variant ran: a variant swaps only the models that have it, the
    others run their plain (fp32) package in every variant."""
    lines = []
    for variant, names in report.options.get("packages", {}).items():
        stems = [n.removesuffix(".mlpackage") for n in names]
        if variant == "fp32":
            lines.append(f"- fp32: {', '.join(stems)}")
            continue
        own = [s for s in stems if s.endswith(f"_{variant}")]
        plain = [s for s in stems if not s.endswith(f"_{variant}")]
        line = f"- {variant}: {', '.join(own)}"
        if plain:
            line += f"; fp32 (no {variant} variant): {', '.join(plain)}"
        lines.append(line)
    return "\n".join(lines)


# --- writing ----------------------------------------------------------------------------------


def _csv_text(rows: list[dict[str, Any]]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _pct(value: Any) -> str:
    return (
        "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.2%}"
    )


def _signed(value: Any) -> str:
    return "–" if value is None else f"{value * 100:+.2f} pt"


def _num(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def aggregate_table(report: EvaluationReport) -> str:
    """The aggregate as a Markdown table (also what the CLI prints)."""
    lines = [
        "| variant | files | audio (s) | DER vs ref | miss | FA | conf. | JER vs ref | "
        "PyTorch DER vs ref | Δ vs fp32 | Δ vs PyTorch | DER vs PyTorch | RTF | RTF PyTorch |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for a in report.aggregate:
        ref = "converted_vs_reference."
        lines.append(
            f"| {a['variant']} | {a['files']} | {a['audio_s']:.1f} | {_pct(a.get(ref + 'der'))} | "
            f"{_pct(a.get(ref + 'missed_detection'))} | {_pct(a.get(ref + 'false_alarm'))} | "
            f"{_pct(a.get(ref + 'confusion'))} | {_pct(a.get(ref + 'jer'))} | "
            f"{_pct(a.get('torch_vs_reference.der'))} | {_signed(a['der_delta_vs_fp32'])} | "
            f"{_signed(a['der_delta_vs_torch'])} | {_pct(a.get('converted_vs_torch.der'))} | "
            f"{_num(a['rtf_converted'])} | {_num(a['rtf_torch'])} |"
        )
    return "\n".join(lines)


def _per_file_table(report: EvaluationReport) -> str:
    lines = [
        "| file | variant | s | DER vs ref | PyTorch DER vs ref | DER vs PyTorch | JER vs ref | RTF | RTF PyTorch |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report.per_file:
        lines.append(
            f"| {r['uri']} | {r['variant']} | {r['duration_s']:.1f} | "
            f"{_pct(r.get('converted_vs_reference.der'))} | {_pct(r.get('torch_vs_reference.der'))} | "
            f"{_pct(r.get('converted_vs_torch.der'))} | {_pct(r.get('converted_vs_reference.jer'))} | "
            f"{_num(r['rtf_converted'])} | {_num(r['rtf_torch'])} |"
        )
    return "\n".join(lines)


def _plots(report: EvaluationReport) -> dict[str, Any]:
    """name -> matplotlib Figure: per-file DER by variant, error components, RTF."""
    import numpy as np
    from matplotlib.figure import Figure

    variants = [a["variant"] for a in report.aggregate]
    uris = list(dict.fromkeys(r["uri"] for r in report.per_file))
    has_ref = any("converted_vs_reference.der" in r for r in report.per_file)
    side = "converted_vs_reference" if has_ref else "converted_vs_torch"
    figures: dict[str, Any] = {}

    fig = Figure(figsize=(max(6, 0.6 * len(uris) * max(1, len(variants))), 4))
    ax = fig.subplots()
    width = 0.8 / max(1, len(variants) + has_ref)
    x = np.arange(len(uris))
    for i, variant in enumerate(variants):
        values = {
            r["uri"]: r.get(f"{side}.der", np.nan)
            for r in report.per_file
            if r["variant"] == variant
        }
        ax.bar(x + i * width, [100 * values.get(u, np.nan) for u in uris], width, label=variant)
    if has_ref:
        torch = {r["uri"]: r.get("torch_vs_reference.der", np.nan) for r in report.per_file}
        ax.bar(
            x + len(variants) * width,
            [100 * torch.get(u, np.nan) for u in uris],
            width,
            label="PyTorch",
        )
    ax.set_xticks(x + width * (len(variants) + has_ref - 1) / 2, uris, rotation=45, ha="right")
    ax.set_ylabel("DER (%) vs " + ("reference" if has_ref else "PyTorch"))
    ax.set_title("Per-file DER by variant")
    ax.legend()
    fig.tight_layout()
    figures["der_per_file.png"] = fig

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    agg_side = "converted_vs_reference" if has_ref else "converted_vs_torch"
    labels = list(variants) + (["PyTorch"] if has_ref else [])
    bottom = np.zeros(len(labels))
    for name in ("missed_detection", "false_alarm", "confusion"):
        values = [100 * (a.get(f"{agg_side}.{name}") or 0.0) for a in report.aggregate]
        if has_ref:
            first = report.aggregate[0] if report.aggregate else {}
            values.append(100 * (first.get(f"torch_vs_reference.{name}") or 0.0))
        ax.bar(labels, values, bottom=bottom, label=name.replace("_", " "))
        bottom += np.array(values)
    ax.set_ylabel("share of scored speech (%)")
    ax.set_title("Error components (accumulated over the corpus)")
    ax.legend()
    fig.tight_layout()
    figures["error_components.png"] = fig

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    rtf = [a["rtf_converted"] or 0.0 for a in report.aggregate]
    torch_rtf = report.aggregate[0]["rtf_torch"] if report.aggregate else None
    ax.bar(variants + ["PyTorch"], rtf + [torch_rtf or 0.0], color="tab:gray")
    ax.axhline(1.0, linestyle="--", linewidth=1)
    ax.set_ylabel("real-time factor (processing / audio)")
    ax.set_title("RTF")
    fig.tight_layout()
    figures["rtf.png"] = fig
    return figures


def write_report(report: EvaluationReport, out: Path | str) -> dict[str, Path]:
    """report.json, per_file.csv, aggregate.csv, report.md and its PNGs, under `out`."""
    from coreml_diarize.atomic import atomic_path

    out = Path(out)
    written: dict[str, Path] = {}

    def put(name: str, text: str) -> None:
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
        written[name] = out / name

    put("report.json", json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
    put("per_file.csv", _csv_text(report.per_file))
    put("aggregate.csv", _csv_text(report.aggregate))
    pictures = []
    if report.per_file:
        for name, figure in _plots(report).items():
            with atomic_path(out / name) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
            written[name] = out / name
            pictures.append(f"![{name}]({name})")
    o = report.options
    failures = "\n".join(f"- {f['uri']} ({f['variant']}): {f['error']}" for f in report.failures)
    markdown = "\n\n".join(
        [
            "# Diarization error over the corpus",
            f"Pipeline {o['pipeline']}, packages in `{o['models_dir']}`, collar {o['collar']:g} s, "
            f"overlap {'skipped' if o['skip_overlap'] else 'scored'}. Aggregates are "
            "pyannote.metrics' accumulated rates over all files (not means of per-file rates); "
            "Δ are DER differences vs the reference in percentage points.",
            "## Aggregate",
            aggregate_table(report),
            "Packages each variant ran:",
            packages_section(report) or "(not recorded)",
            *pictures,
            "## Per file",
            _per_file_table(report),
            "## Failures",
            failures or "None.",
        ]
    )
    put("report.md", markdown + "\n")
    return written
