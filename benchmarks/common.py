"""Shared by the benchmark scripts: median timing and JSON output (stdout, and --out FILE)."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path


def median_seconds(
    fn: Callable[[], object], repeats: int, *, warmup: bool = True
) -> tuple[float, list[float]]:
    """Median wall time of `fn` over `repeats` runs (after one warm-up call, which pays lazy
    initialisation), and every run's time."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times


def emit(result: dict, out: str | Path | None) -> None:
    """Print the JSON result, and write it to `out` when given."""
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    sys.stdout.flush()
