"""What a model declares about its inputs and outputs, read without Core ML (Linux): from an
`.mlpackage`'s spec, or as far as possible from a compiled `.mlmodelc`'s text files.

Shape flexibility, as Core ML reports it to FluidAudio (`MLMultiArrayConstraint`): a range per
axis, or enumerated shapes. coremltools writes the default shape first in the enumerated list
(`flexible_shape_utils._add_multiarray_ndshape_enumeration_for_feature`, "Ensure the default
shape is placed first"), which is the shape FluidAudio takes for inputs it sizes itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

# FeatureTypes.proto ArrayFeatureType.ArrayDataType; metadata.json's and model.mil's spellings
_SPEC_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}
_NAMED_DTYPES = {
    "float32": "float32",
    "float16": "float16",
    "double": "float64",
    "float64": "float64",
    "int32": "int32",
    "fp32": "float32",
    "fp16": "float16",
    "fp64": "float64",
}


@dataclass(frozen=True)
class DeclaredTensor:
    name: str
    dtype: str | None  # None: unknown
    shape: tuple[int, ...] | None  # the default (or only) shape; None: unknown
    ranges: tuple[tuple[int, int], ...] | None = None  # per-axis bounds, range flexibility
    enumerated: tuple[tuple[int, ...], ...] | None = None  # in declared order
    flexible_unknown: bool = False  # flexible, bounds not readable here
    multiarray: bool = True

    def accepts(self, shape: tuple[int, ...]) -> bool | None:
        """Would Core ML take an input of this shape? None: cannot tell from what was read."""
        shape = tuple(shape)
        if self.enumerated is not None:
            return shape in self.enumerated
        if self.ranges is not None:
            return len(shape) == len(self.ranges) and all(
                lo <= s <= hi for s, (lo, hi) in zip(shape, self.ranges, strict=True)
            )
        if self.flexible_unknown or self.shape is None:
            return None
        return shape == self.shape

    def resolved_shape(self) -> tuple[int, ...] | None:
        """The shape FluidAudio builds for an input it sizes from the model's description:
        first enumerated shape, else the declared shape, else each range's lower bound
        (OfflineEmbeddingExtractor.sanitizedShape, Diarizer/Offline/Extraction/
        OfflineEmbeddingExtractor.swift:942-969)."""
        if self.enumerated:
            return self.enumerated[0]
        if self.shape:
            return self.shape
        if self.ranges:
            return tuple(lo for lo, _ in self.ranges)
        return None

    def describe(self) -> str:
        if self.enumerated is not None:
            return "enumerated shapes " + " | ".join(str(s) for s in self.enumerated)
        if self.ranges is not None:
            return (
                "shape ("
                + ", ".join(str(lo) if lo == hi else f"{lo}..{hi}" for lo, hi in self.ranges)
                + ")"
            )
        return f"shape {self.shape}" if self.shape is not None else "an unknown shape"


@dataclass
class DeclaredModel:
    path: Path
    inputs: dict[str, DeclaredTensor] | None  # None: not readable here
    outputs: dict[str, DeclaredTensor] | None
    unreadable: str = ""  # why the I/O could not be read (a warning)


@dataclass(frozen=True)
class Finding:
    level: str  # "error" | "warning"
    where: str
    message: str
    cite: str = ""

    def line(self) -> str:
        cite = f" [FluidAudio {self.cite}]" if self.cite else ""
        return f"{self.level}: {self.where}: {self.message}{cite}"


# --- .mlpackage ---------------------------------------------------------------------------


def _from_feature(feature) -> DeclaredTensor:
    if feature.type.WhichOneof("Type") != "multiArrayType":
        return DeclaredTensor(feature.name, None, None, multiarray=False)
    arr = feature.type.multiArrayType
    shape = tuple(int(d) for d in arr.shape) or None
    dtype = _SPEC_DTYPES.get(arr.dataType, str(arr.dataType))
    which = arr.WhichOneof("ShapeFlexibility")
    if which == "shapeRange":
        ranges = tuple(
            (int(r.lowerBound), int(r.upperBound) if r.upperBound >= 0 else 2**31)
            for r in arr.shapeRange.sizeRanges
        )
        return DeclaredTensor(feature.name, dtype, shape, ranges=ranges)
    if which == "enumeratedShapes":
        shapes = tuple(tuple(int(d) for d in s.shape) for s in arr.enumeratedShapes.shapes)
        return DeclaredTensor(feature.name, dtype, shape, enumerated=shapes)
    return DeclaredTensor(feature.name, dtype, shape)


def read_package(package: Path) -> DeclaredModel:
    """The spec's description (`ct.models.MLModel(path, skip_model_load=True).get_spec()`)."""
    from coreml_diarize.mlpackage import load_mlmodel

    desc = load_mlmodel(package).get_spec().description
    return DeclaredModel(
        Path(package),
        {f.name: _from_feature(f) for f in desc.input},
        {f.name: _from_feature(f) for f in desc.output},
    )


# --- .mlmodelc ----------------------------------------------------------------------------
# A compiled model holds coremldata.bin (binary, undocumented), metadata.json (Xcode's
# description: inputSchema / outputSchema with name, dataType, shape, hasShapeFlexibility,
# shapeFlexibility such as "1...32 × 1 × 160000" or "1 × 4 | 32 × 4"), and model.mil, whose
# main function's signature names each input with its type, `?` for a flexible axis (as in
# FluidAudio's Tests/.../KokoroAneModelCompatibilityTests.swift). Neither format is
# specified by Apple: what cannot be parsed is reported, never guessed.


