"""Per-op parity of the MIL reference executor against PyTorch.

Each case builds a tiny torch module, traces it, converts it with coremltools (fp32 and
fp16, iOS17), saves the .mlpackage to tmp_path, runs the *saved* package through
MILExecutor and compares with the torch output (the independent reference).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from coreml_diarize.errors import ArtifactError, UnsupportedOpError
from coreml_diarize.validation.mil import DEFAULT_OPS, MILExecutor, load_program, supported_ops
from coreml_diarize.validation.mil.loader import unpack_bits

pytestmark = pytest.mark.filterwarnings("ignore")

warnings.filterwarnings("ignore", module="coremltools")
logging.getLogger("coremltools").setLevel(logging.ERROR)

ct = pytest.importorskip("coremltools")

# Tolerances relative to the reference's scale: |mil - torch| <= atol + rtol * max|torch|.
TOL = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 2e-2)}


class Lambda(nn.Module):
    def __init__(self, fn: Callable) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs):  # type: ignore[no-untyped-def]
        return self.fn(*xs)


def convert_and_save(
    module: nn.Module,
    examples: list[np.ndarray],
    path: Path,
    *,
    precision: str = "fp32",
    flex: dict[int, tuple[int, ...]] | None = None,
    target=None,  # type: ignore[no-untyped-def]
):  # type: ignore[no-untyped-def]
    module.eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, tuple(torch.from_numpy(x) for x in examples))
    inputs = []
    for i, x in enumerate(examples):
        shape: list = list(x.shape)
        for d in (flex or {}).get(i, ()):
            shape[d] = ct.RangeDim(1, 4096, default=shape[d])
        inputs.append(ct.TensorType(name=f"x{i}", shape=ct.Shape(shape)))
    model = ct.convert(
        traced,
        inputs=inputs,
        convert_to="mlprogram",
        minimum_deployment_target=target or ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32 if precision == "fp32" else ct.precision.FLOAT16,
    )
    model.save(str(path))
    return model


def torch_outputs(module: nn.Module, inputs: list[np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*[torch.from_numpy(x) for x in inputs])
    flat: list = []

    def walk(o) -> None:  # type: ignore[no-untyped-def]
        if isinstance(o, (tuple, list)):
            for e in o:
                walk(e)
        else:
            flat.append(o.numpy())

    walk(out)
    return flat


def mil_outputs(path: Path, inputs: list[np.ndarray]) -> tuple[list[np.ndarray], MILExecutor]:
    ex = MILExecutor.from_path(path)
    res = ex.predict({f"x{i}": x for i, x in enumerate(inputs)})
    return [res[name] for name in ex.output_names], ex


def max_err(mil: list[np.ndarray], ref: list[np.ndarray]) -> float:
    assert len(mil) == len(ref)
    worst = 0.0
    for m, r in zip(mil, ref, strict=False):
        assert m.shape == r.shape, (m.shape, r.shape)
        worst = max(
            worst, float(np.max(np.abs(m.astype(np.float64) - r.astype(np.float64)), initial=0.0))
        )
    return worst


def assert_close(
    mil: list[np.ndarray], ref: list[np.ndarray], precision: str, scale: float = 1.0
) -> float:
    atol, rtol = TOL[precision]
    err = max_err(mil, ref)
    mag = max(float(np.max(np.abs(r.astype(np.float64)), initial=0.0)) for r in ref)
    assert err <= scale * (atol + rtol * mag), f"max abs err {err:.3g} (reference max {mag:.3g})"
    return err


def rng_inputs(
    shapes: list[tuple[int, ...]], seed: int = 0, positive: bool = False
) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for s in shapes:
        x = rng.standard_normal(s).astype(np.float32)
        out.append(np.abs(x) + 0.1 if positive else x)
    return out


# ---------------------------------------------------------------------------------------
# Module zoo
# ---------------------------------------------------------------------------------------
class SegLike(nn.Module):
    """PyanNet-shaped: conv1d -> abs -> maxpool -> instance_norm -> leaky_relu (x2) ->
    biLSTM x2 -> linear -> leaky_relu -> log-softmax written by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(1, 8, 25, stride=10)
        self.norm1 = nn.InstanceNorm1d(8, affine=True)
        self.conv2 = nn.Conv1d(8, 8, 5)
        self.norm2 = nn.InstanceNorm1d(8, affine=True)
        self.lstm = nn.LSTM(8, 12, num_layers=2, bidirectional=True, batch_first=True)
        self.linear = nn.Linear(24, 7)
        with torch.no_grad():
            self.norm1.weight.uniform_(0.5, 1.5)
            self.norm1.bias.uniform_(-0.5, 0.5)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.leaky_relu(self.norm1(F.max_pool1d(torch.abs(self.conv1(x)), 3)))
        x = F.leaky_relu(self.norm2(F.max_pool1d(self.conv2(x), 3)))
        x, _ = self.lstm(x.transpose(1, 2))
        x = F.leaky_relu(self.linear(x))
        m = x.max(dim=-1, keepdim=True).values
        return x - m - torch.log(torch.exp(x - m).sum(-1, keepdim=True))


