"""Kaldi log-mel filterbank (as pyannote's WeSpeaker computes it) as one strided Conv1d.

pyannote scales the waveform by 2^15 and runs `torchaudio.compliance.kaldi.fbank` on it, frame by
frame (vmapped): cut 25 ms frames every 10 ms, remove each frame's DC offset, pre-emphasise,
apply a Hamming window, zero-pad to 512 and take |rfft|^2, sum through 80 triangular mel
filters, log with a floor. Everything up to the rfft is linear in the 400 samples of a frame,
so DC removal, pre-emphasis, window and the real DFT compose into ONE (2*257, 400) matrix, and
applying that matrix to every frame is a Conv1d with stride 160: no per-frame slicing, no
gather, no FFT op. The kernel is built in float64 from the definitions (no fitted numbers).

After the conv:  power = re^2 + im^2  is written as  mel = [M | M] @ conv^2  (the mel matrix
repeated for the real and imaginary rows), so the real and imaginary halves are never sliced
apart. The mel matrix is torchaudio's own `get_mel_banks`.

Scale: the conv works on the waveform as given (not times 2^15). Powers of two are exact in
binary floating point, so the 2^30 that pyannote's scaling puts on the power spectrum moves into
the floor (eps / 2^30) and a constant log offset (30 ln 2): bit-for-bit the same arithmetic in
fp32, except for that last addition's rounding. The mean-normalised WeSpeaker front end drops
the offset altogether (it cancels).

Precision: everything up to the log stays fp32 in fp16 programs (`ModelSpec.fp32_values`).
Measured (docs/quantization.md): with the power spectrum in fp16, quiet bins of real speech
underflow (the floor, 1.1e-16, is below fp16's smallest subnormal, 6e-8) and the embedding's
cosine to PyTorch falls to -0.29..0.61; with an fp16-rounded DFT kernel the sweep's log-mel is
off by 5 nats. From the log on, fp16 costs less than 1e-4 of cosine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio.compliance.kaldi as kaldi
from torch import nn

# Kaldi's log floor as torchaudio applies it (`kaldi._get_epsilon`): float32's machine epsilon,
# whatever the dtype of the computation.
KALDI_LOG_FLOOR = float(torch.finfo(torch.float32).eps)


@dataclass(frozen=True)
class KaldiFbankOptions:
    """The `kaldi.fbank` settings pyannote's WeSpeaker uses (its defaults and hparams)."""

    sample_rate: int = 16000
    num_mel_bins: int = 80
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    preemphasis: float = 0.97  # kaldi.fbank default, pyannote keeps it
    low_freq: float = 20.0  # kaldi.fbank defaults
    high_freq: float = 0.0
    input_scale: float = float(1 << 15)  # pyannote: waveforms * (1 << 15) before kaldi.fbank

    @classmethod
    def from_pyannote(cls, model) -> KaldiFbankOptions:
        """Read a pyannote WeSpeaker model's fbank hparams; refuse settings not expressed here."""
        hp = model.hparams
        unsupported = {
            "dither": (hp.dither, 0.0),
            "window_type": (hp.window_type, "hamming"),
            "use_energy": (hp.use_energy, False),
            "snip_edges": (hp.get("snip_edges", True), True),
            "round_to_power_of_two": (hp.get("round_to_power_of_two", True), True),
            "fbank_centering_span": (hp.get("fbank_centering_span", None), None),
        }
        for name, (value, supported) in unsupported.items():
            if value != supported:
                raise ValueError(f"fbank_as_conv supports {name}={supported!r} only, got {value!r}")
        return cls(
            sample_rate=int(hp.sample_rate),
            num_mel_bins=int(hp.num_mel_bins),
            frame_length_ms=float(hp.frame_length),
            frame_shift_ms=float(hp.frame_shift),
        )

    # The same integer arithmetic as kaldi._get_waveform_and_window_properties.
    @property
    def window_size(self) -> int:
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def window_shift(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        return 1 if self.window_size == 0 else 2 ** (self.window_size - 1).bit_length()

    def num_frames(self, num_samples: int) -> int:
        """Frames with snip_edges=True: only frames that fit entirely."""
        return 1 + (num_samples - self.window_size) // self.window_shift


def frame_transform(opts: KaldiFbankOptions) -> torch.Tensor:
    """(2 * (fft_size // 2 + 1), window_size) float64: frame samples -> [Re; Im] of the rDFT of
    the DC-removed, pre-emphasised, Hamming-windowed, zero-padded frame."""
    n = opts.window_size
    dt = torch.float64
    eye = torch.eye(n, dtype=dt)
    # remove DC offset: x - mean(x)
    dc_removal = eye - torch.full((n, n), 1.0 / n, dtype=dt)
    # pre-emphasis: y[j] = x[j] - a * x[max(j - 1, 0)]  (Kaldi replicates the first sample)
    previous = torch.diag(torch.ones(n - 1, dtype=dt), -1)
    previous[0, 0] = 1.0
    preemphasis = eye - opts.preemphasis * previous
    # Hamming window exactly as kaldi._feature_window_function builds it
    window = torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, dtype=dt)
    # real DFT of the frame zero-padded to fft_size: the padding contributes nothing, so only
    # the first `n` columns of the DFT matrix are needed
    bins = torch.arange(opts.fft_size // 2 + 1, dtype=dt)[:, None]
    angle = 2.0 * math.pi * bins * torch.arange(n, dtype=dt)[None, :] / opts.fft_size
    rdft = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0)
    return rdft @ torch.diag(window) @ preemphasis @ dc_removal


