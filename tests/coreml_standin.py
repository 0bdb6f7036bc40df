"""A stand-in for Core ML, so the code that runs on a Mac runs in the Linux suite.

`StandInMLModel` reproduces what coremltools 9.0's `coremltools.models.MLModel` does on macOS,
as far as our code can observe it, and executes the saved program with our MIL executor
(`validation/mil`, `MILExecutor.from_path(path).predict`) where Core ML would run it.
`StandInComputePlan` reproduces `coremltools.models.compute_plan.MLComputePlan`. Each
behaviour cites the coremltools source it was read from (the venv's
coremltools/models/*.py; the native bridge coremlpython/*.mm from github.com/apple/coremltools):

* construction (model.py, `MLModel.__init__` -> `_get_proxy_and_spec`): the spec is read
  first (a missing file raises); a package Core ML cannot compile or load raises RuntimeError
  in the native `_MLModelProxy(...)` (CoreMLPython.mm, `Model::Model`: "Error compiling
  model: ..."), which `_get_proxy_and_spec` catches: it only warns (RuntimeWarning "You will
  not be able to run predict() on this Core ML model. Underlying exception message was: ..."),
  keeps `__proxy__ = None` and `_framework_error = e`. Here: a specification version newer
  than the emulated macOS supports, or a package our executor cannot read, fails that way.
* `compute_units` must be a `ct.ComputeUnit` (TypeError); CPU_AND_NE below macOS 13 is a
  ValueError; the value is kept as `compute_unit`.
* `predict` (model.py, `MLModel.predict`): data must be a dict (TypeError, `_check_predict_data`);
  unknown input names raise KeyError (`_verify_input_name_exists`); torch tensors and lists
  become numpy (`_convert_tensor_to_numpy`); float16 arrays become float32
  (`_update_float16_multiarray_input_to_float32`); with no proxy, `raise self._framework_error`
  (or the bare Exception "The specification has version ..."). The native side accepts
  int8/int32/float32/float64 arrays only (CoreMLPythonArray.mm, `dataTypeOf`; anything else
  ends in RuntimeError "value type not convertible", CoreMLPythonUtils.mm,
  `convertValueToObjC`); Core ML refuses a missing input or a shape outside the model
  description (fixed shape, `multiArrayType.shapeRange` or `enumeratedShapes`) with an NSError
  that `Utils::handleError` raises as RuntimeError. The messages are ours, not Core ML's words.
* outputs: a dict of every output; fp16 multi-arrays come back as float32
  (CoreMLPythonUtils.mm, `convertArrayValueToPython`).
* `get_available_compute_devices()` (model.py; compute_device.py): instances of
  `MLCPUComputeDevice`, `MLGPUComputeDevice`, `MLNeuralEngineComputeDevice`
  (`total_core_count`), from the emulated `Machine`; RuntimeError below macOS 14
  (CoreMLPython.mm, `Model::getAvailableComputeDevices`).
* `StandInComputePlan.load_from_path(path, compute_units)` (compute_plan.py): the real
  `MLModelStructure*` dataclasses; each op's `MLComputePlanDeviceUsage.preferred_compute_device`
  is `inspect --ane`'s static prediction when the machine has a Neural Engine and the units
  allow it, else the CPU (the stand-in never places on the GPU), with per-output overrides
  (`Machine.placement_overrides`) so tests can make Core ML disagree. Const ops get no usage.

Not emulated: batch predict, state, images, GPU numerics (everything runs in the program's
own dtypes on the CPU).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# macOS major version -> newest Core ML specification version it loads (coremltools/__init__.py:
# _SPECIFICATION_VERSION_IOS_16 = 7 (macOS 13), IOS_17 = 8 (macOS 14), IOS_18 = 9 (macOS 15),
# IOS_26 = 10 (macOS 26))
MAX_SPEC_VERSION = {13: 7, 14: 8, 15: 9, 26: 10}
# CoreMLPythonArray.mm, `dataTypeOf`: the numpy dtypes the bridge turns into MLMultiArrays
BRIDGED_DTYPES = (np.int8, np.int32, np.float32, np.float64)


@dataclass(frozen=True)
class Machine:
    """The Mac the stand-in pretends to be."""

    name: str
    macos_version: tuple[int, ...] = (15, 0)
    neural_engine_cores: int = 16  # 0: no Neural Engine
    gpu: bool = True
    # first output name of an op -> "cpu" | "gpu" | "neural_engine": where the stand-in's
    # compute plan puts that op whatever the static prediction says
    placement_overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def max_specification_version(self) -> int:
        return MAX_SPEC_VERSION.get(self.macos_version[0], max(MAX_SPEC_VERSION.values()))


APPLE_SILICON_MAC = Machine("Apple silicon Mac, macOS 15", (15, 0), neural_engine_cores=16)
# GitHub-hosted macOS runners are VMs without a Neural Engine (issue #21: CPU + GPU only)
GITHUB_HOSTED_VM = Machine("GitHub-hosted macOS 14 VM", (14, 6), neural_engine_cores=0)
MACOS_14_0 = Machine("macOS 14.0 (no MLComputePlan)", (14, 0), neural_engine_cores=16)


# --- compute devices (coremltools/models/compute_device.py) ---------------------------------


class _DeviceProxy:
    """What `MLNeuralEngineComputeDevice.total_core_count` calls on its native proxy."""

    def __init__(self, cores: int = 0) -> None:
        self._cores = cores

    def get_total_core_count(self) -> int:
        return self._cores


def _device(kind: str, cores: int = 0) -> Any:
    """An instance of coremltools' own device class. Their constructors demand the native
    proxy types, which do not exist on Linux: the objects are made without __init__."""
    from coremltools.models import compute_device as cd

    cls = {
        "cpu": cd.MLCPUComputeDevice,
        "gpu": cd.MLGPUComputeDevice,
        "neural_engine": cd.MLNeuralEngineComputeDevice,
    }[kind]
    device = cls.__new__(cls)
    device.__proxy__ = _DeviceProxy(cores)
    return device


def available_devices(machine: Machine) -> list[Any]:
    if machine.macos_version < (14, 0):
        raise RuntimeError("MLComputeDevice is only available on macOS >= 14.0")
    devices = [_device("cpu")]
    if machine.gpu:
        devices.append(_device("gpu"))
    if machine.neural_engine_cores:
        devices.append(_device("neural_engine", machine.neural_engine_cores))
    return devices


# --- the model ---------------------------------------------------------------------------


def _spec_problem(feature: Any, shape: tuple[int, ...]) -> str | None:
    """Why Core ML refuses an input of `shape` for this model-description feature."""
    array = feature.type.multiArrayType
    which = array.WhichOneof("ShapeFlexibility")
    if which == "enumeratedShapes":
        allowed = [tuple(int(d) for d in s.shape) for s in array.enumeratedShapes.shapes]
        if shape not in allowed:
            return f"shape {shape} is not one of the enumerated shapes {allowed}"
        return None
    if which == "shapeRange":
        ranges = [(int(r.lowerBound), int(r.upperBound)) for r in array.shapeRange.sizeRanges]
        if len(ranges) != len(shape):
            return f"rank {len(shape)} does not match the model's rank {len(ranges)}"
        for axis, ((lower, upper), size) in enumerate(zip(ranges, shape, strict=True)):
            if size < lower or (upper >= 0 and size > upper):
                return f"size {size} of axis {axis} is outside [{lower}, {upper}]"
        return None
    declared = tuple(int(d) for d in array.shape)
    if declared and shape != declared:
        return (
            f"MultiArray shape {shape} does not match the shape {declared} in the model description"
        )
    return None


def _declared_dtype(feature: Any) -> Any:
    """The numpy dtype of a multi-array feature (FeatureTypes.proto, ArrayFeatureType)."""
    array = feature.type.multiArrayType
    name = type(array).ArrayDataType.Name(array.dataType)
    return {
        "FLOAT32": np.float32,
        "FLOAT16": np.float16,
        "DOUBLE": np.float64,
        "INT32": np.int32,
        "INT8": np.int8,
    }[name]


class _StandInProxy:
    """Plays coremltools' native `_MLModelProxy`: the loaded program."""

    def __init__(self, path: Path, spec: Any) -> None:
        from coreml_diarize.validation.mil import MILExecutor

        self.path = path
        self.spec = spec
        self.executor = MILExecutor.from_path(path)

    def get_compiled_model_path(self) -> str:
        # no .mlmodelc is made here: the package itself stands for its compiled form
        return str(self.path)

    def predict(self, data: dict[str, Any]) -> dict[str, np.ndarray]:
        described = {f.name: f for f in self.spec.description.input}
        inputs = {}
        for name, value in data.items():
            array = np.asarray(value)
            if not any(array.dtype == d for d in BRIDGED_DTYPES):
                raise RuntimeError("value type not convertible")
            inputs[name] = array
        for name, feature in described.items():
            if name not in inputs:
                raise RuntimeError(
                    f'{{NSLocalizedDescription = "Feature {name} is required but not specified.";}}'
                )
            problem = _spec_problem(feature, tuple(inputs[name].shape))
            if problem is not None:
                raise RuntimeError(f'{{NSLocalizedDescription = "Input {name}: {problem}.";}}')
            # Core ML converts an MLMultiArray to the data type the description declares
            inputs[name] = inputs[name].astype(_declared_dtype(feature), copy=False)
        outputs = self.executor.predict(inputs)
        return {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in outputs.items()}


