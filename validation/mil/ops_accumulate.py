"""Emulated fp16 accumulation for `conv`, `matmul` and `linear`: what a package may see on the
GPU when an app sets `MLModelConfiguration.allowLowPrecisionAccumulationOnGPU = true`
("A Boolean value that determines whether to allow low-precision accumulation on a GPU",
https://developer.apple.com/documentation/coreml/mlmodelconfiguration/allowlowprecisionaccumulationongpu;
FluidAudio sets it for every model: Shared/Download/ModelHub.swift, MLModelConfigurationUtils.swift).

Off by default: `DEFAULT_OPS` (executor.py) accumulate in fp32 (torch). `accumulation_ops()`
returns an op table to pass as `MILExecutor(..., ops=...)`.

How the accumulation is emulated, and why it is the pessimistic case: every product is formed
in fp32 (exact for fp16 operands: 11 x 11 significant bits fit fp32's 24), added to the running
sum, and the sum is rounded to fp16 after EVERY product-add, in one sequential pass along the
reduction axis (input channels x kernel taps for conv, K for matmul/linear); the bias is added
last, also rounded. Apple does not document the GPU kernels' summation order or block size.
Sequential summation has the largest standard rounding-error bound of all orders,
|error| <= (K - 1) * u * sum |terms| with u = 2^-11 (Higham, "Accuracy and Stability of
Numerical Algorithms", §4.2), against ~log2(K) * u * sum|terms| for pairwise sums and
(K/b + b) * u for blocks of b with fp16 block sums; real kernels (SIMD lanes, tiles, fp32 or
fp16 partial sums) sit between fp32 accumulation and this. An fp16 accumulator also overflows
at 65504: such a sum becomes inf here, as it could on the device.

`scope`: "all" applies it to every conv/matmul/linear (fp32-typed ops too: the bound), "fp16"
only to ops the program types as fp16 (an fp32-typed op left in fp32, as Core ML's "typed
execution" keeps fp32 ops of an fp16 program, e.g. our embedding's fbank). The LSTM op's gate
matmuls are not emulated (ops_recurrent computes them in fp32).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from .executor import DEFAULT_OPS
from .opcall import OpCall, OpFn
from .ops_conv import _torch_conv, conv_with
from .ops_linear import _const_torch, _linear, _matmul, to_torch

ACCUMULATIONS = ("fp32", "fp16")
SCOPES = ("all", "fp16")


def round_fp16(t: torch.Tensor) -> torch.Tensor:
    """fp32 -> the nearest fp16 (round to nearest even; beyond 65504 -> inf) -> fp32."""
    return t.to(torch.float16).to(torch.float32)


def matmul_fp16_accumulate(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a (..., M, K) @ b (..., K, N) with broadcasting batch dims (1-D operands as in
    torch.matmul), the sum over K rounded to fp16 after every product-add, k = 0, 1, ..."""
    a, b = a.float(), b.float()
    squeeze_m, squeeze_n = a.dim() == 1, b.dim() == 1
    if squeeze_m:
        a = a[None, :]
    if squeeze_n:
        b = b[:, None]
    acc = torch.zeros(torch.broadcast_shapes(a.shape[:-1] + (1,), b.shape[:-2] + (1, b.shape[-1])))
    for k in range(a.shape[-1]):
        acc = round_fp16(acc + a[..., :, k : k + 1] * b[..., k : k + 1, :])
    if squeeze_n:
        acc = acc[..., 0]  # (..., M)
    if squeeze_m:
        acc = acc[..., 0] if squeeze_n else acc[..., 0, :]
    return acc


def conv_fp16_accumulate(x, w, b, *, stride, padding, dilation, groups) -> torch.Tensor:
    """torch.nn.functional.conv1d/conv2d, each output the sum over (input channel, kernel
    taps) rounded to fp16 after every product-add, channel-major then taps (F.unfold's order,
    the weight's (C, kh, kw) layout), then the bias added and rounded."""
    nsp = x.dim() - 2
    if nsp == 1:  # conv1d as a conv2d of height 1
        out = conv_fp16_accumulate(
            x[:, :, None, :],
            w[:, :, None, :],
            b,
            stride=[1, stride[0]],
            padding=[0, padding[0]],
            dilation=[1, dilation[0]],
            groups=groups,
        )
        return out[:, :, 0, :]
    if nsp != 2:
        raise NotImplementedError(f"fp16 accumulation for {nsp}-d conv")
    x, w = x.float(), w.float()
    n, channels, height, width = x.shape
    out_channels, kernel = w.shape[0], tuple(w.shape[2:])
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (N, C*k, L)
    rows_per_group = (channels // groups) * kernel[0] * kernel[1]
    outs_per_group = out_channels // groups
    parts = []
    for g in range(groups):
        group_cols = cols[:, g * rows_per_group : (g + 1) * rows_per_group]
        group_w = w[g * outs_per_group : (g + 1) * outs_per_group].reshape(outs_per_group, -1)
        acc = torch.zeros((n, outs_per_group, cols.shape[-1]))
        for r in range(rows_per_group):
            acc = round_fp16(acc + group_w[None, :, r : r + 1] * group_cols[:, None, r, :])
        parts.append(acc)
    acc = torch.cat(parts, dim=1)
    if b is not None:
        acc = round_fp16(acc + b.float()[None, :, None])
    size = [
        (dim + 2 * p - d * (k - 1) - 1) // s + 1
        for dim, k, s, p, d in zip((height, width), kernel, stride, padding, dilation, strict=True)
    ]
    return acc.reshape(n, out_channels, *size)


def _applies(c: OpCall, scope: str) -> bool:
    return scope == "all" or c.out_dtype() == np.float16


def _conv(scope: str) -> OpFn:
    def run(c: OpCall) -> np.ndarray:
        return conv_with(c, conv_fp16_accumulate if _applies(c, scope) else _torch_conv)

    return run


def _linear_fn(scope: str) -> OpFn:
    def run(c: OpCall) -> np.ndarray:
        if not _applies(c, scope):
            return _linear(c)
        w = _const_torch(c, "weight")
        out = matmul_fp16_accumulate(to_torch(c["x"]), w.T)
        if c.has("bias"):
            out = round_fp16(out + _const_torch(c, "bias"))
        return out.numpy()

    return run


def _matmul_fn(scope: str) -> OpFn:
    def run(c: OpCall) -> np.ndarray:
        x, y = np.asarray(c["x"]), np.asarray(c["y"])
        if not _applies(c, scope) or (x.dtype.kind in "iu" and y.dtype.kind in "iu"):
            return _matmul(c)
        xt, yt = to_torch(x), to_torch(y)
        if c.bool("transpose_x", False) and xt.dim() >= 2:
            xt = xt.transpose(-1, -2)
        if c.bool("transpose_y", False) and yt.dim() >= 2:
            yt = yt.transpose(-1, -2)
        return matmul_fp16_accumulate(xt, yt).numpy()

    return run


def accumulation_ops(accumulation: str = "fp32", scope: str = "all") -> Mapping[str, OpFn]:
    """The executor's op table with `conv`, `linear` and `matmul` accumulating in
    `accumulation` ("fp32": DEFAULT_OPS itself; "fp16": the emulation above, on the ops
    `scope` selects)."""
    if accumulation not in ACCUMULATIONS or scope not in SCOPES:
        raise ValueError(f"accumulation {accumulation!r} / scope {scope!r}")
    if accumulation == "fp32":
        return DEFAULT_OPS
    return {
        **DEFAULT_OPS,
        "conv": _conv(scope),
        "linear": _linear_fn(scope),
        "matmul": _matmul_fn(scope),
    }
