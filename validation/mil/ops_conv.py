"""conv, conv_transpose and pooling (iOS15/conv.py, iOS15/pool.py), computed with torch.

Padding follows MIL exactly rather than torch's conventions: `same` / `same_lower` pads are
derived from the runtime input size (ops/defs/_utils.py `aggregated_pad`), asymmetric pads
are applied explicitly, and pooling output sizes (including `ceil_mode`) use the formula of
the pool documentation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .opcall import OpCall, OpFn, half_tensor
from .ops_linear import to_torch

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
_MAXPOOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
_AVGPOOL = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}


def _pads(
    pad_type: str,
    spatial: list[int],
    kernel: list[int],
    strides: list[int],
    dilations: list[int],
    custom: list[int] | None,
) -> list[tuple[int, int]]:
    """(before, after) padding per spatial dim, as MIL defines it."""
    n = len(spatial)
    pad_type = pad_type.lower()
    if pad_type == "valid":
        return [(0, 0)] * n
    if pad_type == "custom":
        custom = custom or [0] * (2 * n)
        return [(custom[2 * i], custom[2 * i + 1]) for i in range(n)]
    if pad_type in ("same", "same_lower"):
        out = []
        for d, k, s, dil in zip(spatial, kernel, strides, dilations, strict=False):
            eff = (k - 1) * dil + 1
            total = max(0, s * math.ceil(d / s) - d + eff - s)
            small, big = total // 2, total - total // 2
            # `same` puts the odd extra element after, `same_lower` before.
            out.append((small, big) if pad_type == "same" else (big, small))
        return out
    raise ValueError(f"pad_type {pad_type!r}")


def _torch_pad_arg(pads: list[tuple[int, int]]) -> list[int]:
    # F.pad lists the last dimension first.
    flat: list[int] = []
    for before, after in reversed(pads):
        flat += [before, after]
    return flat


def _torch_conv(x, w, b, *, stride, padding, dilation, groups) -> torch.Tensor:
    with torch.no_grad():
        return _CONV[x.dim() - 2](
            x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups
        )


def _conv(c: OpCall) -> np.ndarray:
    return conv_with(c, _torch_conv)


def conv_with(c: OpCall, conv) -> np.ndarray:
    """MIL `conv` with MIL's padding rules, the arithmetic done by `conv(x, w, b, *, stride,
    padding, dilation, groups)` (torch.nn.functional's signature; symmetric `padding`):
    torch's own conv here, an fp16-accumulating one in ops_accumulate."""
    x = to_torch(c["x"])
    w = c.memo("torch:weight", lambda: to_torch(c["weight"]).clone(), "weight")
    b = c.memo("torch:bias", lambda: to_torch(c["bias"]).clone(), "bias") if c.has("bias") else None
    nsp = x.dim() - 2
    strides = c.ints("strides", [1] * nsp)
    dilations = c.ints("dilations", [1] * nsp)
    groups = c.int("groups", 1)
    kernel = list(w.shape[2:])
    pads = _pads(
        c.str("pad_type", "valid"),
        list(x.shape[2:]),
        kernel,
        strides,
        dilations,
        c.ints("pad", None),
    )
    if all(p[0] == p[1] for p in pads):
        padding = [p[0] for p in pads]
    else:
        x = F.pad(x, _torch_pad_arg(pads))
        padding = [0] * nsp
    out = conv(x, w, b, stride=strides, padding=padding, dilation=dilations, groups=groups)
    return out.numpy()


def _conv_transpose(c: OpCall) -> np.ndarray:
    x = to_torch(c["x"])
    w = c.memo("torch:weight", lambda: to_torch(c["weight"]).clone(), "weight")
    nsp = x.dim() - 2
    strides = c.ints("strides", [1] * nsp)
    dilations = c.ints("dilations", [1] * nsp)
    groups = c.int("groups", 1)
    with torch.no_grad():
        full = _CONV_T[nsp](x, w, None, stride=strides, dilation=dilations, groups=groups)
    pad_type = c.str("pad_type", "valid").lower()
    kernel = list(w.shape[2:])
    if pad_type in ("same", "same_lower"):
        pads = []
        for k, s, dil in zip(kernel, strides, dilations, strict=False):
            total = max(0, (k - 1) * dil + 1 - s)
            small, big = total // 2, total - total // 2
            pads.append((small, big) if pad_type == "same" else (big, small))
    else:
        pads = _pads(pad_type, list(x.shape[2:]), kernel, strides, dilations, c.ints("pad", None))
    index = [slice(None), slice(None)]
    for i, (before, after) in enumerate(pads):
        index.append(slice(before, full.shape[2 + i] - after))
    out = full[tuple(index)]
    shape = c.ints("output_shape", None)
    if shape:
        # Extra trailing rows (torch's output_padding) receive no input contribution.
        extra = [int(t) - int(s) for t, s in zip(shape[-nsp:], out.shape[2:], strict=False)]
        if any(e > 0 for e in extra):
            out = F.pad(out, _torch_pad_arg([(0, max(e, 0)) for e in extra]))
    if c.has("bias"):
        out = out + to_torch(c["bias"]).reshape((1, -1) + (1,) * nsp)
    return out.numpy()


def _pool_geometry(
    c: OpCall, x: torch.Tensor
) -> tuple[list[int], list[int], list[tuple[int, int]], list[int]]:
    nsp = x.dim() - 2
    kernel = c.ints("kernel_sizes")
    strides = c.ints("strides", [1] * nsp)
    spatial = list(x.shape[2:])
    pads = _pads(
        c.str("pad_type", "valid"), spatial, kernel, strides, [1] * nsp, c.ints("pad", None)
    )
    ceil_mode = c.bool("ceil_mode", False)
    outs = []
    for d, k, s, (pb, pa) in zip(spatial, kernel, strides, pads, strict=False):
        if ceil_mode:
            o = math.ceil((d + pb + pa - k) / s) + 1
            if (o - 1) * s >= d + pb and (pb + pa) > 0:
                o -= 1
        else:
            o = (d + pb + pa - k) // s + 1
        outs.append(o)
    return kernel, strides, pads, outs


def _window_pads(
    spatial: list[int],
    kernel: list[int],
    strides: list[int],
    pads: list[tuple[int, int]],
    outs: list[int],
) -> list[tuple[int, int]]:
    """Before/after padding so that exactly `outs` windows fit (ceil_mode may need more on
    the right than the declared pad; those extra cells are outside the padded input)."""
    full = []
    for d, k, s, (pb, _pa), o in zip(spatial, kernel, strides, pads, outs, strict=False):
        need = (o - 1) * s + k
        full.append((pb, max(0, need - d - pb)))
    return full


def _max_pool(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    # A window's maximum is one of its fp16 values: pooling fp16 directly gives what the
    # widened pooling rounds to, without the two conversions.
    x = half_tensor(x) if x.dtype == np.float16 else to_torch(x)
    nsp = x.dim() - 2
    kernel, strides, pads, outs = _pool_geometry(c, x)
    full = _window_pads(list(x.shape[2:]), kernel, strides, pads, outs)
    if any(p != (0, 0) for p in full):
        x = F.pad(x, _torch_pad_arg(full), value=-math.inf)
    with torch.no_grad():
        y = _MAXPOOL[nsp](x, kernel, strides)
    return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)].numpy()


def _avg_like(c: OpCall, x: torch.Tensor, exclude_padding: bool) -> tuple[torch.Tensor, list[int]]:
    """Window sums divided by the MIL count: padded zeros count unless excluded; cells past
    the declared padding (ceil_mode overflow) never count, as in torch/Core ML."""
    nsp = x.dim() - 2
    kernel, strides, pads, outs = _pool_geometry(c, x)
    spatial = list(x.shape[2:])
    full = _window_pads(spatial, kernel, strides, pads, outs)
    needs_pad = any(p != (0, 0) for p in full)
    with torch.no_grad():
        if not needs_pad:
            y = _AVGPOOL[nsp](x, kernel, strides)
            return y, outs
        xp = F.pad(x, _torch_pad_arg(full))
        # Mask of cells that count towards the divisor.
        mask = torch.zeros((1, 1) + tuple(xp.shape[2:]), dtype=x.dtype)
        index = [slice(None), slice(None)]
        for (fb, _fa), (pb, pa), d in zip(full, pads, spatial, strict=False):
            if exclude_padding:
                index.append(slice(fb, fb + d))
            else:
                index.append(slice(fb - pb, fb + d + pa))
        mask[tuple(index)] = 1.0
        s = _AVGPOOL[nsp](xp, kernel, strides)
        n = _AVGPOOL[nsp](mask, kernel, strides)
        return s / n, outs


def _avg_pool(c: OpCall) -> np.ndarray:
    x = to_torch(c["x"])
    y, outs = _avg_like(c, x, c.bool("exclude_padding_from_average", False))
    return y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)].numpy()


def _l2_pool(c: OpCall) -> np.ndarray:
    # sqrt of the sum of squares over each window; padding contributes zeros.
    x = to_torch(c["x"])
    nsp = x.dim() - 2
    kernel, strides, pads, outs = _pool_geometry(c, x)
    full = _window_pads(list(x.shape[2:]), kernel, strides, pads, outs)
    sq = F.pad(x * x, _torch_pad_arg(full))
    with torch.no_grad():
        y = _AVGPOOL[nsp](sq, kernel, strides) * float(np.prod(kernel))
    return torch.sqrt(y[(slice(None), slice(None)) + tuple(slice(0, o) for o in outs)]).numpy()


CONV_OPS: dict[str, OpFn] = {
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "l2_pool": _l2_pool,
}
