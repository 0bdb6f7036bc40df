"""Reductions, arg-reductions and softmax (iOS15/reduction.py, activation.py softmax).
Float reductions accumulate in fp32 (fp16 input widened); the executor rounds to the
declared output dtype."""

from __future__ import annotations

import numpy as np

from .opcall import OpCall, OpFn
from .opcall import widen as _up


def _axes(c: OpCall, x: np.ndarray) -> tuple[int, ...]:
    axes = c.ints("axes", None)
    if axes is None:
        return tuple(range(x.ndim))
    return tuple(sorted({a % x.ndim for a in axes}))


def _reduce(fn) -> OpFn:  # type: ignore[no-untyped-def]
    def run(c: OpCall) -> np.ndarray:
        x = _up(c["x"])
        axes = _axes(c, x)
        with np.errstate(all="ignore"):
            return fn(x, axes, c.bool("keep_dims", False))

    return run


def _log_sum_exp(x: np.ndarray, axes: tuple[int, ...], keep: bool) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return out if keep else np.squeeze(out, axis=axes)


def _arg(fn) -> OpFn:  # type: ignore[no-untyped-def]
    def run(c: OpCall) -> np.ndarray:
        x = np.asarray(c["x"])
        axis = c.int("axis", -1) % max(x.ndim, 1)
        out = fn(x, axis=axis)
        if c.bool("keep_dims", False):
            out = np.expand_dims(out, axis)
        return out.astype(np.int32)

    return run


def _softmax(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    axis = c.int("axis", -1)
    m = np.max(x, axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=axis, keepdims=True)


REDUCE_OPS: dict[str, OpFn] = {
    "reduce_sum": _reduce(lambda x, a, k: np.sum(x, axis=a, keepdims=k)),
    "reduce_mean": _reduce(lambda x, a, k: np.mean(x, axis=a, keepdims=k)),
    "reduce_max": _reduce(lambda x, a, k: np.max(x, axis=a, keepdims=k)),
    "reduce_min": _reduce(lambda x, a, k: np.min(x, axis=a, keepdims=k)),
    "reduce_prod": _reduce(lambda x, a, k: np.prod(x, axis=a, keepdims=k)),
    "reduce_l1_norm": _reduce(lambda x, a, k: np.sum(np.abs(x), axis=a, keepdims=k)),
    "reduce_l2_norm": _reduce(lambda x, a, k: np.sqrt(np.sum(np.square(x), axis=a, keepdims=k))),
    "reduce_sum_square": _reduce(lambda x, a, k: np.sum(np.square(x), axis=a, keepdims=k)),
    "reduce_log_sum": _reduce(lambda x, a, k: np.log(np.sum(x, axis=a, keepdims=k))),
    "reduce_log_sum_exp": _reduce(_log_sum_exp),
    "reduce_argmax": _arg(np.argmax),
    "reduce_argmin": _arg(np.argmin),
    "softmax": _softmax,
}
