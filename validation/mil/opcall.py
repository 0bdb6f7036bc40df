"""What an op implementation sees: its resolved inputs, declared outputs and a const cache."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .loader import Node, ValueType

# Strings in MIL are scalars; everything else is a numpy array (0-d for scalars).
Value = Any


class OpCall:
    """Arguments of one op execution.

    `values` maps every name visible to the op to its current value; `consts` is the set of
    those names that are program constants, so an op can cache work derived from them
    (weight re-layouts, torch tensors) in `cache`, which belongs to one executor instance.
    """

    __slots__ = ("node", "values", "consts", "cache")

    def __init__(
        self, node: Node, values: dict[str, Value], consts: frozenset[str], cache: dict
    ) -> None:
        self.node = node
        self.values = values
        self.consts = consts
        self.cache = cache

    # -- inputs -------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.node.inputs

    def _resolve(self, binding: Any) -> Value:
        return self.values[binding.name] if binding.name is not None else binding.value

    def __getitem__(self, name: str) -> Value:
        bindings = self.node.inputs.get(name)
        if not bindings:
            raise KeyError(f"op {self.node.op_type} {self.node.name!r} has no input {name!r}")
        return self._resolve(bindings[0])

    def get(self, name: str, default: Value = None) -> Value:
        return self[name] if name in self.node.inputs else default

    def list(self, name: str) -> list[Value]:
        """All arguments of a tuple input (concat/stack `values`, einsum...)."""
        return [self._resolve(b) for b in self.node.inputs.get(name, [])]

    def int(self, name: str, default: int | None = None) -> int:
        v = self.get(name)
        return default if v is None else int(np.asarray(v).reshape(()))  # type: ignore[return-value]

    def float(self, name: str, default: float | None = None) -> float:
        v = self.get(name)
        return default if v is None else float(np.asarray(v).reshape(()))  # type: ignore[return-value]

    def bool(self, name: str, default: bool = False) -> bool:
        v = self.get(name)
        return default if v is None else bool(np.asarray(v).reshape(()))

    def str(self, name: str, default: str | None = None) -> str:
        v = self.get(name)
        return default if v is None else str(v)  # type: ignore[return-value]

    def ints(self, name: str, default: list[int] | None = None) -> list[int]:
        v = self.get(name)
        return default if v is None else [int(i) for i in np.asarray(v).reshape(-1)]  # type: ignore[return-value]

    def is_const(self, *names: str) -> bool:
        for n in names:
            for b in self.node.inputs.get(n, []):
                if b.name is not None and b.name not in self.consts:
                    return False
        return True

    def memo(self, key: str, fn: Callable[[], Any], *names: str) -> Any:
        """fn() cached for this op when all inputs `names` are constants, else recomputed."""
        if not self.is_const(*names):
            return fn()
        ck = (self.node.name, self.node.output_names[0] if self.node.outputs else "", key)
        if ck not in self.cache:
            self.cache[ck] = fn()
        return self.cache[ck]

    # -- outputs ------------------------------------------------------------------------
    def out_spec(self, i: int = 0) -> ValueType:
        return self.node.outputs[i][1]

    def out_dtype(self, i: int = 0) -> Any:
        return self.node.outputs[i][1].np_dtype


OpFn = Callable[[OpCall], Any]

_TORCH_FLOATS = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32}


def cast_array(arr: Any, dtype: Any) -> np.ndarray:
    """`arr.astype(dtype)`, with fp16 <-> fp32 done by torch: numpy converts float16 with
    scalar code (~10x slower); both round to nearest even, so the values are identical."""
    arr = np.asarray(arr)
    dtype = np.dtype(dtype)
    if arr.dtype == dtype:
        return arr
    if arr.dtype in _TORCH_FLOATS and dtype in _TORCH_FLOATS and arr.size >= 4096:
        src = arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr, order="C")
        return torch.from_numpy(src).to(_TORCH_FLOATS[dtype]).numpy()
    return arr.astype(dtype)


def half_tensor(x: np.ndarray) -> torch.Tensor:
    """A torch.float16 view of an fp16 numpy array (a copy when numpy's flags forbid a view:
    read-only or broadcast arrays, negative strides)."""
    if not x.flags.writeable or any(s < 0 for s in x.strides):
        x = np.array(x)
    return torch.from_numpy(x)


def widen(x: Any) -> np.ndarray:
    """fp16 -> fp32 for computing inside an op; other dtypes pass through."""
    x = np.asarray(x)
    return cast_array(x, np.float32) if x.dtype == np.float16 else x
