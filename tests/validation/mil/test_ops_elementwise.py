"""Elementwise ops (validation/mil/ops_elementwise.py: unary math, activations, binary,
comparison/logic, select, cast) against PyTorch and numpy references. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mil_cases import (
    Case,
    Lambda,
    builder_weights,
    convert_and_save,
    mil_outputs,
    np_sigmoid,
    rng_inputs,
    run_builder_program,
    run_op_parity,
)

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "unary_math": (
        lambda: Lambda(
            lambda x: (
                torch.exp(x),
                torch.log(x),
                torch.sqrt(x),
                torch.rsqrt(x),
                x.pow(2.5),
                x**2,
                torch.sin(x),
                torch.erf(x),
            )
        ),
        [(3, 4)],
        {"positive": True},
    ),
    "rounding_clamp_minmax": (
        lambda: Lambda(
            lambda x, y: (
                torch.floor(x * 3),
                torch.round(x * 3),
                torch.ceil(x),
                x.clamp(-0.5, 0.5),
                x.clamp(min=0.1),
                torch.maximum(x, y),
                torch.minimum(x, y),
                torch.sign(x),
                x / (y.abs() + 1),
                torch.div(x, 0.3, rounding_mode="floor"),
            )
        ),
        [(3, 4), (3, 4)],
        {},
    ),
    "compare_logic_select_cast": (
        lambda: Lambda(
            lambda x, y: (
                (x < y),
                (x > y),
                (x == x),
                (x <= y),
                (x >= y),
                (x != y),
                torch.logical_and(x > 0, y > 0),
                torch.logical_or(x > 0, y > 0),
                torch.logical_not(x > 0),
                torch.logical_xor(x > 0, y > 0),
                torch.where(x > y, x, y),
                x.int(),
                (x > 0).float(),
                (x * 3).long() + 1,
            )
        ),
        [(3, 4), (3, 4)],
        {},
    ),
    "masks_arithmetic": (
        lambda: Lambda(
            lambda x, m: (
                (1 - (m > 0.5).float()) * x + x * m,
                (m > 0.5).float().sum(-1),
                x * (m > 0).float(),
            )
        ),
        [(2, 5, 3), (2, 5, 3)],
        {},
    ),
    "glu_chunk_mod": (
        lambda: Lambda(
            lambda x: (
                F.glu(x, -1),
                torch.chunk(x, 2, 1)[0],
                x.sum(),
                x % 0.7,
                torch.remainder(x, 2),
            )
        ),
        [(3, 4)],
        {},
    ),
    "activations_trig": (
        lambda: Lambda(
            lambda x: (
                F.hardsigmoid(x),
                F.relu6(x * 4),
                F.softsign(x),
                F.softplus(x, beta=2),
                F.threshold(x, 0.1, 0.1),
                F.hardswish(x),
                torch.exp2(x),
                torch.cos(x),
                torch.tan(x),
                torch.atan(x),
                torch.asin(x.clamp(-0.9, 0.9)),
                torch.acos(x.clamp(-0.9, 0.9)),
                torch.sinh(x),
                torch.cosh(x),
                torch.atanh(x.clamp(-0.9, 0.9)),
                torch.log1p(x.abs()),
                torch.expm1(x),
                torch.frac(x),
            )
        ),
        [(3, 4)],
        {},
    ),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case: str, precision: str, tmp_path: Path) -> None:
    run_op_parity(CASES, case, precision, tmp_path)


def test_reciprocal_is_inverse_with_documented_epsilon(tmp_path: Path) -> None:
    """coremltools lowers 1/x to `inverse(x, epsilon=1e-4)`, i.e. 1/(x + 1e-4): the
    executor follows the program as written (the op's documented semantics), so the
    converter's deviation from torch stays visible."""
    path = tmp_path / "inv.mlpackage"
    convert_and_save(Lambda(lambda x: 1.0 / x), rng_inputs([(3, 4)], positive=True), path)
    xs = rng_inputs([(3, 4)], seed=2, positive=True)
    mil, ex = mil_outputs(path, xs)
    assert ex.op_types()["inverse"] == 1
    np.testing.assert_allclose(mil[0], 1.0 / (xs[0] + np.float32(1e-4)), rtol=1e-6)
    assert np.max(np.abs(mil[0] - 1.0 / xs[0])) > 1e-4


# ---------------------------------------------------------------------------------------
# Ops the torch frontend does not emit: MIL programs written with the pymil builder, saved
# with an empty pass pipeline (ops stay as written), checked against numpy references
# written here from the op documentation.
# ---------------------------------------------------------------------------------------
def _builder_cases():  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.mil import Builder as mb

    weights = builder_weights()
    alpha4, beta4 = weights["alpha4"], weights["beta4"]

    cases = {
        "gelu_approximations": (
            [(2, 3, 4)],
            lambda x: (
                mb.gelu(x=x, mode="TANH_APPROXIMATION"),
                mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
            ),
            lambda x: (
                0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
                x * np_sigmoid(1.702 * x),
            ),
        ),
        "parametric_activations": (
            [(2, 4, 5, 3)],
            lambda x: (
                mb.clamped_relu(x=x, alpha=0.1, beta=0.8),
                mb.scaled_tanh(x=x, alpha=1.5, beta=0.5),
                mb.linear_activation(x=x, alpha=2.0, beta=1.0),
                mb.softplus_parametric(x=x, alpha=alpha4, beta=beta4),
                mb.prelu(x=x, alpha=alpha4),
                mb.sigmoid_hard(x=x, alpha=0.3, beta=0.4),
                mb.thresholded_relu(x=x, alpha=0.2),
                mb.identity(x=x),
            ),
            lambda x: (
                np.minimum(0.8, np.where(x >= 0, x, 0.1 * x)),
                1.5 * np.tanh(0.5 * x),
                2 * x + 1,
                alpha4[None, :, None, None] * np.log1p(np.exp(beta4[None, :, None, None] * x)),
                np.where(x > 0, x, alpha4[None, :, None, None] * x),
                np.clip(0.3 * x + 0.4, 0, 1),
                np.where(x >= 0.2, x, 0),
                x,
            ),
        ),
        "log_eps_and_rsqrt": (
            [(3, 4)],
            lambda x: (
                mb.log(x=mb.abs(x=x), epsilon=0.5),
                mb.rsqrt(x=mb.abs(x=x), epsilon=0.25),
                mb.inverse(x=x, epsilon=0.0),
            ),
            lambda x: (np.log(np.abs(x) + 0.5), 1 / np.sqrt(np.abs(x) + 0.25), 1 / x),
        ),
    }
    return cases


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
