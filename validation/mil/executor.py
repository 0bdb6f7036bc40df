"""Reference executor of saved Core ML ML Programs (MIL), in numpy/torch.

Core ML cannot predict on Linux; this runs the program *as saved on disk* (spec + weight
blob, parsed by `loader`) with independent implementations of each op, so a converted
package can be compared with its PyTorch source anywhere.

Guarantees:
* an op type without an implementation fails at construction with `UnsupportedOpError`
  (nothing is skipped);
* every op output is cast to the dtype the program declares for it, so an fp16 program is
  rounded to fp16 after every op, and its shape is checked against the declared one;
* missing or corrupt packages raise a one-line `ArtifactError`.

`profile` is `predict` plus the time of every op (docs/mil_ops.md, "Speed").
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError, UnsupportedOpError

from .loader import BlockSpec, MILProgram, Node, ValueType, read_mil_program
from .opcall import OpCall, OpFn, cast_array
from .ops_compress import COMPRESS_OPS
from .ops_conv import CONV_OPS
from .ops_elementwise import ELEMENTWISE_OPS
from .ops_linear import LINEAR_OPS
from .ops_norm import NORM_OPS
from .ops_recurrent import RECURRENT_OPS
from .ops_reduce import REDUCE_OPS
from .ops_tensor import TENSOR_OPS

# Op type -> implementation. `const` is handled by the executor itself.
DEFAULT_OPS: Mapping[str, OpFn] = {
    **ELEMENTWISE_OPS,
    **LINEAR_OPS,
    **CONV_OPS,
    **NORM_OPS,
    **REDUCE_OPS,
    **TENSOR_OPS,
    **RECURRENT_OPS,
    **COMPRESS_OPS,
}


def supported_ops() -> list[str]:
    """Every op type the executor runs (including `const`)."""
    return sorted({"const", *DEFAULT_OPS})


def _walk(block: BlockSpec) -> Iterator[Node]:
    for node in block.nodes:
        yield node
        for inner in node.blocks:
            yield from _walk(inner)


def _enumeration_pairing_problem(described, inputs: Mapping[str, Any]) -> str | None:
    """Several enumerated inputs (iOS 18 on) are enumerated together: Core ML takes the i-th
    shape of each at once, not any mix (coremltools declares them with as many shapes each,
    _converters_entry._validate_enumerated_shape_inputs; a mix fails, apple/coremltools#2271)."""
    enumerated = [f for f in described if len(f.enumerated) > 1]
    if len(enumerated) < 2:
        return None
    shapes = {f.name: tuple(np.shape(inputs[f.name])) for f in enumerated}
    together = zip(*(f.enumerated for f in enumerated), strict=False)
    if any(
        all(s == shapes[f.name] for s, f in zip(row, enumerated, strict=True)) for row in together
    ):
        return None
    given = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
    return f"enumerated inputs take their shapes together, position by position; got {given}"


def _check_shape(path: Path, node: Node, name: str, spec: ValueType, value: np.ndarray) -> None:
    if spec.shape is None:
        return
    ok = len(spec.shape) == value.ndim and all(
        d is None or d == v for d, v in zip(spec.shape, value.shape, strict=False)
    )
    if not ok:
        declared = tuple("?" if d is None else d for d in spec.shape)
        raise ArtifactError(
            f"{path}: op {node.name!r} ({node.op_type}) produced {name} with shape "
            f"{tuple(value.shape)}, the program declares {declared}"
        )


@dataclass(frozen=True)
class OpTiming:
    """Wall time of one op of one `MILExecutor.profile` run."""

    name: str
    op_type: str
    dtype: str  # declared dtype of the first output (fp16 ops pay the rounding)
    compute_s: float  # the op implementation
    store_s: float  # rounding to the declared dtype + shape check

    @classmethod
    def of(cls, node: Node, compute_s: float, store_s: float) -> OpTiming:
        dtype = node.outputs[0][1].dtype if node.outputs else ""
        return cls(node.name, node.op_type, dtype, compute_s, store_s)


class MILExecutor:
    """Runs the main function of a saved ML Program.

    `ops` replaces the op table (tests use a reduced table to exercise
    `UnsupportedOpError`); the default is `DEFAULT_OPS`.
    """

    def __init__(self, program: MILProgram, *, ops: Mapping[str, OpFn] | None = None) -> None:
        self.program = program
        self.path = program.path
        self._ops: Mapping[str, OpFn] = DEFAULT_OPS if ops is None else ops
        for node in _walk(program.main):
            if node.op_type != "const" and node.op_type not in self._ops:
                raise UnsupportedOpError(
                    f"{self.path}: MIL op type '{node.op_type}' (op {node.name!r}) is not "
                    "implemented by the reference executor"
                )
        # Per-instance cache of work derived from constants (torch weights, re-layouts).
        self._cache: dict[Any, Any] = {}
        self._consts: dict[str, Any] = {}
        self._steps: list[tuple[Node, OpFn]] = []
        self._fold_constants()
        self._const_names = frozenset(self._consts)
        self._free_after = self._liveness()

    @classmethod
    def from_path(cls, path: str | Path, *, ops: Mapping[str, OpFn] | None = None) -> MILExecutor:
        """Load an .mlpackage from disk (never from converter state)."""
        return cls(read_mil_program(path), ops=ops)

    # -- load time ---------------------------------------------------------------------
    def _fold_constants(self) -> None:
        """Materialise `const` and decompress `constexpr_*` ops once, at load time."""
        for node in self.program.main.nodes:
            if node.op_type == "const":
                name, spec = node.outputs[0]
                val = node.attributes.get("val")
                if val is None:
                    raise ArtifactError(f"{self.path}: const {name!r} has no value")
                self._consts[name] = (
                    val if isinstance(val, str) else _as_dtype(np.asarray(val), spec)
                )
            elif node.op_type.startswith("constexpr_"):
                call = OpCall(node, self._consts, frozenset(self._consts), self._cache)
                self._store(node, self._run(node, self._ops[node.op_type], call), self._consts)
            else:
                self._steps.append((node, self._ops[node.op_type]))

    def _liveness(self) -> list[list[str]]:
        """Names each step may drop afterwards (their last reader), to bound memory."""
        keep = set(self.program.main.outputs) | set(self._consts)
        last: dict[str, int] = {}
        for i, (node, _) in enumerate(self._steps):
            for bindings in node.inputs.values():
                for b in bindings:
                    if b.name is not None:
                        last[b.name] = i
        free: list[list[str]] = [[] for _ in self._steps]
        for name, i in last.items():
            if name not in keep:
                free[i].append(name)
        return free

    # -- run time ----------------------------------------------------------------------
    def _run(self, node: Node, fn: OpFn, call: OpCall) -> Any:
        try:
            return fn(call)
        except DiarizeError:
            raise
        except Exception as exc:
            raise ArtifactError(
                f"{self.path}: op {node.name!r} ({node.op_type}) failed: {type(exc).__name__}: {exc}"
            ) from exc

    def _store(self, node: Node, result: Any, values: dict[str, Any]) -> None:
        outs = result if isinstance(result, tuple) else (result,)
        if len(outs) != len(node.outputs):
            raise ArtifactError(
                f"{self.path}: op {node.name!r} ({node.op_type}) produced {len(outs)} outputs, "
                f"the program declares {len(node.outputs)}"
            )
        for (name, spec), value in zip(node.outputs, outs, strict=False):
            arr = _as_dtype(np.asarray(value), spec)
            _check_shape(self.path, node, name, spec, arr)
            values[name] = arr

    def _bind_inputs(self, inputs: Mapping[str, Any], values: dict[str, Any]) -> None:
        described = {f.name: f for f in self.program.described_inputs}
        for name, spec in self.program.inputs:
            if name not in inputs:
                raise DiarizeError(
                    f"{self.path}: missing input {name!r} (expects {self.input_names})"
                )
            arr = np.asarray(inputs[name])
            if spec.shape is not None:
                ok = arr.ndim == len(spec.shape) and all(
                    d is None or d == v for d, v in zip(spec.shape, arr.shape, strict=False)
                )
                if not ok:
                    declared = tuple("?" if d is None else d for d in spec.shape)
                    raise DiarizeError(
                        f"{self.path}: input {name!r} has shape {arr.shape}, the model expects {declared}"
                    )
            problem = described[name].shape_problem(arr.shape) if name in described else None
            if problem is not None:
                raise DiarizeError(f"{self.path}: input {name!r} {problem} (shape {arr.shape})")
            values[name] = _as_dtype(arr, spec)
        problem = _enumeration_pairing_problem(described.values(), inputs)
        if problem is not None:
            raise DiarizeError(f"{self.path}: {problem}")

    def predict(self, inputs: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Run the program; returns every declared output by name, in its declared dtype."""
        return self._execute(inputs, None)

    def profile(self, inputs: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], list[OpTiming]]:
        """`predict`, plus the wall time of every op in program order (its implementation
        and the rounding/shape check of its outputs, timed apart)."""
        timings: list[OpTiming] = []
        return self._execute(inputs, timings), timings

    def _execute(
        self, inputs: Mapping[str, Any], timings: list[OpTiming] | None
    ) -> dict[str, np.ndarray]:
        values: dict[str, Any] = dict(self._consts)
        self._bind_inputs(inputs, values)
        clock = time.perf_counter
        for (node, fn), dead in zip(self._steps, self._free_after, strict=False):
            start = clock()
            result = self._run(node, fn, OpCall(node, values, self._const_names, self._cache))
            computed = clock()
            self._store(node, result, values)
            if timings is not None:
                timings.append(OpTiming.of(node, computed - start, clock() - computed))
            for name in dead:
                values.pop(name, None)
        result: dict[str, np.ndarray] = {}
        described = {f.name: f for f in self.program.described_outputs}
        for name in self.program.main.outputs:
            arr = np.asarray(values[name])
            feature = described.get(name)
            if feature is not None and feature.dtype is not None and arr.dtype != feature.dtype:
                arr = cast_array(arr, feature.dtype)
            result[name] = arr
        return result

    # -- introspection -----------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return [n for n, _ in self.program.inputs]

    @property
    def output_names(self) -> list[str]:
        return list(self.program.main.outputs)

    def op_types(self) -> Counter:
        """Count of every op type in the program (const and constexpr included)."""
        return Counter(node.op_type for node in _walk(self.program.main))


def _as_dtype(arr: np.ndarray, spec: ValueType) -> np.ndarray:
    target = spec.np_dtype
    if target is None or arr.dtype == target:
        return arr
    return cast_array(arr, target)
