"""Comparison metrics between a package's outputs and its PyTorch reference (numpy only)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np


def max_abs(ref: np.ndarray, got: np.ndarray) -> float:
    return (
        float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
    )


def mean_abs(ref: np.ndarray, got: np.ndarray) -> float:
    return (
        float(np.mean(np.abs(ref.astype(np.float64) - got.astype(np.float64)))) if ref.size else 0.0
    )


def psnr(ref: np.ndarray, got: np.ndarray) -> float:
    """20·log10(peak / RMSE), peak = max |ref|; inf for an exact match."""
    rmse = float(np.sqrt(np.mean((ref.astype(np.float64) - got.astype(np.float64)) ** 2)))
    peak = float(np.max(np.abs(ref))) if ref.size else 0.0
    if rmse == 0.0:
        return float("inf")
    return 20.0 * np.log10(max(peak, 1e-12) / rmse)


def row_cosines(ref: np.ndarray, got: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Cosine per row of the last axis; two zero rows agree (1.0), one zero row does not (0.0)."""
    a = ref.reshape(-1, ref.shape[-1]).astype(np.float64)
    b = got.reshape(-1, got.shape[-1]).astype(np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.sum(a * b, axis=1) / np.maximum(na * nb, eps)
    both_zero = (na < eps) & (nb < eps)
    return np.where(both_zero, 1.0, cos)


def rows(x: np.ndarray) -> np.ndarray:
    """The array as rows of its last axis (classes, embedding dimensions)."""
    x = np.asarray(x)
    return x.reshape(-1, x.shape[-1])


def pooled(arrays: list[np.ndarray]) -> np.ndarray:
    """Several inputs' arrays of one output as one set of rows, for metrics over all inputs."""
    return np.concatenate([rows(x) for x in arrays])


def decisive_rows(ref: np.ndarray, min_margin: float) -> np.ndarray:
    """Mask of the rows whose reference top-2 margin exceeds `min_margin` (all rows for 0)."""
    r = rows(ref)
    if min_margin <= 0:
        return np.ones(len(r), dtype=bool)
    top2 = np.sort(r, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > min_margin


def argmax_agreement(ref: np.ndarray, got: np.ndarray, *, min_margin: float = 0.0) -> float:
    """Share of rows (last axis = classes) whose argmax agrees; with `min_margin`, only rows
    whose reference top-2 margin exceeds it (near-ties are a coin toss for any precision)."""
    r, g = rows(ref), rows(got)
    keep = decisive_rows(r, min_margin)
    if not keep.any():
        return 1.0
    return float(np.mean(r[keep].argmax(1) == g[keep].argmax(1)))


def argmax_disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Share of rows whose argmax differs."""
    return float(np.mean(rows(a).argmax(1) != rows(b).argmax(1)))


def cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean (1 - cosine) over rows of the last axis."""
    return float(np.mean(1.0 - row_cosines(a, b)))


def spread(
    references: list[np.ndarray],
    distance: Callable[[np.ndarray, np.ndarray], float] = mean_abs,
) -> float:
    """How much the reference output moves between different inputs: the mean `distance`
    (default: mean absolute difference) over all pairs of inputs. A near-constant model has
    spread ~0; nan when no two inputs can be compared."""
    # inputs of different shapes (a flexible dimension) cannot be compared element-wise
    pairs = [(a, b) for a, b in itertools.combinations(references, 2) if a.shape == b.shape]
    if not pairs:
        return float("nan")
    return float(np.mean([distance(a, b) for a, b in pairs]))


def relative(error: float, spread: float) -> float:
    """`error` in units of `spread`: nan without a spread, inf for an error on a constant."""
    if math.isnan(spread):
        return math.nan
    if spread <= 0:
        return 0.0 if error == 0 else math.inf
    return error / spread
