"""The `fbank_front_end` option: wespeaker_v2 with the dense (one conv) or factored Kaldi front end.

References are independent of the wrappers: float64 torchaudio `kaldi.fbank` (pyannote's
settings) for the front end, pyannote's own WeSpeaker forward for the embedding.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from coreml_diarize import signals
from coreml_diarize.errors import DiarizeError
from coreml_diarize.models import get_spec
from coreml_diarize.specs import Options
from coreml_diarize.validation.reference_embedding import (
    embedding_inputs,
    embedding_reference,
    kaldi_fbank_float64,
)
from coreml_diarize.wrappers.embedding import build_wrapper, wespeaker_front_end
from coreml_diarize.wrappers.fbank_factored import FactoredFbank

# the centred log-mel against float64 kaldi.fbank centred: test_fbank_factored's bound for the
# uncentred log-mel (2x its measured worst, 7.5e-4 on the sweep); centring subtracts a mean of
# such errors, so it can at most double them
MAX_CENTRED_VS_FLOAT64 = 3e-3
MIN_COSINE = 0.9999  # the fp32 embedding tolerance (models.py), as test_embedding.py


def test_option_defaults_to_dense_and_refuses_unknown_names():
    assert Options().fbank_front_end == "dense"
    assert Options().thresholds()["fbank_front_end"] == "dense"  # recorded in every package
    with pytest.raises(DiarizeError, match="unknown fbank front end 'fft'"):
        Options(fbank_front_end="fft")
    # the record round-trips through the thresholds (context.options_for reads them back)
    assert Options(**Options(fbank_front_end="factored").thresholds()).fbank_front_end == "factored"


def _centred_float64(x: np.ndarray, opts) -> torch.Tensor:
    ref = kaldi_fbank_float64(x, opts)
    return ref - ref.mean(dim=-1, keepdim=True)


@pytest.mark.parametrize("front_end", ["dense", "factored"])
def test_front_end_is_kaldis_centred_log_mel(front_end, emb_weights):
    module = wespeaker_front_end(emb_weights.model, front_end).eval()
    expected = {"dense": "FbankAsConv", "factored": "FactoredFbank"}[front_end]
    assert type(module.log_mel).__name__ == expected
    for x in (signals.real_speech(0.0), signals.sine_sweep()):
        with torch.no_grad():
            ours = module(torch.from_numpy(x)[None])[0].double()
        err = (ours - _centred_float64(x, module.log_mel.opts)).abs().max().item()
        assert err <= MAX_CENTRED_VS_FLOAT64, f"{front_end}: {err:.2e}"


def test_factored_log_mel_energy_is_forward_without_the_offset():
    module = FactoredFbank().eval()
    x = torch.from_numpy(signals.noise())[None]
    with torch.no_grad():
        difference = module(x) - module.log_mel_energy(x)
    assert torch.allclose(difference, torch.full_like(difference, 30 * np.log(2)), atol=1e-5)


def test_factored_wrapper_matches_pyannote(emb_ctx):
    ctx = replace(emb_ctx, options=Options(fbank_front_end="factored"))
    wrapper = build_wrapper(ctx).eval()
    assert isinstance(wrapper.fbank.log_mel, FactoredFbank)
    reference = embedding_reference(ctx)
    inputs = embedding_inputs(ctx)
    for name in ("speech_0s", "sine_sweep"):
        case = inputs[name]
        with torch.inference_mode():
            ours = wrapper(torch.from_numpy(case["waveform"]), torch.from_numpy(case["mask"]))
        ref = reference(case)["embedding"]
        ours = ours.numpy()
        cos = (ours * ref).sum(-1) / (np.linalg.norm(ours, axis=-1) * np.linalg.norm(ref, axis=-1))
        assert cos.min() >= MIN_COSINE, f"{name}: {cos}"


class _Named(nn.Module):
    """The front end under the attribute name the embedding wrapper gives it (`fbank`), so the
    converted consts are named as in wespeaker_v2."""

    def __init__(self, fbank: nn.Module) -> None:
        super().__init__()
        self.fbank = fbank

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.fbank(waveform)


def test_converted_factored_front_end_has_no_slicing_and_its_constants_stay_uncompressed(
    emb_weights, tmp_path
):
    import coremltools as ct

    from coreml_diarize.mlpackage import load_program, op_histogram, quiet_coremltools

    module = _Named(wespeaker_front_end(emb_weights.model, "factored")).eval()
    with quiet_coremltools(), torch.no_grad():
        mlmodel = ct.convert(
            torch.jit.trace(module, torch.zeros(3, 160000)),
            inputs=[ct.TensorType(name="waveform", shape=(3, 160000))],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            skip_model_load=True,
        )
        mlmodel.save(str(tmp_path / "front_end.mlpackage"))
    program = load_program(tmp_path / "front_end.mlpackage")
    ops = op_histogram(program)
    assert ops.get("slice_by_index", 0) == 0 and ops.get("gather", 0) == 0
    # every constant big enough to be palettized by default (> 2048 elements) is one the spec
    # keeps uncompressed: palettizing a DFT or mel constant breaks the log of quiet bins
    big = {
        op.outputs[0].name
        for op in program.functions["main"].operations
        if op.op_type == "const" and getattr(op.outputs[0].val, "size", 0) > 2048
    }
    assert big, "the factored front end has its mel matrix"
    assert big <= set(get_spec("embedding").uncompressed_consts())
