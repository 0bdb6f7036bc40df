"""Tensor ops (validation/mil/ops_tensor.py: shape, slicing, gather/scatter, pad, fill,
one_hot, topk/argsort, cumsum, band_part, ...) against PyTorch and numpy references.
See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mil_cases import Case, Lambda, run_builder_program, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")

POWERSET = torch.tensor(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=torch.float32,
)


# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "shape_ops": (
        lambda: Lambda(
            lambda x: (
                x.permute(2, 0, 1),
                x.reshape(6, 4),
                x.flatten(1),
                x.unsqueeze(0).squeeze(0),
                x[:, :1].expand(2, 3, 4),
                x.tile(1, 2, 1),
                x.repeat(2, 1, 1),
                torch.cat([x, x * 2], 1),
                torch.stack([x, x], 0),
                x.split(2, 2)[1],
                x[:, 1:3, ::2],
                x[:, -1],
                x[:, [0, 2]],
                x.transpose(0, 1).contiguous().view(3, -1),
            )
        ),
        [(2, 3, 4)],
        {},
    ),
    "pad_modes": (
        lambda: Lambda(
            lambda x: (
                F.pad(x, (1, 2)),
                F.pad(x, (2, 1), mode="reflect"),
                F.pad(x, (1, 1), mode="replicate"),
                F.pad(x, (1, 0, 0, 2), value=0.5),
            )
        ),
        [(1, 3, 6)],
        {},
    ),
    "powerset_one_hot": (
        lambda: Lambda(lambda x: F.one_hot(x.argmax(-1), 7).float() @ POWERSET),
        [(2, 6, 7)],
        {},
    ),
    "cumsum_fill": (
        lambda: Lambda(
            lambda x: (
                torch.cumsum(x, 1),
                torch.ones_like(x) * 2,
                torch.zeros_like(x) + x,
                torch.full_like(x, 3.0),
                x + torch.arange(4.0),
            )
        ),
        [(3, 4)],
        {},
    ),
    "topk_argsort": (
        lambda: Lambda(
            lambda x: (*x.topk(2, -1), x.argsort(-1), x.topk(1, 0, largest=False).values)
        ),
        [(3, 5)],
        {"distinct": True},
    ),
    "gather_index": (
        lambda: Lambda(
            lambda x: (
                torch.gather(x, 1, torch.tensor([[0, 1], [1, 2], [3, 0]])),
                x.index_select(1, torch.tensor([2, 0])),
                x[torch.tensor([2, 0])],
            )
        ),
        [(3, 4)],
        {},
    ),
    "scatter_along_axis": (
        lambda: Lambda(
            lambda x: (
                x.scatter(1, torch.tensor([[0, 1], [2, 3], [1, 0]]), 5.0),
                torch.zeros(3, 4).scatter_add(1, torch.tensor([[0, 0], [2, 3], [1, 1]]), x[:, :2]),
            )
        ),
        [(3, 4)],
        {},
    ),
    "flip_band_part": (
        lambda: Lambda(
            lambda x: (x.flip(0), x.flip(-1, 1), torch.triu(x[0]), torch.tril(x[0], -1))
        ),
        [(3, 4, 4)],
        {},
    ),
    "gather_nd": (
        lambda: Lambda(lambda x: x[torch.tensor([0, 2]), torch.tensor([1, 3])]),
        [(3, 4)],
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

    gather_idx = np.array([[1, 0], [3, 3], [2, 1]], np.int32)
    gather_nd_idx = np.array([[[1], [0]], [[3], [2]], [[0], [0]]], np.int32)

    cases = {
        "shape_building": (
            [(2, 3, 4)],
            lambda x: (
                mb.slice_by_size(x=x, begin=[0, 1, 1], size=[-1, 2, 2]),
                mb.flatten2d(x=x, axis=2),
                mb.concat(values=[x, mb.mul(x=x, y=2.0)], axis=1, interleave=True),
                mb.mod(x=x, y=0.7),
                mb.cumsum(x=x, axis=2, exclusive=True, reverse=True),
                mb.fill(shape=mb.shape(x=x), value=2.5),
                mb.range_1d(start=1, end=9, step=3),
                mb.sliding_windows(x=x, axis=2, size=2, stride=1),
                mb.reverse(x=x, axes=[0, 2]),
                # scalars concatenate into a vector (a flexible-batch LSTM's state shape)
                mb.concat(
                    values=[np.int32(8), mb.gather(x=mb.shape(x=x), indices=0, axis=0), 128],
                    axis=0,
                ),
            ),
            lambda x: (
                x[:, 1:3, 1:3],
                x.reshape(6, 4),
                np.stack([x, 2 * x], 2).reshape(2, 6, 4),
                np.mod(x, np.float32(0.7)),
                np.flip(np.cumsum(np.flip(x, 2), 2), 2) - x,
                np.full((2, 3, 4), 2.5),
                np.array([1, 4, 7]),
                np.stack([x[:, :, i : i + 2] for i in range(3)], 2),
                x[::-1, :, ::-1],
                np.array([8, 2, 128]),
            ),
        ),
        "sort_topk_variants": (
            [(3, 6)],
            lambda x: (
                *mb.topk(x=x, k=3, axis=-1, ascending=True, sort=False),
                mb.argsort(x=x, axis=0, ascending=True),
            ),
            lambda x: (
                np.take_along_axis(x, np.sort(np.argsort(x, -1)[:, :3], -1), -1),
                np.sort(np.argsort(x, -1)[:, :3], -1),
                np.argsort(x, 0),
            ),
        ),
        "scatter_gather_variants": (
            [(3, 4, 2)],
            lambda x: (
                mb.scatter(
                    data=x,
                    indices=np.array([2, 0], np.int32),
                    updates=mb.mul(
                        x=mb.slice_by_size(x=x, begin=[0, 0, 0], size=[2, 4, 2]), y=10.0
                    ),
                    axis=0,
                    mode="update",
                ),
                mb.scatter_nd(
                    data=x,
                    indices=np.array([[0, 1], [2, 3], [0, 1]], np.int32),
                    updates=np.ones((3, 2), np.float32),
                    mode="add",
                ),
                mb.gather(x=x, indices=gather_idx, axis=1, batch_dims=1),
                mb.gather_nd(x=x, indices=gather_nd_idx, batch_dims=1),
                mb.non_zero(x=mb.greater(x=x, y=0.5)),
            ),
            lambda x: (
                np.stack([10 * x[1], x[1], 10 * x[0]]),
                x + _scatter_nd_delta(),
                np.stack([x[b, gather_idx[b]] for b in range(3)]),
                np.stack([x[b, gather_nd_idx[b, :, 0]] for b in range(3)]),
                np.argwhere(x > 0.5),
            ),
        ),
    }
    return cases


def _scatter_nd_delta() -> np.ndarray:
    d = np.zeros((3, 4, 2), np.float32)
    d[0, 1] += 2  # indices [0, 1] twice: "add" accumulates
    d[2, 3] += 1
    return d


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
