"""Kaldi log-mel filterbank with FEW constants: framing conv + two-stage (Cooley-Tukey) DFT.

Same interface and numerics as `FbankAsConv` (waveform (batch, samples) in [-1, 1] -> log-mel
(batch, num_mel_bins, frames) = `kaldi.fbank(waveform * 2^15, ...)` transposed), but instead of
one (514, 400) conv kernel (205,600 constants that must stay fp32-exact) the frame transform is
factored; the only big constant left is the (80, 256) mel matrix, which is 97.6 % exact zeros
(501 non-zeros) and so compresses exactly as a sparse constant.

Per frame x (400 samples starting at t0), Kaldi computes  z = P (x - mean(x) 1)  (P =
pre-emphasis that replicates the first sample), then rfft(window * z, 512). Since P 1 = (1 - a) 1,

    z = e[t0 : t0 + 400] - (1 - a) mean(x) 1 + a (s[t0 - 1] - s[t0]) delta_0

where e = s - a s[t - 1] is the waveform pre-emphasised globally (a 2-tap conv). So:

* e: one 2-tap conv over the waveform; the frame means: `avg_pool` (no constants); the
  first-sample correction c_f = a w[0] (s[t0-1] - s[t0]) = -w[0] (e[t0] - (1 - a) s[t0]): two
  2-tap convs with stride 160 and dilation 399 that pick sample t0 of e and s (the dilation
  only makes the frame count come out right, the second tap is 0). delta_0 windowed and transformed is w[0] in
  every bin's real part, so c_f is added to Re X after the DFT.
* framing without slicing or sliding_windows: with the hop 160 = 10 x 16 and 512 = 32 x 16,
  write a frame sample as n = 16 n1 + n2 (n2 < 16). The waveform cut into 160-sample blocks,
  channels ordered (n2, row of 16 in the block), is a (batch, 160, blocks) tensor; frame f is
  blocks f, f+1, f+2, i.e. a grouped conv (groups = 160, kernel 3, one-hot taps: 1,440
  constants, all 0/1) gives (batch, 16 [n2], 30 [(row, block)], frames) directly: n1 = 10 *
  block + row < 30 <= 32. Samples 400..479 of that 480-sample frame get window weight 0 (the
  zero padding to 512).
* DFT of length 512 = 32 x 16 (n = 16 n1 + n2, k = k1 + 32 k2):
  X[k] = sum_n2 W16^(n2 k2) * W512^(n2 k1) * sum_n1 W32^(n1 k1) x[16 n1 + n2],
  i.e. a (32, 30) matmul along n1 (cos and -sin), twiddle factors (16 x 32 complex), and a
  16 -> 8 point DFT along n2 (only k < 256 is needed: bin 256 has zero mel weight). The bins
  come out as (k2, k1), which flattened is the natural order k = 32 k2 + k1: no permutation.
* power Re^2 + Im^2, the mel matmul, the log with Kaldi's floor, as `FbankAsConv` does (the
  2^15 input scale folded into the floor and a log offset).

All constants are built in float64 from the definitions, then stored as float32. No
slice_by_index, gather or transpose of frames in the converted program; one transpose of the
waveform-sized block tensor.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from coreml_diarize.wrappers.fbank import (
    KALDI_LOG_FLOOR,
    KaldiFbankOptions,
    frame_transform,
    kaldi_mel_matrix,
)

SECOND_STAGE = 16  # n2: second-stage DFT size, must divide the hop and the FFT size
# FFT bins 1..DIRECT_BINS (bin 0 has no mel weight) come from a small strided conv with DC
# removal and pre-emphasis folded in, as in FbankAsConv: pre-emphasis leaves those bins ~1e-6
# of a frame's energy, and the FFT path's fp32 rounding (relative to the whole frame) costs them
# up to 1e-3 nats; the folded rows are themselves small, so their rounding is too.
DIRECT_BINS = 3


def hamming(opts: KaldiFbankOptions) -> torch.Tensor:
    """Kaldi's (symmetric) Hamming window, float64, as `kaldi._feature_window_function`."""
    n = opts.window_size
    return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, dtype=torch.float64)


