"""The executor's op implementations as they were before the fp16 fast paths (issue #23,
item 7): numpy on widened fp32 operands (numpy's own float16 loops for binary arithmetic),
rounded by the executor. Kept, unchanged, as the slow reference the fast paths must equal
bit for bit (tests/validation/mil/test_fast_paths.py; benchmarks/bench_chain_profile.py
times both in one run):

    MILExecutor(program, ops=REFERENCE_OPS)

Only the ops that got a fast path are here; every other op is `DEFAULT_OPS`' own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .executor import DEFAULT_OPS
from .opcall import OpCall, OpFn
from .opcall import widen as _up
from .ops_conv import _MAXPOOL, _pool_geometry, _torch_pad_arg, _window_pads
from .ops_linear import to_torch


def _unary(fn) -> OpFn:  # type: ignore[no-untyped-def]
    def run(c: OpCall) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(_up(c["x"]))

    return run


def _binary(fn) -> OpFn:  # type: ignore[no-untyped-def]
    def run(c: OpCall) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(np.asarray(c["x"]), np.asarray(c["y"]))

    return run


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.trunc(x / y)
    return x / y


def _leaky_relu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    a = np.asarray(c["alpha"]).astype(x.dtype)
    return np.where(x >= 0, x, a * x)


def _max_pool(c: OpCall) -> np.ndarray:
    x = to_torch(c["x"])
    nsp = x.dim() - 2
    kernel, strides, pads, outs = _pool_geometry(c, x)
    full = _window_pads(list(x.shape[2:]), kernel, strides, pads, outs)
    if any(p != (0, 0) for p in full):
        x = F.pad(x, _torch_pad_arg(full), value=-math.inf)
    with torch.no_grad():
        y = _MAXPOOL[nsp](x, kernel, strides)
    return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)].numpy()


REFERENCE_OPS: Mapping[str, OpFn] = {
    **DEFAULT_OPS,
    "abs": _unary(np.abs),
    "relu": _unary(lambda x: np.maximum(x, 0).astype(x.dtype)),
    "leaky_relu": _leaky_relu,
    "add": _binary(np.add),
    "sub": _binary(np.subtract),
    "mul": _binary(np.multiply),
    "real_div": _binary(_real_div),
    "max_pool": _max_pool,
}