def read_compiled(compiled: Path) -> DeclaredModel:
    compiled = Path(compiled)
    meta = compiled / "metadata.json"
    if meta.is_file():
        try:
            return _from_metadata(compiled, json.loads(meta.read_text()))
        except (ValueError, KeyError, TypeError, IndexError):
            pass
    mil = compiled / "model.mil"
    if mil.is_file():
        model = _from_mil(compiled, mil.read_text(errors="replace"))
        if model is not None:
            return model
    return DeclaredModel(
        compiled,
        None,
        None,
        "I/O not checkable on Linux: no readable metadata.json or model.mil (coremldata.bin is "
        "an undocumented binary); check it on macOS",
    )


def _dims(text: str) -> tuple[int, ...]:
    return tuple(int(d) for d in re.findall(r"-?\d+", text))


def _parse_flexibility(text: str, rank: int):
    """'1...32 × 1 × 160000' -> ranges; '1 × 4 | 32 × 4' -> enumerated; None if unparsable."""
    alternatives = [a.strip() for a in text.split("|")]
    parsed = []
    for alt in alternatives:
        axes = [a.strip() for a in re.split(r"\s*[×x]\s*", alt) if a.strip()]
        if len(axes) != rank:
            return None
        dims = []
        for axis in axes:
            m = re.fullmatch(r"(\d+)\s*\.\.\.\s*(\d+|inf)?", axis)
            if m:
                dims.append((int(m[1]), int(m[2]) if m[2] and m[2] != "inf" else 2**31))
            elif axis.isdigit():
                dims.append((int(axis), int(axis)))
            else:
                return None
        parsed.append(tuple(dims))
    if len(parsed) > 1:
        if any(lo != hi for dims in parsed for lo, hi in dims):
            return None
        return "enumerated", tuple(tuple(lo for lo, _ in dims) for dims in parsed)
    return "ranges", parsed[0]


def _schema_tensor(entry: dict) -> DeclaredTensor:
    name = entry["name"]
    if entry.get("type", "MultiArray") != "MultiArray":
        return DeclaredTensor(name, None, None, multiarray=False)
    dtype = _NAMED_DTYPES.get(str(entry.get("dataType", "")).lower())
    shape = _dims(entry["shape"]) if entry.get("shape") else None
    if str(entry.get("hasShapeFlexibility", "0")) != "1":
        return DeclaredTensor(name, dtype, shape)
    if entry.get("enumeratedShapes"):
        shapes = tuple(tuple(s) for s in json.loads(entry["enumeratedShapes"]))
        return DeclaredTensor(name, dtype, shape, enumerated=shapes)
    if entry.get("shapeRange"):
        ranges = tuple((int(lo), int(hi)) for lo, hi in json.loads(entry["shapeRange"]))
        return DeclaredTensor(name, dtype, shape, ranges=ranges)
    parsed = _parse_flexibility(str(entry.get("shapeFlexibility", "")), len(shape or ()))
    if parsed is None:
        return DeclaredTensor(name, dtype, shape, flexible_unknown=True)
    kind, value = parsed
    if kind == "enumerated":
        return DeclaredTensor(name, dtype, shape, enumerated=value)
    return DeclaredTensor(name, dtype, shape, ranges=value)


def _from_metadata(compiled: Path, meta) -> DeclaredModel:
    record = meta[0] if isinstance(meta, list) else meta
    inputs = {e["name"]: _schema_tensor(e) for e in record["inputSchema"]}
    outputs = {e["name"]: _schema_tensor(e) for e in record["outputSchema"]}
    return DeclaredModel(compiled, inputs, outputs)


_MIL_TENSOR = r"tensor<(\w+),\s*\[([^\]]*)\]>\s+"


def _mil_tensor(name: str, dtype: str, dims: str) -> DeclaredTensor:
    parts = [d.strip() for d in dims.split(",") if d.strip()]
    flexible = any(not p.lstrip("-").isdigit() for p in parts)
    shape = None if flexible else tuple(int(p) for p in parts)
    return DeclaredTensor(name, _NAMED_DTYPES.get(dtype), shape, flexible_unknown=flexible)


def _from_mil(compiled: Path, text: str) -> DeclaredModel | None:
    """Inputs from `func main<...>(tensor<fp32, [?, 1, 160000]> audio, ...)`, outputs from
    `} -> (name, ...);` and each output's `tensor<dtype, [dims]> name = ...` line."""
    head = re.search(r"func\s+main\s*<[^>]*>\s*\((.*?)\)\s*[\[{]", text, re.S)
    tail = re.search(r"\}\s*->\s*\(([^)]*)\)\s*;", text)
    if not head or not tail:
        return None
    inputs = {
        m[3]: _mil_tensor(m[3], m[1], m[2]) for m in re.finditer(_MIL_TENSOR + r"(\w+)", head[1])
    }
    outputs = {}
    for name in (n.strip() for n in tail[1].split(",") if n.strip()):
        m = re.search(_MIL_TENSOR + re.escape(name) + r"\s*=", text)
        outputs[name] = _mil_tensor(name, m[1], m[2]) if m else DeclaredTensor(name, None, None)
    if not inputs:
        return None
    return DeclaredModel(compiled, inputs, outputs)
