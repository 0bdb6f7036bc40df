"""The Core ML backend (validation/backends.py) on Linux: through coremltools' own MLModel with
a failing native proxy, and through the Core ML stand-in (tests/coreml_standin.py).

Issue #21 item 5: a package Core ML cannot load made coremltools warn and return a model that
fails at its first predict with a bare exception; item 6: `cpu_and_ne` on a machine without
a Neural Engine was reported as if the Neural Engine had been checked.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import coreml_standin as standin
import numpy as np
import pytest

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.validation import backends
from coreml_diarize.validation.backends import open_package

UNLOADABLE = 'Error compiling model: "compiler error: unsupported opset".'


def _convert(module, shape, path: Path, precision: str) -> Path:
    """`module` on one input x0 (`shape`: a tuple or a coremltools flexible shape) -> y."""
    import coremltools as ct
    import torch

    from coreml_diarize.mlpackage import quiet_coremltools

    traced = torch.jit.trace(module.eval(), torch.zeros(2, 4))
    with quiet_coremltools():
        model = ct.convert(
            traced,
            inputs=[ct.TensorType(name="x0", shape=shape)],
            outputs=[ct.TensorType(name="y")],
            convert_to="mlprogram",
            minimum_deployment_target=ct.target.iOS17,
            compute_precision=getattr(ct.precision, precision),
        )
        model.save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Small ML programs: fixed (2,4), enumerated batch {1,3}, range batch 1..3 (fp32), and
    an fp16 one whose linear/relu the static rules put on the Neural Engine."""
    import coremltools as ct
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    out = tmp_path_factory.mktemp("tiny")
    return {
        "fixed": _convert(layer, (2, 4), out / "fixed.mlpackage", "FLOAT32"),
        "enumerated": _convert(
            layer,
            ct.EnumeratedShapes(shapes=[(1, 4), (3, 4)], default=(1, 4)),
            out / "enumerated.mlpackage",
            "FLOAT32",
        ),
        "range": _convert(
            layer, ct.Shape((ct.RangeDim(1, 3, default=1), 4)), out / "range.mlpackage", "FLOAT32"
        ),
        "fp16": _convert(layer, (2, 4), out / "fp16.mlpackage", "FLOAT16"),
    }


def _torch_reference(x: np.ndarray) -> np.ndarray:
    import torch

    torch.manual_seed(0)
    layer = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    with torch.no_grad():
        return layer(torch.from_numpy(x.astype(np.float32))).numpy()


# --- item 5: a package Core ML cannot load ------------------------------------------------


class _FailingNativeProxy:
    """coremltools' native `_MLModelProxy` on a Mac that cannot compile the package: its
    constructor raises RuntimeError (CoreMLPython.mm, `Model::Model`)."""

    max_version = 10  # coremltools 9's newest specification version (iOS26)

    def __init__(self, *args, **kwargs) -> None:
        raise RuntimeError(UNLOADABLE)

    @classmethod
    def maximum_supported_specification_version(cls) -> int:
        return cls.max_version


@pytest.fixture
def real_coremltools_on_a_mac(monkeypatch):
    """coremltools' own MLModel as on a Mac whose Core ML refuses every package."""
    import coremltools.models.model as model_module

    monkeypatch.setattr(model_module, "_MLModelProxy", _FailingNativeProxy)
    monkeypatch.setattr(backends, "_macos_version", lambda: (14, 0))
    return model_module.MLModel


def _load_observably(model_class, path: Path):
    """(warnings, model) of constructing `model_class` as backends did before issue #21."""
    import coremltools as ct

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = model_class(str(path), compute_units=ct.ComputeUnit.CPU_ONLY)
    return [w for w in caught if issubclass(w.category, RuntimeWarning)], model


@pytest.fixture(params=["coremltools", "stand-in"])
def refusing_core_ml(request):
    """(name, MLModel class) of a Mac whose Core ML cannot load the tiny packages: coremltools'
    own MLModel with a failing native proxy, or the stand-in as macOS 13 (which loads
    specification version 7 at most; the packages are iOS17 = 8)."""
    if request.param == "coremltools":
        return request.param, request.getfixturevalue("real_coremltools_on_a_mac")
    install = request.getfixturevalue("coreml_standin")
    return request.param, install(standin.Machine("macOS 13", (13, 5)))


