"""Reductions and softmax (validation/mil/ops_reduce.py) against PyTorch and numpy
references. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mil_cases import Case, Lambda, run_builder_program, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "reductions": (
        lambda: Lambda(
            lambda x: (
                x.sum(1),
                x.mean((0, 2)),
                x.max(1).values,
                x.min(-1).values,
                x.argmax(1),
                x.argmin(-1),
                x.amax(0),
                x.std(-1),
                x.var(1),
                torch.linalg.norm(x, dim=-1),
                torch.logsumexp(x, -1),
            )
        ),
        [(3, 4, 5)],
        {},
    ),
    "softmax_log_softmax": (
        lambda: Lambda(lambda x: (F.softmax(x, -1), F.log_softmax(x, 1), F.softmax(x * 3, 0))),
        [(3, 4, 5)],
        {},
    ),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case: str, precision: str, tmp_path: Path) -> None:
    run_op_parity(CASES, case, precision, tmp_path)


# ---------------------------------------------------------------------------------------
# Ops the torch frontend does not emit: MIL programs written with the pymil builder, saved
# with an empty pass pipeline (ops stay as written), checked against numpy references
# written here from the op documentation.
# ---------------------------------------------------------------------------------------
def _builder_cases():  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.mil import Builder as mb

    cases = {
        "more_reductions": (
            [(2, 3, 4)],
            lambda x: (
                mb.reduce_prod(x=x, axes=[1]),
                mb.reduce_l1_norm(x=x, axes=[-1], keep_dims=True),
                mb.reduce_sum_square(x=x, axes=[0, 2]),
                mb.reduce_log_sum(x=mb.abs(x=x), axes=[2]),
                mb.reduce_log_sum_exp(x=x, axes=[1]),
                mb.reduce_argmin(x=x, axis=1, keep_dims=True),
                mb.reduce_mean(x=x),
            ),
            lambda x: (
                x.prod(1),
                np.abs(x).sum(-1, keepdims=True),
                (x**2).sum((0, 2)),
                np.log(np.abs(x).sum(2)),
                np.log(np.exp(x).sum(1)),
                x.argmin(1)[:, None],
                x.mean(),
            ),
        ),
    }
    return cases


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
