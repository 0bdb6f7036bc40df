"""Where the converted chain's time goes, per variant, in the MIL reference executor.

For the segmentation and WeSpeaker packages in fp32, fp16 and palettize8 (built here from
random:0 weights, as `coreml-diarize build` makes them, or read from --models), runs 10 s of
audio (one window of the chain: segmentation on one chunk, the embedding on its 3 speaker
rows) through:
  * the executor with its op table (`fast`, the default `DEFAULT_OPS`),
  * the executor with the pre-fast-path implementations (`reference`, ops_reference.py),
  * pyannote's own PyTorch models (PyanNet, WeSpeakerResNet34) on the same inputs,
in one process, runs interleaved round-robin (a load change hits every configuration alike),
and prints one JSON object: median seconds per (model, variant, ops), the window time
(segmentation + embedding) with its ratio to fp32 and to PyTorch, and the time per op type
and the slowest ops of the fast executor.

    python benchmarks/bench_chain_profile.py [--repeats 5] [--threads 1] [--models DIR]
        [--out profile.json]

Every fast output is checked to equal the reference output exactly (`identical`).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from common import emit  # noqa: E402

MODELS = {"segmentation": "pyannote_segmentation", "embedding": "wespeaker_v2"}
VARIANTS = ("fp32", "fp16", "palettize8")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per configuration")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--models", type=Path, default=None, help="packages (else built here)")
    parser.add_argument("--source", default="random:0")
    parser.add_argument("--top", type=int, default=8, help="slowest ops listed per package")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    return parser.parse_args(argv)


def build_packages(out: Path, source: str) -> None:
    """fp32 packages converted, fp16 and palettize8 quantized from them (build's recipes)."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools
    from coreml_diarize.models import get_spec
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    with quiet_coremltools():
        for key in MODELS:
            spec = get_spec(key)
            fp32 = convert_model(spec, make_context(spec, source=source), out).path
            for config in (QuantizeConfig(mode="fp16"), QuantizeConfig(mode="palettize", nbits=8)):
                quantize_package(fp32, out, config)


def _inputs() -> dict[str, dict[str, np.ndarray]]:
    from coreml_diarize import signals

    audio = signals.speech_like(160_000).astype(np.float32)
    mask = np.zeros((3, 589), np.float32)
    mask[0], mask[1, :300], mask[2, 250:] = 1.0, 1.0, 1.0
    rows = np.stack([audio, audio[::-1].copy(), 0.5 * np.roll(audio, 4000)])
    return {
        "segmentation": {"audio": audio[None, None]},
        "embedding": {"waveform": rows, "mask": mask},
    }


def _torch_runners(source: str, inputs):  # type: ignore[no-untyped-def]
    """pyannote's PyTorch models (the weights the packages were built from) on the inputs."""
    import torch

    from coreml_diarize.sources import load_weights

    seg = load_weights("segmentation", source).model.eval()
    emb = load_weights("embedding", source).model.eval()
    wav = torch.from_numpy(inputs["segmentation"]["audio"])
    rows = torch.from_numpy(inputs["embedding"]["waveform"])[:, None]
    weights = torch.from_numpy(inputs["embedding"]["mask"])

    def run_seg():  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return seg(wav)

    def run_emb():  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return emb(rows, weights=weights)

    return {"segmentation": run_seg, "embedding": run_emb}


def _op_profile(executor, inputs, repeats: int, top: int) -> dict:  # type: ignore[no-untyped-def]
    """Median per-op time of the fast executor, summed by (op type, output dtype)."""
    runs = [executor.profile(inputs)[1] for _ in range(max(1, repeats))]
    per_op = []
    for i, first in enumerate(runs[0]):
        compute = statistics.median(r[i].compute_s for r in runs)
        store = statistics.median(r[i].store_s for r in runs)
        per_op.append((first, compute, store))
    by_type: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
    for op, compute, store in per_op:
        row = by_type[f"{op.op_type}:{op.dtype}"]
        row[0] += 1
        row[1] += compute
        row[2] += store
    slowest = sorted(per_op, key=lambda t: -(t[1] + t[2]))[:top]
    return {
        "by_op_type": {
            k: {"count": int(n), "compute_s": round(c, 4), "round_s": round(s, 4)}
            for k, (n, c, s) in sorted(by_type.items(), key=lambda kv: -(kv[1][1] + kv[1][2]))
        },
        "slowest_ops": [
            {"op": o.name, "type": o.op_type, "dtype": o.dtype, "s": round(c + s, 4)}
            for o, c, s in slowest
        ],
    }


def _identical(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a
    )


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch

    from coreml_diarize.validation.mil import MILExecutor, read_mil_program
    from coreml_diarize.validation.mil.ops_reference import REFERENCE_OPS

    if args.threads:
        torch.set_num_threads(args.threads)
    inputs = _inputs()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models or Path(tmp)
        if args.models is None:
            start = time.perf_counter()
            build_packages(models, args.source)
            print(f"built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
        runners, executors, identical = {}, {}, {}
        for key, stem in MODELS.items():
            runners[(key, "pytorch", "-")] = _torch_runners(args.source, inputs)[key]
            for variant in VARIANTS:
                name = stem if variant == "fp32" else f"{stem}_{variant}"
                program = read_mil_program(models / f"{name}.mlpackage")
                fast = MILExecutor(program)
                reference = MILExecutor(program, ops=REFERENCE_OPS)
                executors[(key, variant)] = fast
                identical[f"{key}/{variant}"] = _identical(
                    fast.predict(inputs[key]), reference.predict(inputs[key])
                )
                for ops, ex in (("fast", fast), ("reference", reference)):
                    runners[(key, variant, ops)] = lambda ex=ex, x=inputs[key]: ex.predict(x)
        times: dict[tuple, list[float]] = defaultdict(list)
        load = [os.getloadavg()]
        for _ in range(args.repeats):  # round-robin: every configuration sees the same load
            for config, run in runners.items():
                start = time.perf_counter()
                run()
                times[config].append(time.perf_counter() - start)
            load.append(os.getloadavg())
        profiles = {
            f"{key}/{variant}": _op_profile(ex, inputs[key], 3, args.top)
            for (key, variant), ex in executors.items()
        }
    median = {k: statistics.median(v) for k, v in times.items()}
    window = {}
    torch_window = median[("segmentation", "pytorch", "-")] + median[("embedding", "pytorch", "-")]
    for ops in ("fast", "reference"):
        fp32 = median[("segmentation", "fp32", ops)] + median[("embedding", "fp32", ops)]
        for variant in VARIANTS:
            s = median[("segmentation", variant, ops)] + median[("embedding", variant, ops)]
            window[f"{variant}/{ops}"] = {
                "seconds": round(s, 3),
                "ratio_to_fp32": round(s / fp32, 3),
                "ratio_to_pytorch": round(s / torch_window, 2),
                "rtf": round(s / 10.0, 3),  # 10 s of audio per window
            }
    report = {
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "load_average_1_5_15": {"start": load[0], "end": load[-1]},
        "seconds_median": {"/".join(k): round(v, 4) for k, v in sorted(median.items())},
        "seconds_all": {"/".join(k): [round(t, 4) for t in v] for k, v in sorted(times.items())},
        "window_segmentation_plus_embedding": window,
        "pytorch_window_s": round(torch_window, 3),
        "identical_fast_vs_reference": identical,
        "fast_profile": profiles,
    }
    emit(report, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