def test_unloadable_package_only_warns_and_fails_at_predict(tiny, refusing_core_ml):
    """What issue #21 item 5 describes, in coremltools' own code (model.py,
    `_get_proxy_and_spec`), and the stand-in behaving the same way."""
    _, model_class = refusing_core_ml
    caught, model = _load_observably(model_class, tiny["fixed"])
    assert len(caught) == 1
    assert "You will not be able to run predict() on this Core ML model" in str(caught[0].message)
    assert model.__proxy__ is None
    with pytest.raises(Exception) as failure:  # noqa: B017 - coremltools raises bare ones
        model.predict({"x0": np.zeros((2, 4), np.float32)})
    assert not isinstance(failure.value, DiarizeError)


def test_unloadable_package_is_one_line_artifact_error(tiny, refusing_core_ml):
    who, _ = refusing_core_ml
    with pytest.raises(ArtifactError) as failure:
        open_package(tiny["fixed"], backend="coreml", compute_units="cpu_only")
    message = str(failure.value)
    assert failure.value.exit_code == 5 and "\n" not in message
    assert "Core ML cannot load the package (specification version 8)" in message
    assert "spec newer than this OS" in message
    cause = UNLOADABLE if who == "coremltools" else "is newer than this OS supports (7)"
    assert cause in message


def test_spec_newer_than_the_framework_is_one_line_artifact_error(
    tiny, real_coremltools_on_a_mac, monkeypatch
):
    """A spec newer than the framework coremltools was built with: no proxy, no warning, no
    error kept (model.py `_get_proxy_and_spec`'s early return)."""
    monkeypatch.setattr(_FailingNativeProxy, "max_version", 7)
    caught, model = _load_observably(real_coremltools_on_a_mac, tiny["fixed"])
    assert caught == [] and model.__proxy__ is None and model._framework_error is None
    with pytest.raises(ArtifactError, match=r"specification version 8\); e\.g\. a spec newer"):
        open_package(tiny["fixed"], backend="coreml")


def test_core_ml_refusing_an_input_is_one_line_artifact_error(tiny, coreml_standin):
    runner = open_package(tiny["fixed"], backend="coreml")
    with pytest.raises(ArtifactError) as failure:
        runner({"x0": np.zeros((3, 4), np.float32)})
    assert failure.value.exit_code == 5
    assert str(failure.value).startswith(
        f"{tiny['fixed']}: Core ML prediction failed (RuntimeError"
    )
    assert "\n" not in str(failure.value)


# --- the stand-in behaves as coremltools + Core ML ----------------------------------------


@pytest.mark.parametrize(
    "package, shape, accepted",
    [
        ("fixed", (2, 4), True),
        ("fixed", (1, 4), False),
        ("enumerated", (1, 4), True),
        ("enumerated", (3, 4), True),
        ("enumerated", (2, 4), False),  # inside 1..3, but not an enumerated shape
        ("range", (1, 4), True),
        ("range", (3, 4), True),
        ("range", (4, 4), False),
        ("range", (2, 5), False),
    ],
)
def test_standin_input_shapes_follow_the_model_description(
    package, shape, accepted, tiny, coreml_standin
):
    """Accepted shapes are the ones declared at conversion (above); the MIL executor, which
    reads the same description, refuses the same ones."""
    from coreml_diarize.validation.mil import MILExecutor

    model = coreml_standin()(str(tiny[package]))
    x = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    if accepted:
        got = model.predict({"x0": x})
        assert set(got) == {"y"} and got["y"].dtype == np.float32
        np.testing.assert_allclose(got["y"], _torch_reference(x), atol=1e-6)
    else:
        with pytest.raises(RuntimeError):
            model.predict({"x0": x})
        with pytest.raises(DiarizeError):
            MILExecutor.from_path(tiny[package]).predict({"x0": x})