def _bn(bn: nn.Module) -> nn.Module:
    """A batch norm with non-trivial running statistics and affine parameters."""
    with torch.no_grad():
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
    return bn.eval()


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
        )
        for bn in (self.b1, self.b2, self.short[1]):
            _bn(bn)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))


class WeSpeakerLike(nn.Module):
    """Strided-conv fbank front end -> log -> mean-over-time normalisation -> ResNet block
    -> mask-weighted mean/std pooling (sqrt/clamp) -> linear embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.fbank = nn.Conv1d(1, 16, 64, stride=32, bias=False)
        self.block = ResBlock(1, 4, 2)
        self.embed = nn.Linear(2 * 4 * 8, 6)

    def forward(self, wav, mask):  # type: ignore[no-untyped-def]
        f = torch.log(self.fbank(wav).pow(2).clamp(min=1e-6))
        f = f - f.mean(-1, keepdim=True)
        y = self.block(f.unsqueeze(1)).flatten(1, 2)
        w = mask.unsqueeze(1)
        n = w.sum(-1).clamp(min=1e-8)
        mean = (y * w).sum(-1) / n
        var = ((y - mean.unsqueeze(-1)) ** 2 * w).sum(-1) / n
        std = torch.sqrt(var.clamp(min=1e-5))
        return self.embed(torch.cat([mean, std], -1))


class LSTMPair(nn.Module):
    """nn.LSTM(batch_first, bidirectional, 2 layers) and nn.LSTM(seq-first, 3 layers)."""

    def __init__(self) -> None:
        super().__init__()
        self.bi = nn.LSTM(5, 7, num_layers=2, bidirectional=True, batch_first=True)
        self.uni = nn.LSTM(4, 6, num_layers=3)

    def forward(self, x, y):  # type: ignore[no-untyped-def]
        return self.bi(x)[0], self.uni(y)[0]


POWERSET = torch.tensor(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]],
    dtype=torch.float32,
)


def cosine_distance(a, b):  # type: ignore[no-untyped-def]
    a = a / torch.linalg.norm(a, dim=-1, keepdim=True)
    b = b / torch.linalg.norm(b, dim=-1, keepdim=True)
    return 1 - a @ b.T


def stats_pool(x, m):  # type: ignore[no-untyped-def]
    w = m.unsqueeze(1)
    n = w.sum(-1).clamp(min=1e-8)
    mean = (x * w).sum(-1) / n
    var = ((x - mean.unsqueeze(-1)) ** 2 * w).sum(-1) / n
    return torch.cat([mean, torch.sqrt(var.clamp(min=1e-5))], -1)


# name -> (module factory, input shapes, options)
CASES: dict[str, tuple[Callable[[], nn.Module], list[tuple[int, ...]], dict]] = {
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
    "instance_norm_affine": (lambda: SegLike().norm1, [(2, 8, 30)], {}),
    "batch_norm1d": (lambda: _bn(nn.BatchNorm1d(4)), [(2, 4, 10)], {}),
    "batch_norm2d": (lambda: _bn(nn.BatchNorm2d(4)), [(2, 4, 5, 6)], {}),
    "layer_norm": (lambda: nn.LayerNorm(10), [(2, 4, 10)], {}),
    # Both LSTM layouts in one program: converting an LSTM is the slow part (seconds).
    "lstm_bi_2layer_batch_first_and_uni_3layer": (LSTMPair, [(2, 9, 5), (8, 2, 4)], {}),
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
    "powerset_one_hot": (
        lambda: Lambda(lambda x: F.one_hot(x.argmax(-1), 7).float() @ POWERSET),
        [(2, 6, 7)],
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
    "lp_pool": (lambda: nn.LPPool1d(2, 3, 2), [(1, 3, 12)], {}),
    "prelu_normalize": (
        lambda: nn.Sequential(nn.PReLU(4, 0.2), Lambda(lambda x: F.normalize(x, dim=-1))),
        [(2, 4, 5)],
        {},
    ),
    "gather_nd": (
        lambda: Lambda(lambda x: x[torch.tensor([0, 2]), torch.tensor([1, 3])]),
        [(3, 4)],
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
    "layer_group_norm": (
        lambda: nn.Sequential(Lambda(lambda x: F.layer_norm(x, (4, 6))), nn.GroupNorm(2, 4)),
        [(2, 4, 6)],
        {},
    ),
    "seg_like_model": (SegLike, [(1, 1, 1600)], {}),
    "wespeaker_like_model": (WeSpeakerLike, [(1, 1, 1024), (1, 16)], {"mask": True}),
}


def _make_inputs(shapes: list[tuple[int, ...]], opts: dict, seed: int = 0) -> list[np.ndarray]:
    xs = rng_inputs(shapes, seed=seed, positive=opts.get("positive", False))
    if opts.get("distinct"):
        # Distinct values: fp16 rounding must not create ties that reorder top-k.
        xs = [
            np.random.default_rng(seed).permutation(x.size).reshape(x.shape).astype(np.float32) / 4
            for x in xs
        ]
    if opts.get("mask"):
        xs[-1] = (np.random.default_rng(seed + 1).random(xs[-1].shape) > 0.3).astype(np.float32)
    return xs


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case: str, precision: str, tmp_path: Path) -> None:
    factory, shapes, opts = CASES[case]
    torch.manual_seed(0)
    module = factory().eval()
    xs = _make_inputs(shapes, opts)
    path = tmp_path / f"{case}_{precision}.mlpackage"
    convert_and_save(module, xs, path, precision=precision)
    # Run on fresh inputs, not the tracing example.
    xs = _make_inputs(shapes, opts, seed=1)
    mil, ex = mil_outputs(path, xs)
    ref = torch_outputs(module, xs)
    if precision == "fp16":
        # fp16 program: ops run in fp16 and float outputs come back fp16 (bool results are
        # exported as fp32 by the converter, ints as int32).
        assert any(m.dtype == np.float16 for m in mil), [m.dtype for m in mil]
        assert all(m.dtype in (np.float16, np.float32, np.int32) for m in mil)
    assert_close(mil, ref, precision)
    if case == "seg_like_model":
        ops = ex.op_types()
        for op in (
            "conv",
            "abs",
            "max_pool",
            "instance_norm",
            "leaky_relu",
            "lstm",
            "linear",
            "reduce_max",
            "exp",
            "log",
        ):
            assert ops[op] >= 1, (op, ops)
        assert ops["lstm"] == 2  # one bidirectional op per layer


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_flexible_shapes(precision: str, tmp_path: Path) -> None:
    """Cosine distances with flexible N and D, and mask-weighted pooling with flexible T:
    the executor runs the shapes it is given, not the example's."""
    cos_path = tmp_path / "cos.mlpackage"
    convert_and_save(
        Lambda(cosine_distance),
        rng_inputs([(3, 8), (4, 8)]),
        cos_path,
        precision=precision,
        flex={0: (0, 1), 1: (0, 1)},
    )
    pool_path = tmp_path / "pool.mlpackage"
    convert_and_save(
        Lambda(stats_pool),
        _make_inputs([(2, 4, 10), (2, 10)], {"mask": True}),
        pool_path,
        precision=precision,
        flex={0: (2,), 1: (1,)},
    )
    for a, b in [((5, 16), (2, 16)), ((1, 3), (7, 3))]:
        xs = rng_inputs([a, b], seed=3)
        mil, _ = mil_outputs(cos_path, xs)
        assert_close(mil, torch_outputs(Lambda(cosine_distance), xs), precision)
    for t in (7, 33):
        xs = _make_inputs([(2, 4, t), (2, t)], {"mask": True}, seed=t)
        mil, _ = mil_outputs(pool_path, xs)
        assert_close(mil, torch_outputs(Lambda(stats_pool), xs), precision)


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


