"""Read a saved .mlpackage straight from disk into plain Python structures.

Deliberately independent of coremltools' converter state and of its pymil loader: the point
of the reference executor is to check what was *written*, so we parse the protobuf and the
weight blob ourselves (only the generated protobuf classes of coremltools are used). Every
problem with the files is reported as a one-line `ArtifactError`.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError

# MIL data type name (proto enum) -> (short name used in messages, numpy storage dtype, bits).
# Sub-byte types are unpacked to uint8/int8; bool is stored one byte per element.
_DTYPES: dict[str, tuple[str, Any, int]] = {
    "BOOL": ("bool", np.bool_, 8),
    "STRING": ("string", None, 0),
    "FLOAT16": ("fp16", np.float16, 16),
    "FLOAT32": ("fp32", np.float32, 32),
    "FLOAT64": ("fp64", np.float64, 64),
    "INT8": ("int8", np.int8, 8),
    "INT16": ("int16", np.int16, 16),
    "INT32": ("int32", np.int32, 32),
    "INT64": ("int64", np.int64, 64),
    "INT4": ("int4", np.int8, 4),
    "UINT8": ("uint8", np.uint8, 8),
    "UINT16": ("uint16", np.uint16, 16),
    "UINT32": ("uint32", np.uint32, 32),
    "UINT64": ("uint64", np.uint64, 64),
    "UINT4": ("uint4", np.uint8, 4),
    "UINT2": ("uint2", np.uint8, 2),
    "UINT1": ("uint1", np.uint8, 1),
    "UINT6": ("uint6", np.uint8, 6),
    "UINT3": ("uint3", np.uint8, 3),
}

# Core ML model-description array types (FeatureTypes.proto) -> numpy.
_ARRAY_DTYPES = {
    65568: np.float32,
    65552: np.float16,
    65600: np.float64,
    131104: np.int32,
    131080: np.int8,
}

_BLOB_SENTINEL = 0xDEADBEEF
_BLOB_HEADER = 64  # storage header: uint32 count, uint32 version, padding
_BLOB_METADATA = struct.Struct("<IIQQ")  # sentinel, mil dtype, size in bytes, data offset


@dataclass(frozen=True)
class ValueType:
    """Declared type of a MIL value. `shape` is None for unknown rank; a dim is None when
    it is flexible (unknown) in the program."""

    dtype: str  # MIL short name: fp16, fp32, int32, bool, uint4, string...
    shape: tuple[int | None, ...] | None

    @property
    def np_dtype(self) -> Any:
        for name, np_dtype, _ in _DTYPES.values():
            if name == self.dtype:
                return np_dtype
        return None

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(d is not None for d in self.shape)


@dataclass(frozen=True)
class Binding:
    """One argument of an op input: a reference to a named value, or an inline literal."""

    name: str | None = None
    value: Any = None


@dataclass
class Node:
    op_type: str
    name: str
    inputs: dict[str, list[Binding]]
    outputs: list[tuple[str, ValueType]]
    attributes: dict[str, Any]
    blocks: list[BlockSpec] = field(default_factory=list)

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.outputs]


@dataclass
class BlockSpec:
    inputs: list[tuple[str, ValueType]]
    nodes: list[Node]
    outputs: list[str]


@dataclass(frozen=True)
class FeatureSpec:
    """An input or output as the model description declares it (what callers see)."""

    name: str
    dtype: Any  # numpy dtype
    shape: tuple[int, ...]
    flexible: bool
    # a range-flexible input: (lower, upper) per dimension, upper -1 = unbounded
    ranges: tuple[tuple[int, int], ...] = ()
    # an enumerated-shapes input: the shapes it accepts
    enumerated: tuple[tuple[int, ...], ...] = ()

    def shape_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why Core ML would refuse an input of `shape` (None if it accepts it): the declared
        ranges or enumerated shapes, which the MIL program's own types do not carry."""
        if self.enumerated and tuple(shape) not in self.enumerated:
            return f"accepts only the shapes {', '.join(map(str, self.enumerated))}"
        for axis, ((lower, upper), size) in enumerate(zip(self.ranges, shape, strict=False)):
            if size < lower or (upper >= 0 and size > upper):
                bound = f"{lower}..{upper}" if upper >= 0 else f">= {lower}"
                return f"accepts {bound} along axis {axis}, got {size}"
        return None


