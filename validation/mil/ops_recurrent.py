"""MIL `lstm` (iOS15/recurrent.py; iOS17 only widens the dtypes).

MIL layout: x (seq, batch, I); weights in gate order input, forget, output, cell (torch:
input, forget, cell, output); one combined bias (= torch b_ih + b_hh); initial and final
states (batch, DIRECTIONS*H) with forward first. A bidirectional op's backward half of the
output sequence is time-aligned like torch's; for direction="reverse" the output stays in
processing order (as coremltools' own op tests expect).

The standard cell (sigmoid/tanh/tanh, no peephole, no clip) runs on torch's fused LSTM with
gate rows re-ordered once per executor; anything else runs a step loop.
"""

from __future__ import annotations

import numpy as np
import torch

from .opcall import OpCall, OpFn
from .ops_linear import to_torch

_WEIGHTS = ("weight_ih", "weight_hh", "bias", "weight_ih_back", "weight_hh_back", "bias_back")


def _ifoz_to_ifgo(w: torch.Tensor) -> torch.Tensor:
    i, f, o, z = torch.chunk(w, 4, dim=0)
    return torch.cat([i, f, z, o], dim=0).contiguous()


def _torch_params(c: OpCall, bidirectional: bool) -> list[torch.Tensor]:
    def direction(suffix: str) -> list[torch.Tensor]:
        w_ih = to_torch(c["weight_ih" + suffix])
        w_hh = to_torch(c["weight_hh" + suffix])
        hidden4 = w_ih.shape[0]
        bias_name = "bias" + suffix
        b = to_torch(c[bias_name]) if c.has(bias_name) else torch.zeros(hidden4)
        # torch adds b_ih + b_hh; MIL stores their sum, so b_hh is zero.
        return [_ifoz_to_ifgo(w_ih), _ifoz_to_ifgo(w_hh), _ifoz_to_ifgo(b), torch.zeros(hidden4)]

    params = direction("")
    if bidirectional:
        params += direction("_back")
    return params


def _is_standard(c: OpCall) -> bool:
    return (
        c.str("recurrent_activation", "sigmoid") == "sigmoid"
        and c.str("cell_activation", "tanh") == "tanh"
        and c.str("activation", "tanh") == "tanh"
        and not c.has("peephole")
        and not c.has("peephole_back")
        and not c.has("clip")
    )


def _states(c: OpCall, ndir: int, hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    # (batch, D*H) -> (D, batch, H)
    def conv(v: np.ndarray) -> torch.Tensor:
        t = to_torch(v)
        return t.reshape(t.shape[0], ndir, hidden).permute(1, 0, 2).contiguous()

    return conv(c["initial_h"]), conv(c["initial_c"])


def _lstm(c: OpCall) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    direction = c.str("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"lstm direction {direction!r}")
    bidirectional = direction == "bidirectional"
    ndir = 2 if bidirectional else 1
    x = to_torch(c["x"])
    hidden = int(np.shape(c["weight_hh"])[1])
    if direction == "reverse":
        x = torch.flip(x, [0])
    h0, c0 = _states(c, ndir, hidden)
    if _is_standard(c):
        params = c.memo("torch_params", lambda: _torch_params(c, bidirectional), *_WEIGHTS)
        with torch.no_grad():
            out, hn, cn = torch.lstm(x, (h0, c0), params, True, 1, 0.0, False, bidirectional, False)
    else:
        out, hn, cn = _lstm_loop(c, x, h0, c0, bidirectional)
    batch = x.shape[1]
    hn_flat = hn.permute(1, 0, 2).reshape(batch, ndir * hidden)
    cn_flat = cn.permute(1, 0, 2).reshape(batch, ndir * hidden)
    if not c.bool("output_sequence", False):
        # Final hidden state of each direction (coremltools op tests: output[-1] forward,
        # output[0] backward), i.e. the concatenated final states.
        out = hn_flat.unsqueeze(0)
    return out.numpy(), hn_flat.numpy(), cn_flat.numpy()


_ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "linear": lambda v: v,
    # Core ML's hard sigmoid: min(max(0.2 x + 0.5, 0), 1).
    "hard_sigmoid": lambda v: torch.clamp(0.2 * v + 0.5, 0.0, 1.0),
}


def _activation(c: OpCall, name: str, default: str):  # type: ignore[no-untyped-def]
    key = c.str(name, default)
    if key not in _ACTIVATIONS:
        raise ValueError(f"lstm {name}={key!r} is not supported")
    return _ACTIVATIONS[key]


def _lstm_loop(
    c: OpCall, x: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor, bidirectional: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference step loop for non-standard cells (peephole, clip, other activations)."""
    rec = _activation(c, "recurrent_activation", "sigmoid")
    cell = _activation(c, "cell_activation", "tanh")
    act = _activation(c, "activation", "tanh")
    clip = c.float("clip") if c.has("clip") else None

    def run(
        suffix: str, d: int, seq: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        w_ih, w_hh = to_torch(c["weight_ih" + suffix]), to_torch(c["weight_hh" + suffix])
        hidden = w_hh.shape[1]
        b = to_torch(c["bias" + suffix]) if c.has("bias" + suffix) else torch.zeros(4 * hidden)
        p = (
            to_torch(c["peephole" + suffix])
            if c.has("peephole" + suffix)
            else torch.zeros(3 * hidden)
        )
        p_i, p_f, p_o = torch.chunk(p, 3)
        h, cs = h0[d], c0[d]
        outs = []
        xw = seq @ w_ih.T + b
        for t in range(seq.shape[0]):
            g = xw[t] + h @ w_hh.T
            gi, gf, go, gz = torch.chunk(g, 4, dim=-1)
            i = rec(gi + p_i * cs)
            f = rec(gf + p_f * cs)
            z = cell(gz)
            cs = f * cs + i * z
            if clip is not None:
                cs = torch.clamp(cs, -clip, clip)
            o = rec(go + p_o * cs)
            h = o * act(cs)
            outs.append(h)
        return torch.stack(outs), h, cs

    with torch.no_grad():
        out_f, h_f, c_f = run("", 0, x)
        if not bidirectional:
            return out_f, h_f.unsqueeze(0), c_f.unsqueeze(0)
        out_b, h_b, c_b = run("_back", 1, torch.flip(x, [0]))
        out = torch.cat([out_f, torch.flip(out_b, [0])], dim=-1)
        return out, torch.stack([h_f, h_b]), torch.stack([c_f, c_b])


RECURRENT_OPS: dict[str, OpFn] = {
    "lstm": _lstm,
}