def test_fp16_program_with_fp32_io_casts(tmp_path: Path) -> None:
    """Inputs/outputs declared fp32 around an fp16 body come in and out as fp32."""
    module = nn.Sequential(nn.Linear(4, 3), nn.Tanh()).eval()
    xs = rng_inputs([(2, 4)])
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.from_numpy(xs[0]))
    model = ct.convert(
        traced,
        inputs=[ct.TensorType(name="x0", shape=(2, 4), dtype=np.float32)],
        outputs=[ct.TensorType(name="y", dtype=np.float32)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT16,
    )
    path = tmp_path / "io32.mlpackage"
    model.save(str(path))
    ex = MILExecutor.from_path(path)
    assert ex.op_types()["cast"] >= 2
    out = ex.predict({"x0": xs[0]})["y"]
    assert out.dtype == np.float32
    ref = torch_outputs(module, xs)[0]
    assert np.max(np.abs(out - ref)) < 5e-3
    # ...and the body really ran in fp16: the result is fp16-representable.
    assert np.array_equal(out, out.astype(np.float16).astype(np.float32))


# ---------------------------------------------------------------------------------------
# Compressed weights
# ---------------------------------------------------------------------------------------
class CompressMe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(4, 32, 3)
        self.lstm = nn.LSTM(32, 32, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(64, 5)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = torch.relu(self.conv(x)).transpose(1, 2)
        return self.fc(self.lstm(y)[0])


def _compress(model, kind: str):  # type: ignore[no-untyped-def]
    import coremltools.optimize.coreml as cto

    if kind == "palettize8":
        cfg = cto.OpPalettizerConfig(mode="kmeans", nbits=8, weight_threshold=64)
        return cto.palettize_weights(model, cto.OptimizationConfig(global_config=cfg))
    if kind == "palettize4_grouped":
        cfg = cto.OpPalettizerConfig(
            mode="kmeans",
            nbits=4,
            granularity="per_grouped_channel",
            group_size=8,
            weight_threshold=64,
        )
        return cto.palettize_weights(model, cto.OptimizationConfig(global_config=cfg))
    if kind == "linear8":
        cfg = cto.OpLinearQuantizerConfig(mode="linear_symmetric", weight_threshold=64)
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=cfg))
    if kind == "linear8_affine":
        cfg = cto.OpLinearQuantizerConfig(mode="linear", weight_threshold=64)
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=cfg))
    if kind == "linear4_blockwise":
        cfg = cto.OpLinearQuantizerConfig(
            mode="linear", dtype="int4", granularity="per_block", block_size=8, weight_threshold=64
        )
        return cto.linear_quantize_weights(model, cto.OptimizationConfig(global_config=cfg))
    if kind == "prune50":
        cfg = cto.OpMagnitudePrunerConfig(target_sparsity=0.5, weight_threshold=64)
        return cto.prune_weights(model, cto.OptimizationConfig(global_config=cfg))
    raise ValueError(kind)


