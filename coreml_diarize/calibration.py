"""Make seeded random weights behave like a trained model's (data-dependent, LSUV-style).

With pyannote's default init the segmentation output barely depends on its input (two speech
chunks differ by ~3e-3 in log-prob, one argmax class everywhere) and WeSpeaker embeddings of
different inputs all point one way (cosine 0.91-0.997). Every parity or agreement test on such
weights passes trivially, so we rescale layer by layer on fixed calibration audio until each
layer's output has unit-order spread. Scale factors are rounded to 3 significant digits so that
tiny floating-point differences between machines cannot change the resulting weights.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

CALIBRATION_VERSION = "lsuv-v1"


def _round3(x: float) -> float:
    return float(f"{x:.3g}")


def calibration_audio(n_chunks: int = 3, samples: int = 160000) -> torch.Tensor:
    """Fixed calibration audio: chunks of pyannote's bundled sample not used for validation
    (validation uses offsets 0 s and 15 s), plus a synthetic speech-like chunk. (n, 1, samples)"""
    from . import signals

    offsets = (5.0, 10.0, 20.0)[: max(n_chunks - 1, 1)]
    chunks = [signals.real_speech(o, samples) for o in offsets] + [
        signals.speech_like(samples, seed=7)
    ]
    return torch.from_numpy(np.stack(chunks)[:, None, :])


def audio_digest(audio: torch.Tensor) -> str:
    return hashlib.sha256(audio.numpy().astype(np.float32).tobytes()).hexdigest()[:12]


def calibrate(family, model) -> str:
    """Calibrate `model` in place with its WeightFamily's calibration; returns a provenance
    note."""
    audio = calibration_audio()
    with torch.no_grad():
        family.calibrate(model, audio)
    return f"{CALIBRATION_VERSION}:{family.name}:audio-{audio_digest(audio)}"


# --- segmentation ---------------------------------------------------------------------------


def _lstm_prefix(lstm: torch.nn.LSTM, layers: int) -> torch.nn.LSTM:
    """A copy of the first `layers` layers of a multi-layer LSTM (to read a layer's input)."""
    prefix = torch.nn.LSTM(
        lstm.input_size,
        lstm.hidden_size,
        num_layers=layers,
        batch_first=True,
        bidirectional=lstm.bidirectional,
    )
    own = dict(lstm.named_parameters())
    prefix.load_state_dict({name: own[name] for name, _ in prefix.named_parameters()})
    return prefix.eval()


def calibrate_segmentation(
    model, audio: torch.Tensor, *, gate_std: float = 1.5, logit_std: float = 3.0
) -> None:
    """LSTM gates, linear layers and classifier scaled to unit-order spread on `audio`."""
    features = model.sincnet(audio).transpose(1, 2)  # (n, frames, 60): already instance-normalised
    lstm = model.lstm
    suffixes = ["", "_reverse"] if lstm.bidirectional else [""]
    layer_input = features
    for layer in range(lstm.num_layers):
        if layer > 0:
            layer_input, _ = _lstm_prefix(lstm, layer)(features)
        flat = layer_input.reshape(-1, layer_input.shape[-1])
        for suffix in suffixes:
            w = getattr(lstm, f"weight_ih_l{layer}{suffix}")
            std = (flat @ w.T).std().item()
            w.mul_(_round3(gate_std / max(std, 1e-6)))
            getattr(lstm, f"weight_hh_l{layer}{suffix}").mul_(2.0)  # let the state carry context
    hidden, _ = lstm(features)
    for linear in model.linear:
        _unit_spread(linear, hidden, target=1.0)
        hidden = torch.nn.functional.leaky_relu(linear(hidden))
    _unit_spread(model.classifier, hidden, target=logit_std)


def _unit_spread(linear: torch.nn.Linear, x: torch.Tensor, *, target: float) -> None:
    """Scale so each output unit has std `target` on x, and centre it (bias = -mean)."""
    y = linear(x).reshape(-1, linear.out_features)
    std = y.std(dim=0).clamp_min(1e-6)
    scale = torch.tensor([_round3(v) for v in (target / std).tolist()])
    linear.weight.mul_(scale[:, None])
    linear.bias.mul_(scale)
    mean = linear(x).reshape(-1, linear.out_features).mean(dim=0)
    linear.bias.sub_(torch.tensor([_round3(v) for v in mean.tolist()]))


# --- embedding ------------------------------------------------------------------------------


def calibrate_embedding(
    model,
    audio: torch.Tensor,
    *,
    centring_offsets_s: tuple[float, ...] = (2.5, 20.0),
    windows: int = 10,
) -> None:
    """WeSpeaker ResNet34, in one pass through the trunk on `audio` (n, 1, samples):

    - every conv is scaled so its output has unit std (one factor per conv, 3 significant
      digits: LSUV), and the BatchNorm after it gets the channel means as running_mean (on a
      1/64 grid), i.e. each channel is centred before its ReLU the way a trained BatchNorm
      centres it. Without centring, ReLU features share one mean direction and every embedding
      points the same way (cosine 0.97-0.999 between unrelated chunks);
    - each unit of the embedding layer (seg_1) is scaled to unit std and centred (bias) on
      separate real-speech chunks (`centring_offsets_s` into pyannote's bundled sample), pooled
      over `windows` 1 s sub-windows and the whole chunk, so speech embeddings spread around
      zero (measured: different speakers' turns 0.25-0.57, noise vs speech -0.26-0.04).

    Centring on the synthetic speech-like chunk instead would put the centre between real and
    synthetic speech, and all real speech would point one way again (cosines up to 0.9).
    """
    from . import signals

    resnet = model.resnet
    samples = audio.shape[-1]
    centring = torch.from_numpy(
        np.stack([signals.real_speech(o, samples) for o in centring_offsets_s])
    )
    batch = torch.cat([audio, centring[:, None, :]])
    fbank = model.compute_fbank(batch).permute(0, 2, 1).unsqueeze(1)  # pyannote's own front end
    fit = slice(0, audio.shape[0])  # statistics from `audio` only; centring chunks ride along
    x = torch.relu(_lsuv_conv_bn(resnet.conv1, resnet.bn1, fbank, fit))
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            x = _calibrate_basic_block(block, x, fit)
    features = x.flatten(1, 2)[audio.shape[0] :]  # (centring chunks, channels, frames)
    stats = torch.cat(
        [resnet.pool.stats_pool(features, weights=w) for w in _window_weights(features, windows)]
    )
    _lsuv_linear(resnet.seg_1, stats)
    if resnet.two_emb_layer:  # not in ResNet34 as pyannote builds it; keep it well-scaled anyway
        hidden = resnet.seg_bn_1(torch.relu(resnet.seg_1(stats)))
        _lsuv_linear(resnet.seg_2, hidden)


# Channel means are rounded to 1/64 of a (unit) std: centred to within 1 %, and coarse enough
# that last-bit differences between machines practically never flip a rounding.
_MEAN_GRID = 64.0


def _round_to_grid(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * _MEAN_GRID) / _MEAN_GRID


def _lsuv_conv_bn(conv, bn, x: torch.Tensor, fit: slice) -> torch.Tensor:
    """Scale `conv` to unit output std on x[fit], centre each channel through `bn`'s running
    mean (bn must be in eval mode, running_var 1, affine identity: pyannote's default init).
    Returns bn(conv(x)) with the calibrated weights."""
    y = conv(x)
    scale = _round3(1.0 / max(y[fit].std().item(), 1e-12))
    conv.weight.mul_(scale)
    y = y * scale
    bn.running_mean.copy_(_round_to_grid(y[fit].mean(dim=(0, 2, 3))))
    return bn(y)


def _calibrate_basic_block(block, x: torch.Tensor, fit: slice) -> torch.Tensor:
    """One ResNet BasicBlock, calibrated stage by stage; returns its output (block.forward)."""
    out = torch.relu(_lsuv_conv_bn(block.conv1, block.bn1, x, fit))
    out = _lsuv_conv_bn(block.conv2, block.bn2, out, fit)
    shortcut = (
        _lsuv_conv_bn(block.shortcut[0], block.shortcut[1], x, fit) if len(block.shortcut) else x
    )
    return torch.relu(out + shortcut)


def _window_weights(features: torch.Tensor, windows: int) -> list[torch.Tensor]:
    """Frame weights (batch, frames) for `windows` contiguous sub-windows, then the whole chunk."""
    batch, _, frames = features.shape
    edges = np.linspace(0, frames, windows + 1).round().astype(int)
    out = []
    for start, stop in zip(edges[:-1], edges[1:], strict=True):
        w = torch.zeros(batch, frames)
        w[:, start:stop] = 1.0
        out.append(w)
    return out + [torch.ones(batch, frames)]


def _lsuv_linear(linear: torch.nn.Linear, x: torch.Tensor) -> None:
    """Scale each output unit to unit std over x (one factor per unit, 3 significant digits),
    then centre it: bias = -mean. Per unit rather than per layer: a single factor leaves a few
    dominant units that make unrelated inputs' embeddings agree (noise vs speech ~0.8)."""
    y = linear(x)
    scale = torch.tensor([_round3(v) for v in (1.0 / y.std(dim=0).clamp_min(1e-12)).tolist()])
    linear.weight.mul_(scale[:, None])
    linear.bias.mul_(scale)
    linear.bias.sub_(_round_to_grid(linear(x).mean(dim=0)))