@dataclass
class MILProgram:
    path: Path
    spec_version: int
    opset: str
    function: str
    inputs: list[tuple[str, ValueType]]
    main: BlockSpec
    described_inputs: list[FeatureSpec]
    described_outputs: list[FeatureSpec]
    blob_ranges: dict[str, BlobRange] = field(default_factory=dict)


@dataclass(frozen=True)
class BlobRange:
    """Where a const's payload lives: file, byte offset of the data, byte count, MIL dtype."""

    file: Path
    offset: int
    nbytes: int
    dtype: str


def _fail(path: Path, what: str) -> ArtifactError:
    return ArtifactError(f"{path}: {what}")


def locate_model(path: str | Path) -> tuple[Path, Path]:
    """Return (model.mlmodel file, the folder `@model_path` refers to) of an .mlpackage."""
    pkg = Path(path)
    if not pkg.exists():
        raise _fail(pkg, "no such mlpackage")
    if pkg.is_file():
        # A bare .mlmodel: weights (if any) sit beside it.
        return pkg, pkg.parent
    manifest = pkg / "Manifest.json"
    try:
        meta = json.loads(manifest.read_text())
        root_id = meta["rootModelIdentifier"]
        rel = meta["itemInfoEntries"][root_id]["path"]
    except FileNotFoundError:
        raise _fail(pkg, "Manifest.json is missing (not an mlpackage)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise _fail(pkg, f"Manifest.json is corrupt ({type(exc).__name__}: {exc})") from None
    model_file = pkg / "Data" / rel
    if not model_file.is_file():
        raise _fail(
            pkg, f"model spec {model_file.relative_to(pkg)} named by Manifest.json is missing"
        )
    return model_file, model_file.parent


def _tensor_spec(value_type: Any) -> ValueType:
    which = value_type.WhichOneof("type")
    if which != "tensorType":
        # Lists/tuples/dicts/states never appear in the programs we convert.
        return ValueType(dtype=str(which), shape=None)
    tt = value_type.tensorType
    dtype_name = _enum_name(tt.dataType)
    short = _DTYPES.get(dtype_name, (dtype_name.lower(), None, 0))[0]
    if tt.rank < 0:
        return ValueType(short, None)
    dims: list[int | None] = []
    for d in tt.dimensions:
        dims.append(d.constant.size if d.WhichOneof("dimension") == "constant" else None)
    return ValueType(short, tuple(dims))


def _enum_name(value: int) -> str:
    from coremltools.proto import MIL_pb2

    return MIL_pb2.DataType.Name(value)


class _BlobFile:
    """A weight.bin read once into memory; payloads are parsed on demand and checked."""

    def __init__(self, pkg: Path, file: Path) -> None:
        self.pkg = pkg
        self.file = file
        try:
            self.data = file.read_bytes()
        except FileNotFoundError:
            raise _fail(pkg, f"weight file {file.name} is missing") from None
        except OSError as exc:
            raise _fail(pkg, f"weight file {file.name} cannot be read ({exc})") from None
        if len(self.data) < _BLOB_HEADER:
            raise _fail(pkg, f"weight file {file.name} is truncated ({len(self.data)} bytes)")

    def read(self, offset: int, spec: ValueType) -> tuple[np.ndarray, BlobRange]:
        end_meta = offset + _BLOB_METADATA.size
        if offset < _BLOB_HEADER or end_meta > len(self.data):
            raise _fail(
                self.pkg, f"weight file {self.file.name} is truncated (no blob at offset {offset})"
            )
        sentinel, _code, nbytes, data_offset = _BLOB_METADATA.unpack_from(self.data, offset)
        if sentinel != _BLOB_SENTINEL:
            raise _fail(
                self.pkg,
                f"weight file {self.file.name} is corrupt (bad blob marker at offset {offset})",
            )
        if data_offset + nbytes > len(self.data):
            raise _fail(
                self.pkg,
                f"weight file {self.file.name} is truncated: blob at {data_offset} needs "
                f"{nbytes} bytes, file has {len(self.data)}",
            )
        if spec.shape is None or not spec.is_static:
            raise _fail(self.pkg, "a weight blob has no static shape")
        count = int(np.prod(spec.shape, dtype=np.int64))
        raw = np.frombuffer(self.data, dtype=np.uint8, count=nbytes, offset=data_offset)
        arr = _decode_bytes(raw, spec, count, self.pkg)
        return arr.reshape(spec.shape), BlobRange(self.file, data_offset, nbytes, spec.dtype)


def _bits(dtype: str) -> int:
    for name, _, bits in _DTYPES.values():
        if name == dtype:
            return bits
    return 0


def _decode_bytes(raw: np.ndarray, spec: ValueType, count: int, pkg: Path) -> np.ndarray:
    """Turn packed bytes into a flat array of `count` elements of the declared dtype."""
    np_dtype = spec.np_dtype
    bits = _bits(spec.dtype)
    if np_dtype is None or bits == 0:
        raise _fail(pkg, f"unsupported weight dtype {spec.dtype}")
    if bits >= 8:
        need = count * bits // 8
        if raw.size < need:
            raise _fail(pkg, f"weight blob too short: {raw.size} bytes for {count} x {spec.dtype}")
        return raw[:need].view(np_dtype).copy()
    # Sub-byte: LSB-first packing, as in constexpr_lut_to_dense's documentation.
    need = -(-count * bits // 8)
    if raw.size < need:
        raise _fail(pkg, f"weight blob too short: {raw.size} bytes for {count} x {spec.dtype}")
    return unpack_bits(raw[:need], bits, count, signed=spec.dtype.startswith("int"))


def unpack_bits(packed: np.ndarray, nbits: int, count: int, *, signed: bool = False) -> np.ndarray:
    """Unpack `count` n-bit fields stored LSB-first across consecutive bytes."""
    bitarray = np.unpackbits(packed.astype(np.uint8, copy=False), bitorder="little")
    bitarray = bitarray[: count * nbits].reshape(count, nbits).astype(np.uint16)
    values = (bitarray << np.arange(nbits, dtype=np.uint16)).sum(axis=1)
    if signed:
        values = values.astype(np.int16)
        values[values >= (1 << (nbits - 1))] -= 1 << nbits
        return values.astype(np.int8)
    return values.astype(np.uint8)


class _ValueReader:
    def __init__(self, pkg: Path, model_dir: Path) -> None:
        self.pkg = pkg
        self.model_dir = model_dir
        self.blobs: dict[Path, _BlobFile] = {}

    def blob_file(self, file_name: str) -> _BlobFile:
        rel = (
            file_name.replace("@model_path/", "", 1)
            if file_name.startswith("@model_path/")
            else file_name
        )
        path = self.model_dir / rel
        if path not in self.blobs:
            self.blobs[path] = _BlobFile(self.pkg, path)
        return self.blobs[path]

    def value(self, value: Any) -> tuple[Any, BlobRange | None]:
        """Decode a proto Value into numpy / str; also return its blob range, if any."""
        spec = _tensor_spec(value.type)
        which = value.WhichOneof("value")
        if which == "blobFileValue":
            arr, where = self.blob_file(value.blobFileValue.fileName).read(
                value.blobFileValue.offset, spec
            )
            return arr, where
        if which != "immediateValue":
            raise _fail(self.pkg, f"value of kind {which!r} is not supported")
        imm = value.immediateValue
        kind = imm.WhichOneof("value")
        if kind != "tensor":
            raise _fail(self.pkg, f"immediate value of kind {kind!r} is not supported")
        return self._tensor(imm.tensor, spec), None

    def _tensor(self, tv: Any, spec: ValueType) -> Any:
        kind = tv.WhichOneof("value")
        shape = spec.shape or ()
        if spec.dtype == "string":
            vals = list(tv.strings.values)
            return vals[0] if shape == () else np.array(vals, dtype=object).reshape(shape)
        if shape is None or any(d is None for d in shape):
            raise _fail(self.pkg, "an inline constant has no static shape")
        count = int(np.prod(shape, dtype=np.int64))
        np_dtype = spec.np_dtype
        if np_dtype is None:
            raise _fail(self.pkg, f"unsupported constant dtype {spec.dtype}")
        if kind == "bytes":
            raw = np.frombuffer(tv.bytes.values, dtype=np.uint8)
            arr = _decode_bytes(raw, spec, count, self.pkg)
        elif kind in ("floats", "ints", "bools", "longInts", "doubles"):
            arr = np.array(list(getattr(tv, kind).values)).astype(np_dtype)
        elif kind is None:
            arr = np.zeros(0, dtype=np_dtype)
        else:
            raise _fail(self.pkg, f"constant of kind {kind!r} is not supported")
        if arr.size != count:
            raise _fail(self.pkg, f"constant holds {arr.size} values, its type says {count}")
        return arr.reshape(shape)


def _op_name(op: Any, reader: _ValueReader) -> str:
    if "name" in op.attributes:
        val, _ = reader.value(op.attributes["name"])
        return str(val)
    return op.outputs[0].name if op.outputs else op.type


def _read_block(block: Any, reader: _ValueReader, ranges: dict[str, BlobRange]) -> BlockSpec:
    nodes: list[Node] = []
    for op in block.operations:
        inputs: dict[str, list[Binding]] = {}
        for arg_name, argument in op.inputs.items():
            bindings = []
            for b in argument.arguments:
                kind = b.WhichOneof("binding")
                if kind == "name":
                    bindings.append(Binding(name=b.name))
                elif kind == "value":
                    val, _ = reader.value(b.value)
                    bindings.append(Binding(value=val))
                else:
                    raise _fail(reader.pkg, f"op {op.type}: unsupported argument binding {kind!r}")
            inputs[arg_name] = bindings
        attributes: dict[str, Any] = {}
        for key, val in op.attributes.items():
            decoded, where = reader.value(val)
            attributes[key] = decoded
            if where is not None and op.outputs:
                # A const's payload is keyed by its output; iOS16 constexpr ops keep their
                # parameters as attributes, keyed "<output>.<parameter>".
                out = op.outputs[0].name
                ranges[out if op.type == "const" else f"{out}.{key}"] = where
            if op.type != "const" and key != "name" and key not in inputs:
                # Same access path for a parameter whether it is an input or an attribute.
                inputs[key] = [Binding(value=decoded)]
        outputs = [(o.name, _tensor_spec(o.type)) for o in op.outputs]
        blocks = [_read_block(b, reader, ranges) for b in op.blocks]
        nodes.append(Node(op.type, _op_name(op, reader), inputs, outputs, attributes, blocks))
    inputs = [(i.name, _tensor_spec(i.type)) for i in block.inputs]
    return BlockSpec(inputs=inputs, nodes=nodes, outputs=list(block.outputs))


def _features(features: Any) -> list[FeatureSpec]:
    out = []
    for f in features:
        which = f.type.WhichOneof("Type")
        if which != "multiArrayType":
            out.append(FeatureSpec(f.name, None, (), False))
            continue
        ma = f.type.multiArrayType
        flexibility = ma.WhichOneof("ShapeFlexibility")
        ranges = enumerated = ()
        if flexibility == "shapeRange":
            ranges = tuple((int(r.lowerBound), int(r.upperBound)) for r in ma.shapeRange.sizeRanges)
        elif flexibility == "enumeratedShapes":
            enumerated = tuple(tuple(int(d) for d in e.shape) for e in ma.enumeratedShapes.shapes)
        out.append(
            FeatureSpec(
                f.name,
                _ARRAY_DTYPES.get(ma.dataType),
                tuple(ma.shape),
                flexibility is not None,
                ranges,
                enumerated,
            )
        )
    return out


def read_mil_program(path: str | Path) -> MILProgram:
    """Parse an .mlpackage (or .mlmodel) into a `MILProgram`, reading every weight blob."""
    from coremltools.proto import Model_pb2
    from google.protobuf.message import DecodeError

    pkg = Path(path)
    model_file, model_dir = locate_model(pkg)
    spec = Model_pb2.Model()
    try:
        spec.ParseFromString(model_file.read_bytes())
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise _fail(pkg, f"model spec cannot be parsed ({exc})") from None
    if spec.WhichOneof("Type") != "mlProgram":
        raise _fail(pkg, f"not an ML Program (model type {spec.WhichOneof('Type')!r})")
    program = spec.mlProgram
    fname = spec.description.defaultFunctionName or "main"
    if fname not in program.functions:
        raise _fail(pkg, f"program has no function {fname!r}")
    func = program.functions[fname]
    opset = func.opset
    if opset not in func.block_specializations:
        raise _fail(pkg, f"function {fname!r} has no block for opset {opset!r}")
    reader = _ValueReader(pkg, model_dir)
    ranges: dict[str, BlobRange] = {}
    main = _read_block(func.block_specializations[opset], reader, ranges)
    inputs = [(i.name, _tensor_spec(i.type)) for i in func.inputs]
    return MILProgram(
        path=pkg,
        spec_version=spec.specificationVersion,
        opset=opset,
        function=fname,
        inputs=inputs,
        main=main,
        described_inputs=_features(spec.description.input),
        described_outputs=_features(spec.description.output),
        blob_ranges=ranges,
    )