class StandInMLModel:
    """coremltools.models.MLModel as it behaves on `MACHINE` (set by `mlmodel_class`)."""

    MACHINE: Machine = APPLE_SILICON_MAC

    def __init__(self, model: str, compute_units: Any = None, **_ignored: Any) -> None:
        import coremltools as ct
        from coremltools.models.utils import load_spec

        if compute_units is None:
            compute_units = ct.ComputeUnit.ALL
        if not isinstance(compute_units, ct.ComputeUnit):
            raise TypeError('"compute_units" parameter must be of type: coremltools.ComputeUnit')
        if compute_units == ct.ComputeUnit.CPU_AND_NE and self.MACHINE.macos_version < (13, 0):
            raise ValueError(
                "coremltools.ComputeUnit.CPU_AND_NE is only available on macOS >= 13.0"
            )
        self.compute_unit = compute_units
        self.package_path = str(Path(model).absolute())
        self._spec = load_spec(self.package_path)  # raises for a missing or unreadable spec
        self.__proxy__, self._framework_error = self._load()
        self._model_input_names_set = {i.name for i in self._spec.description.input}

    def _load(self) -> tuple[_StandInProxy | None, Exception | None]:
        """model.py `_get_proxy_and_spec`: a load failure is a warning, not an exception."""
        from coreml_diarize.errors import ArtifactError

        try:
            if self._spec.specificationVersion > self.MACHINE.max_specification_version:
                raise RuntimeError(
                    'Error compiling model: "compiler error: the model specification version '
                    f"{self._spec.specificationVersion} is newer than this OS supports "
                    f'({self.MACHINE.max_specification_version})".'
                )
            try:
                return _StandInProxy(Path(self.package_path), self._spec), None
            except ArtifactError as exc:
                raise RuntimeError(f'Error compiling model: "{exc}".') from exc
        except RuntimeError as e:
            warnings.warn(
                "You will not be able to run predict() on this Core ML model."
                + " Underlying exception message was: "
                + str(e),
                RuntimeWarning,
                stacklevel=3,
            )
            return None, e

    @classmethod
    def get_available_compute_devices(cls) -> list[Any]:
        return available_devices(cls.MACHINE)

    def get_spec(self) -> Any:
        import copy

        return copy.deepcopy(self._spec)

    def get_compiled_model_path(self) -> str:
        if self.__proxy__ is None:
            raise Exception("This model was not loaded or compiled with the Core ML Framework.")
        return self.__proxy__.get_compiled_model_path()

    def predict(self, data: Any, state: Any = None) -> dict[str, np.ndarray]:
        # model.py `MLModel.predict`: `_check_predict_data`, then the proxy's predict after
        # `_verify_input_dict` / conversions, or, with no proxy, the "Error case"
        if type(data) not in (list, dict):
            raise TypeError(
                f'"data" parameter must be either a dict or list of dict, but got {type(data)}.'
            )
        if type(data) is list:
            if not all(type(x) is dict for x in data):
                raise TypeError('"data" list must contain only dictionaries')
            raise NotImplementedError("the Core ML stand-in does not emulate batch predict")
        if self.__proxy__ is None:
            if self._framework_error is not None:
                raise self._framework_error
            raise Exception("Unable to load CoreML.framework. Cannot make predictions.")
        for given in data:
            if given not in self._model_input_names_set:
                raise KeyError(
                    f'Provided key "{given}", in the input dict, does not match any of the '
                    f"model input name(s), which are: {self._model_input_names_set}"
                )
        data = {k: _to_numpy(v) for k, v in data.items()}
        data = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in data.items()}
        return self.__proxy__.predict(data)


