"""Time the MIL reference executor against torch eager on the segmentation model.

Converts the seeded segmentation model (random:0 weights, the same path the test suite and
the CLI use) to a temporary .mlpackage, then runs 10 s of audio through
`MILExecutor.predict` and through the torch wrapper that was converted, in the same process
with the same torch thread count, and prints one JSON object:

    python benchmarks/bench_executor.py [--precision fp32|fp16] [--repeats 5] [--threads N]

`ratio` = median executor time / median torch time (the target is <= 5).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from common import emit, median_seconds  # noqa: E402


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32", choices=("fp32", "fp16"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="audio length (the model takes 10 s)"
    )
    return parser.parse_args(argv)


def _segmentation(precision: str):  # type: ignore[no-untyped-def]
    """(spec, context, wrapper, parameter + buffer count) of random:0 segmentation."""
    from coreml_diarize.models import get_spec
    from coreml_diarize.sources import load_weights, segmentation_geometry
    from coreml_diarize.specs import BuildContext, Options

    spec = get_spec("segmentation")
    weights = load_weights("segmentation", "random:0")
    ctx = BuildContext(
        segmentation_geometry(weights.model, embedding_dim=256),
        Options(precision=precision),
        weights,
    )
    wrapper = spec.build_wrapper(ctx).eval()
    n_params = sum(p.numel() for p in wrapper.parameters()) + sum(
        b.numel() for b in wrapper.buffers()
    )
    return spec, ctx, wrapper, n_params


def _timed_pair(wrapper, executor, audio: np.ndarray, input_name: str, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    """Median torch eager and executor times on the same input, and their output difference."""
    import torch

    x_torch = torch.from_numpy(audio)

    def run_torch():  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return wrapper(x_torch)

    def run_mil():  # type: ignore[no-untyped-def]
        return executor.predict({input_name: audio})

    torch_s, torch_all = median_seconds(run_torch, repeats)
    mil_s, mil_all = median_seconds(run_mil, repeats)
    ref = run_torch().numpy()
    (out,) = run_mil().values()
    return {
        "torch_eager_s": round(torch_s, 4),
        "executor_s": round(mil_s, 4),
        "ratio": round(mil_s / torch_s, 2),
        "torch_runs_s": [round(t, 4) for t in torch_all],
        "executor_runs_s": [round(t, 4) for t in mil_all],
        "max_abs_diff": float(np.max(np.abs(out.astype(np.float64) - ref))),
        "output_shape": list(out.shape),
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from coreml_diarize import signals
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.validation.mil import MILExecutor

    if args.threads:
        torch.set_num_threads(args.threads)
    spec, ctx, wrapper, n_params = _segmentation(args.precision)
    samples = int(round(args.seconds * signals.SAMPLE_RATE))
    audio = signals.speech_like(samples)[None, None]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = convert_model(spec, ctx, Path(tmp))
        convert_s = time.perf_counter() - start
        start = time.perf_counter()
        executor = MILExecutor.from_path(result.path)
        load_s = time.perf_counter() - start
        timing = _timed_pair(wrapper, executor, audio, spec.inputs[0].name, args.repeats)
        report = {
            "model": "segmentation (PyanNet, random:0 weights, calibrated)",
            "precision": args.precision,
            "params": int(n_params),
            "samples": samples,
            "torch_threads": torch.get_num_threads(),
            "ops": dict(sorted(executor.op_types().items())),
            "convert_s": round(convert_s, 3),
            "executor_load_s": round(load_s, 3),
            **timing,
        }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