class FactoredFbank(nn.Module):
    """waveform (batch, samples) in [-1, 1] -> Kaldi log-mel (batch, num_mel_bins, frames),
    numerically `kaldi.fbank(waveform * 2^15, ...)` transposed. Not mean-normalised."""

    def __init__(
        self,
        opts: KaldiFbankOptions | None = None,
        dtype: torch.dtype = torch.float32,
        direct_bins: int = DIRECT_BINS,
    ) -> None:
        super().__init__()
        opts = opts or KaldiFbankOptions()
        self.opts = opts
        size, hop, nfft, n2 = opts.window_size, opts.window_shift, opts.fft_size, SECOND_STAGE
        n1 = nfft // n2  # first-stage DFT size (32)
        self.first_size = n1
        self.rows = hop // n2  # rows of n2 samples per hop block (10)
        self.blocks = -(-size // hop)  # hop blocks a frame touches (3)
        if nfft % n2 or hop % n2 or self.rows * self.blocks > n1:
            raise ValueError(f"cannot factor window {size} / hop {hop} / fft {nfft} by {n2}")
        a = opts.preemphasis
        dt = torch.float64
        window = hamming(opts)

        # global pre-emphasis e[t] = s[t] - a s[t-1]  (s[-1] = 0: corrected below)
        self.register_buffer("preemphasis", torch.tensor([[[-a, 1.0]]], dtype=dt).to(dtype))
        # first-sample correction a w[0] (s[t0 - 1] - s[t0]) = -w[0] (e[t0] - (1 - a) s[t0]):
        # 2-tap kernels picking each frame's first sample of e and of s (see forward)
        w0 = window[0].item()
        self.register_buffer("pick_emphasised", torch.tensor([[[-w0, 0.0]]], dtype=dt).to(dtype))
        self.register_buffer(
            "pick_waveform", torch.tensor([[[(1.0 - a) * w0, 0.0]]], dtype=dt).to(dtype)
        )
        self.dc_scale = 1.0 - a

        # framing: out channel (blocks * c' + j) = tap j of input channel c' (one-hot, groups)
        taps = torch.eye(self.blocks, dtype=dtype).repeat(hop, 1)  # (hop * blocks, blocks)
        self.register_buffer("framing", taps[:, None, :])

        # sample index of each (n2, u = blocks * row + block) cell of a framed 480-sample frame
        row = torch.arange(self.rows)[:, None]
        block = torch.arange(self.blocks)[None, :]
        first_index = (self.rows * block + row).reshape(-1)  # n1 of u, (rows * blocks,)
        sample = n2 * first_index[None, :] + torch.arange(n2)[:, None]  # (n2, u)
        padded_window = torch.cat([window, torch.zeros(n2 * n1 - size, dtype=dt)])
        self.register_buffer("window", padded_window[sample][:, :, None].to(dtype))

        # first stage: 32-point DFT along n1 (real input), columns in u order
        k1 = torch.arange(n1, dtype=dt)[:, None]
        angle1 = 2 * math.pi * k1 * first_index.to(dt)[None, :] / n1
        self.register_buffer("dft1_re", torch.cos(angle1).to(dtype))
        self.register_buffer("dft1_im", (-torch.sin(angle1)).to(dtype))
        # twiddles W512^(n2 k1), (n2, k1, 1)
        angle_tw = (
            2 * math.pi * torch.arange(n2, dtype=dt)[:, None] * torch.arange(n1, dtype=dt) / nfft
        )
        self.register_buffer("twiddle_re", torch.cos(angle_tw)[:, :, None].to(dtype))
        self.register_buffer("twiddle_im", (-torch.sin(angle_tw))[:, :, None].to(dtype))
        # second stage: n2-point DFT, only k2 < n2 / 2 (bins below Nyquist), on [Zr; Zi]
        k2 = torch.arange(n2 // 2, dtype=dt)[:, None]
        angle2 = 2 * math.pi * k2 * torch.arange(n2, dtype=dt)[None, :] / n2
        c2, s2 = torch.cos(angle2), torch.sin(angle2)
        self.register_buffer("dft2_re", torch.cat([c2, s2], dim=1).to(dtype))  # Zr c + Zi s
        self.register_buffer("dft2_im", torch.cat([-s2, c2], dim=1).to(dtype))  # Zi c - Zr s

        mel = kaldi_mel_matrix(opts)
        bins = nfft // 2
        if mel[:, bins:].abs().max() != 0:  # the Nyquist column is kaldi.fbank's zero pad
            raise ValueError("mel matrix has weight at Nyquist")
        # the lowest bins straight from the waveform, DC removal and pre-emphasis folded in
        # (as FbankAsConv): see DIRECT_BINS
        direct = torch.arange(1, direct_bins + 1)
        rows = frame_transform(opts)[torch.cat([direct, direct + bins + 1])]
        self.register_buffer("direct_kernel", rows[:, None, :].to(dtype))
        mel_direct = mel[:, direct].double()
        self.register_buffer("mel_direct", torch.cat([mel_direct, mel_direct], dim=1).to(dtype))
        mel_fft = mel[:, :bins].clone()
        mel_fft[:, : direct_bins + 1] = 0.0  # bin 0 has no mel weight anyway
        self.register_buffer("mel", mel_fft.to(dtype).contiguous())
        power_scale = opts.input_scale**2
        self.log_floor = KALDI_LOG_FLOOR / power_scale
        self.log_offset = math.log(power_scale)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.log_mel_energy(waveform) + self.log_offset

    def log_mel_energy(self, waveform: torch.Tensor) -> torch.Tensor:
        """log of the mel energies of the waveform as given (without pyannote's 2^30), the
        stage `WeSpeakerFbank` centres (as `FbankAsConv.log_mel_energy`)."""
        opts = self.opts
        samples = int(waveform.shape[-1])  # static: the graph is built per input length
        hop, n2 = opts.window_shift, SECOND_STAGE
        frames = opts.num_frames(samples)
        x = waveform.unsqueeze(1)  # (batch, 1, samples)
        shifted = F.pad(x, (1, 0))
        mean = F.avg_pool1d(x, opts.window_size, opts.window_shift)  # (batch, 1, frames)
        emphasised = F.conv1d(shifted, self.preemphasis)  # (batch, 1, samples)
        # sample t0 of every frame: a 2-tap conv, stride hop, whose dilation (window - 1) makes
        # the frame count come out as avg_pool's (its second tap is 0): no slicing
        pick = {"stride": hop, "dilation": opts.window_size - 1}
        correction = F.conv1d(emphasised, self.pick_emphasised, **pick) + F.conv1d(
            x, self.pick_waveform, **pick
        )  # (batch, 1, frames): a w0 (s[t0 - 1] - s[t0])

        # exactly frames + blocks - 1 hop blocks: the tail past the last frame is never used
        needed = (frames + self.blocks - 1) * hop
        if samples > needed:
            emphasised = emphasised[..., :needed]
        elif samples < needed:
            emphasised = F.pad(emphasised, (0, needed - samples))
        blocks = emphasised.reshape(-1, needed // hop, self.rows, n2)
        blocks = blocks.permute(0, 3, 2, 1).reshape(-1, hop, needed // hop)
        framed = F.conv1d(blocks, self.framing, groups=hop)  # (batch, 480, frames)
        framed = framed.reshape(-1, n2, self.rows * self.blocks, frames)
        dc = (mean * self.dc_scale).unsqueeze(1)  # (batch, 1, 1, frames)
        z = (framed - dc) * self.window  # (batch, n2, u, frames)

        y_re = torch.matmul(self.dft1_re, z)  # (batch, n2, k1, frames)
        y_im = torch.matmul(self.dft1_im, z)
        t_re = y_re * self.twiddle_re - y_im * self.twiddle_im
        t_im = y_re * self.twiddle_im + y_im * self.twiddle_re
        stacked = torch.cat([t_re, t_im], dim=1).reshape(-1, 2 * n2, self.first_size * frames)
        x_re = torch.matmul(self.dft2_re, stacked).reshape(-1, opts.fft_size // 2, frames)
        x_im = torch.matmul(self.dft2_im, stacked).reshape(-1, opts.fft_size // 2, frames)
        x_re = x_re + correction
        power = x_re * x_re + x_im * x_im
        direct = F.conv1d(x, self.direct_kernel, stride=hop)  # (batch, 2 * direct, frames)
        mel_energy = torch.matmul(self.mel, power) + torch.matmul(self.mel_direct, direct * direct)
        return torch.log(torch.clamp(mel_energy, min=self.log_floor))


def constant_count(module: nn.Module) -> int:
    """Elements of every buffer and parameter (what a conversion stores as constants)."""
    return sum(t.numel() for t in [*module.buffers(), *module.parameters()])
