"""Fault injection: the executor-based parity check must catch a damaged package.

A small PyanNet-shaped model is converted once; each test copies the saved package,
damages the copy on disk (weight blob or program protobuf) and shows the parity comparison
against torch then fails, while the untouched copy passes.
"""

from __future__ import annotations

import logging
import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.validation.mil import MILExecutor, read_mil_program

pytestmark = pytest.mark.filterwarnings("ignore")
warnings.filterwarnings("ignore", module="coremltools")
logging.getLogger("coremltools").setLevel(logging.ERROR)

ct = pytest.importorskip("coremltools")

ATOL = 1e-4


class TinySeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 6, 25, stride=10)
        self.norm = nn.InstanceNorm1d(6, affine=True)
        self.lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True, batch_first=True)
        self.classifier = nn.Linear(16, 7)

    def forward(self, x):  # type: ignore[no-untyped-def]
        x = F.leaky_relu(self.norm(F.max_pool1d(torch.abs(self.conv(x)), 3)))
        x, _ = self.lstm(x.transpose(1, 2))
        return F.log_softmax(F.leaky_relu(self.classifier(x)), dim=-1)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """(saved fp32 package, input, torch output)."""
    torch.manual_seed(0)
    module = TinySeg().eval()
    x = (np.random.default_rng(0).standard_normal((1, 1, 1600)) * 0.3).astype(np.float32)
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.from_numpy(x))
        ref = module(torch.from_numpy(x)).numpy()
    model = ct.convert(
        traced,
        inputs=[ct.TensorType(name="waveform", shape=x.shape)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=ct.precision.FLOAT32,
    )
    path = tmp_path_factory.mktemp("faults") / "tiny.mlpackage"
    model.save(str(path))
    return path, x, ref


def parity_error(path: Path, x: np.ndarray, ref: np.ndarray) -> float:
    """Max |executor - torch|; a package the executor rejects counts as infinitely wrong."""
    try:
        ex = MILExecutor.from_path(path)
        out = ex.predict({"waveform": x})
    except DiarizeError:
        return float("inf")
    (y,) = out.values()
    if y.shape != ref.shape:
        return float("inf")
    return float(np.max(np.abs(y - ref)))


def copy_package(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copytree(src, dst)
    return dst


def spec_file(pkg: Path) -> Path:
    return pkg / "Data" / "com.apple.CoreML" / "model.mlmodel"


def weight_file(pkg: Path) -> Path:
    return pkg / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"


def classifier_weight(pkg: Path):  # type: ignore[no-untyped-def]
    """Blob range of the final linear layer's weight, found through the spec."""
    prog = read_mil_program(pkg)
    linear = [n for n in prog.main.nodes if n.op_type == "linear"][-1]
    name = linear.inputs["weight"][0].name
    return prog.blob_ranges[name], linear


def test_untouched_copy_passes(reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, x, ref = reference
    assert parity_error(copy_package(path, tmp_path), x, ref) < ATOL


@pytest.mark.parametrize("delta", [0.05, 0.5])
def test_perturbed_weight_in_blob_fails(reference, tmp_path: Path, delta: float) -> None:  # type: ignore[no-untyped-def]
    path, x, ref = reference
    pkg = copy_package(path, tmp_path)
    where, _ = classifier_weight(pkg)
    assert where.dtype == "fp32"
    blob = bytearray(weight_file(pkg).read_bytes())
    off = where.offset + 4 * 3  # one element of the classifier weight
    (value,) = struct.unpack_from("<f", blob, off)
    struct.pack_into("<f", blob, off, value + delta)
    weight_file(pkg).write_bytes(bytes(blob))
    assert parity_error(pkg, x, ref) > 10 * ATOL


def test_swapped_output_channels_fail(reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, x, ref = reference
    pkg = copy_package(path, tmp_path)
    where, linear = classifier_weight(pkg)
    rows, cols = linear.outputs[0][1].shape[-1], where.nbytes // 4 // linear.outputs[0][1].shape[-1]
    blob = bytearray(weight_file(pkg).read_bytes())
    w = (
        np.frombuffer(bytes(blob[where.offset : where.offset + where.nbytes]), dtype=np.float32)
        .reshape(rows, cols)
        .copy()
    )
    w[[0, 1]] = w[[1, 0]]
    blob[where.offset : where.offset + where.nbytes] = w.tobytes()
    weight_file(pkg).write_bytes(bytes(blob))
    assert parity_error(pkg, x, ref) > 10 * ATOL


def _drop_op(pkg: Path, op_type: str) -> str:
    """Remove the last op of `op_type` from the saved program, rewiring its consumers (and
    the block outputs) to its `x` input. Returns the dropped op's output name."""
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(spec_file(pkg).read_bytes())
    func = spec.mlProgram.functions["main"]
    block = func.block_specializations[func.opset]
    index = max(i for i, op in enumerate(block.operations) if op.type == op_type)
    op = block.operations[index]
    dropped, source = op.outputs[0].name, op.inputs["x"].arguments[0].name
    del block.operations[index]
    for other in block.operations:
        for arg in other.inputs.values():
            for binding in arg.arguments:
                if binding.WhichOneof("binding") == "name" and binding.name == dropped:
                    binding.name = source
    for i, name in enumerate(block.outputs):
        if name == dropped:
            block.outputs[i] = source
    spec_file(pkg).write_bytes(spec.SerializeToString())
    return dropped


@pytest.mark.parametrize("op_type", ["leaky_relu", "abs", "instance_norm"])
def test_dropped_op_fails(reference, tmp_path: Path, op_type: str) -> None:  # type: ignore[no-untyped-def]
    path, x, ref = reference
    pkg = copy_package(path, tmp_path)
    _drop_op(pkg, op_type)
    assert (
        MILExecutor.from_path(pkg).op_types()[op_type]
        == MILExecutor.from_path(path).op_types()[op_type] - 1
    )
    assert parity_error(pkg, x, ref) > 10 * ATOL


def test_dropped_shape_changing_op_is_caught_by_shape_check(reference, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path, x, _ = reference
    pkg = copy_package(path, tmp_path)
    _drop_op(pkg, "transpose")
    with pytest.raises(ArtifactError, match="shape"):
        MILExecutor.from_path(pkg).predict({"waveform": x})


# -- corrupt packages: one-line ArtifactError ---------------------------------------------
def _garbage_manifest(pkg: Path) -> None:
    (pkg / "Manifest.json").write_text("{not json")


def _missing_weights(pkg: Path) -> None:
    weight_file(pkg).unlink()


def _truncated_weights(pkg: Path) -> None:
    data = weight_file(pkg).read_bytes()
    weight_file(pkg).write_bytes(data[: len(data) // 2])


def _missing_spec(pkg: Path) -> None:
    spec_file(pkg).unlink()


def _garbage_spec(pkg: Path) -> None:
    spec_file(pkg).write_bytes(b"\xff\xfe garbage" * 10)


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (_garbage_manifest, "Manifest.json is corrupt"),
        (_missing_weights, "weight file weight.bin is missing"),
        (_truncated_weights, "truncated"),
        (_missing_spec, "is missing"),
        (_garbage_spec, "cannot be parsed"),
    ],
)
def test_corrupt_package_is_one_line_artifact_error(
    reference, tmp_path: Path, damage, match: str
) -> None:  # type: ignore[no-untyped-def]
    path, x, _ = reference
    pkg = copy_package(path, tmp_path)
    damage(pkg)
    with pytest.raises(ArtifactError, match=match) as info:
        MILExecutor.from_path(pkg).predict({"waveform": x})
    assert "\n" not in str(info.value)
    assert str(pkg) in str(info.value)
