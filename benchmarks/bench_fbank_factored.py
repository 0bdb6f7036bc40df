"""The factored Kaldi fbank (wrappers/fbank_factored.py) against the one-conv `FbankAsConv`.

Same process, same torch thread count, batch of 3 x 10 s. For both front ends:

* constants: elements and fp32 bytes of the torch module's buffers, and the converted
  program's const elements / package bytes (fp32; for the factored one also with its mel
  matrix stored sparse by coremltools' threshold pruner, which only drops exact zeros);
* max abs log-mel error vs float64 torchaudio `kaldi.fbank` (pyannote's settings, waveform *
  2^15) on the test signals;
* FLOPs per 3 x 10 s batch (counted from the shapes, multiply-add = 2);
* median time per 3 x 10 s batch, `ratio` = conv time / factored time (> 1: factored faster);
* the converted factored program: op histogram, slice/gather counts, and the repo's MIL
  executor vs torch (max abs, on the batch).

    python benchmarks/bench_fbank_factored.py [--repeats 5] [--threads 1] [--no-convert]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, median_seconds  # noqa: E402

SIGNAL_NAMES = ("noise", "sine_sweep", "speech_0s", "speech_15s", "clipped", "silence")


def flops(module, frames: int, batch: int) -> int:  # type: ignore[no-untyped-def]
    """Multiply-adds x 2 (+ 1 per elementwise op), from the module's constant shapes."""
    from coreml_diarize.wrappers.fbank import FbankAsConv

    o = module.opts
    mels, hop = o.num_mel_bins, o.window_shift
    if isinstance(module, FbankAsConv):
        rows = module.frames.weight.shape[0]
        per_frame = 2 * rows * o.window_size + rows + 2 * mels * rows + 2 * mels
        return batch * frames * per_frame
    n2, u = module.window.shape[:2]
    k1, k2 = module.dft1_re.shape[0], module.dft2_re.shape[0]
    direct = module.direct_kernel.shape[0]
    bins = module.mel.shape[1]
    per_frame = (
        2 * 2 * hop * 3  # pre-emphasis, correction signal, frame mean (per hop of samples)
        + 2 * module.framing.numel()  # one-hot framing conv
        + 2 * n2 * u  # DC removal, window
        + 2 * 2 * k1 * u * n2  # first stage, re and im
        + 6 * n2 * k1  # twiddles
        + 2 * 2 * k2 * 2 * n2 * k1  # second stage, re and im
        + 4 * bins  # correction, power
        + 2 * mels * bins  # mel
        + 2 * direct * o.window_size
        + direct
        + 2 * mels * direct
        + mels  # direct low bins
        + 2 * mels  # floor, log
    )
    return batch * frames * per_frame


def convert(module, path: Path):  # type: ignore[no-untyped-def]
    import coremltools as ct
    import torch

    from coreml_diarize.mlpackage import quiet_coremltools

    example = torch.zeros(3, 160000)
    with quiet_coremltools(), torch.no_grad():
        mlmodel = ct.convert(
            torch.jit.trace(module, example),
            inputs=[ct.TensorType(name="waveform", shape=(3, 160000))],
            outputs=[ct.TensorType(name="fbank")],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            skip_model_load=True,
        )
        mlmodel.save(str(path))
    return mlmodel


def prune_exact_zeros(mlmodel, path: Path):  # type: ignore[no-untyped-def]
    """Store constants of >= 4096 elements that are mostly exact zeros (the mel matrix) sparse."""
    import coremltools.optimize.coreml as cto

    from coreml_diarize.mlpackage import quiet_coremltools

    config = cto.OptimizationConfig(
        global_config=cto.OpThresholdPrunerConfig(
            threshold=1e-30, minimum_sparsity_percentile=0.5, weight_threshold=4096
        )
    )
    with quiet_coremltools():
        pruned = cto.prune_weights(mlmodel, config)
        pruned.save(str(path))


