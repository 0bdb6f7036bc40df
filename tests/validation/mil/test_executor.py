"""The MIL executor itself (validation/mil/executor.py), whatever the op: whole-model
programs, flexible shapes, fp32 I/O around an fp16 body, unsupported ops, input checks,
the documented op list; and the `mil` backend that runs it (validation/backends.py).
See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mil_cases import (
    Case,
    Lambda,
    ResBlock,
    SegLike,
    assert_close,
    convert_and_save,
    make_inputs,
    mil_outputs,
    rng_inputs,
    run_op_parity,
    torch_outputs,
)

from coreml_diarize.errors import UnsupportedOpError
from coreml_diarize.validation.mil import DEFAULT_OPS, MILExecutor, supported_ops

pytestmark = pytest.mark.filterwarnings("ignore")

ct = pytest.importorskip("coremltools")


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
CASES: dict[str, Case] = {
    "seg_like_model": (SegLike, [(1, 1, 1600)], {}),
    "wespeaker_like_model": (WeSpeakerLike, [(1, 1, 1024), (1, 16)], {"mask": True}),
}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_parity(case: str, precision: str, tmp_path: Path) -> None:
    ex = run_op_parity(CASES, case, precision, tmp_path)
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
        make_inputs([(2, 4, 10), (2, 10)], {"mask": True}),
        pool_path,
        precision=precision,
        flex={0: (2,), 1: (1,)},
    )
    for a, b in [((5, 16), (2, 16)), ((1, 3), (7, 3))]:
        xs = rng_inputs([a, b], seed=3)
        mil, _ = mil_outputs(cos_path, xs)
        assert_close(mil, torch_outputs(Lambda(cosine_distance), xs), precision)
    for t in (7, 33):
        xs = make_inputs([(2, 4, t), (2, t)], {"mask": True}, seed=t)
        mil, _ = mil_outputs(pool_path, xs)
        assert_close(mil, torch_outputs(Lambda(stats_pool), xs), precision)


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
# Errors and registry
# ---------------------------------------------------------------------------------------
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


def test_declared_shape_ranges_and_enumerations_are_enforced(tmp_path: Path) -> None:
    """Core ML refuses an input outside its declared range or enumeration; so does the
    executor (the MIL program's types alone say only "any size")."""
    from coreml_diarize.errors import DiarizeError

    module = nn.Linear(4, 3).eval()
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(2, 4))
    shapes = {
        "range": ct.Shape((ct.RangeDim(lower_bound=1, upper_bound=3, default=2), 4)),
        "enumerated": ct.EnumeratedShapes(shapes=[(1, 4), (3, 4)], default=(1, 4)),
    }
    for kind, shape in shapes.items():
        model = ct.convert(
            traced,
            inputs=[ct.TensorType(name="x0", shape=shape, dtype=np.float32)],
            outputs=[ct.TensorType(name="y", dtype=np.float32)],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=ct.precision.FLOAT32,
        )
        path = tmp_path / f"{kind}.mlpackage"
        model.save(str(path))
        ex = MILExecutor.from_path(path)
        for batch in (1, 3):
            x = np.ones((batch, 4), np.float32)
            want = module(torch.from_numpy(x)).detach().numpy()
            np.testing.assert_allclose(ex.predict({"x0": x})["y"], want, rtol=1e-5, atol=1e-6)
        for batch in (2, 4) if kind == "enumerated" else (4,):
            with pytest.raises(DiarizeError, match="accepts") as info:
                ex.predict({"x0": np.ones((batch, 4), np.float32)})
            assert "\n" not in str(info.value)


def test_two_enumerated_inputs_take_their_shapes_together(tmp_path: Path) -> None:
    """From iOS 18 several inputs may be enumerated, each listing as many shapes: Core ML
    takes the i-th shape of each together, and refuses a mix even when each shape is listed
    (apple/coremltools#2271). x + y broadcasts a (1, 4) with a (3, 4): only that check stops
    the mix here."""
    from coremltools.converters.mil import Builder as mb
    from coremltools.converters.mil.mil import get_new_symbol

    from coreml_diarize.errors import DiarizeError

    batch = get_new_symbol()

    @mb.program(
        input_specs=[mb.TensorSpec(shape=(batch, 4)), mb.TensorSpec(shape=(batch, 4))],
        opset_version=ct.target.iOS18,
    )
    def prog(x, y):
        return mb.add(x=x, y=y, name="z")

    shapes = [(1, 4), (3, 4)]
    model = ct.convert(
        prog,
        inputs=[
            ct.TensorType(name="x", shape=ct.EnumeratedShapes(shapes=shapes)),
            ct.TensorType(name="y", shape=ct.EnumeratedShapes(shapes=shapes)),
        ],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS18,
        compute_precision=ct.precision.FLOAT32,
        skip_model_load=True,
    )
    path = tmp_path / "pair.mlpackage"
    model.save(str(path))
    ex = MILExecutor.from_path(path)
    for rows in (1, 3):
        x = np.ones((rows, 4), np.float32)
        np.testing.assert_array_equal(ex.predict({"x": x, "y": 2 * x})["z"], 3 * x)
    with pytest.raises(DiarizeError, match="together") as info:
        ex.predict({"x": np.ones((1, 4), np.float32), "y": np.ones((3, 4), np.float32)})
    assert "\n" not in str(info.value)


def test_docs_list_every_supported_op() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "mil_ops.md").read_text()
    missing = [op for op in supported_ops() if f"`{op}`" not in doc]
    assert not missing, missing


# ---------------------------------------------------------------------------------------
# Backends (validation/backends.py: the `mil` backend is this executor)
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
