"""Normalization ops (validation/mil/ops_norm.py: batch/instance/layer norm, l2_norm,
local_response_norm) against PyTorch and numpy references. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn
import torch.nn.functional as F
from mil_cases import Case, Lambda, SegLike, bn_with_stats, run_builder_program, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "instance_norm_affine": (lambda: SegLike().norm1, [(2, 8, 30)], {}),
    "batch_norm1d": (lambda: bn_with_stats(nn.BatchNorm1d(4)), [(2, 4, 10)], {}),
    "batch_norm2d": (lambda: bn_with_stats(nn.BatchNorm2d(4)), [(2, 4, 5, 6)], {}),
    "layer_norm": (lambda: nn.LayerNorm(10), [(2, 4, 10)], {}),
    "layer_group_norm": (
        lambda: nn.Sequential(Lambda(lambda x: F.layer_norm(x, (4, 6))), nn.GroupNorm(2, 4)),
        [(2, 4, 6)],
        {},
    ),
    "prelu_normalize": (
        lambda: nn.Sequential(nn.PReLU(4, 0.2), Lambda(lambda x: F.normalize(x, dim=-1))),
        [(2, 4, 5)],
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
        "l2_norm_l2_pool_lrn": (
            [(2, 3, 4, 6)],
            lambda x: (
                mb.l2_norm(x=x, epsilon=1e-6),
                mb.l2_pool(x=x, kernel_sizes=[2, 2], strides=[2, 2], pad_type="valid"),
                mb.local_response_norm(x=x, size=3, alpha=1e-2, beta=0.75, k=1.0),
            ),
            lambda x: (
                x / np.sqrt((x**2).reshape(2, -1).sum(1) + 1e-6).reshape(2, 1, 1, 1),
                np.sqrt((x**2).reshape(2, 3, 2, 2, 3, 2).sum((3, 5))),
                x
                / (
                    1.0
                    + 1e-2
                    / 3
                    * np.stack(
                        [
                            (np.pad(x**2, ((0, 0), (1, 1), (0, 0), (0, 0)))[:, c : c + 3]).sum(1)
                            for c in range(3)
                        ],
                        1,
                    )
                )
                ** 0.75,
            ),
        ),
    }
    return cases


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
