"""Elementwise MIL ops: unary math, activations, binary arithmetic, comparisons, logic, cast.

Precision model: fp16 operands are widened to fp32 for the computation and the executor
rounds every op output to its declared dtype, so an fp16 program rounds once per op, as a
fused Core ML kernel would (iOS15/elementwise_unary.py, activation.py, elementwise_binary.py).

Fast paths (fp16 operands only; the result is the same fp16 value, docs/mil_ops.md "Speed"):
numpy's float16 loops are scalar code, ~20x slower than torch's vectorised ones. Where the
exact result of the op is an fp16 value (abs, relu's selection, leaky_relu's selection of x
or x * alpha, both fp16, whose product is exact in fp32), or where the op is +, -, * or /
(whose fp32 result rounded to fp16 is the correctly rounded fp16 result: double rounding is
innocuous when the wider format has >= 2p + 2 bits, 24 >= 2 * 11 + 2; S. A. Figueroa, "When
is double rounding innocuous?", SIGNUM Newsletter 30(3), 1995), torch computes the op on
float16 tensors and gives the value the widened computation gives. Transcendental ops keep
numpy's fp32 functions: another library's exp/tanh may differ by an fp32 ulp, which can move
the fp16 rounding. The pre-fast-path implementations are kept in ops_reference.py.
"""

from __future__ import annotations

import numpy as np
import torch

from .opcall import OpCall, OpFn, cast_array, half_tensor
from .opcall import widen as _up


def _erf(x: np.ndarray) -> np.ndarray:
    # numpy has no erf; torch's is vectorised and exact to fp32 rounding.
    return torch.special.erf(torch.from_numpy(np.ascontiguousarray(_up(x)))).numpy()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = _up(x)
    # Split by sign so exp never overflows (warning-free and exact at the tails).
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1.0 + e)
    return out


def _softplus(x: np.ndarray) -> np.ndarray:
    x = _up(x)
    return np.logaddexp(0.0, x).astype(x.dtype)


def _unary(fn, on_half=None) -> OpFn:  # type: ignore[no-untyped-def]
    """`fn` on the widened operand; `on_half(torch float16 tensor)` instead for an fp16
    operand when given (an op whose exact result is an fp16 value, module docstring)."""

    def run(c: OpCall) -> np.ndarray:
        x = np.asarray(c["x"])
        if on_half is not None and x.dtype == np.float16:
            return on_half(half_tensor(x)).numpy()
        with np.errstate(all="ignore"):
            return fn(_up(x))

    return run


def _relu(x: np.ndarray) -> np.ndarray:
    # maximum(x, 0) keeps x's dtype (a Python 0 is weakly typed, NEP 50): no copy after.
    return np.maximum(x, 0)


def _relu_half(t: torch.Tensor) -> torch.Tensor:
    # torch.relu keeps -0 where numpy's maximum(x, 0) gives +0: adding +0 turns -0 into +0
    # and leaves every other value (NaN included) as it is. (torch.where(t <= 0, 0, t) is
    # the same values, but torch has no vectorised float16 `where`: 80x slower.)
    return torch.relu(t).add_(0.0)


def _with_eps(fn, default: float) -> OpFn:  # type: ignore[no-untyped-def]
    """log / rsqrt / inverse add `epsilon` (an input of the op) before the function."""

    def run(c: OpCall) -> np.ndarray:
        x = _up(c["x"])
        eps = np.asarray(c.get("epsilon", default)).astype(x.dtype)
        with np.errstate(all="ignore"):
            return fn(x + eps)

    return run


def _round_half_even(x: np.ndarray) -> np.ndarray:
    # MIL round: "0.5 is rounded to 0", i.e. round half to even like np.round.
    return np.round(x)


def _gelu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    mode = c.str("mode", "EXACT")
    if mode == "EXACT":
        return 0.5 * x * (1.0 + _erf(x / np.sqrt(np.float32(2.0))))
    if mode == "TANH_APPROXIMATION":
        k = np.float32(np.sqrt(2.0 / np.pi))
        return 0.5 * x * (1.0 + np.tanh(k * (x + np.float32(0.044715) * x**3)))
    if mode == "SIGMOID_APPROXIMATION":
        return x * _sigmoid(np.float32(1.702) * x)
    raise ValueError(f"gelu mode {mode!r}")


