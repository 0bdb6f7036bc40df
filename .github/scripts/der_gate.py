#!/usr/bin/env python3
"""Fail CI when the converted chain's DER against pyannote's PyTorch pipeline is above a limit.

Reads the JSON files written by `coreml-diarize compare AUDIO --models DIR --json FILE`
(DER as a fraction at `converted_vs_torch.der`) and prints one line per file:

    python .github/scripts/der_gate.py --max-der-percent 1 cmp_fp32.json cmp_palettize8.json

Exit codes: 0 every file within the limit, 1 some DER above it (or not a number),
2 usage error or an unreadable / malformed file. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

EXIT_OK, EXIT_ABOVE, EXIT_BAD_INPUT = 0, 1, 2


class GateInputError(Exception):
    """A compare file that cannot be read or does not hold a DER."""


def read_der(path: Path) -> tuple[float, str]:
    """(DER as a fraction, short label) from one compare JSON file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise GateInputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GateInputError(f"{path}: not valid JSON ({exc})") from None
    between = data.get("converted_vs_torch") if isinstance(data, dict) else None
    der = between.get("der") if isinstance(between, dict) else None
    if isinstance(der, bool) or not isinstance(der, (int, float)):
        raise GateInputError(
            f"{path}: no numeric converted_vs_torch.der "
            "(expected the JSON written by `coreml-diarize compare --json`)"
        )
    converted = data.get("converted")
    variant = converted.get("variant") if isinstance(converted, dict) else None
    backend = converted.get("backend") if isinstance(converted, dict) else None
    label = ", ".join(
        part
        for part in (f"variant {variant or 'fp32'}", f"backend {backend}" if backend else "")
        if part
    )
    return float(der), label


def _percent(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite percentage >= 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--max-der-percent",
        type=_percent,
        required=True,
        help="highest DER allowed, in percent (e.g. 1 for 1%%)",
    )
    parser.add_argument("files", nargs="+", type=Path, help="JSON files from `compare --json`")
    args = parser.parse_args(argv)

    status = EXIT_OK
    for path in args.files:
        try:
            der, label = read_der(path)
        except GateInputError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = max(status, EXIT_BAD_INPUT)
            continue
        percent = der * 100.0
        ok = math.isfinite(percent) and percent <= args.max_der_percent
        verdict = "ok" if ok else "FAIL"
        print(
            f"{path}: DER {percent:.2f}% vs PyTorch (limit {args.max_der_percent:.2f}%, "
            f"{label}) {verdict}"
        )
        if not ok:
            status = max(status, EXIT_ABOVE)
    return status


if __name__ == "__main__":
    sys.exit(main())
