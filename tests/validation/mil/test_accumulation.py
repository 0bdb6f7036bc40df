"""Emulated fp16 accumulation (validation/mil/ops_accumulate.py; issue #22 part 6) on tiny
saved conv / matmul / linear packages, against an independent numpy reference that rounds
the running sum to np.float16 after every product-add. Off by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn
from mil_cases import Lambda, convert_and_save

from coreml_diarize.validation.mil import DEFAULT_OPS, MILExecutor
from coreml_diarize.validation.mil.ops_accumulate import accumulation_ops

pytestmark = pytest.mark.filterwarnings("ignore")


def fp16_sequential_dot(terms_a: np.ndarray, terms_b: np.ndarray) -> float:
    """sum_k a_k * b_k with the sum rounded to float16 after every product-add (numpy scalars:
    products in float32, exact for fp16-representable operands)."""
    acc = np.float16(0.0)
    for a, b in zip(terms_a.astype(np.float32), terms_b.astype(np.float32), strict=True):
        acc = np.float16(np.float32(acc) + a * b)
    return float(acc)


def numpy_matmul_fp16acc(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(M, K) @ (K, N), every entry a sequential fp16-accumulated dot product."""
    out = np.empty((x.shape[0], w.shape[1]))
    for m in range(x.shape[0]):
        for n in range(w.shape[1]):
            out[m, n] = fp16_sequential_dot(x[m], w[:, n])
    return out


def numpy_conv1d_fp16acc(x: np.ndarray, w: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Valid conv1d (1, C, L) * (O, C, k), stride 1: per output the sum over channels then
    taps, rounded to fp16 after every product-add, then + bias rounded."""
    _, channels, length = x.shape
    out_channels, _, k = w.shape
    out = np.empty((1, out_channels, length - k + 1))
    for o in range(out_channels):
        for t in range(length - k + 1):
            patch = x[0, :, t : t + k].reshape(-1)  # channel-major, then taps
            acc = fp16_sequential_dot(patch, w[o].reshape(-1))
            out[0, o, t] = float(np.float16(np.float32(acc) + np.float32(bias[o])))
    return out


def ill_conditioned(k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dot-product operands whose fp16 running sum loses the small terms: a first product of
    ~2048 (fp16 spacing 2 there), then terms of ~0.25 that fp32 keeps and fp16 rounds away."""
    a = rng.uniform(0.2, 0.3, k).astype(np.float16).astype(np.float32)
    b = np.ones(k, dtype=np.float32)
    a[0], b[0] = 2048.0, 1.0
    return a, b


@pytest.fixture(scope="module")
def matmul_package(tmp_path_factory):
    rng = np.random.default_rng(0)
    a, b = ill_conditioned(64, rng)
    x = np.stack([a, a[::-1].copy(), rng.standard_normal(64).astype(np.float32)])
    weight = np.stack([b, rng.standard_normal(64).astype(np.float32)], axis=1)  # (64, 2)
    const = torch.from_numpy(weight)
    module = Lambda(lambda t: (torch.matmul(t, const), nn.functional.linear(t, const.T)))
    path = tmp_path_factory.mktemp("acc") / "matmul.mlpackage"
    convert_and_save(module, [x], path)
    return path, x, weight


def test_matmul_and_linear_accumulate_in_fp16(matmul_package):
    path, x, weight = matmul_package
    want = numpy_matmul_fp16acc(x, weight)
    exact = x.astype(np.float64) @ weight.astype(np.float64)
    executor = MILExecutor(MILExecutor.from_path(path).program, ops=accumulation_ops("fp16"))
    outputs = executor.predict({"x0": x})
    assert len(outputs) == 2
    for got in outputs.values():
        np.testing.assert_array_equal(got.astype(np.float64), want)
    # the case really separates the modes: fp16 accumulation loses ~15 on row 0
    assert abs(want[0, 0] - exact[0, 0]) > 8.0


def test_accumulation_is_off_by_default(matmul_package):
    path, x, weight = matmul_package
    assert accumulation_ops("fp32") is DEFAULT_OPS
    exact = x.astype(np.float64) @ weight.astype(np.float64)
    for got in MILExecutor.from_path(path).predict({"x0": x}).values():
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-4)


def test_conv_accumulates_in_fp16(tmp_path):
    rng = np.random.default_rng(1)
    conv = nn.Conv1d(3, 2, 5)
    with torch.no_grad():
        a, _ = ill_conditioned(15, rng)
        conv.weight.copy_(
            torch.from_numpy(np.stack([np.ones(15), rng.standard_normal(15)])).view(2, 3, 5)
        )
        conv.bias.copy_(torch.tensor([0.5, -1.0]))
    x = np.tile(a.reshape(3, 5), (1, 4))[None].astype(np.float32)  # (1, 3, 20)
    x += rng.uniform(0, 0.01, x.shape).astype(np.float16).astype(np.float32)
    path = tmp_path / "conv.mlpackage"
    convert_and_save(conv, [x], path)
    weight, bias = conv.weight.detach().numpy(), conv.bias.detach().numpy()
    want = numpy_conv1d_fp16acc(x, weight, bias)
    executor = MILExecutor(MILExecutor.from_path(path).program, ops=accumulation_ops("fp16"))
    got = next(iter(executor.predict({"x0": x}).values()))
    np.testing.assert_array_equal(got.astype(np.float64), want)
    with torch.no_grad():
        exact = conv(torch.from_numpy(x)).numpy()
    assert np.abs(want - exact).max() > 1.0  # fp16 accumulation really differs here
    plain = next(iter(MILExecutor.from_path(path).predict({"x0": x}).values()))
    np.testing.assert_allclose(plain, exact, rtol=1e-5, atol=1e-3)  # default: fp32


def test_fp16_scope_leaves_fp32_typed_ops_alone(matmul_package):
    path, x, weight = matmul_package
    executor = MILExecutor(
        MILExecutor.from_path(path).program, ops=accumulation_ops("fp16", scope="fp16")
    )
    exact = x.astype(np.float64) @ weight.astype(np.float64)
    for got in executor.predict({"x0": x}).values():  # an fp32 program: untouched
        np.testing.assert_allclose(got, exact, rtol=1e-6, atol=1e-4)