def package_facts(path: Path) -> dict:
    from coreml_diarize.mlpackage import load_program, op_histogram

    program = load_program(path)
    ops = op_histogram(program)
    const_elements = 0
    for op in program.functions["main"].operations:
        if op.op_type == "const" and op.outputs[0].val is not None:
            const_elements += int(getattr(op.outputs[0].val, "size", 1))
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return {
        "bytes": size,
        "const_elements": const_elements,
        "ops": dict(sorted(ops.items())),
        "slice_by_index": ops.get("slice_by_index", 0),
        "gather": ops.get("gather", 0) + ops.get("gather_along_axis", 0) + ops.get("gather_nd", 0),
    }


def _converted(front_ends: dict, batch) -> dict:  # type: ignore[no-untyped-def]
    """Package facts of each converted front end, and the executor's parity for the factored
    one (dense and with the mel matrix stored sparse)."""
    import numpy as np
    import torch

    from coreml_diarize.validation.mil.executor import MILExecutor

    converted = {}
    with tempfile.TemporaryDirectory() as tmp:
        for key, module in front_ends.items():
            path = Path(tmp) / f"{key}.mlpackage"
            mlmodel = convert(module, path)
            converted[key] = package_facts(path)
            if key != "factored":
                continue
            with torch.inference_mode():
                expected = module(batch).numpy()
            sparse = Path(tmp) / "factored_sparse_mel.mlpackage"
            prune_exact_zeros(mlmodel, sparse)
            converted["factored_sparse_mel"] = package_facts(sparse)
            for name, package in (("factored", path), ("factored_sparse_mel", sparse)):
                got = MILExecutor.from_path(package).predict({"waveform": batch.numpy()})
                converted[name]["executor_max_abs_vs_torch"] = float(
                    np.abs(got["fbank"] - expected).max()
                )
    return converted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    parser.add_argument("--no-convert", action="store_true", help="skip conversion and executor")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch

    from coreml_diarize import signals
    from coreml_diarize.wrappers.fbank import FbankAsConv
    from coreml_diarize.wrappers.fbank_factored import FactoredFbank, constant_count

    if args.threads:
        torch.set_num_threads(args.threads)
    front_ends = {"factored": FactoredFbank().eval(), "conv": FbankAsConv().eval()}
    opts = front_ends["factored"].opts
    all_signals = signals.standard_signals()
    batch = torch.from_numpy(
        np.stack([signals.real_speech(0.0), signals.noise(), signals.speech_like()])
    )
    frames = opts.num_frames(batch.shape[1])
    result: dict = {"batch": list(batch.shape), "torch_threads": torch.get_num_threads()}

    from coreml_diarize.validation.reference_embedding import kaldi_fbank_float64

    references = {name: kaldi_fbank_float64(all_signals[name], opts) for name in SIGNAL_NAMES}
    for key, module in front_ends.items():
        entry: dict = {
            "constants": constant_count(module),
            "constant_bytes_fp32": 4 * constant_count(module),
            "flops": flops(module, frames, batch.shape[0]),
        }
        errors = {}
        with torch.inference_mode():
            for name in SIGNAL_NAMES:
                ours = module(torch.from_numpy(all_signals[name])[None])[0].double()
                errors[name] = (ours - references[name]).abs().max().item()
            entry["seconds"], _ = median_seconds(lambda m=module: m(batch), args.repeats)
        entry["max_abs_vs_float64"] = errors
        entry["max_abs_vs_float64_worst"] = max(errors.values())
        result[key] = entry
    result["ratio"] = {
        "time_conv_over_factored": result["conv"]["seconds"] / result["factored"]["seconds"],
        "flops_conv_over_factored": result["conv"]["flops"] / result["factored"]["flops"],
        "constants_conv_over_factored": result["conv"]["constants"]
        / result["factored"]["constants"],
    }

    if not args.no_convert:
        result["converted"] = _converted(front_ends, batch)

    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
