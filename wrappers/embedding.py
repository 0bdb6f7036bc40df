"""pyannote's WeSpeaker ResNet34 as a plain, traceable nn.Module.

    waveform (batch, samples), mask (batch, mask_frames) -> embedding (batch, dim)
    (online `wespeaker_v2`: WeSpeakerEmbedding = the fbank front end + FbankEmbedding)
    fbank (batch, 1, mels, fbank_frames), weights (batch, mask_frames) -> embedding (batch, dim)
    (offline `Embedding`, FluidAudio's community-1 set: FbankEmbedding alone)

Stages, each one module:
  wespeaker_front_end    Kaldi log-mel as one strided Conv1d (or, with the option
                         `fbank_front_end="factored"`, framing conv + two-stage DFT),
                         mean-normalised over the chunk
  pyannote's ResNet      conv1/bn1 + layer1..4, reused as-is
  MaskToFrames           the segmentation-frame mask resampled onto the ResNet's output frames,
                         with exactly pyannote's nearest-neighbour index mapping, as a constant
                         0/1 selection matrix (a matmul: no gather, no slicing)
  WeightedStatsPool      pyannote's mask-weighted mean and unbiased std, zero-mask safe
  embedding layer(s)     pyannote's seg_1 (and seg_bn_1/seg_2 for two-layer variants)
  L2Normalise            only with `embedding_output="l2"` (coreml_diarize.specs.Options): the
                         vector divided by its L2 norm, as FluidAudio documents its embeddings

Why not call pyannote's forward: it returns `torch.tensor(0.0)` beside the embedding, runs the
fbank through `torch.vmap`, and StatsPool/TSTP use shape arithmetic (`rearrange`, `size()`),
which torch.jit.trace records as `aten::Int` casts that ct.convert cannot lower.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .fbank import FbankAsConv, KaldiFbankOptions, WeSpeakerFbank, check_frames
from .fbank_factored import FactoredFbank


class MaskToFrames(nn.Module):
    """mask (batch, mask_frames) -> weights (batch, feature_frames), as pyannote's StatsPool does
    it: `F.interpolate(weights, size=feature_frames, mode="nearest")`.

    The index mapping is taken from F.interpolate itself (applied to an identity matrix), so it
    is pyannote's by construction, float rounding of the scale included. Each column of the
    selection matrix holds a single 1, so the matmul copies values exactly in any precision.
    """

    def __init__(self, mask_frames: int, feature_frames: int) -> None:
        super().__init__()
        identity = torch.eye(mask_frames)[None]  # (1, channels=mask_frames, length=mask_frames)
        selection = F.interpolate(identity, size=feature_frames, mode="nearest")[0]
        self.register_buffer("selection", selection)  # (mask_frames, feature_frames)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return torch.matmul(mask, self.selection)


def _divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """numerator / denominator, where a non-positive denominator divides by 1 instead.

    pyannote's denominators carry +1e-8 and are positive for any mask in fp32, so this is its
    division there; the guard is for precisions where 1e-8 rounds to 0 (fp16), where an all-zero
    mask would otherwise give 0 / 0. The numerators are then exactly 0, so the result is 0.
    """
    positive = denominator > 0
    return numerator / torch.where(positive, denominator, torch.ones_like(denominator))


class WeightedStatsPool(nn.Module):
    """features (batch, channels, frames), weights (batch, frames) -> (batch, 2 * channels):
    weighted mean and unbiased weighted std, pyannote's `_pool` formula.

    pyannote:  v1 = Σw + eps,  mean = Σ w·x / v1,  var = Σ w·(x − mean)² / (v1 − Σw²/v1 + eps).
    Here the same quantities with the weights normalised first, ŵ = w / v1:
               mean = Σ ŵ·x,   var = Σ ŵ·(x − mean)² / (1 − Σŵ² + eps/v1)
    (numerator and denominator of pyannote's variance divided by v1). Why: every sum is then a
    weighted average, bounded by the largest term. pyannote's Σ w·(x − mean)² over 125 frames
    reached 2.3e4 per frame on quiet speech with seeded weights and overflowed fp16 (65504) to
    inf/NaN; as an average it stays where the terms are. The deviations are also squared at
    1/16 of their size and the std scaled back by 16 (powers of two: exact), so a frame may
    deviate by up to 4096 before a square overflows fp16.

    All-zero weights (an empty speaker slot): pyannote returns mean 0 and std 0 there (0 / 1e-8
    and sqrt(0 / 2e-8)), so the embedding is the embedding layer's bias. The same comes out
    here, and stays finite in fp16 (see `_divide`). A variance that rounding makes slightly
    negative is clamped to 0 before the square root (pyannote would return NaN).
    """

    eps: float = 1e-8  # pyannote's
    deviation_scale: float = 16.0  # a power of two

    def forward(self, features: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        w = weights.unsqueeze(1)  # (batch, 1, frames)
        v1 = w.sum(dim=2) + self.eps  # (batch, 1)
        w_hat = _divide(w, v1.unsqueeze(2))  # normalised weights: each sum below is an average
        mean = torch.sum(features * w_hat, dim=2)
        scaled_deviation = (features - mean.unsqueeze(2)) / self.deviation_scale
        unbiased = 1.0 - torch.square(w_hat).sum(dim=2) + _divide(torch.full_like(v1, self.eps), v1)
        scaled_var = _divide(torch.sum(torch.square(scaled_deviation) * w_hat, dim=2), unbiased)
        std = torch.sqrt(torch.clamp(scaled_var, min=0.0)) * self.deviation_scale
        return torch.cat([mean, std], dim=1)


class L2Normalise(nn.Module):
    """embedding (batch, dim) -> embedding / ||embedding|| per row; a zero row stays zero.

    Formulated so that no intermediate overflows fp16 (max 65504): the row is first divided by
    its largest |value| (so every entry is in [-1, 1] and the sum of squares in [1, dim]), then
    by the norm of that. Same vector as x / ||x|| in exact arithmetic; computed directly,
    ||x||^2 overflows fp16 for norms above 256, and raw WeSpeaker norms reach tens. The floor
    `eps` keeps an all-zero row at 0 instead of 0 / 0 (it is a normal fp16 number).
    """

    eps: float = 1e-4

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        peak = torch.amax(torch.abs(embedding), dim=-1, keepdim=True)
        scaled = embedding / torch.clamp(peak, min=self.eps)
        norm = torch.sqrt(torch.sum(scaled * scaled, dim=-1, keepdim=True))
        return scaled / torch.clamp(norm, min=self.eps)


class ResNetFrames(nn.Module):
    """pyannote's ResNet trunk: centred fbank (batch, 1, mels, frames) -> (batch, channels * mels', frames')."""

    def __init__(self, resnet) -> None:
        super().__init__()
        self.conv1 = copy.deepcopy(resnet.conv1)
        self.bn1 = copy.deepcopy(resnet.bn1)
        self.layers = nn.Sequential(
            *(
                copy.deepcopy(layer)
                for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)
            )
        )

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(fbank)))  # (batch, 1, mels, frames) in
        x = self.layers(x)  # (batch, channels, mels', frames')
        return x.flatten(1, 2)  # TSTP's "batch (dimension channel) frames", with static shapes


