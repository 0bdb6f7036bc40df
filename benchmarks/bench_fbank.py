"""Time the conv fbank against pyannote's vmapped kaldi.fbank, and the whole embedding model.

Same process, same torch thread count, batch of 3 x 10 s (the contract's wespeaker batch):

* front end: `fbank_as_conv` (strided conv, squares, mel matmul, log, centring) vs pyannote's
  `compute_fbank` (waveform * 2^15, `torch.vmap(kaldi.fbank)`, centring);
* whole model: the traceable wrapper vs pyannote's WeSpeakerResNet34 forward;
* package sizes of wespeaker_v2.mlpackage in fp32 and fp16 (through the project converter;
  `--no-convert` skips it).

Prints one JSON object:

    python benchmarks/bench_fbank.py [--repeats 5] [--threads N] [--no-convert]

`ratio` = median pyannote time / median ours (> 1: ours is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, median_seconds  # noqa: E402


def _pair(ours, theirs, repeats: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    t_ours, _ = median_seconds(ours, repeats)
    t_theirs, _ = median_seconds(theirs, repeats)
    return {"ours_s": t_ours, "pyannote_s": t_theirs, "ratio": t_theirs / t_ours}


def _package_sizes(ctx, weights) -> dict:  # type: ignore[no-untyped-def]
    """wespeaker_v2.mlpackage in fp32 and fp16: bytes and conversion time."""
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import EMBEDDING
    from coreml_diarize.specs import BuildContext, Options

    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("fp32", "fp16"):
            precision_ctx = BuildContext(ctx.geometry, Options(precision=precision), weights)
            converted = convert_model(EMBEDDING, precision_ctx, Path(tmp) / precision)
            sizes[precision] = {
                "bytes": converted.size_bytes,
                "convert_s": round(converted.seconds, 1),
            }
    return sizes


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--no-convert", action="store_true", help="skip the package sizes")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    import numpy as np
    import torch

    from coreml_diarize import signals
    from coreml_diarize.sources import default_geometry, load_weights
    from coreml_diarize.specs import BuildContext, Options
    from coreml_diarize.wrappers.embedding import build_wrapper
    from coreml_diarize.wrappers.fbank import fbank_as_conv

    if args.threads:
        torch.set_num_threads(args.threads)

    weights = load_weights("embedding", "random:0")
    model = weights.model.eval()
    ctx = BuildContext(default_geometry(), Options(), weights)
    batch, samples, frames = ctx.geometry.embedding_batch, ctx.geometry.samples, ctx.geometry.frames
    waveform = torch.from_numpy(
        np.stack(
            [
                signals.real_speech(0.0, samples),
                signals.noise(samples),
                signals.speech_like(samples),
            ][:batch]
        )
    )
    mask = torch.ones(batch, frames)

    front_end = fbank_as_conv(model).eval()
    wrapper = build_wrapper(ctx).eval()
    result: dict = {
        "batch": batch,
        "seconds_per_item": samples / ctx.geometry.sample_rate,
        "torch_threads": torch.get_num_threads(),
        "repeats": args.repeats,
    }
    with torch.inference_mode():
        result["fbank"] = _pair(
            lambda: front_end(waveform),
            lambda: model.compute_fbank(waveform[:, None, :]),
            args.repeats,
        )
        result["model"] = _pair(
            lambda: wrapper(waveform, mask),
            lambda: model(waveform[:, None, :], weights=mask),
            args.repeats,
        )

    if not args.no_convert:
        result["mlpackage"] = _package_sizes(ctx, weights)

    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
