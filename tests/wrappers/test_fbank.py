"""The Kaldi fbank as one strided conv (wrappers/fbank.py) against torchaudio's kaldi.fbank.

The reference is a FLOAT64 run of torchaudio's fbank with pyannote's own settings (pyannote's
`_fbank` partial): torchaudio's fp32 run is itself up to ~1e-3 away from float64 in low-energy
bins, so comparing with it alone would mostly measure torchaudio's rounding. The distance to
the fp32 run is recorded beside it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio.compliance.kaldi

from coreml_diarize import signals
from coreml_diarize.wrappers.fbank import (
    KALDI_LOG_FLOOR,
    FbankAsConv,
    KaldiFbankOptions,
    fbank_as_conv,
    frame_transform,
)

MAX_ABS_VS_FLOAT64 = 1e-3  # log-mel (nats)

SIGNALS = {
    "noise": signals.noise,
    "silence": signals.silence,
    "clipped": signals.clipped,
    "sine_sweep": signals.sine_sweep,
    "speech_0s": lambda: signals.real_speech(0.0),
    "speech_15s": lambda: signals.real_speech(15.0),
    "speech_like": signals.speech_like,
}


@pytest.fixture(scope="module")
def wespeaker():
    """pyannote's WeSpeaker with default init: only its fbank settings matter here."""
    from coreml_diarize.sources import build_architecture

    return build_architecture("embedding")


@pytest.fixture(scope="module")
def log_mel() -> FbankAsConv:
    return FbankAsConv().eval()


def kaldi_log_mel(wespeaker, x: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """torchaudio's kaldi.fbank as pyannote calls it (its partial, waveform * 2^15): (frames, mels)."""
    waveform = torch.from_numpy(x).to(dtype) * (1 << 15)
    return wespeaker._fbank(waveform[None, :])


@pytest.mark.parametrize("name", list(SIGNALS))
def test_log_mel_matches_float64_kaldi(name, wespeaker, log_mel, record_property):
    x = SIGNALS[name]()
    with torch.no_grad():
        ours = log_mel(torch.from_numpy(x)[None])[0].T.double()  # (frames, mels)
    ref64 = kaldi_log_mel(wespeaker, x, torch.float64)
    ref32 = kaldi_log_mel(wespeaker, x, torch.float32).double()
    assert ours.shape == ref64.shape == (998, 80)
    err64 = (ours - ref64).abs().max().item()
    err_vs_fp32 = (ours - ref32).abs().max().item()
    torchaudio_fp32_err = (ref32 - ref64).abs().max().item()
    record_property("max_abs_vs_float64", err64)
    record_property("max_abs_vs_torchaudio_fp32", err_vs_fp32)
    record_property("torchaudio_fp32_vs_float64", torchaudio_fp32_err)
    assert err64 <= MAX_ABS_VS_FLOAT64, (
        f"{name}: {err64:.2e} vs float64 (torchaudio fp32 is {torchaudio_fp32_err:.2e} away)"
    )
    assert np.isfinite(ours.numpy()).all()


def test_centred_fbank_matches_pyannote_compute_fbank(wespeaker):
    """The whole front end, mean normalisation included, vs pyannote's compute_fbank run in
    float64 (and in fp32, as pyannote runs it)."""
    x = np.stack([signals.real_speech(0.0), signals.noise(), signals.silence()])
    front_end = fbank_as_conv(wespeaker)
    with torch.no_grad():
        ours = front_end(torch.from_numpy(x)).transpose(1, 2).double()
        ref64 = wespeaker.compute_fbank(torch.from_numpy(x).double()[:, None, :])
        ref32 = wespeaker.compute_fbank(torch.from_numpy(x)[:, None, :]).double()
    assert (ours - ref64).abs().max().item() <= MAX_ABS_VS_FLOAT64
    assert (ours - ref32).abs().max().item() <= 2e-3
    # silence: the constant log floor, centred away (up to the rounding of a 998-frame mean)
    assert ours[2].abs().max().item() < 1e-5


def test_frame_transform_is_the_kaldi_steps_composed():
    """The (514, 400) matrix equals DC removal -> pre-emphasis -> Hamming -> zero-pad -> rfft,
    applied step by step in float64 the way kaldi._get_window does it."""
    opts = KaldiFbankOptions()
    frames = torch.randn(
        16, opts.window_size, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    x = frames - frames.mean(dim=1, keepdim=True)
    shifted = torch.nn.functional.pad(x.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    x = x - opts.preemphasis * shifted
    x = x * torch.hamming_window(
        opts.window_size, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64
    )
    spectrum = torch.fft.rfft(torch.nn.functional.pad(x, (0, opts.fft_size - opts.window_size)))
    ours = frames @ frame_transform(opts).T
    bins = opts.fft_size // 2 + 1
    assert ours.shape == (16, 2 * bins)
    torch.testing.assert_close(ours[:, :bins], spectrum.real, rtol=0, atol=1e-10)
    torch.testing.assert_close(ours[:, bins:], spectrum.imag, rtol=0, atol=1e-10)


def test_options_read_from_pyannote(wespeaker):
    opts = KaldiFbankOptions.from_pyannote(wespeaker)
    assert (opts.window_size, opts.window_shift, opts.fft_size, opts.num_mel_bins) == (
        400,
        160,
        512,
        80,
    )
    assert opts.num_frames(160000) == 998
    # the floor torchaudio's kaldi.fbank applies, in any dtype
    assert torchaudio.compliance.kaldi.EPSILON.item() == KALDI_LOG_FLOOR


def test_unsupported_fbank_options_are_refused():
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    with pytest.raises(ValueError, match="dither"):
        KaldiFbankOptions.from_pyannote(WeSpeakerResNet34(dither=1.0))


def test_converted_front_end_has_no_slicing(tmp_path):
    """One conv, squares, one mel matmul, log: no slice_by_index / gather in the program."""
    import coremltools as ct

    from coreml_diarize.mlpackage import load_program, op_histogram, quiet_coremltools

    front_end = fbank_as_conv().eval()
    example = torch.zeros(3, 160000)
    with quiet_coremltools(), torch.no_grad():
        traced = torch.jit.trace(front_end, example)
        mlmodel = ct.convert(
            traced,
            inputs=[ct.TensorType(name="waveform", shape=(3, 160000))],
            outputs=[ct.TensorType(name="fbank")],
            convert_to="mlprogram",
            compute_precision=ct.precision.FLOAT32,
            minimum_deployment_target=ct.target.iOS17,
        )
        mlmodel.save(str(tmp_path / "fbank.mlpackage"))
    ops = op_histogram(load_program(tmp_path / "fbank.mlpackage"))
    assert ops.get("slice_by_index", 0) == 0
    assert ops.get("gather", 0) == 0 and ops.get("gather_along_axis", 0) == 0
    assert ops["conv"] == 1