COMPRESSIONS = [
    # (kind, deployment target, precision, expected constexpr op, tolerance vs torch)
    ("palettize8", "iOS17", "fp32", "constexpr_lut_to_dense", 2e-2),
    ("palettize8", "iOS17", "fp16", "constexpr_lut_to_dense", 2e-2),
    ("linear8", "iOS17", "fp32", "constexpr_affine_dequantize", 2e-2),
    ("linear8", "iOS17", "fp16", "constexpr_affine_dequantize", 2e-2),
    ("linear8_affine", "iOS17", "fp32", "constexpr_affine_dequantize", 2e-2),
    ("palettize4_grouped", "iOS18", "fp16", "constexpr_lut_to_dense", 1.5e-1),
    ("linear8", "iOS18", "fp32", "constexpr_blockwise_shift_scale", 2e-2),
    ("linear4_blockwise", "iOS18", "fp16", "constexpr_blockwise_shift_scale", 1.5e-1),
    # Pruning changes the function itself: only the decompression is compared exactly.
    ("prune50", "iOS17", "fp32", "constexpr_sparse_to_dense", None),
    ("prune50", "iOS18", "fp16", "constexpr_sparse_to_dense", None),
]


@pytest.fixture(scope="module")
def dense_packages(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """(target, precision) -> saved uncompressed CompressMe package, converted once each."""
    cache: dict[tuple[str, str], Path] = {}
    root = tmp_path_factory.mktemp("dense")

    def get(target: str, precision: str) -> Path:
        if (target, precision) not in cache:
            torch.manual_seed(0)
            path = root / f"dense_{target}_{precision}.mlpackage"
            convert_and_save(
                CompressMe().eval(),
                rng_inputs([(1, 4, 20)]),
                path,
                precision=precision,
                target=getattr(ct.target, target),
            )
            cache[(target, precision)] = path
        return cache[(target, precision)]

    return get


def _pymil_program(path: Path):  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return milproto_load(spec, spec.specificationVersion, model.weights_dir)


@pytest.mark.parametrize(("kind", "target", "precision", "op_type", "tol"), COMPRESSIONS)
def test_compressed_weights(
    kind: str,
    target: str,
    precision: str,
    op_type: str,
    tol: float | None,
    dense_packages,
    tmp_path: Path,
) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    module = CompressMe().eval()  # same seed as the dense package: same weights
    dense = ct.models.MLModel(str(dense_packages(target, precision)), skip_model_load=True)
    path = tmp_path / f"{kind}.mlpackage"
    _compress(dense, kind).save(str(path))

    ex = MILExecutor.from_path(path)
    assert ex.op_types()[op_type] >= 4

    # 1) Our decompression equals coremltools' materialized_val_inference() exactly.
    prog = _pymil_program(path)
    checked = consts = 0
    for op in prog.functions["main"].operations:
        if op.op_type.startswith("constexpr_"):
            ours = ex._consts[op.outputs[0].name]
            theirs = np.asarray(op.materialized_val_inference())
            assert ours.dtype == theirs.dtype
            np.testing.assert_array_equal(ours, theirs)
            checked += 1
        elif op.op_type == "const" and op.outputs[0].name in ex._consts:
            # Our blob reader agrees with coremltools' for plain constants too (pymil
            # renames the inline parameters of constexpr ops, those are skipped).
            val = op.outputs[0].val
            if isinstance(val, np.ndarray) and val.dtype.kind in "fiub":
                np.testing.assert_array_equal(ex._consts[op.outputs[0].name], val)
                consts += 1
    assert checked >= 4 and consts >= 4

    # 2) The compressed program still tracks torch, with a compression-sized tolerance.
    if tol is None:
        return
    xs = rng_inputs([(1, 4, 20)], seed=5)
    mil, _ = mil_outputs(path, xs)
    ref = torch_outputs(module, xs)
    err = max_err(mil, ref)
    assert err <= tol * max(1.0, float(np.abs(ref[0]).max())), err


def test_unpack_bits_matches_documented_example() -> None:
    # constexpr_lut_to_dense doc: nbits=2, shape=(5,), bytes [i3 i2 i1 i0], [-- -- -- i4].
    packed = np.array([0b01101100, 0b00000011], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_bits(packed, 2, 5), [0, 3, 2, 1, 3])
    np.testing.assert_array_equal(
        unpack_bits(np.array([0xF8], dtype=np.uint8), 4, 2, signed=True), [-8, -1]
    )


# ---------------------------------------------------------------------------------------
# Errors and registry
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.mlpackage"
    torch.manual_seed(0)
    convert_and_save(nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval(), rng_inputs([(2, 4)]), path)
    return path


def test_unknown_op_raises_naming_op_and_path(small_package: Path) -> None:
    reduced = {k: v for k, v in DEFAULT_OPS.items() if k != "relu"}
    with pytest.raises(UnsupportedOpError) as info:
        MILExecutor.from_path(small_package, ops=reduced)
    msg = str(info.value)
    assert "'relu'" in msg and str(small_package) in msg and "\n" not in msg
    # The default table is untouched: a fresh executor still runs.
    MILExecutor.from_path(small_package).predict({"x0": np.zeros((2, 4), np.float32)})


def test_missing_input_and_wrong_shape(small_package: Path) -> None:
    from coreml_diarize.errors import DiarizeError

    ex = MILExecutor.from_path(small_package)
    with pytest.raises(DiarizeError, match="missing input"):
        ex.predict({})
    with pytest.raises(DiarizeError, match="shape"):
        ex.predict({"x0": np.zeros((3, 4), np.float32)})


def test_missing_package_is_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such mlpackage"):
        MILExecutor.from_path(tmp_path / "nope.mlpackage")


def test_loader_matches_spec_io(small_package: Path) -> None:
    prog = load_program(small_package)
    assert [n for n, _ in prog.inputs] == ["x0"]
    assert prog.opset == "CoreML7"
    assert prog.blob_ranges  # the linear weight lives in weight.bin


def test_docs_list_every_supported_op() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "mil_ops.md").read_text()
    missing = [op for op in supported_ops() if f"`{op}`" not in doc]
    assert not missing, missing


