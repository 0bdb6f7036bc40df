"""The lstm op (validation/mil/ops_recurrent.py) against PyTorch and a numpy reference.
See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch.nn as nn
from mil_cases import Case, builder_weights, np_sigmoid, run_builder_program, run_op_parity

pytestmark = pytest.mark.filterwarnings("ignore")


class LSTMPair(nn.Module):
    """nn.LSTM(batch_first, bidirectional, 2 layers) and nn.LSTM(seq-first, 3 layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.bi = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.uni = nn.LSTM(4, 6, num_layers=3)

    def forward(self, x, y):  # type: ignore[no-untyped-def]
        return self.bi(x)[0], self.uni(y)[0]


# name -> (module factory, input shapes, options)
CASES: dict[str, Case] = {
    # Both LSTM layouts in one program: converting an LSTM is the slow part (seconds).
    "lstm_bi_2layer_batch_first_and_uni_3layer": (LSTMPair, [(2, 9, 5), (8, 2, 4)], {}),
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
def _np_lstm(x, w_ih, w_hh, b, peep, clip, h, c):  # type: ignore[no-untyped-def]
    """MIL lstm, one direction, gates i/f/o/z, peephole i/f use c_{t-1}, o uses c_t."""
    hidden = w_hh.shape[1]
    p_i, p_f, p_o = peep[:hidden], peep[hidden : 2 * hidden], peep[2 * hidden :]
    outs = []
    for t in range(x.shape[0]):
        g = x[t] @ w_ih.T + h @ w_hh.T + b
        gi, gf, go, gz = np.split(g, 4, axis=-1)
        i = np_sigmoid(gi + p_i * c)
        f = np_sigmoid(gf + p_f * c)
        c = f * c + i * np.tanh(gz)
        c = np.clip(c, -clip, clip)
        o = np_sigmoid(go + p_o * c)
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


def _builder_cases():  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.mil import Builder as mb

    weights = builder_weights()
    w_ih, w_hh, bias, peep = (weights[k] for k in ("w_ih", "w_hh", "bias", "peep"))
    h0 = np.zeros((2, 3), np.float32)

    cases = {
        "lstm_peephole_clip_reverse": (
            [(5, 2, 4)],
            lambda x: (
                *mb.lstm(
                    x=x,
                    initial_h=h0,
                    initial_c=h0,
                    weight_ih=w_ih,
                    weight_hh=w_hh,
                    bias=bias,
                    peephole=peep,
                    clip=0.5,
                    output_sequence=True,
                ),
                mb.lstm(
                    x=x,
                    initial_h=h0,
                    initial_c=h0,
                    weight_ih=w_ih,
                    weight_hh=w_hh,
                    bias=bias,
                    direction="reverse",
                    output_sequence=False,
                )[0],
            ),
            lambda x: (
                *_np_lstm(x, w_ih, w_hh, bias, peep, 0.5, h0, h0),
                _np_lstm(x[::-1], w_ih, w_hh, bias, np.zeros(9), np.inf, h0, h0)[1][None],
            ),
        ),
    }
    return cases


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