def test_standin_input_types_names_and_compute_units(tiny, coreml_standin):
    import coremltools as ct
    import torch

    model_class = coreml_standin()
    model = model_class(str(tiny["fixed"]), compute_units=ct.ComputeUnit.CPU_AND_NE)
    assert model.compute_unit == ct.ComputeUnit.CPU_AND_NE
    x = np.array([[0.5, -1.0, 2.0, 0.25], [1.0, 1.0, -3.0, 0.0]], np.float32)
    want = _torch_reference(x)
    # float64 / int32 reach Core ML and are converted; float16 becomes float32 first; torch
    # tensors become numpy (model.py `_convert_tensor_to_numpy`)
    for given in (x.astype(np.float64), x.astype(np.float16), torch.from_numpy(x)):
        np.testing.assert_allclose(model.predict({"x0": given})["y"], want, atol=1e-6)
    np.testing.assert_allclose(
        model.predict({"x0": x.astype(np.int32)})["y"],
        _torch_reference(x.astype(np.int32)),
        atol=1e-6,
    )
    with pytest.raises(RuntimeError, match="value type not convertible"):
        model.predict({"x0": x.astype(np.int64)})  # the bridge has no int64 MLMultiArray
    with pytest.raises(KeyError, match='Provided key "x1"'):
        model.predict({"x0": x, "x1": x})
    with pytest.raises(RuntimeError, match="x0 is required"):
        model.predict({})
    with pytest.raises(TypeError):
        model.predict([{"x0": x}, "not a dict"])
    with pytest.raises(TypeError, match="compute_units"):
        model_class(str(tiny["fixed"]), compute_units="cpu_and_ne")


def test_fp16_outputs_come_back_as_float32(tiny, coreml_standin):
    got = coreml_standin()(str(tiny["fp16"])).predict({"x0": np.ones((2, 4), np.float32)})
    assert got["y"].dtype == np.float32
    np.testing.assert_allclose(got["y"], _torch_reference(np.ones((2, 4))), atol=2e-3)


def test_standin_devices_are_coremltools_device_objects(coreml_standin):
    from coremltools.models.compute_device import (
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    )

    mac = coreml_standin().get_available_compute_devices()
    assert [type(d) for d in mac] == [
        MLCPUComputeDevice,
        MLGPUComputeDevice,
        MLNeuralEngineComputeDevice,
    ]
    assert mac[2].total_core_count == 16
    vm = coreml_standin(standin.GITHUB_HOSTED_VM).get_available_compute_devices()
    assert [type(d) for d in vm] == [MLCPUComputeDevice, MLGPUComputeDevice]
    with pytest.raises(RuntimeError, match="macOS >= 14.0"):
        coreml_standin(standin.Machine("macOS 13", (13, 5))).get_available_compute_devices()


# --- item 6: honest compute units ---------------------------------------------------------


def _non_const_ops(path: Path) -> list[tuple[str, str]]:
    """(op type, first output) of every op that is not a weight, read with coremltools' own
    MIL loader (independent of the compute-plan code)."""
    import coremltools as ct
    from coremltools.converters.mil.frontend.milproto.load import load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    program = load(spec, spec.specificationVersion, model.weights_dir)
    return [
        (op.op_type, op.outputs[0].name)
        for op in program.functions["main"].operations
        if op.op_type != "const" and not op.op_type.startswith("constexpr_")
    ]


def test_cpu_and_ne_without_a_neural_engine_is_not_an_ane_check(tiny, coreml_standin):
    coreml_standin(standin.GITHUB_HOSTED_VM)
    devices = open_package(
        tiny["fp16"], backend="coreml", compute_units="cpu_and_ne"
    ).compute_devices()
    assert devices.requested == "cpu_and_ne"
    assert devices.available == ["cpu", "gpu"]
    assert devices.neural_engine_checked is False
    no_ne = [n for n in devices.notes if "no Neural Engine" in n]
    assert len(no_ne) == 1 and "not an ANE check" in no_ne[0]
    # Core ML placed nothing on a Neural Engine it does not have
    assert set(devices.placement.ops_by_device) == {"cpu"}


