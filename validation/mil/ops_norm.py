"""Normalisations (iOS15/normalization.py). Statistics use the biased variance and are
computed in fp32 (fp64 accumulation for the means), whatever the program dtype; the executor
rounds the result to the declared dtype."""

from __future__ import annotations

import numpy as np

from .opcall import OpCall, OpFn, cast_array


def _f32(x: np.ndarray) -> np.ndarray:
    return cast_array(x, np.float32)


def _channel(v: np.ndarray, rank: int) -> np.ndarray:
    """A (C,) parameter broadcast along axis 1 of a rank-`rank` tensor."""
    return _f32(v).reshape((1, -1) + (1,) * (rank - 2))


def _normalize(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    centered = x - mean.astype(np.float32)
    var = np.square(centered).mean(axis=axes, keepdims=True, dtype=np.float64).astype(np.float32)
    return centered / np.sqrt(var + np.float32(eps))


def _batch_norm(c: OpCall) -> np.ndarray:
    x = _f32(c["x"])
    r = x.ndim
    mean = c.memo("mean", lambda: _channel(c["mean"], r), "mean")
    var = _channel(c["variance"], r)
    eps = np.float32(c.float("epsilon", 1e-5))

    def scale_shift() -> tuple[np.ndarray, np.ndarray]:
        gamma = _channel(c["gamma"], r) if c.has("gamma") else np.float32(1.0)
        beta = _channel(c["beta"], r) if c.has("beta") else np.float32(0.0)
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale

    scale, shift = c.memo(
        "scale_shift", scale_shift, "mean", "variance", "gamma", "beta", "epsilon"
    )
    return x * scale + shift


def _instance_norm(c: OpCall) -> np.ndarray:
    x = _f32(c["x"])
    y = _normalize(x, tuple(range(2, x.ndim)), c.float("epsilon", 1e-5))
    if c.has("gamma"):
        y = y * _channel(c["gamma"], x.ndim)
    if c.has("beta"):
        y = y + _channel(c["beta"], x.ndim)
    return y


def _layer_norm(c: OpCall) -> np.ndarray:
    x = _f32(c["x"])
    axes_list = c.ints("axes", list(range(x.ndim)))
    axes = tuple(sorted(a % x.ndim for a in axes_list)) if x.ndim else ()
    y = _normalize(x, axes, c.float("epsilon", 1e-5))
    # gamma/beta have shape x.shape[axes]: put 1s on the other axes before broadcasting.
    shape = [x.shape[i] if i in axes else 1 for i in range(x.ndim)]
    if c.has("gamma"):
        y = y * _f32(c["gamma"]).reshape(shape)
    if c.has("beta"):
        y = y + _f32(c["beta"]).reshape(shape)
    return y


def _l2_norm(c: OpCall) -> np.ndarray:
    # Normalise over the last three dims; leading dims are batch (iOS15 value_inference).
    x = _f32(c["x"])
    eps = np.float32(c.float("epsilon", 1e-6))
    batch = max(x.ndim - 3, 0)
    flat = x.reshape((int(np.prod(x.shape[:batch], dtype=np.int64)), -1))
    ss = np.square(flat).sum(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    return (flat / np.sqrt(ss + eps)).reshape(x.shape)


def _local_response_norm(c: OpCall) -> np.ndarray:
    import torch

    x = _f32(c["x"])
    y = torch.nn.functional.local_response_norm(
        torch.from_numpy(np.ascontiguousarray(x)),
        c.int("size"),
        alpha=c.float("alpha", 1e-4),
        beta=c.float("beta", 0.75),
        k=c.float("k", 1.0),
    )
    return y.numpy()


NORM_OPS: dict[str, OpFn] = {
    "batch_norm": _batch_norm,
    "instance_norm": _instance_norm,
    "layer_norm": _layer_norm,
    "l2_norm": _l2_norm,
    "local_response_norm": _local_response_norm,
}
