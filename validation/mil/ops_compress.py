"""Compile-time weight decompression: `constexpr_*` ops (iOS16/constexpr_ops.py,
iOS18/compression.py), written from the op documentation. The executor runs them once at
load time; their outputs become constants.

Arithmetic order matches the documented expressions: affine dequantisation is computed in
fp32 and rounded to the scale dtype; blockwise shift-scale is computed in the scale dtype.
"""

from __future__ import annotations

import numpy as np

from .loader import unpack_bits
from .opcall import OpCall, OpFn


def _broadcast_on_axis(param: np.ndarray, rank: int, axis: int) -> np.ndarray:
    """A scalar or (N,) vector laid along `axis` of a rank-`rank` tensor."""
    param = np.asarray(param)
    if param.ndim == 0 or param.ndim == rank:
        return param
    shape = [1] * rank
    shape[axis % rank] = param.shape[0]
    return param.reshape(shape)


def _repeat_blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Interleaved repeat of a per-block parameter up to the full data shape."""
    for axis, (full, blocks) in enumerate(zip(shape, param.shape, strict=False)):
        if full != blocks:
            if full % blocks:
                raise ValueError(f"block parameter dim {blocks} does not divide data dim {full}")
            param = np.repeat(param, full // blocks, axis=axis)
    return param


def affine_dequantize(
    quantized: np.ndarray, zero_point: np.ndarray, scale: np.ndarray, axis: int
) -> np.ndarray:
    """scale * (quantized - zero_point), scale/zero_point broadcast along `axis`."""
    rank = quantized.ndim
    zp = _broadcast_on_axis(zero_point, rank, axis).astype(np.float32)
    sc = _broadcast_on_axis(scale, rank, axis)
    out = (quantized.astype(np.float32) - zp) * sc.astype(np.float32)
    return out.astype(np.asarray(scale).dtype)


def lut_to_dense_ios16(lut: np.ndarray, packed: np.ndarray, shape: list[int]) -> np.ndarray:
    """Flat LUT of 2**nbits entries; indices packed LSB-first in bytes."""
    nbits = int(np.log2(lut.size))
    count = int(np.prod(shape, dtype=np.int64))
    indices = unpack_bits(np.asarray(packed, dtype=np.uint8), nbits, count)
    return lut.reshape(-1)[indices.astype(np.int64)].reshape(shape)


def lut_to_dense_ios18(indices: np.ndarray, lut: np.ndarray, vector_axis: int | None) -> np.ndarray:
    """Per-group LUTs: lut has shape (*groups, 2**nbits, VECTOR_SIZE) with one group dim per
    indices dim; group g of dim i covers indices.shape[i] / groups[i] consecutive entries.
    With VECTOR_SIZE > 1 each index expands to that many consecutive elements along
    `vector_axis`."""
    k = indices.ndim
    groups = lut.shape[:k]
    vector_size = lut.shape[-1]
    # Group coordinate of every element, per dim, broadcast over the index grid.
    coords = []
    for i, (n, g) in enumerate(zip(indices.shape, groups, strict=False)):
        shape = [1] * k
        shape[i] = n
        coords.append((np.arange(n) // (n // g)).reshape(shape))
    values = lut[tuple(coords) + (indices.astype(np.int64),)]  # (*indices.shape, VECTOR_SIZE)
    if vector_size == 1:
        return values[..., 0]
    axis = int(vector_axis) % k  # type: ignore[arg-type]
    values = np.moveaxis(values, -1, axis + 1)
    out_shape = list(indices.shape)
    out_shape[axis] *= vector_size
    return values.reshape(out_shape)


def blockwise_shift_scale(
    data: np.ndarray, scale: np.ndarray, offset: np.ndarray | None
) -> np.ndarray:
    """scale * (data - offset) with per-block scale/offset, in the scale dtype."""
    dtype = np.asarray(scale).dtype
    x = np.asarray(data).astype(dtype)
    if offset is not None:
        x = x - _repeat_blocks(np.asarray(offset), x.shape).astype(dtype)
    return (_repeat_blocks(np.asarray(scale), x.shape) * x).astype(dtype)


def sparse_to_dense(
    nonzero: np.ndarray, mask: np.ndarray, shape: list[int] | None = None
) -> np.ndarray:
    """Bit-mask sparsity: set bits (LSB-first when packed) take the next nonzero value."""
    if shape is not None:
        count = int(np.prod(shape, dtype=np.int64))
        bits = np.unpackbits(np.asarray(mask, dtype=np.uint8), bitorder="little")[:count]
    else:
        shape = list(mask.shape)
        bits = np.asarray(mask).reshape(-1)
    out = np.zeros(bits.size, dtype=nonzero.dtype)
    out[bits != 0] = nonzero
    return out.reshape(shape)


def _constexpr_affine_dequantize(c: OpCall) -> np.ndarray:
    return affine_dequantize(c["quantized_data"], c["zero_point"], c["scale"], c.int("axis"))


def _constexpr_lut_to_dense(c: OpCall) -> np.ndarray:
    # iOS16 form has a `shape` input and packed uint8 indices; iOS18 form has typed indices.
    if c.has("shape"):
        return lut_to_dense_ios16(np.asarray(c["lut"]), c["indices"], c.ints("shape"))
    vector_axis = c.int("vector_axis") if c.has("vector_axis") else None
    return lut_to_dense_ios18(np.asarray(c["indices"]), np.asarray(c["lut"]), vector_axis)


def _constexpr_blockwise_shift_scale(c: OpCall) -> np.ndarray:
    return blockwise_shift_scale(c["data"], c["scale"], c.get("offset"))


def _constexpr_sparse_to_dense(c: OpCall) -> np.ndarray:
    shape = c.ints("shape") if c.has("shape") else None
    return sparse_to_dense(np.asarray(c["nonzero_data"]), np.asarray(c["mask"]), shape)


def _constexpr_cast(c: OpCall) -> np.ndarray:
    return np.asarray(c["source_val"]).astype(np.float32)


COMPRESS_OPS: dict[str, OpFn] = {
    "constexpr_affine_dequantize": _constexpr_affine_dequantize,
    "constexpr_lut_to_dense": _constexpr_lut_to_dense,
    "constexpr_blockwise_shift_scale": _constexpr_blockwise_shift_scale,
    "constexpr_sparse_to_dense": _constexpr_sparse_to_dense,
    "constexpr_cast": _constexpr_cast,
}