def kaldi_mel_matrix(opts: KaldiFbankOptions) -> torch.Tensor:
    """(num_mel_bins, fft_size // 2 + 1): torchaudio's own mel bank, with the zero Nyquist
    column kaldi.fbank appends."""
    banks, _ = kaldi.get_mel_banks(
        opts.num_mel_bins, opts.fft_size, float(opts.sample_rate), opts.low_freq, opts.high_freq,
        100.0, -500.0, 1.0,
    )  # fmt: skip
    return torch.nn.functional.pad(banks, (0, 1))


class FbankAsConv(nn.Module):
    """waveform (batch, samples) in [-1, 1] -> Kaldi log-mel (batch, num_mel_bins, frames),
    numerically `kaldi.fbank(waveform * 2^15, ...)` transposed. Not mean-normalised."""

    def __init__(self, opts: KaldiFbankOptions | None = None) -> None:
        super().__init__()
        opts = opts or KaldiFbankOptions()
        self.opts = opts
        kernel = frame_transform(opts)  # float64, applied to the waveform as given
        self.frames = nn.Conv1d(
            1, kernel.shape[0], opts.window_size, stride=opts.window_shift, bias=False
        )
        self.frames.weight = nn.Parameter(kernel[:, None, :].float(), requires_grad=False)
        mel = kaldi_mel_matrix(opts).double()
        # [M | M] @ [re^2; im^2] = M @ (re^2 + im^2): no slicing of the conv output
        self.register_buffer("mel_of_squares", torch.cat([mel, mel], dim=1).float())
        # pyannote's 2^15 input scale multiplies the power spectrum by 2^30: exact in binary
        # floating point, so fold it into the floor and a constant log offset instead
        power_scale = opts.input_scale**2
        self.log_floor = KALDI_LOG_FLOOR / power_scale
        self.log_offset = math.log(power_scale)

    def log_mel_energy(self, waveform: torch.Tensor) -> torch.Tensor:
        """log of the mel energies of the waveform as given (without pyannote's 2^30)."""
        spectrum = self.frames(waveform.unsqueeze(1))  # (batch, [re; im], frames)
        mel_energy = torch.matmul(self.mel_of_squares, spectrum * spectrum)
        # the power spectrum spans more decades than fp16 holds: fp16 programs keep this log
        # and everything upstream in fp32 (ModelSpec.fp32_values names its MIL value, which
        # the trace names after the argument of the module that reads it)
        return torch.log(torch.clamp(mel_energy, min=self.log_floor))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.log_mel_energy(waveform) + self.log_offset


class MeanNormalisation(nn.Module):
    """Subtract each mel bin's average over the whole chunk (pyannote, fbank_centering_span=None)."""

    def forward(self, log_mel_energy: torch.Tensor) -> torch.Tensor:
        return log_mel_energy - log_mel_energy.mean(dim=-1, keepdim=True)


class WeSpeakerFbank(nn.Module):
    """What pyannote's `compute_fbank` returns, transposed: (batch, num_mel_bins, frames).

    `log_mel`: the log-mel stage, any module with `log_mel_energy(waveform)` (default the one
    conv, `FbankAsConv`; `wrappers.fbank_factored.FactoredFbank` is the few-constants form)."""

    def __init__(
        self, opts: KaldiFbankOptions | None = None, log_mel: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.log_mel = log_mel if log_mel is not None else FbankAsConv(opts)
        self.centre = MeanNormalisation()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        # pyannote's constant log offset (30 ln 2) cancels in the mean normalisation, so it is
        # left out: one op fewer, and no rounding of values near 21 where fp16's step is 1/64
        return self.centre(self.log_mel.log_mel_energy(waveform))


def fbank_as_conv(model=None) -> WeSpeakerFbank:
    """The centred front end of a pyannote WeSpeaker `model` (default options without one)."""
    return WeSpeakerFbank(KaldiFbankOptions.from_pyannote(model) if model is not None else None)


class ChannelsFirstFbank(nn.Module):
    """audio (batch, 1, samples) -> fbank_features (batch, 1, num_mel_bins, frames): pyannote's
    `compute_fbank` (×2^15, Kaldi fbank, minus the mean over frames), transposed to the
    channels-first layout FluidAudio's offline `FBank` model has (docs/offline_contract.md §3).

    The WeSpeakerFbank front end of the online embedding model, between a squeeze and an
    unsqueeze of the channel axis (no slicing). fp32 only: see the module docstring."""

    def __init__(self, opts: KaldiFbankOptions | None = None) -> None:
        super().__init__()
        self.fbank = WeSpeakerFbank(opts)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.fbank(audio.squeeze(1)).unsqueeze(1)


def check_frames(opts: KaldiFbankOptions, geometry) -> int:
    """The fbank frames of a chunk for `opts`, which must be the geometry's `fbank_frames`
    (the I/O shapes are declared with it): a checkpoint with other frame settings is refused."""
    frames = opts.num_frames(geometry.samples)
    if frames != geometry.fbank_frames:
        raise ValueError(
            f"the model's fbank gives {frames} frames per chunk, the declared shapes "
            f"{geometry.fbank_frames} (frame settings other than 25 ms / 10 ms)"
        )
    return frames


def build_offline_wrapper(ctx) -> ChannelsFirstFbank:
    """For the registry's `fbank` model: the embedding weights' fbank settings."""
    opts = KaldiFbankOptions.from_pyannote(ctx.weights.model)
    check_frames(opts, ctx.geometry)
    return ChannelsFirstFbank(opts).eval()
