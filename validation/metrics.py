"""Comparison metrics between a package's outputs and its PyTorch reference (numpy only)."""

from __future__ import annotations

import itertools

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


def argmax_agreement(ref: np.ndarray, got: np.ndarray, *, min_margin: float = 0.0) -> float:
    """Share of rows (last axis = classes) whose argmax agrees; with `min_margin`, only rows
    whose reference top-2 margin exceeds it (near-ties are a coin toss for any precision)."""
    r = ref.reshape(-1, ref.shape[-1])
    g = got.reshape(-1, got.shape[-1])
    keep = np.ones(len(r), dtype=bool)
    if min_margin > 0:
        top2 = np.sort(r, axis=1)[:, -2:]
        keep = (top2[:, 1] - top2[:, 0]) > min_margin
    if not keep.any():
        return 1.0
    return float(np.mean(r[keep].argmax(1) == g[keep].argmax(1)))


def spread(references: list[np.ndarray]) -> float:
    """How much the reference output moves between different inputs: the mean absolute
    difference over all pairs of inputs. A near-constant model has spread ~0."""
    # inputs of different shapes (a flexible dimension) cannot be compared element-wise
    pairs = [(a, b) for a, b in itertools.combinations(references, 2) if a.shape == b.shape]
    if not pairs:
        return float("nan")
    return float(np.mean([mean_abs(a, b) for a, b in pairs]))
