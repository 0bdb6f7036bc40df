"""Compressed weights (validation/mil/ops_compress.py: constexpr_* ops): decompression
equals coremltools' own, and compressed programs still track PyTorch. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from mil_cases import (
    builder_weights,
    convert_and_save,
    max_err,
    mil_outputs,
    rng_inputs,
    run_builder_program,
    torch_outputs,
)

from coreml_diarize.validation.mil import MILExecutor

pytestmark = pytest.mark.filterwarnings("ignore")

ct = pytest.importorskip("coremltools")


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


# ---------------------------------------------------------------------------------------
# Ops the torch frontend does not emit: MIL programs written with the pymil builder, saved
# with an empty pass pipeline (ops stay as written), checked against numpy references
# written here from the op documentation.
# ---------------------------------------------------------------------------------------
def _builder_cases():  # type: ignore[no-untyped-def]
    from coremltools.converters.mil.mil import Builder as mb

    fp16_weight = builder_weights()["fp16_weight"]

    cases = {
        "constexpr_cast_matmul": (
            [(3, 4)],
            lambda x: mb.matmul(
                x=x,
                y=mb.constexpr_cast(source_val=fp16_weight, output_dtype="fp32"),
                transpose_y=True,
            ),
            lambda x: x @ fp16_weight.astype(np.float32).T,
        ),
    }
    return cases


BUILDER_CASES = sorted(_builder_cases())


@pytest.mark.parametrize("case", BUILDER_CASES)
def test_builder_program_ops(case: str, tmp_path: Path) -> None:
    run_builder_program(case, _builder_cases()[case], tmp_path)
