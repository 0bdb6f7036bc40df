"""Shape, indexing and tensor-building ops (iOS15..iOS17 tensor_transformation.py,
tensor_operation.py, scatter_gather.py), in numpy. Integer outputs are int32 as MIL declares."""

from __future__ import annotations

import numpy as np

from .opcall import OpCall, OpFn


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- reshaping ---------------------------------------------------------------------------
def _reshape(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    shape = c.ints("shape")
    if len(shape) == x.ndim:
        # 0 copies the corresponding input dimension (only when ranks agree).
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return x.reshape(shape)


def _transpose(c: OpCall) -> np.ndarray:
    return np.transpose(np.asarray(c["x"]), c.ints("perm"))


def _expand_dims(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axes = c.ints("axes")
    out_rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(_axis(a, out_rank) for a in axes)))


def _squeeze(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axes = c.ints("axes", None)
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(_axis(a, x.ndim) for a in axes))


def _flatten2d(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axis = _axis(c.int("axis", 1), x.ndim)
    return x.reshape(int(np.prod(x.shape[:axis], dtype=np.int64)), -1)


def _concat(c: OpCall) -> np.ndarray:
    values = [np.asarray(v) for v in c.list("values")]
    axis = c.int("axis")
    if c.bool("interleave", False):
        # [a0, b0, a1, b1, ...] along axis: stack after the axis, then merge.
        ax = _axis(axis, values[0].ndim)
        stacked = np.stack(values, axis=ax + 1)
        shape = list(values[0].shape)
        shape[ax] = -1
        return stacked.reshape(shape)
    if all(v.ndim == 0 for v in values):
        # MIL concatenates scalars into a vector, one element each (coremltools' concat
        # type_inference: a rank-0 value counts 1 along the axis); converted LSTMs with a
        # flexible batch build their state shape this way
        return np.stack(values)
    return np.concatenate(values, axis=axis)


def _stack(c: OpCall) -> np.ndarray:
    return np.stack([np.asarray(v) for v in c.list("values")], axis=c.int("axis"))


def _split(c: OpCall) -> tuple[np.ndarray, ...]:
    x = np.asarray(c["x"])
    axis = _axis(c.int("axis"), x.ndim)
    sizes = c.ints("split_sizes", None)
    if sizes is None:
        n = c.int("num_splits")
        return tuple(np.split(x, n, axis=axis))
    return tuple(np.split(x, np.cumsum(sizes)[:-1], axis=axis))


def _tile(c: OpCall) -> np.ndarray:
    return np.tile(np.asarray(c["x"]), c.ints("reps"))


def _pad(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    pad = c.ints("pad")
    n = len(pad) // 2
    # `pad` covers the last n dims, before/after pairs.
    widths = [(0, 0)] * (x.ndim - n) + [(pad[2 * i], pad[2 * i + 1]) for i in range(n)]
    mode = c.str("mode", "constant")
    if mode == "constant":
        return np.pad(x, widths, mode="constant", constant_values=c.float("constant_val", 0.0))
    if mode == "reflect":
        return np.pad(x, widths, mode="reflect")
    if mode == "replicate":
        return np.pad(x, widths, mode="edge")
    raise ValueError(f"pad mode {mode!r}")


def _reverse(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axes = c.ints("axes", None)
    return np.flip(x, axis=None if axes is None else tuple(axes))


# -- slicing -----------------------------------------------------------------------------
def _slice_by_index(c: OpCall) -> np.ndarray:
    # Same construction as coremltools' solve_slice_by_index_slice (ops/defs/_utils.py).
    x = np.asarray(c["x"])
    rank = x.ndim
    begin: list[int | None] = list(c.ints("begin"))
    end: list[int | None] = list(c.ints("end"))
    stride = c.ints("stride", [1] * rank)
    begin_mask = c.ints("begin_mask", [0] * rank)
    end_mask = c.ints("end_mask", [0] * rank)
    squeeze_mask = c.ints("squeeze_mask", [0] * rank)
    slices = []
    for i in range(rank):
        b = None if begin_mask[i] else begin[i]
        e = None if end_mask[i] else end[i]
        if squeeze_mask[i]:
            # A pure index at begin[i]; the axis is dropped below.
            bi = begin[i] + x.shape[i] if begin[i] < 0 else begin[i]  # type: ignore[operator]
            slices.append(slice(bi, bi + 1, 1))
        else:
            slices.append(slice(b, e, stride[i]))
    out = x[tuple(slices)]
    squeeze = tuple(i for i in range(rank) if squeeze_mask[i])
    return np.squeeze(out, axis=squeeze) if squeeze else out


def _slice_by_size(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    begin = c.ints("begin")
    size = c.ints("size")
    slices = []
    for i in range(x.ndim):
        b = _axis(begin[i], x.shape[i])
        slices.append(slice(b, None if size[i] == -1 else b + size[i]))
    return x[tuple(slices)]


# -- gather / scatter --------------------------------------------------------------------
def _gather(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    axis = _axis(c.int("axis", 0), x.ndim)
    batch_dims = c.int("batch_dims", 0)
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # Batched gather: the first batch_dims dims of x and indices are paired.
    bshape = x.shape[:batch_dims]
    nb = int(np.prod(bshape, dtype=np.int64))
    xs = x.reshape((nb,) + x.shape[batch_dims:])
    ids = idx.reshape((nb,) + idx.shape[batch_dims:])
    out = np.stack([np.take(xs[i], ids[i], axis=axis - batch_dims) for i in range(nb)])
    return out.reshape(tuple(bshape) + out.shape[1:])


def _gather_along_axis(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    axis = _axis(c.int("axis", 0), x.ndim)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


def _gather_nd(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    idx = np.asarray(c["indices"]).astype(np.int64)
    batch_dims = c.int("batch_dims", 0)

    def one(xb: np.ndarray, ib: np.ndarray) -> np.ndarray:
        k = ib.shape[-1]
        return (
            xb[tuple(np.moveaxis(ib, -1, 0))]
            if k
            else np.broadcast_to(xb, ib.shape[:-1] + xb.shape)
        )

    if batch_dims == 0:
        return one(x, idx)
    bshape = x.shape[:batch_dims]
    nb = int(np.prod(bshape, dtype=np.int64))
    xs = x.reshape((nb,) + x.shape[batch_dims:])
    ids = idx.reshape((nb,) + idx.shape[batch_dims:])
    out = np.stack([one(xs[i], ids[i]) for i in range(nb)])
    return out.reshape(tuple(bshape) + out.shape[1:])


_SCATTER_UFUNCS = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


def _scatter_into(out: np.ndarray, index: tuple, updates: np.ndarray, mode: str) -> None:
    if mode == "update":
        out[index] = updates
    elif mode in _SCATTER_UFUNCS:
        _SCATTER_UFUNCS[mode].at(out, index, updates)
    else:
        raise ValueError(f"scatter mode {mode!r}")


def _scatter(c: OpCall) -> np.ndarray:
    data = np.array(c["data"], copy=True)
    idx = np.asarray(c["indices"]).astype(np.int64)
    upd = np.asarray(c["updates"])
    axis = _axis(c.int("axis", 0), data.ndim)
    mode = c.str("mode", "add")
    # Move the scattered axis first: data[idx[i]] op= updates[i] (updates' axis has len(idx)).
    moved = np.moveaxis(data, axis, 0)
    upd_moved = np.moveaxis(upd, axis, 0)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    _scatter_into(moved, (idx,), upd_moved, mode)
    return data


def _scatter_along_axis(c: OpCall) -> np.ndarray:
    data = np.array(c["data"], copy=True)
    idx = np.asarray(c["indices"]).astype(np.int64)
    upd = np.asarray(c["updates"])
    axis = _axis(c.int("axis", 0), data.ndim)
    idx = np.where(idx < 0, idx + data.shape[axis], idx)
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    _scatter_into(data, tuple(grids), upd, c.str("mode", "add"))
    return data


def _scatter_nd(c: OpCall) -> np.ndarray:
    data = np.array(c["data"], copy=True)
    idx = np.asarray(c["indices"]).astype(np.int64)
    upd = np.asarray(c["updates"])
    _scatter_into(data, tuple(np.moveaxis(idx, -1, 0)), upd, c.str("mode", "add"))
    return data


# -- building tensors --------------------------------------------------------------------
def _shape(c: OpCall) -> np.ndarray:
    return np.array(np.shape(c["x"]), dtype=np.int32)


def _fill(c: OpCall) -> np.ndarray:
    value = np.asarray(c.get("value", 0.0))
    return np.full(c.ints("shape"), value, dtype=c.out_dtype() or value.dtype)


def _fill_like(c: OpCall) -> np.ndarray:
    value = np.asarray(c.get("value", 0.0))
    return np.full(np.shape(c["ref_tensor"]), value, dtype=c.out_dtype() or value.dtype)


def _range_1d(c: OpCall) -> np.ndarray:
    start, end, step = np.asarray(c["start"]), np.asarray(c["end"]), np.asarray(c["step"])
    return np.arange(start.item(), end.item(), step.item(), dtype=c.out_dtype() or start.dtype)


def _one_hot(c: OpCall) -> np.ndarray:
    idx = np.asarray(c["indices"]).astype(np.int64)
    depth = c.int("one_hot_vector_size")
    axis = _axis(c.int("axis", -1), idx.ndim + 1)
    dtype = c.out_dtype() or np.float32
    on = np.asarray(c.get("on_value", 1)).astype(dtype)
    off = np.asarray(c.get("off_value", 0)).astype(dtype)
    hot = np.expand_dims(idx, -1) == np.arange(depth)
    out = np.where(hot, on, off).astype(dtype)
    return np.moveaxis(out, -1, axis)


def _sort_indices(x: np.ndarray, axis: int, ascending: bool) -> np.ndarray:
    # Stable, so ties keep their original order in both directions.
    if ascending:
        return np.argsort(x, axis=axis, kind="stable")
    if x.dtype.kind == "u":
        x = x.astype(np.int64)
    return np.argsort(-x, axis=axis, kind="stable")


def _topk(c: OpCall) -> tuple[np.ndarray, np.ndarray] | np.ndarray:
    x = np.asarray(c["x"])
    axis = _axis(c.int("axis", -1), x.ndim)
    k = c.int("k", 1)
    ascending = c.bool("ascending", False)
    if k < 0:
        k = x.shape[axis]
    order = np.take(_sort_indices(x, axis, ascending), np.arange(k), axis=axis)
    if not c.bool("sort", True):
        # Unsorted top-k: keep the selected elements in input order.
        order = np.sort(order, axis=axis)
    values = np.take_along_axis(x, order, axis=axis)
    if not c.bool("return_indices", True):
        return values
    return values, order.astype(c.out_dtype(1) or np.int32)


def _argsort(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    return _sort_indices(x, _axis(c.int("axis", -1), x.ndim), c.bool("ascending", False)).astype(
        np.int32
    )


def _cumsum(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axis = _axis(c.int("axis", 0), x.ndim)
    if c.bool("reverse", False):
        x = np.flip(x, axis)
    out = np.cumsum(x.astype(np.float32) if x.dtype == np.float16 else x, axis=axis)
    if c.bool("exclusive", False):
        out = np.concatenate(
            [
                np.zeros_like(np.take(out, [0], axis=axis)),
                np.take(out, np.arange(x.shape[axis] - 1), axis=axis),
            ],
            axis=axis,
        )
    if c.bool("reverse", False):
        out = np.flip(out, axis)
    return out


def _band_part(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    lower, upper = c.int("lower", -1), c.int("upper", -1)
    m, n = x.shape[-2], x.shape[-1]
    i = np.arange(m)[:, None]
    j = np.arange(n)[None, :]
    keep = np.ones((m, n), dtype=bool)
    if lower >= 0:
        keep &= (i - j) <= lower
    if upper >= 0:
        keep &= (j - i) <= upper
    return np.where(keep, x, np.zeros((), dtype=x.dtype))


def _non_zero(c: OpCall) -> np.ndarray:
    return np.argwhere(np.asarray(c["x"])).astype(np.int32)


def _sliding_windows(c: OpCall) -> np.ndarray:
    x = np.asarray(c["x"])
    axis = _axis(c.int("axis"), x.ndim)
    size, stride = c.int("size"), c.int("stride", 1)
    win = np.lib.stride_tricks.sliding_window_view(x, size, axis=axis)
    win = np.take(win, np.arange(0, win.shape[axis], stride), axis=axis)
    # sliding_window_view appends the window dim last; MIL puts it right after `axis`.
    return np.ascontiguousarray(np.moveaxis(win, -1, axis + 1))


TENSOR_OPS: dict[str, OpFn] = {
    "reshape": _reshape,
    "transpose": _transpose,
    "expand_dims": _expand_dims,
    "squeeze": _squeeze,
    "flatten2d": _flatten2d,
    "concat": _concat,
    "stack": _stack,
    "split": _split,
    "tile": _tile,
    "pad": _pad,
    "reverse": _reverse,
    "slice_by_index": _slice_by_index,
    "slice_by_size": _slice_by_size,
    "gather": _gather,
    "gather_along_axis": _gather_along_axis,
    "gather_nd": _gather_nd,
    "scatter": _scatter,
    "scatter_along_axis": _scatter_along_axis,
    "scatter_nd": _scatter_nd,
    "shape": _shape,
    "fill": _fill,
    "fill_like": _fill_like,
    "range_1d": _range_1d,
    "one_hot": _one_hot,
    "topk": _topk,
    "argsort": _argsort,
    "cumsum": _cumsum,
    "band_part": _band_part,
    "non_zero": _non_zero,
    "sliding_windows": _sliding_windows,
}