# ---------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------
def test_resolve_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    from coreml_diarize.errors import DiarizeError
    from coreml_diarize.validation import backends

    monkeypatch.setattr(backends.platform, "system", lambda: "Linux")
    assert backends.resolve_backend("auto") == "mil"
    monkeypatch.setattr(backends.platform, "system", lambda: "Darwin")
    assert backends.resolve_backend("auto") == "coreml"
    assert backends.resolve_backend("mil") == "mil"
    with pytest.raises(DiarizeError, match="unknown backend"):
        backends.resolve_backend("tpu")


def test_run_mlpackage_mil_and_coreml_off_macos(
    small_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from coreml_diarize.errors import DiarizeError
    from coreml_diarize.validation import backends

    monkeypatch.setattr(backends.platform, "system", lambda: "Linux")
    x = rng_inputs([(2, 4)])[0]
    result = backends.run_mlpackage(
        small_package, {"x0": x}, backend="auto", compute_units="cpu_only"
    )
    assert result.backend == "mil" and result.compute_units == "cpu_only" and result.notes
    expected = MILExecutor.from_path(small_package).predict({"x0": x})
    assert result.outputs.keys() == expected.keys()
    for k in expected:
        np.testing.assert_array_equal(result.outputs[k], expected[k])
    with pytest.raises(DiarizeError, match=r"needs macOS.*--backend mil") as info:
        backends.run_mlpackage(small_package, {"x0": x}, backend="coreml")
    assert "\n" not in str(info.value)
    with pytest.raises(DiarizeError, match="compute units"):
        backends.run_mlpackage(small_package, {"x0": x}, compute_units="gpu")


# ---------------------------------------------------------------------------------------
# Ops the torch frontend does not emit: MIL programs written with the pymil builder, saved
# with an empty pass pipeline (ops stay as written), checked against numpy references
# written here from the op documentation.
# ---------------------------------------------------------------------------------------
def _np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def _np_lstm(x, w_ih, w_hh, b, peep, clip, h, c):  # type: ignore[no-untyped-def]
    """MIL lstm, one direction, gates i/f/o/z, peephole i/f use c_{t-1}, o uses c_t."""
    hidden = w_hh.shape[1]
    p_i, p_f, p_o = peep[:hidden], peep[hidden : 2 * hidden], peep[2 * hidden :]
    outs = []
    for t in range(x.shape[0]):
        g = x[t] @ w_ih.T + h @ w_hh.T + b
        gi, gf, go, gz = np.split(g, 4, axis=-1)
        i = _np_sigmoid(gi + p_i * c)
        f = _np_sigmoid(gf + p_f * c)
        c = f * c + i * np.tanh(gz)
        c = np.clip(c, -clip, clip)
        o = _np_sigmoid(go + p_o * c)
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs), h, c


