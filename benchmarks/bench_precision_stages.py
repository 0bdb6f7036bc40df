"""Where WeSpeaker loses precision in fp16: the error of every stage against float64.

Each stage of the wrapper (fbank, ResNet stem, layer1..4, pooling, head) runs in the dtype a
precision plan gives it, on the output of the previous stage in that plan; the stage's output
is compared with the same stage of a float64 run of the same wrapper. Two plans:

* `fp16`: everything fp16, what a plain `ct.convert(..., compute_precision=FLOAT16)` gives;
* `shipped`: the fbank up to its log in fp32 (ModelSpec.fp32_values), everything after fp16.

torch rounds each op's output to its dtype as Core ML's fp16 programs do (the MIL executor
checks the saved packages themselves: tests/quantize/test_device_precision.py). Prints one JSON object:

    python benchmarks/bench_precision_stages.py [--source random:0] [--out FILE]

`rel` = max |stage - float64 stage| / max |float64 stage|; `cosine` is the embedding's worst
row (speaker slots with a non-empty mask) against float64.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

STAGES = ("fbank", "stem", "layer1", "layer2", "layer3", "layer4", "pooling", "embedding")
F16, F32, F64 = torch.float16, torch.float32, torch.float64


def stage_outputs(wrapper, waveform, mask, *, fbank_dtype, rest_dtype) -> dict[str, torch.Tensor]:
    """Every stage's output with the fbank (through its log) in `fbank_dtype`, the rest in
    `rest_dtype`."""
    fbank = copy.deepcopy(wrapper.fbank).to(fbank_dtype)
    rest = copy.deepcopy(wrapper).to(rest_dtype)
    out: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        log_mel = fbank.log_mel.log_mel_energy(waveform.to(fbank_dtype)).to(rest_dtype)
        out["fbank"] = rest.fbank.centre(log_mel)
        trunk = rest.trunk
        x = torch.relu(trunk.bn1(trunk.conv1(out["fbank"].unsqueeze(1))))
        out["stem"] = x
        for i, layer in enumerate(trunk.layers):
            x = layer(x)
            out[f"layer{i + 1}"] = x
        out["pooling"] = rest.pool(x.flatten(1, 2), rest.mask_to_frames(mask.to(rest_dtype)))
        out["embedding"] = rest.head(out["pooling"])
    return out


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=1).min())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default="random:0", help="embedding weights")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # deterministic reductions

    from coreml_diarize.sources import load_weights
    from coreml_diarize.validation.reference_embedding import embedding_signals, mask_rows
    from coreml_diarize.wrappers.embedding import WeSpeakerEmbedding

    weights = load_weights("embedding", args.source)
    wrapper = WeSpeakerEmbedding(weights.model, samples=160000, mask_frames=589).eval()
    mask = torch.from_numpy(mask_rows(3, 589))
    active = mask.sum(1) > 0  # an empty slot's embedding is the bias in any precision
    plans = {"fp16": (F16, F16), "shipped": (F32, F16)}
    result: dict = {"source": args.source, "stages": list(STAGES), "plans": {}}
    for plan, (fbank_dtype, rest_dtype) in plans.items():
        rows = {}
        for name, signal in embedding_signals(160000).items():
            waveform = torch.from_numpy(np.tile(signal[None], (3, 1)))
            ref = stage_outputs(wrapper, waveform, mask, fbank_dtype=F64, rest_dtype=F64)
            got = stage_outputs(
                wrapper, waveform, mask, fbank_dtype=fbank_dtype, rest_dtype=rest_dtype
            )
            rel = {}
            for stage in STAGES:
                err = (got[stage].double() - ref[stage]).abs().max()
                rel[stage] = float(err / ref[stage].abs().max().clamp_min(1e-30))
            rows[name] = {
                "rel": rel,
                "cosine": _cosine(ref["embedding"][active], got["embedding"][active]),
            }
        result["plans"][plan] = rows
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
