"""Shared helpers of the MIL reference executor's tests (tests/validation/mil/).

Each case builds a tiny torch module, traces it, converts it with coremltools (fp32 and
fp16, iOS17), saves the .mlpackage to tmp_path, runs the *saved* package through
MILExecutor and compares with the torch output (the independent reference). Ops the torch
frontend does not emit are MIL programs written with the pymil builder, checked against
numpy references (`run_builder_program`).

The cases live in the test module of their op family (test_ops_<family>.py, as
validation/mil/ops_<family>.py); this module holds what they share. conftest.py registers
it for pytest's assertion rewriting.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from coreml_diarize.validation.mil import MILExecutor

ct = pytest.importorskip("coremltools")

# Tolerances relative to the reference's scale: |mil - torch| <= atol + rtol * max|torch|.
TOL = {"fp32": (1e-4, 1e-4), "fp16": (2e-2, 2e-2)}

# A test_op_parity case: (module factory, input shapes, options).
Case = tuple[Callable[[], nn.Module], list[tuple[int, ...]], dict]
# A test_builder_program_ops case: (input shapes, pymil builder body, numpy reference).
BuilderCase = tuple[list[tuple[int, ...]], Callable, Callable]


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


def make_inputs(shapes: list[tuple[int, ...]], opts: dict, seed: int = 0) -> list[np.ndarray]:
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


def run_op_parity(cases: dict[str, Case], case: str, precision: str, tmp_path: Path) -> MILExecutor:
    """The body of every family's `test_op_parity`: convert `cases[case]` at `precision`,
    run the saved package on fresh inputs and compare with torch. Returns the executor."""
    factory, shapes, opts = cases[case]
    torch.manual_seed(0)
    module = factory().eval()
    xs = make_inputs(shapes, opts)
    path = tmp_path / f"{case}_{precision}.mlpackage"
    convert_and_save(module, xs, path, precision=precision)
    # Run on fresh inputs, not the tracing example.
    xs = make_inputs(shapes, opts, seed=1)
    mil, ex = mil_outputs(path, xs)
    ref = torch_outputs(module, xs)
    if precision == "fp16":
        # fp16 program: ops run in fp16 and float outputs come back fp16 (bool results are
        # exported as fp32 by the converter, ints as int32).
        assert any(m.dtype == np.float16 for m in mil), [m.dtype for m in mil]
        assert all(m.dtype in (np.float16, np.float32, np.int32) for m in mil)
    assert_close(mil, ref, precision)
    return ex


def np_sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def builder_weights() -> dict[str, np.ndarray]:
    """Random constants of the builder cases, drawn in one fixed order from one seed: each
    family takes the ones it uses, so the values do not depend on which cases exist."""
    rng = np.random.default_rng(7)
    alpha4 = rng.uniform(0.1, 0.5, 4).astype(np.float32)
    beta4 = rng.uniform(0.5, 2.0, 4).astype(np.float32)
    w_ih = (rng.standard_normal((12, 4)) * 0.5).astype(np.float32)
    w_hh = (rng.standard_normal((12, 3)) * 0.5).astype(np.float32)
    bias = (rng.standard_normal(12) * 0.1).astype(np.float32)
    peep = (rng.standard_normal(9) * 0.3).astype(np.float32)
    fp16_weight = rng.standard_normal((4, 4)).astype(np.float16)
    return {
        "alpha4": alpha4,
        "beta4": beta4,
        "w_ih": w_ih,
        "w_hh": w_hh,
        "bias": bias,
        "peep": peep,
        "fp16_weight": fp16_weight,
    }


def run_builder_program(case: str, spec: BuilderCase, tmp_path: Path) -> None:
    """The body of every family's `test_builder_program_ops`: save the program `spec` builds
    with an empty pass pipeline, run it through MILExecutor, compare with the reference."""
    from coremltools.converters.mil.mil import Builder as mb

    shapes, build, reference = spec
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


# ---------------------------------------------------------------------------------------
# Module zoo shared by several families
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


def bn_with_stats(bn: nn.Module) -> nn.Module:
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
            bn_with_stats(bn)

    def forward(self, x):  # type: ignore[no-untyped-def]
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.short(x))
