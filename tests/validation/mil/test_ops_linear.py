"""Linear ops (validation/mil/ops_linear.py: linear, matmul, einsum) against PyTorch.
See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mil_cases import Case, Lambda, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "linear_activations": (
        lambda: nn.Sequential(
            nn.Linear(6, 5),
            Lambda(
                lambda x: (
                    F.leaky_relu(x, 0.1),
                    F.relu(x),
                    torch.sigmoid(x),
                    torch.tanh(x),
                    torch.abs(x),
                    F.elu(x),
                    F.gelu(x),
                    F.silu(x),
                    F.softplus(x),
                    F.hardtanh(x),
                )
            ),
        ),
        [(3, 6)],
        {},
    ),
    "matmul_einsum_bmm": (
        lambda: Lambda(
            lambda x, y, z: (
                x @ y,
                torch.einsum("ij,jk->ik", x, y),
                torch.bmm(z, z.transpose(1, 2)),
                torch.einsum("bij,bkj->bik", z, z),
                z @ y,
            )
        ),
        [(3, 4), (4, 5), (2, 3, 4)],
        {},
    ),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case: str, precision: str, tmp_path: Path) -> None:
    run_op_parity(CASES, case, precision, tmp_path)
