"""Palettize one const as the quantizer would, and run only the ops that const changes.

`palettized` is what coremltools' `palettize_weights` (with `kmeans_lut` as its `lut_function`)
stores for a weight and `constexpr_lut_to_dense` decompresses: `lut[indices]`, per tensor or
per group of output channels (coremltools `_quantization_passes.palettize_weights.
grouped_channelwise_compress`, axis from `optimize._utils.select_input_output_channel_axis`).

`DownstreamRunner` runs a saved program (`validation.mil`'s loader structures, through the
public `MILExecutor`) with one const replaced: one full run per input records the values that
flow into the ops downstream of each const, then a sub-program of only those ops runs per
variant. Same ops on the same values: bitwise what a full run of the modified program gives.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.quantize.apply import kmeans_lut

from .mil.executor import MILExecutor
from .mil.loader import BlockSpec, MILProgram, Node, ValueType


def palettized(
    weight: np.ndarray,
    nbits: int,
    *,
    granularity: str = "per_tensor",
    group_size: int | None = None,
    axis: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """What the constexpr op of `weight` palettized at `nbits` decompresses to: per tensor,
    or per group of `group_size` channels along `axis` (one LUT each), as coremltools'
    `grouped_channelwise_compress` splits them, with `kmeans_lut` as the LUT function."""
    if granularity == "per_tensor":
        return _dequantized(weight, nbits, seed)
    # coremltools swaps the channel axis to 0, splits it into equal groups, one LUT each
    swapped = np.swapaxes(weight, 0, axis)
    if not group_size or swapped.shape[0] % group_size:
        raise DiarizeError(
            f"per_grouped_channel: {swapped.shape[0]} channels are not divisible by group_size "
            f"{group_size} (coremltools leaves such a weight uncompressed)"
        )
    groups = np.split(swapped, swapped.shape[0] // group_size, axis=0)
    dense = np.concatenate([_dequantized(g, nbits, seed) for g in groups], axis=0)
    return np.swapaxes(dense, 0, axis)


def _dequantized(values: np.ndarray, nbits: int, seed: int) -> np.ndarray:
    lut, indices = kmeans_lut(values, nbits=nbits, seed=seed)
    return lut[indices].reshape(values.shape)


def output_channel_axis(program: MILProgram, const_output: str) -> int | None:
    """The output-channel axis coremltools groups channels along (`optimize._utils.
    select_input_output_channel_axis`): 0, but 1 for conv_transpose and the matmul
    convention for matmul; None when readers disagree."""
    axes = set()
    for node in _walk(program.main):
        for arg, bindings in node.inputs.items():
            if not any(b.name == const_output for b in bindings):
                continue
            if node.op_type == "conv_transpose":
                axes.add(1)
            elif node.op_type == "matmul":
                flag = "transpose_y" if arg == "y" else "transpose_x"
                transposed = bool(np.asarray(_literal(node, flag, False)).reshape(()))
                axes.add((-2 if transposed else -1) if arg == "y" else (-1 if transposed else -2))
            else:
                axes.add(0)
    return axes.pop() if len(axes) == 1 else None


def _literal(node: Node, name: str, default: Any) -> Any:
    bindings = node.inputs.get(name)
    return bindings[0].value if bindings and bindings[0].value is not None else default


# --- running only what a weight changes -------------------------------------------------------


def _walk(block: BlockSpec):
    for node in block.nodes:
        yield node
        for inner in node.blocks:
            yield from _walk(inner)


def _reads(node: Node) -> set[str]:
    """Every value name `node` reads, including inside its nested blocks."""
    names = {b.name for bindings in node.inputs.values() for b in bindings if b.name}
    for inner in node.blocks:
        produced = {n for n, _ in inner.inputs} | {
            o for sub in _walk(inner) for o in sub.output_names
        }
        names |= {n for sub in _walk(inner) for n in _reads(sub)} - produced
        names |= set(inner.outputs) - produced
    return names


class DownstreamRunner:
    """Runs a program with one const's value replaced, executing only the ops downstream of
    that const; the values flowing into them come from one full run per input (`record`)."""

    def __init__(self, program: MILProgram, consts: Sequence[str]) -> None:
        self.program = program
        top = program.main.nodes
        self._const_index = {n.outputs[0][0]: i for i, n in enumerate(top) if n.op_type == "const"}
        missing = [c for c in consts if c not in self._const_index]
        if missing:
            raise ArtifactError(f"{program.path}: no top-level const {', '.join(missing)}")
        types: dict[str, ValueType] = dict(program.inputs)
        for node in top:
            types.update(node.outputs)
        self._parts: dict[str, tuple[list[Node], list[tuple[str, ValueType]]]] = {}
        for const in consts:
            changed, steps = {const}, []
            for node in top:
                if node.op_type != "const" and _reads(node) & changed:
                    steps.append(node)
                    changed.update(node.output_names)
            produced = {o for n in steps for o in n.output_names}
            boundary = sorted(
                ({n for s in steps for n in _reads(s)} | set(program.main.outputs))
                - produced
                - set(self._const_index)
            )
            self._parts[const] = (steps, [(n, types[n]) for n in boundary])
        self._needed = sorted({n for _, b in self._parts.values() for n, _ in b})

    def record(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict]:
        """A full run: (the program's outputs, the values every downstream part starts from)."""
        extra = [n for n in self._needed if n not in self.program.main.outputs]
        main = dataclasses.replace(self.program.main, outputs=[*self.program.main.outputs, *extra])
        values = MILExecutor(dataclasses.replace(self.program, main=main)).predict(inputs)
        outputs = {n: values[n] for n in self.program.main.outputs}
        return outputs, {n: values[n] for n in self._needed}

    def run(self, const: str, value: np.ndarray, recorded: dict) -> dict[str, np.ndarray]:
        """The program's outputs with `const` = `value`, from a `record`ed run."""
        steps, boundary = self._parts[const]
        top = self.program.main.nodes
        i = self._const_index[const]
        node = top[i]
        spec = node.outputs[0][1]
        if tuple(value.shape) != tuple(spec.shape or ()) or value.dtype != spec.np_dtype:
            raise ArtifactError(
                f"internal error: {const} is {spec.dtype}{spec.shape}, got {value.dtype}{value.shape}"
            )
        consts = [top[j] for j in self._const_index.values() if j != i]
        replaced = dataclasses.replace(node, attributes={**node.attributes, "val": value})
        sub = dataclasses.replace(
            self.program,
            inputs=boundary,
            main=BlockSpec(
                inputs=boundary,
                nodes=[*consts, replaced, *steps],
                outputs=list(self.program.main.outputs),
            ),
            described_inputs=[],
        )
        return MILExecutor(sub).predict({n: recorded[n] for n, _ in boundary})
