"""wespeaker_v2 with the dense and the factored fbank front end, timed through one backend.

The question it answers (issue #24 item 4, docs/quantization.md "The front end"): the factored
front end saves 858 kB in every variant, but it has 35 more ops, and the front end runs on the
CPU in fp32 in both forms. What does that cost per embedding call, where the model really
runs? Both packages are converted in this run from the same weights, compressed the same way
(`--variant`, default fp16: the program the Neural Engine can run), then each is loaded once
through `validation.backends.open_package` and called on the same (batch, 10 s) input.

    python benchmarks/bench_front_end.py [--backend auto|coreml|mil] \
        [--compute-units cpu_only,cpu_and_ne,all] [--variant fp16|palettize4|fp32] \
        [--source tests/fixtures/embedding-synthetic/pytorch_model.bin] [--repeats 20] \
        [--out front_end.json]

Per front end and compute units: the package size, the median and quartiles of `predict`'s wall
time (after one warm-up call, which pays Core ML's on-device compilation), and where Core ML
placed the ops (macOS 14.4+: MLComputePlan; `ops_by_device`). `ratio_factored_over_dense` > 1
means the factored package is slower. On Linux the backend is the MIL reference executor: the
figures check the plumbing, they say nothing about a device. The macOS jobs in
.github/workflows/ci.yml run it through Core ML and upload the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "embedding-synthetic" / "pytorch_model.bin"
FRONT_ENDS = ("dense", "factored")
VARIANTS = {
    "fp32": None,
    "fp16": {"mode": "fp16"},
    "palettize8": {"mode": "palettize", "nbits": 8},
    "palettize4": {"mode": "palettize", "nbits": 4},
}


def build_package(source: str, front_end: str, variant: str, out: Path) -> Path:
    """wespeaker_v2 from `source` with `front_end`, compressed as `variant`."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import registry
    from coreml_diarize.quantize import QuantizeConfig, quantize_package
    from coreml_diarize.specs import Options

    spec = registry()["embedding"]
    folder = out / front_end
    folder.mkdir(parents=True)
    ctx = make_context(spec, source=source, options=Options(fbank_front_end=front_end))
    convert_model(spec, ctx, folder)
    fp32 = folder / f"{spec.filename}.mlpackage"
    setting = VARIANTS[variant]
    if setting is None:
        return fp32
    compressed = folder / f"{spec.filename}_{variant}.mlpackage"
    quantize_package(fp32, compressed, QuantizeConfig(**setting))
    return compressed


def example_inputs(package: Path, seed: int = 0) -> dict:
    """Noise-like speech level waveforms and a full mask, at the package's input shapes."""
    import numpy as np

    from coreml_diarize.mlpackage import load_program

    rng = np.random.default_rng(seed)
    inputs = {}
    for name, var in load_program(package).functions["main"].inputs.items():
        shape = tuple(int(d) for d in var.shape)
        if name == "waveform":
            inputs[name] = (0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            inputs[name] = np.ones(shape, dtype=np.float32)
    return inputs


def time_package(package: Path, backend: str, compute_units: str, repeats: int) -> dict:
    from coreml_diarize.mlpackage import package_size
    from coreml_diarize.validation.backends import open_package

    load_start = time.perf_counter()
    runner = open_package(package, backend=backend, compute_units=compute_units)
    inputs = example_inputs(package)
    runner(inputs)  # warm-up: Core ML compiles for the device on the first call
    first_call = time.perf_counter() - load_start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        runner(inputs)
        times.append(time.perf_counter() - start)
    quartiles = statistics.quantiles(times, n=4) if len(times) > 1 else [times[0]] * 3
    devices = runner.compute_devices()
    placement = devices.placement
    return {
        "bytes": package_size(package),
        "backend": runner.backend,
        "load_and_first_call_seconds": round(first_call, 4),
        "median_seconds": statistics.median(times),
        "q1_seconds": quartiles[0],
        "q3_seconds": quartiles[2],
        "repeats": repeats,
        "available_devices": devices.available,
        "neural_engine_checked": devices.neural_engine_checked,
        "ops_by_device": None if placement is None else dict(placement.ops_by_device),
        "placement": None if placement is None else dataclasses.asdict(placement),
        "notes": devices.notes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto", choices=("auto", "coreml", "mil"))
    parser.add_argument("--compute-units", default="cpu_only,cpu_and_ne,all")
    parser.add_argument("--variant", default="fp16", choices=sorted(VARIANTS))
    parser.add_argument("--source", default=str(FIXTURE), help="WeSpeaker weights (any source)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    from coreml_diarize.validation.backends import resolve_backend

    backend = resolve_backend(args.backend)
    units = [u.strip() for u in args.compute_units.split(",") if u.strip()]
    if backend == "mil":
        units = units[:1]  # the executor runs on the CPU whatever is asked
    result: dict = {
        "backend": backend,
        "variant": args.variant,
        "source": args.source,
        "machine": platform.platform(),
        "runs": {},
        "ratio_factored_over_dense": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        packages = {
            front_end: build_package(args.source, front_end, args.variant, Path(tmp))
            for front_end in FRONT_ENDS
        }
        for unit in units:
            runs = {fe: time_package(p, backend, unit, args.repeats) for fe, p in packages.items()}
            result["runs"][unit] = runs
            result["ratio_factored_over_dense"][unit] = (
                runs["factored"]["median_seconds"] / runs["dense"]["median_seconds"]
            )
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