def _per_channel(c: OpCall, name: str, x: np.ndarray) -> np.ndarray:
    """alpha/beta of prelu & softplus_parametric are (C,) vectors along axis 1."""
    a = _up(np.asarray(c[name]))
    if a.ndim == 1 and x.ndim >= 2:
        return a.reshape((1, -1) + (1,) * (x.ndim - 2))
    return a


def _prelu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    a = _per_channel(c, "alpha", x)
    return np.where(x > 0, x, a * x)


def _softplus_parametric(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    a, b = _per_channel(c, "alpha", x), _per_channel(c, "beta", x)
    return a * _softplus(b * x)


def _scalar_param(c: OpCall, name: str, x: np.ndarray) -> np.ndarray:
    return np.asarray(c[name]).astype(x.dtype)


def _leaky_relu(c: OpCall) -> np.ndarray:
    x, alpha = np.asarray(c["x"]), np.asarray(c["alpha"])
    if x.dtype == np.float16 and alpha.dtype == np.float16 and not np.signbit(alpha):
        # alpha * x of two fp16 values is exact in fp32: its fp16 rounding is the value the
        # widened computation rounds to, whatever precision torch multiplies in. torch tests
        # x > 0 where MIL says x >= 0: they part only at x = -0, where alpha * x is -0 too
        # unless alpha has its sign bit set (then the widened path below).
        return torch.nn.functional.leaky_relu(half_tensor(x), float(alpha)).numpy()
    x = _up(x)
    a = _scalar_param(c, "alpha", x)
    return np.where(x >= 0, x, a * x)


def _elu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    a = _scalar_param(c, "alpha", x)
    with np.errstate(over="ignore"):
        return np.where(x > 0, x, a * np.expm1(np.minimum(x, 0)))


def _clamped_relu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    a, b = _scalar_param(c, "alpha", x), _scalar_param(c, "beta", x)
    return np.minimum(b, np.where(x >= 0, x, a * x))


def _scaled_tanh(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    return _scalar_param(c, "alpha", x) * np.tanh(_scalar_param(c, "beta", x) * x)


def _sigmoid_hard(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    return np.clip(_scalar_param(c, "alpha", x) * x + _scalar_param(c, "beta", x), 0, 1)


def _linear_activation(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    return _scalar_param(c, "alpha", x) * x + _scalar_param(c, "beta", x)


def _threshold(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    return np.maximum(x, _scalar_param(c, "alpha", x))


def _thresholded_relu(c: OpCall) -> np.ndarray:
    x = _up(c["x"])
    return np.where(x >= _scalar_param(c, "alpha", x), x, 0).astype(x.dtype)


def _clip(c: OpCall) -> np.ndarray:
    # MIL clip = min(max(x, alpha), beta) (iOS15/elementwise_unary.py).
    x = _up(c["x"])
    return np.minimum(np.maximum(x, _scalar_param(c, "alpha", x)), _scalar_param(c, "beta", x))


def _binary(fn, on_half=None) -> OpFn:  # type: ignore[no-untyped-def]
    """`fn(x, y)` in numpy; `on_half` (a torch op) when both operands are fp16: +, -, *, /
    correctly rounded to fp16 (module docstring), as numpy's scalar float16 loops give."""

    def run(c: OpCall) -> np.ndarray:
        x, y = np.asarray(c["x"]), np.asarray(c["y"])
        if on_half is not None and x.dtype == np.float16 and y.dtype == np.float16:
            return on_half(half_tensor(x), half_tensor(y)).numpy()
        with np.errstate(all="ignore"):
            return fn(x, y)

    return run


def _real_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        # MIL real_div on ints still yields the int dtype the program declares (truncated).
        return np.trunc(x / y)
    return x / y


def _floor_div(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    if x.dtype.kind in "iu" and y.dtype.kind in "iu":
        return np.floor_divide(x, y)
    return np.floor(_up(x) / _up(y))


def _mod(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Floor modulo (same sign as y), as torch's `%` which the frontend maps here.
    return np.mod(x, y)


def _pow(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.power(_up(x), _up(y))


def _cmp(fn) -> OpFn:  # type: ignore[no-untyped-def]
    def run(c: OpCall) -> np.ndarray:
        return fn(np.asarray(c["x"]), np.asarray(c["y"]))

    return run


def _select(c: OpCall) -> np.ndarray:
    return np.where(np.asarray(c["cond"]).astype(bool), c["a"], c["b"])


_CAST_DTYPES = {
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


def _cast(c: OpCall) -> np.ndarray:
    dtype = c.str("dtype")
    if dtype not in _CAST_DTYPES:
        raise ValueError(f"cast to {dtype!r}")
    x = np.asarray(c["x"])
    target = _CAST_DTYPES[dtype]
    if np.dtype(target).kind in "iu" and x.dtype.kind == "f":
        # float -> int truncates toward zero (C semantics); saturate instead of wrapping.
        info = np.iinfo(target)
        with np.errstate(invalid="ignore"):
            return np.clip(np.trunc(x), info.min, info.max).astype(target)
    return cast_array(x, target)


def _identity(c: OpCall) -> np.ndarray:
    return np.asarray(c["x"])


ELEMENTWISE_OPS: dict[str, OpFn] = {
    # unary math
    "abs": _unary(np.abs, torch.abs),
    "acos": _unary(np.arccos),
    "asin": _unary(np.arcsin),
    "atan": _unary(np.arctan),
    "atanh": _unary(np.arctanh),
    "ceil": _unary(np.ceil),
    "cos": _unary(np.cos),
    "cosh": _unary(np.cosh),
    "erf": _unary(_erf),
    "exp": _unary(np.exp),
    "exp2": _unary(np.exp2),
    "floor": _unary(np.floor),
    "round": _unary(_round_half_even),
    "sign": _unary(np.sign),
    "sin": _unary(np.sin),
    "sinh": _unary(np.sinh),
    "sqrt": _unary(np.sqrt),
    "square": _unary(np.square),
    "tan": _unary(np.tan),
    "tanh": _unary(np.tanh),
    "log": _with_eps(np.log, 1e-45),
    "rsqrt": _with_eps(lambda v: 1.0 / np.sqrt(v), 1e-12),
    "inverse": _with_eps(lambda v: 1.0 / v, 1e-4),
    "identity": _identity,
    # activations
    "relu": _unary(_relu, _relu_half),
    "relu6": _unary(lambda x: np.clip(x, 0, 6).astype(x.dtype)),
    "sigmoid": _unary(_sigmoid),
    "silu": _unary(lambda x: x * _sigmoid(x)),
    "softplus": _unary(_softplus),
    "softsign": _unary(lambda x: x / (1 + np.abs(x))),
    "gelu": _gelu,
    "leaky_relu": _leaky_relu,
    "elu": _elu,
    "prelu": _prelu,
    "clamped_relu": _clamped_relu,
    "scaled_tanh": _scaled_tanh,
    "sigmoid_hard": _sigmoid_hard,
    "linear_activation": _linear_activation,
    "softplus_parametric": _softplus_parametric,
    "threshold": _threshold,
    "thresholded_relu": _thresholded_relu,
    "clip": _clip,
    # binary arithmetic (numpy broadcasting = MIL broadcasting)
    "add": _binary(np.add, torch.add),
    "sub": _binary(np.subtract, torch.sub),
    "mul": _binary(np.multiply, torch.mul),
    "real_div": _binary(_real_div, torch.div),
    "floor_div": _binary(_floor_div),
    "mod": _binary(_mod),
    "pow": _binary(_pow),
    "maximum": _binary(np.maximum),
    "minimum": _binary(np.minimum),
    # comparisons -> bool
    "equal": _cmp(np.equal),
    "not_equal": _cmp(np.not_equal),
    "less": _cmp(np.less),
    "less_equal": _cmp(np.less_equal),
    "greater": _cmp(np.greater),
    "greater_equal": _cmp(np.greater_equal),
    # logic
    "logical_and": _cmp(np.logical_and),
    "logical_or": _cmp(np.logical_or),
    "logical_xor": _cmp(np.logical_xor),
    "logical_not": lambda c: np.logical_not(c["x"]),
    "select": _select,
    "cast": _cast,
}
