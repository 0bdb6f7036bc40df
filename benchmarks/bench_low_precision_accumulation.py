"""Every package's error under emulated fp16 accumulation (what
`MLModelConfiguration.allowLowPrecisionAccumulationOnGPU = true` may do on the GPU; FluidAudio
sets it for every model), judged by the bounds each package was validated with.

Each package (`--packages DIR`: the .mlpackages `make models` / `build` wrote; or a list of
paths) is run by the MIL executor on its validation inputs in three modes (see
coreml_diarize/validation/mil/ops_accumulate.py):

  fp32       the executor's default (fp32 accumulation): what `validate` measures
  fp16-all   every conv/matmul/linear accumulates in fp16, rounded after every product-add,
             sequentially (the pessimistic bound), fp32-typed ops included
  fp16-typed the same on fp16-typed ops only (fp32 ops of a mixed program stay fp32)

and compared with the package's reference (rebuilt from its record, as `validate` does), with
the registry's tolerances for the package's recipe (`ModelSpec.tolerance_for`, trained or not
as recorded). Per mode and output: the worst max |error|, min cosine (embeddings), max
probability error and decisive argmax agreement (segmentation), error/spread, and the judge's
failures.

    python benchmarks/bench_low_precision_accumulation.py --packages artifacts [--cases 3]
        [--only Embedding,PldaRho] [--out FILE]

The emulation is slow (a Python loop over the reduction axis): `--cases` limits the inputs per
package (the first N of the spec's validation inputs; the degenerate-weights spread check needs
all of them, so `min_reference_spread` is not applied when N is smaller).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import emit  # noqa: E402

MODES = {"fp32": ("fp32", "all"), "fp16-all": ("fp16", "all"), "fp16-typed": ("fp16", "fp16")}


def _worst(values, pick):
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    if any(isinstance(v, float) and math.isnan(v) for v in finite):
        return float("nan")
    return float(pick(finite))


def summarise(judgement) -> dict:
    """Worst case per output over the judged inputs, and every failure message."""
    per_output: dict[str, dict] = {}
    for case in judgement.cases:
        for o in case.outputs:
            row = per_output.setdefault(o.output, {"results": []})
            row["results"].append(o)
    out = {}
    for name, row in per_output.items():
        results = row["results"]
        out[name] = {
            "max_abs": _worst([r.max_abs for r in results], max),
            "cosine_min": _worst([r.cosine_min for r in results], min),
            "prob_max_abs": _worst([r.prob_max_abs for r in results], max),
            "argmax_agreement": _worst([r.argmax_agreement for r in results], min),
            "relative_to_spread": _worst([r.relative_to_spread for r in results], max),
            "failures": [
                f"{c.input}: {f}"
                for c in judgement.cases
                for o in c.outputs
                if o.output == name
                for f in o.failures
            ],
        }
    return out


def bench_package(path: Path, modes: list[str], cases_limit: int | None, log) -> dict:
    from coreml_diarize.context import context_for_package
    from coreml_diarize.validation.judge import judge
    from coreml_diarize.validation.mil import MILExecutor
    from coreml_diarize.validation.mil.ops_accumulate import accumulation_ops

    spec, ctx, record = context_for_package(path)
    tolerances = dict(spec.tolerance_for(record.variant, trained=record.trained is not False))
    cases = spec.example_inputs(ctx)
    if cases_limit is not None and cases_limit < len(cases):
        cases = dict(list(cases.items())[:cases_limit])
        tolerances = {k: replace(t, min_reference_spread=None) for k, t in tolerances.items()}
    reference = spec.build_reference(ctx)
    refs = {name: reference(inputs) for name, inputs in cases.items()}
    program = MILExecutor.from_path(path).program
    row: dict = {
        "package": path.name,
        "model": record.model,
        "variant": record.variant,
        "trained": record.trained,
        "cases": sorted(cases),
        "tolerances": {
            k: {f: v for f, v in vars(t).items() if v is not None} for k, t in tolerances.items()
        },
        "modes": {},
    }
    for mode in modes:
        start = time.perf_counter()
        executor = MILExecutor(program, ops=accumulation_ops(*MODES[mode]))
        outputs = {name: executor.predict(inputs) for name, inputs in cases.items()}
        judgement = judge(spec, tolerances, refs, outputs)
        row["modes"][mode] = {
            "passed": judgement.passed,
            "outputs": summarise(judgement),
            "seconds": time.perf_counter() - start,
        }
        log(
            f"{path.name:40} {mode:10} passed={judgement.passed} "
            f"({row['modes'][mode]['seconds']:.0f} s)"
        )
    return row


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packages", nargs="+", required=True, help="dirs or .mlpackage paths")
    parser.add_argument("--only", default=None, help="comma-separated package stems")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cases", type=int, default=None, help="inputs per package (first N)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    import torch

    torch.set_num_threads(1)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    paths: list[Path] = []
    for item in map(Path, args.packages):
        paths += [item] if item.suffix == ".mlpackage" else sorted(item.glob("*.mlpackage"))
    if args.only:
        wanted = set(args.only.split(","))
        paths = [p for p in paths if p.name.removesuffix(".mlpackage") in wanted]
    modes = args.modes.split(",")
    results = [bench_package(p, modes, args.cases, log) for p in paths]
    exceeded = [
        f"{r['package']} ({mode})"
        for r in results
        for mode, m in r["modes"].items()
        if mode != "fp32" and not m["passed"]
    ]
    emit(
        {
            "modes": modes,
            "cases_per_package": args.cases,
            "results": results,
            "exceeds_validated_bounds": exceeded,
        },
        args.out,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
