"""linear / matmul / einsum, computed with torch in fp32 (fp16 operands are widened once and
the executor rounds the result to the declared dtype). Constant weights are converted to
torch tensors once per executor (iOS15/linear.py)."""

from __future__ import annotations

import numpy as np
import torch

from .opcall import OpCall, OpFn


def to_torch(x: np.ndarray) -> torch.Tensor:
    """fp32 torch view of a numpy array (fp16 / fp64 widened or narrowed to fp32)."""
    x = np.asarray(x)
    if x.dtype == np.float16 and x.flags.writeable:
        # Widen in torch (vectorised) rather than numpy (scalar float16 code).
        return torch.from_numpy(np.ascontiguousarray(x)).float()
    if x.dtype != np.float32:
        x = x.astype(np.float32)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(np.ascontiguousarray(x))


def _const_torch(c: OpCall, name: str) -> torch.Tensor:
    return c.memo(f"torch:{name}", lambda: to_torch(c[name]).clone(), name)


def _linear(c: OpCall) -> np.ndarray:
    w = _const_torch(c, "weight")
    b = _const_torch(c, "bias") if c.has("bias") else None
    with torch.no_grad():
        return torch.nn.functional.linear(to_torch(c["x"]), w, b).numpy()


def _matmul(c: OpCall) -> np.ndarray:
    x, y = np.asarray(c["x"]), np.asarray(c["y"])
    is_int = x.dtype.kind in "iu" and y.dtype.kind in "iu"
    tx = c.bool("transpose_x", False) and x.ndim >= 2
    ty = c.bool("transpose_y", False) and y.ndim >= 2
    if is_int:
        if tx:
            x = np.swapaxes(x, -1, -2)
        if ty:
            y = np.swapaxes(y, -1, -2)
        return np.matmul(x, y)
    xt = _const_torch(c, "x") if c.is_const("x") else to_torch(x)
    yt = _const_torch(c, "y") if c.is_const("y") else to_torch(y)
    if tx:
        xt = xt.transpose(-1, -2)
    if ty:
        yt = yt.transpose(-1, -2)
    with torch.no_grad():
        return torch.matmul(xt, yt).numpy()


def _einsum(c: OpCall) -> np.ndarray:
    values = [to_torch(v) for v in c.list("values")]
    with torch.no_grad():
        return torch.einsum(c.str("equation"), *values).numpy()


LINEAR_OPS: dict[str, OpFn] = {
    "linear": _linear,
    "matmul": _matmul,
    "einsum": _einsum,
}
