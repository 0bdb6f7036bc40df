"""The factored Kaldi fbank (wrappers/fbank_factored.py) against float64 torchaudio kaldi.fbank.

Reference: torchaudio's kaldi.fbank in FLOAT64 with pyannote's WeSpeaker settings (the same
settings test_fbank.py checks against pyannote's own `_fbank` partial).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreml_diarize import signals
from coreml_diarize.validation.reference_embedding import kaldi_fbank_float64
from coreml_diarize.wrappers.fbank_factored import FactoredFbank, constant_count

# Measured in fp32 (torch 2.11, CPU): max abs log-mel error vs float64 kaldi.fbank 1.0e-4 noise,
# 7.5e-4 sine sweep, 1.1e-4 / 1.4e-4 speech at 0 s / 15 s, 3.2e-5 clipped (FbankAsConv: 1.1e-5,
# 9.8e-4, 1.8e-4, 1.4e-4, 3.2e-5). Bound: 2x the worst.
MAX_ABS_VS_FLOAT64 = 1.5e-3  # log-mel (nats)
# Measured 28,742 (FbankAsConv: 246,720); 20,480 of them the mel matrix, 97.6 % exact zeros.
MAX_CONSTANTS = 30_000
# Measured 1.9e-6 (MIL executor vs torch on the converted fp32 program).
MAX_EXECUTOR_VS_TORCH = 1e-4

SIGNALS = {
    "noise": signals.noise,
    "sine_sweep": signals.sine_sweep,
    "speech_0s": lambda: signals.real_speech(0.0),
    "speech_15s": lambda: signals.real_speech(15.0),
    "clipped": signals.clipped,
}


@pytest.fixture(scope="module")
def front_end() -> FactoredFbank:
    return FactoredFbank().eval()


@pytest.mark.parametrize("name", list(SIGNALS))
def test_log_mel_matches_float64_kaldi(name, front_end, record_property):
    x = SIGNALS[name]()
    with torch.no_grad():
        ours = front_end(torch.from_numpy(x)[None])[0].double()
    ref = kaldi_fbank_float64(x, front_end.opts)
    assert ours.shape == ref.shape == (80, 998)
    err = (ours - ref).abs().max().item()
    record_property("max_abs_vs_float64", err)
    assert err <= MAX_ABS_VS_FLOAT64, f"{name}: {err:.2e}"


def test_algebra_is_exact_in_float64():
    """Built and run in float64, the factoring (DC/pre-emphasis moved out, framing conv, 32 x 16
    DFT, direct low bins) is kaldi.fbank up to float64 rounding."""
    module = FactoredFbank(dtype=torch.float64).eval()
    for x in (signals.noise(), signals.real_speech(0.0)):
        with torch.no_grad():
            ours = module(torch.from_numpy(x).double()[None])[0]
        assert (ours - kaldi_fbank_float64(x, module.opts)).abs().max().item() < 1e-9


@pytest.mark.parametrize("samples", [160000 - 1, 160000 + 79, 160000 + 80, 48000])
def test_other_lengths(samples):
    """Lengths that are not a whole number of hops: Kaldi's snip_edges frame count."""
    module = FactoredFbank(dtype=torch.float64).eval()
    x = signals.noise(samples)
    with torch.no_grad():
        ours = module(torch.from_numpy(x).double()[None])[0]
    ref = kaldi_fbank_float64(x, module.opts)
    assert ours.shape == ref.shape
    assert (ours - ref).abs().max().item() < 1e-9


def test_few_constants(front_end):
    assert constant_count(front_end) <= MAX_CONSTANTS
    # the mel matrix is the only large constant, and it is almost all exact zeros
    others = constant_count(front_end) - front_end.mel.numel()
    assert others <= 9_000
    assert (front_end.mel == 0).float().mean().item() > 0.97


def test_converted_program_has_no_slicing_and_matches_torch(front_end, tmp_path):
    import coremltools as ct

    from coreml_diarize.mlpackage import load_program, op_histogram, quiet_coremltools
    from coreml_diarize.validation.mil.executor import MILExecutor

    example = torch.zeros(3, 160000)
    path = tmp_path / "fbank_factored.mlpackage"
    with quiet_coremltools(), torch.no_grad():
        mlmodel = ct.convert(
            torch.jit.trace(front_end, example),
            inputs=[ct.TensorType(name="waveform", shape=(3, 160000))],
            outputs=[ct.TensorType(name="fbank")],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
            skip_model_load=True,
        )
        mlmodel.save(str(path))
    ops = op_histogram(load_program(path))
    assert ops.get("slice_by_index", 0) == 0 and ops.get("slice_by_size", 0) == 0
    assert ops.get("gather", 0) == ops.get("gather_along_axis", 0) == ops.get("gather_nd", 0) == 0

    x = np.stack([signals.real_speech(0.0), signals.noise(), signals.sine_sweep()])
    got = MILExecutor.from_path(path).predict({"waveform": x})["fbank"]
    with torch.no_grad():
        expected = front_end(torch.from_numpy(x)).numpy()
    assert got.shape == expected.shape == (3, 80, 998)
    assert np.abs(got - expected).max() <= MAX_EXECUTOR_VS_TORCH
