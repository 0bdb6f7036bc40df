"""PyanNet (pyannote segmentation-3.0) as a plain, traceable nn.Module.

The Lightning module cannot be traced ("not attached to a Trainer"), and its SincNet layer
recomputes the sinc filterbank from its band parameters on every call. Here the filterbank is
evaluated once (`sincnet_to_conv`) and frozen into an ordinary Conv1d; the rest is pyannote's
forward, step for step, ending in a log-softmax written so that fp16 cannot produce -inf/NaN.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn


def sincnet_to_conv(sincnet) -> nn.Conv1d:
    """pyannote's parametric sinc encoder as a plain Conv1d with the same (80, 1, 251) kernel."""
    encoder = sincnet.conv1d[0]
    with torch.no_grad():
        filters = encoder.filterbank.filters().detach().clone()
    out_channels, in_channels, kernel = filters.shape
    conv = nn.Conv1d(
        in_channels,
        out_channels,
        kernel,
        stride=encoder.stride,
        padding=encoder.padding,
        bias=False,
    )
    conv.weight = nn.Parameter(filters, requires_grad=False)
    return conv


def stable_log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log softmax = z - log(sum(exp(z))) with z = logits - max: sum(exp(z)) >= 1, so the log
    never sees 0 (Core ML lowers F.log_softmax to softmax + log(eps=1e-45), which is -inf in fp16)."""
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    return shifted - torch.log(torch.exp(shifted).sum(dim=-1, keepdim=True))


class SegmentationWrapper(nn.Module):
    """waveform (batch, 1, samples) -> powerset log-probabilities (batch, frames, classes)."""

    def __init__(self, pyannet) -> None:
        super().__init__()
        if not pyannet.hparams.lstm["monolithic"]:
            raise ValueError("only monolithic-LSTM PyanNet (as segmentation-3.0) is supported")
        sincnet = pyannet.sincnet
        self.waveform_norm = copy.deepcopy(sincnet.wav_norm1d)
        self.sinc_filters = sincnet_to_conv(sincnet)
        self.convs = nn.ModuleList([copy.deepcopy(c) for c in list(sincnet.conv1d)[1:]])
        self.pools = copy.deepcopy(sincnet.pool1d)
        self.norms = copy.deepcopy(sincnet.norm1d)
        self.lstm = copy.deepcopy(pyannet.lstm)
        self.linears = (
            copy.deepcopy(pyannet.linear) if hasattr(pyannet, "linear") else nn.ModuleList()
        )
        self.classifier = copy.deepcopy(pyannet.classifier)
        self.eval()

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        x = self.waveform_norm(waveform)
        # SincNet block 0: |sinc filterbank|, then pool -> norm -> leaky ReLU like the others
        x = F.leaky_relu(self.norms[0](self.pools[0](torch.abs(self.sinc_filters(x)))))
        for conv, pool, norm in zip(
            self.convs, list(self.pools)[1:], list(self.norms)[1:], strict=True
        ):
            x = F.leaky_relu(norm(pool(conv(x))))
        x, _ = self.lstm(x.transpose(1, 2))  # (batch, frames, features)
        for linear in self.linears:
            x = F.leaky_relu(linear(x))
        return stable_log_softmax(self.classifier(x))


def build_wrapper(ctx) -> SegmentationWrapper:
    return SegmentationWrapper(ctx.weights.model)
