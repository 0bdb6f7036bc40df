"""Convolution and pooling ops (validation/mil/ops_conv.py: conv, conv_transpose,
max_pool, avg_pool, l2_pool) against PyTorch and numpy references. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mil_cases import Case, ResBlock, builder_weights, run_builder_program, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")

# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    "conv1d_stride_pad_dil_groups": (
        lambda: nn.Conv1d(4, 8, 5, stride=2, padding=3, dilation=2, groups=2),
        [(2, 4, 40)],
        {},
    ),
    "conv1d_same_even_kernel": (lambda: nn.Conv1d(4, 6, 4, padding="same"), [(1, 4, 21)], {}),
    "conv1d_depthwise": (lambda: nn.Conv1d(4, 8, 3, groups=4, bias=False), [(1, 4, 16)], {}),
    "conv2d_resnet_block": (lambda: ResBlock(3, 8, 2), [(1, 3, 12, 10)], {}),
    "conv2d_dilated_grouped": (
        lambda: nn.Conv2d(4, 4, (3, 2), stride=(1, 2), padding=(2, 1), dilation=(2, 1), groups=2),
        [(1, 4, 9, 9)],
        {},
    ),
    "maxpool1d": (lambda: nn.MaxPool1d(3, 3), [(1, 4, 20)], {}),
    "maxpool2d_pad_ceil": (
        lambda: nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        [(1, 2, 10, 9)],
        {},
    ),
    "avgpool1d_pad": (
        lambda: nn.AvgPool1d(4, 2, padding=1, count_include_pad=True),
        [(1, 3, 17)],
        {},
    ),
    "avgpool2d_exclude_pad_ceil": (
        lambda: nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        [(1, 2, 10, 9)],
        {},
    ),
    "conv_transpose_1d": (
        lambda: nn.ConvTranspose1d(4, 6, 5, stride=2, padding=1, output_padding=1),
        [(1, 4, 10)],
        {},
    ),
    "conv_transpose_2d_grouped": (
        lambda: nn.ConvTranspose2d(4, 4, 3, stride=2, padding=1, groups=2),
        [(1, 4, 5, 6)],
        {},
    ),
    "lp_pool": (lambda: nn.LPPool1d(2, 3, 2), [(1, 3, 12)], {}),
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

    w_ih = builder_weights()["w_ih"]

    cases = {
        "conv_pool_same_padding": (
            [(1, 2, 9, 8)],
            lambda x: (
                mb.conv(
                    x=x,
                    weight=w_ih.reshape(3, 2, 2, 4)[:, :, :, :3],
                    strides=[2, 1],
                    pad_type="same",
                ),
                mb.conv(
                    x=x,
                    weight=w_ih.reshape(3, 2, 2, 4)[:, :, :, :3],
                    strides=[2, 1],
                    pad_type="same_lower",
                ),
                mb.max_pool(x=x, kernel_sizes=[2, 3], strides=[2, 2], pad_type="same"),
                mb.avg_pool(
                    x=x,
                    kernel_sizes=[2, 3],
                    strides=[2, 2],
                    pad_type="same",
                    exclude_padding_from_average=True,
                ),
            ),
            lambda x: (
                _torch_conv_padded(x, w_ih.reshape(3, 2, 2, 4)[:, :, :, :3], (0, 1, 1, 1), (2, 1)),
                _torch_conv_padded(x, w_ih.reshape(3, 2, 2, 4)[:, :, :, :3], (1, 0, 1, 1), (2, 1)),
                _np_pool(x, (2, 3), (2, 2), ((0, 1), (0, 1)), np.max),
                _np_pool(x, (2, 3), (2, 2), ((0, 1), (0, 1)), np.mean),
            ),
        ),
    }
    return cases


def _torch_conv_padded(
    x: np.ndarray, w: np.ndarray, pad: tuple[int, int, int, int], stride: tuple[int, int]
) -> np.ndarray:
    """Reference with an explicit (before_h, after_h, before_w, after_w) zero pad."""
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[1]), (pad[2], pad[3])))
    return F.conv2d(
        torch.from_numpy(xp), torch.from_numpy(np.ascontiguousarray(w)), stride=stride
    ).numpy()


def _np_pool(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], pad: tuple, fn) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Windows over the unpadded cells only (max ignores padding; `same` avg excludes it)."""
    h, w = x.shape[2:]
    out_h = -(-h // s[0])
    out_w = -(-w // s[1])
    out = np.zeros(x.shape[:2] + (out_h, out_w), np.float32)
    for i in range(out_h):
        for j in range(out_w):
            r0, c0 = i * s[0] - pad[0][0], j * s[1] - pad[1][0]
            win = x[:, :, max(r0, 0) : r0 + k[0], max(c0, 0) : c0 + k[1]]
            out[:, :, i, j] = fn(win, axis=(2, 3))
    return out


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