class EmbeddingHead(nn.Module):
    """pooled statistics -> embedding: seg_1, or seg_1 -> ReLU -> seg_bn_1 -> seg_2 (two layers)."""

    def __init__(self, resnet) -> None:
        super().__init__()
        self.seg_1 = copy.deepcopy(resnet.seg_1)
        self.two_layers = bool(resnet.two_emb_layer)
        if self.two_layers:
            self.seg_bn_1 = copy.deepcopy(resnet.seg_bn_1)
            self.seg_2 = copy.deepcopy(resnet.seg_2)

    def forward(self, stats: torch.Tensor) -> torch.Tensor:
        embedding = self.seg_1(stats)
        if self.two_layers:
            embedding = self.seg_2(self.seg_bn_1(F.relu(embedding)))
        return embedding


class FbankEmbedding(nn.Module):
    """centred fbank (batch, 1, mels, fbank_frames), mask (batch, mask_frames) -> raw embedding
    (batch, dim): what pyannote's `WeSpeakerResNet34.forward` does after `compute_fbank`, i.e.
    `resnet(fbank, weights=mask)[1]` with the fbank laid out channels-first.

    By default the embedding is returned raw, as pyannote's (not L2-normalised, unlike the
    published FluidAudio `Embedding`, docs/offline_contract.md U2): pyannote's PLDA starts with
    l2norm(x - mean1), which is not scale-invariant, so PLDA(x) != PLDA(x / |x|); PldaRho is
    pyannote's PLDA and expects the raw vector. `l2=True` appends `L2Normalise` (the
    `embedding_output="l2"` option; docs/offline_contract.md "Embedding scale").
    """

    def __init__(self, resnet, *, fbank_frames: int, mask_frames: int, l2: bool = False) -> None:
        super().__init__()
        feature_frames = int(resnet.num_frames(fbank_frames))  # pyannote's arithmetic
        self.trunk = ResNetFrames(resnet)
        self.mask_to_frames = MaskToFrames(mask_frames, feature_frames)
        self.pool = WeightedStatsPool()
        self.head = EmbeddingHead(resnet)
        self.normalise = L2Normalise() if l2 else nn.Identity()
        self.eval()

    def forward(self, fbank: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        stats = self.pool(self.trunk(fbank), self.mask_to_frames(mask))
        return self.normalise(self.head(stats))


class WeSpeakerEmbedding(FbankEmbedding):
    """waveform (batch, samples), mask (batch, mask_frames) -> raw embedding (batch, dim),
    what pyannote's `WeSpeakerResNet(waveform[:, None], weights=mask)` returns: the fbank front
    end, then FbankEmbedding."""

    def __init__(
        self,
        wespeaker,
        *,
        samples: int,
        mask_frames: int,
        l2: bool = False,
        front_end: str = "dense",
    ) -> None:
        fbank = wespeaker_front_end(wespeaker, front_end)
        fbank_frames = fbank.log_mel.opts.num_frames(samples)
        super().__init__(
            wespeaker.resnet, fbank_frames=fbank_frames, mask_frames=mask_frames, l2=l2
        )
        self.fbank = fbank
        self.eval()

    def forward(self, waveform: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return super().forward(self.fbank(waveform).unsqueeze(1), mask)


def wespeaker_front_end(wespeaker, front_end: str = "dense") -> WeSpeakerFbank:
    """The centred Kaldi front end of a pyannote WeSpeaker model: "dense" (one strided conv,
    `FbankAsConv`) or "factored" (`FactoredFbank`: the same log-mel from 8x fewer constants,
    the `fbank_front_end` option; docs/quantization.md, "The front end")."""
    opts = KaldiFbankOptions.from_pyannote(wespeaker)
    if front_end == "factored":
        return WeSpeakerFbank(opts, log_mel=FactoredFbank(opts))
    if front_end == "dense":
        return WeSpeakerFbank(opts, log_mel=FbankAsConv(opts))
    raise ValueError(f"unknown fbank front end {front_end!r} (dense, factored)")


def build_wrapper(ctx) -> WeSpeakerEmbedding:
    return WeSpeakerEmbedding(
        ctx.weights.model,
        samples=ctx.geometry.samples,
        mask_frames=ctx.geometry.frames,
        l2=ctx.options.embedding_output == "l2",
        front_end=ctx.options.fbank_front_end,
    )


def build_offline_wrapper(ctx) -> FbankEmbedding:
    """For the registry's `offline-embedding` model (FluidAudio's `Embedding`)."""
    fbank_frames = check_frames(KaldiFbankOptions.from_pyannote(ctx.weights.model), ctx.geometry)
    return FbankEmbedding(
        ctx.weights.model.resnet,
        fbank_frames=fbank_frames,
        mask_frames=ctx.geometry.frames,
        l2=ctx.options.embedding_output == "l2",
    )