def test_cpu_and_ne_on_a_mac_with_a_neural_engine_is_checked(tiny, coreml_standin):
    coreml_standin(standin.APPLE_SILICON_MAC)
    devices = open_package(
        tiny["fp16"], backend="coreml", compute_units="cpu_and_ne"
    ).compute_devices()
    assert devices.available == ["cpu", "gpu", "neural_engine (16 cores)"]
    assert devices.neural_engine_checked is True
    assert not [n for n in devices.notes if "Neural Engine" in n]
    ops = _non_const_ops(tiny["fp16"])
    placement = devices.placement
    assert sum(placement.ops_by_device.values()) == len(ops) == placement.compared_ops
    assert placement.ops_by_device["neural_engine"] >= 1  # the fp16 linear at least
    assert placement.agreement == 1.0 and placement.disagreements == []


def test_placement_disagreeing_with_the_prediction_is_listed(tiny, coreml_standin):
    ops = _non_const_ops(tiny["fp16"])
    linear = next(out for op_type, out in ops if op_type == "linear")
    coreml_standin(
        standin.Machine("Mac with GPU fallback", (15, 0), placement_overrides={linear: "gpu"})
    )
    placement = open_package(tiny["fp16"], backend="coreml").compute_devices().placement
    assert placement.agreement == pytest.approx((len(ops) - 1) / len(ops))
    assert [(d.output, d.op_type, d.planned) for d in placement.disagreements] == [
        (linear, "linear", "gpu")
    ]
    assert placement.ops_by_device["gpu"] == 1


def test_no_compute_plan_before_macos_14_4(tiny, coreml_standin):
    coreml_standin(standin.MACOS_14_0)
    devices = open_package(tiny["fp16"], backend="coreml", compute_units="all").compute_devices()
    assert devices.placement is None
    assert any("macOS 14.4+" in n for n in devices.notes)
    assert devices.neural_engine_checked is True  # has one, units allow it, plan unknown


def test_mil_executor_reports_its_own_device(tiny):
    devices = open_package(
        tiny["fixed"], backend="mil", compute_units="cpu_and_ne"
    ).compute_devices()
    assert devices.available == ["cpu (MIL executor)"]
    assert devices.neural_engine_checked is False and devices.placement is None


def test_planned_ops_reads_coremltools_compute_plan_shapes():
    """Opset-qualified operator names, const ops and ops without a usage, as MLComputePlan
    gives them (coremltools/models/compute_plan.py dataclasses)."""
    from coremltools.models import compute_plan as cp

    from coreml_diarize.validation.compute_plan import compare_placement, planned_ops

    def op(name: str, output: str):
        value = cp.MLModelStructureProgramNamedValueType(
            output, cp.MLModelStructureProgramValueType()
        )
        return cp.MLModelStructureProgramOperation({}, name, [value], [], None)

    ops = [op("const", "w"), op("ios17.conv", "a"), op("relu", "b"), op("softmax", "c")]
    cpu, ne = standin._device("cpu"), standin._device("neural_engine", 16)
    usage = {
        id(ops[1]): cp.MLComputePlanDeviceUsage(ne, [cpu, ne]),
        id(ops[2]): cp.MLComputePlanDeviceUsage(cpu, [cpu]),
    }

    class Plan:
        model_structure = cp.MLModelStructure(
            None,
            cp.MLModelStructureProgram(
                {
                    "main": cp.MLModelStructureProgramFunction(
                        [], cp.MLModelStructureProgramBlock([], ops, [])
                    )
                }
            ),
            None,
        )

        def get_compute_device_usage_for_mlprogram_operation(self, operation):
            return usage.get(id(operation))

    planned = planned_ops(Plan())
    assert [(p.op_type, p.output, p.device) for p in planned] == [
        ("conv", "a", "neural_engine"),
        ("relu", "b", "cpu"),
        ("softmax", "c", None),
    ]
    report = compare_placement(
        planned, {"a": ("conv", "neural_engine"), "b": ("relu", "neural_engine")}, "all"
    )
    assert report.ops_by_device == {"neural_engine": 1, "cpu": 1} and report.unknown_ops == 1
    assert report.compared_ops == 2 and report.agreement == 0.5
    assert [(d.output, d.predicted, d.planned) for d in report.disagreements] == [
        ("b", "neural_engine", "cpu")
    ]
