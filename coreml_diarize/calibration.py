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
    from .validation import signals

    offsets = (5.0, 10.0, 20.0)[: max(n_chunks - 1, 1)]
    chunks = [signals.real_speech(o, samples) for o in offsets] + [
        signals.speech_like(samples, seed=7)
    ]
    return torch.from_numpy(np.stack(chunks)[:, None, :])


def audio_digest(audio: torch.Tensor) -> str:
    return hashlib.sha256(audio.numpy().astype(np.float32).tobytes()).hexdigest()[:12]


def calibrate(family: str, model) -> str:
    """Calibrate `model` in place; returns a provenance note."""
    audio = calibration_audio()
    with torch.no_grad():
        if family == "segmentation":
            calibrate_segmentation(model, audio)
        else:
            calibrate_embedding(model, audio)
    return f"{CALIBRATION_VERSION}:{family}:audio-{audio_digest(audio)}"


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


def calibrate_embedding(model, audio: torch.Tensor) -> None:
    """WeSpeaker ResNet34: see the embedding converter's notes (unit-variance convs/linears,
    embedding bias centred on separate calibration chunks)."""
    raise NotImplementedError("embedding calibration is implemented with the embedding converter")
