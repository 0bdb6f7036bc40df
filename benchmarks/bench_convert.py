"""Conversion wall time and package size per model and precision (seeded weights).

    python benchmarks/bench_convert.py [--out FILE] [--models segmentation,embedding]

Baseline in the same run: the fp32 conversion of each model; fp16 times are given as a ratio
to it. Sizes are bytes on disk of the saved .mlpackage.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--models", default="segmentation,embedding,postprocessor,preprocessor,post-embedding"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

    from dataclasses import replace

    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.specs import Options

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.models.split(","):
            spec = get_spec(key)
            start = time.perf_counter()
            ctx = make_context(spec, source="random:0")
            load_s = time.perf_counter() - start
            row = {"load_weights_s": load_s}
            for precision in ("fp32", "fp16"):
                run_ctx = replace(ctx, options=Options(precision=precision))
                result = convert_model(spec, run_ctx, Path(tmp) / precision)
                row[precision] = {"seconds": result.seconds, "size_bytes": result.size_bytes}
            row["fp16_time_ratio_to_fp32"] = row["fp16"]["seconds"] / row["fp32"]["seconds"]
            row["fp16_size_ratio_to_fp32"] = row["fp16"]["size_bytes"] / row["fp32"]["size_bytes"]
            results[key] = row
    emit({"benchmark": "convert", "models": results}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