def _to_numpy(value: Any) -> np.ndarray:
    """model.py `_convert_tensor_to_numpy`: torch tensors detached, anything else np.array."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.array(value)


def mlmodel_class(machine: Machine) -> type[StandInMLModel]:
    """A stand-in MLModel class for `machine` (its classmethods answer for that machine)."""
    return type("StandInMLModel", (StandInMLModel,), {"MACHINE": machine})


# --- the compute plan (coremltools/models/compute_plan.py) ----------------------------------


class StandInComputePlan:
    """coremltools.models.compute_plan.MLComputePlan on `MACHINE` (see `compute_plan_class`)."""

    MACHINE: Machine = APPLE_SILICON_MAC

    def __init__(self, structure: Any, usage: dict[int, Any]) -> None:
        self.model_structure = structure
        self._usage = usage

    @classmethod
    def load_from_path(cls, path: str, compute_units: Any = None) -> StandInComputePlan:
        import coremltools as ct
        from coremltools.models import compute_plan as cp

        from coreml_diarize.mlpackage import iter_ops, load_program
        from coreml_diarize.validation.compute_plan import static_prediction

        if cls.MACHINE.macos_version < (14, 4):
            raise RuntimeError("MLComputePlan is only available on macOS >= 14.4")
        units = ct.ComputeUnit.ALL if compute_units is None else compute_units
        uses_ne = cls.MACHINE.neural_engine_cores > 0 and units in (
            ct.ComputeUnit.ALL,
            ct.ComputeUnit.CPU_AND_NE,
        )
        predicted = static_prediction(Path(path))
        devices = {
            kind: _device(kind, cls.MACHINE.neural_engine_cores)
            for kind in ("cpu", "gpu", "neural_engine")
        }
        supported = [devices["cpu"]] + ([devices["neural_engine"]] if uses_ne else [])
        operations, usage = [], {}
        for op in iter_ops(load_program(Path(path)).functions["main"]):
            outputs = [
                cp.MLModelStructureProgramNamedValueType(
                    v.name, cp.MLModelStructureProgramValueType()
                )
                for v in op.outputs
            ]
            structure_op = cp.MLModelStructureProgramOperation(
                inputs={}, operator_name=op.op_type, outputs=outputs, blocks=[], __proxy__=None
            )
            operations.append(structure_op)
            first = op.outputs[0].name if op.outputs else ""
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                continue  # weights: no device usage
            kind = cls.MACHINE.placement_overrides.get(first)
            if kind is None:
                static = predicted[first][1]
                kind = static if (uses_ne or static != "neural_engine") else "cpu"
            usage[id(structure_op)] = cp.MLComputePlanDeviceUsage(devices[kind], supported)
        block = cp.MLModelStructureProgramBlock(inputs=[], operations=operations, output_names=[])
        function = cp.MLModelStructureProgramFunction(inputs=[], block=block)
        program = cp.MLModelStructureProgram(functions={"main": function})
        return cls(cp.MLModelStructure(neuralnetwork=None, program=program, pipeline=None), usage)

    def get_compute_device_usage_for_mlprogram_operation(self, operation: Any) -> Any | None:
        return self._usage.get(id(operation))


def compute_plan_class(machine: Machine) -> type[StandInComputePlan]:
    return type("StandInComputePlan", (StandInComputePlan,), {"MACHINE": machine})


def install(monkeypatch: Any, machine: Machine = APPLE_SILICON_MAC) -> type[StandInMLModel]:
    """Put the stand-in where validation/backends.py looks for Core ML, as `machine`."""
    from coreml_diarize.validation import backends

    model_class = mlmodel_class(machine)
    plan_class = compute_plan_class(machine)
    monkeypatch.setattr(backends, "_macos_version", lambda: machine.macos_version)
    monkeypatch.setattr(backends, "_coreml_model_class", lambda: model_class)
    monkeypatch.setattr(backends, "_compute_plan_class", lambda: plan_class)
    return model_class