def _builder_cases():  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.mil import Builder as mb

    rng = np.random.default_rng(7)
    alpha4 = rng.uniform(0.1, 0.5, 4).astype(np.float32)
    beta4 = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    w_ih = (rng.standard_normal((12, 4)) * 0.5).astype(np.float32)
    w_hh = (rng.standard_normal((12, 3)) * 0.5).astype(np.float32)
    bias = (rng.standard_normal(12) * 0.1).astype(np.float32)
    peep = (rng.standard_normal(9) * 0.3).astype(np.float32)
    h0 = np.zeros((2, 3), np.float32)
    fp16_weight = rng.standard_normal((4, 4)).astype(np.float16)
    gather_idx = np.array([[1, 0], [3, 3], [2, 1]], np.int32)
    gather_nd_idx = np.array([[[1], [0]], [[3], [2]], [[0], [0]]], np.int32)

    cases = {
        "gelu_approximations": (
            [(2, 3, 4)],
            lambda x: (
                mb.gelu(x=x, mode="TANH_APPROXIMATION"),
                mb.gelu(x=x, mode="SIGMOID_APPROXIMATION"),
            ),
            lambda x: (
                0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
                x * _np_sigmoid(1.702 * x),
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
        "constexpr_cast_matmul": (
            [(3, 4)],
            lambda x: mb.matmul(
                x=x,
                y=mb.constexpr_cast(source_val=fp16_weight, output_dtype="fp32"),
                transpose_y=True,
            ),
            lambda x: x @ fp16_weight.astype(np.float32).T,
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


def _scatter_nd_delta() -> np.ndarray:
    d = np.zeros((3, 4, 2), np.float32)
    d[0, 1] += 2  # indices [0, 1] twice: "add" accumulates
    d[2, 3] += 1
    return d


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
    from coremltools.converters.mil.mil import Builder as mb

    shapes, build, reference = _builder_cases()[case]
    assert len(shapes) == 1

    @mb.program(input_specs=[mb.TensorSpec(shape=shapes[0])], opset_version=ct.target.iOS17)
    def prog(x):  # type: ignore[no-untyped-def]
        return build(x)

    model = ct.convert(
        prog,
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
        pass_pipeline=ct.PassPipeline.EMPTY,
    )
    path = tmp_path / f"{case}.mlpackage"
    model.save(str(path))
    x = np.random.default_rng(3).standard_normal(shapes[0]).astype(np.float32)
    ex = MILExecutor.from_path(path)
    out = ex.predict({"x": x})
    got = [out[n] for n in ex.output_names]
    ref = reference(x)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    assert len(got) == len(ref)
    for name, g, r in zip(ex.output_names, got, ref, strict=True):
        r = np.asarray(r)
        assert g.shape == r.shape, (name, g.shape, r.shape)
        np.testing.assert_allclose(
            g.astype(np.float64), r.astype(np.float64), rtol=1e-5, atol=1e-5, err_msg=name
        )
