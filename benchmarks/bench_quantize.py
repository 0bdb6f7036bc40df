"""Benchmark: quantization time per model and recipe, against the fp32 conversion of the same run.

    python benchmarks/bench_quantize.py --out bench_quantize.json [--include-embedding]
        [--recipes palettize8 linear8 ...] [--accuracy]

Each model is converted to fp32 once (the baseline: `seconds / convert_seconds` is the cost of
a recipe in units of a conversion on this machine, so numbers from busy or slow machines stay
comparable), then every recipe is applied to that saved package. `--accuracy` adds the
quantize report (MIL reference executor on Linux; slow) for each recipe.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

RECIPES = {
    "fp16": {"mode": "fp16"},
    "fp16-selective": {"mode": "fp16-selective"},
    "palettize8": {"mode": "palettize", "nbits": 8},
    "palettize6": {"mode": "palettize", "nbits": 6},
    "palettize4": {"mode": "palettize", "nbits": 4},
    "linear8": {"mode": "linear"},
}


def _has_embedding() -> bool:
    import importlib.util

    return importlib.util.find_spec("coreml_diarize.wrappers.embedding") is not None


def bench_model(
    key: str, recipes: list[str], work: Path, *, source: str, accuracy: bool, backend: str
) -> dict:
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.quantize import QuantizeConfig, quantize_package
    from coreml_diarize.validation.quantize_report import quantize_report

    spec = get_spec(key)
    start = time.perf_counter()
    ctx = make_context(spec, source=source)
    context_seconds = time.perf_counter() - start
    fp32 = convert_model(spec, ctx, work / key)
    row: dict = {
        "model": key,
        "source": source,
        "context_seconds": round(context_seconds, 3),
        "convert_seconds": round(fp32.seconds, 3),
        "fp32_size_bytes": fp32.size_bytes,
        "recipes": [],
    }
    for name in recipes:
        config = QuantizeConfig.from_mapping(RECIPES[name])
        result = quantize_package(fp32.path, work / key / "q", config)
        entry = {
            "recipe": config.name,
            "seconds": round(result.seconds, 3),
            "relative_to_conversion": round(result.seconds / fp32.seconds, 3),
            "size_bytes": result.size_after,
            "ratio": round(result.ratio, 3),
        }
        if accuracy:
            report = quantize_report(result.dst, ctx=ctx, backend=backend)
            torch_rows = [a for a in report.to_dict()["accuracy"] if a["against"] == "torch"]
            entry["accuracy"] = torch_rows
            entry["passed"] = report.passed
            entry["failures"] = report.failures
        print(
            f"{key:14} {config.name:16} {entry['seconds']:7.1f} s "
            f"({entry['relative_to_conversion']:.1f}x convert)  {result.size_after / 1e6:6.2f} MB "
            f"{result.ratio:5.2f}x",
            file=sys.stderr,
            flush=True,
        )
        row["recipes"].append(entry)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument(
        "--include-embedding", action="store_true", help="Also WeSpeaker (minutes)."
    )
    parser.add_argument("--recipes", nargs="+", choices=sorted(RECIPES), default=list(RECIPES))
    parser.add_argument("--source", default="random:0", help="Weights (default random:0).")
    parser.add_argument("--accuracy", action="store_true", help="Add the quantize report (slow).")
    parser.add_argument("--backend", default="auto", help="Report backend: auto | mil | coreml.")
    parser.add_argument("--work-dir", type=Path, default=None, help="Keep packages here.")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    from coreml_diarize.mlpackage import quiet_warnings
    from coreml_diarize.record import library_versions

    models = ["segmentation"]
    if args.include_embedding:
        if not _has_embedding():
            parser.error("--include-embedding: coreml_diarize.wrappers.embedding is not available")
        models.append("embedding")
    with quiet_warnings(), tempfile.TemporaryDirectory(prefix="bench_quantize.") as tmp:
        work = args.work_dir or Path(tmp)
        rows = [
            bench_model(
                key,
                args.recipes,
                work,
                source=args.source,
                accuracy=args.accuracy,
                backend=args.backend,
            )
            for key in models
        ]
    result = {
        "benchmark": "quantize",
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        },
        "versions": library_versions(),
        "models": rows,
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
