"""Reading saved .mlpackages back (works on Linux: no Core ML runtime needed) and hashing them."""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
import logging
import os
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ArtifactError

# Fixed namespace: package item identifiers become a function of the item's path, so the same
# model saved twice gives byte-identical packages (coremltools writes random UUIDs otherwise).
_ITEM_NAMESPACE = uuid.UUID("5d1c9a64-3f0e-4b8e-9d57-2c3f6c0a9e11")


@contextlib.contextmanager
def quiet_warnings() -> Iterator[None]:
    """coremltools logs and warns at length on Linux (no libcoremlpython, untested torch,
    scikit-learn): silence its logger and Python warnings, restoring both afterwards."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def quiet_coremltools() -> Iterator[None]:
    """`quiet_warnings`, and stderr too: coremltools' tqdm progress bars read TQDM_DISABLE
    only at import, so a converter's output stays clean only with stderr redirected."""
    with quiet_warnings(), contextlib.redirect_stderr(io.StringIO()):
        yield


def make_deterministic(package: Path) -> None:
    """Replace the random item UUIDs in Manifest.json by UUIDv5s of each item's path, and
    write the model specification with protobuf's deterministic serialisation.

    Why the second: the user-defined metadata is a protobuf map, and protobuf's default
    serialisation writes map entries in hash-table order, which the upb runtime seeds per
    process: the same model saved by two processes gave different bytes (measured). The
    deterministic serialisation sorts map keys; the parsed model is the same.
    """
    from coremltools.proto import Model_pb2

    spec_path = Path(package) / "Data" / "com.apple.CoreML" / "model.mlmodel"
    if spec_path.is_file():
        spec = Model_pb2.Model()
        spec.ParseFromString(spec_path.read_bytes())
        spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    manifest_path = Path(package) / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    renamed = {
        old: str(uuid.uuid5(_ITEM_NAMESPACE, info["path"]))
        for old, info in manifest["itemInfoEntries"].items()
    }
    manifest["itemInfoEntries"] = {
        renamed[k]: v for k, v in sorted(manifest["itemInfoEntries"].items())
    }
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest["itemInfoEntries"] = dict(sorted(manifest["itemInfoEntries"].items()))
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def is_content(relative: Path) -> bool:
    """Whether a file, by its path inside a package or bundle, is part of it. Not: dotfiles and
    dot-folders anywhere on the path (Finder's `.DS_Store`, AppleDouble `._*`, our hidden
    `.tmp` staging dirs) and Finder's `__MACOSX` zip litter. The one rule for hashing,
    verifying, zipping and publishing (issue #21 item 11)."""
    return not any(part.startswith(".") or part == "__MACOSX" for part in Path(relative).parts)


def package_files(package: Path) -> list[Path]:
    """The files that make up a package or bundle folder (`is_content`), sorted."""
    package = Path(package)
    return sorted(
        p for p in package.rglob("*") if p.is_file() and is_content(p.relative_to(package))
    )


def package_size(package: Path) -> int:
    return sum(p.stat().st_size for p in package_files(package))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hash(package: Path) -> tuple[str, dict[str, str]]:
    """SHA-256 of every file, and one hash over the sorted (relative path, file hash) list."""
    package = Path(package)
    files = {p.relative_to(package).as_posix(): file_sha256(p) for p in package_files(package)}
    digest = hashlib.sha256()
    for rel, sha in sorted(files.items()):
        digest.update(f"{rel}\0{sha}\n".encode())
    return digest.hexdigest(), files


def has_entry(directory: Path, name: str) -> bool:
    """Whether `directory` lists an entry named exactly `name`. Not `(directory / name).exists()`:
    macOS file systems (APFS by default) are case-insensitive, so there a bundle's
    `manifest.json` answers to `Manifest.json`, the name that marks an .mlpackage."""
    try:
        return name in os.listdir(directory)
    except OSError:  # not a directory, or unreadable: no entry of that name
        return False


def is_package_dir(path: Path) -> bool:
    """An .mlpackage directory: named so, or holding a `Manifest.json` (exactly that name)."""
    path = Path(path)
    return path.is_dir() and (path.suffix == ".mlpackage" or has_entry(path, "Manifest.json"))


def collect_packages(paths: Iterable[Path]) -> list[Path]:
    """.mlpackages named directly, or found inside build directories and bundles (the
    packages directly inside each), by their names in the directory listings."""
    found: list[Path] = []
    paths = [Path(p) for p in paths]
    for path in paths:
        if path.suffix == ".mlpackage" or is_package_dir(path):
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(path / n for n in os.listdir(path) if n.endswith(".mlpackage")))
        else:
            raise ArtifactError(f"not an .mlpackage or a directory of them: {path}")
    if not found:
        raise ArtifactError("no .mlpackage found in " + ", ".join(map(str, paths)))
    return found


def check_package(path: Path) -> Path:
    """Structural checks with one clear error: exists, Manifest.json parses, files present."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"mlpackage not found: {path}")
    if not path.is_dir() or not has_entry(path, "Manifest.json"):
        raise ArtifactError(f"not an .mlpackage (no Manifest.json): {path}")
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        entries = manifest["itemInfoEntries"]
        root = entries[manifest["rootModelIdentifier"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"corrupt Manifest.json in {path}") from exc
    for info in entries.values():
        item = path / "Data" / info["path"]
        if not item.exists():
            raise ArtifactError(f"{path.name}: missing {info['path']}")
    if not (path / "Data" / root["path"]).is_file():
        raise ArtifactError(f"{path.name}: missing model specification")
    return path


def load_mlmodel(path: Path):
    """ct.models.MLModel without a Core ML runtime, with structural checks first."""
    import coremltools as ct

    check_package(path)
    try:
        with quiet_coremltools():
            return ct.models.MLModel(str(path), skip_model_load=True)
    except Exception as exc:
        raise ArtifactError(
            f"cannot read {path}: {exc.__class__.__name__}: {str(exc)[:160]}"
        ) from exc


def load_program(path: Path):
    """The saved MIL program (pymil Program), read from disk through coremltools' own loader."""
    from coremltools.converters.mil.frontend.milproto.load import load

    mlmodel = load_mlmodel(path)
    spec = mlmodel.get_spec()
    if not spec.HasField("mlProgram"):
        raise ArtifactError(
            f"{path} is not an ML program (neural network models are not supported)"
        )
    try:
        with quiet_coremltools():
            return load(spec, spec.specificationVersion, mlmodel.weights_dir)
    except Exception as exc:
        raise ArtifactError(f"cannot load the MIL program of {path}: {str(exc)[:160]}") from exc


def iter_ops(block):
    for op in block.operations:
        yield op
        for inner in op.blocks:
            yield from iter_ops(inner)


def op_histogram(program) -> collections.Counter:
    return collections.Counter(op.op_type for op in iter_ops(program.functions["main"]))


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str
    flexible: dict[int, tuple[int, int]] = field(default_factory=dict)
    description: str = ""
    # enumerated shapes (`enumeratedShapes` in the spec): axis -> the sizes it takes, sorted,
    # for each axis that differs between the shapes; and the shapes as declared (coremltools
    # writes the default first). `shape` is the default.
    enumerated: dict[int, tuple[int, ...]] = field(default_factory=dict)
    enumerated_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def sizes(self, axis: int) -> tuple[int, ...] | None:
        """The sizes Core ML accepts along `axis`; None for a range without an upper bound."""
        if axis in self.enumerated:
            return self.enumerated[axis]
        if axis in self.flexible:
            lower, upper = self.flexible[axis]
            return tuple(range(lower, upper + 1)) if upper >= 0 else None
        return (self.shape[axis],)


@dataclass
class PackageInfo:
    path: Path
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    metadata: dict[str, str]
    author: str
    license: str
    version: str
    description: str
    op_histogram: dict[str, int]
    size_bytes: int
    specification_version: int

    def as_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        d = asdict(self)
        d["path"] = str(self.path)
        return d


_DTYPES = {65568: "float32", 65552: "float16", 131104: "int32", 65600: "float64"}


def _tensor_info(feature) -> TensorInfo:
    arr = feature.type.multiArrayType
    shape = tuple(int(d) for d in arr.shape)
    flexible = {}
    enumerated_shapes: list[tuple[int, ...]] = []
    which = arr.WhichOneof("ShapeFlexibility")
    if which == "shapeRange":
        for axis, rng in enumerate(arr.shapeRange.sizeRanges):
            if rng.lowerBound != rng.upperBound:
                flexible[axis] = (int(rng.lowerBound), int(rng.upperBound))
    elif which == "enumeratedShapes":
        enumerated_shapes = [tuple(int(d) for d in e.shape) for e in arr.enumeratedShapes.shapes]
    axes = zip(*enumerated_shapes, strict=True) if len(enumerated_shapes) > 1 else ()
    enumerated = {
        axis: tuple(sorted(set(sizes))) for axis, sizes in enumerate(axes) if len(set(sizes)) > 1
    }
    return TensorInfo(
        feature.name,
        shape,
        _DTYPES.get(arr.dataType, str(arr.dataType)),
        flexible,
        feature.shortDescription,
        enumerated,
        enumerated_shapes,
    )


def read_io(path: Path) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """A package's declared inputs and outputs, from its spec only (no MIL program loaded)."""
    desc = load_mlmodel(path).get_spec().description
    return [_tensor_info(f) for f in desc.input], [_tensor_info(f) for f in desc.output]


def inspect_package(path: Path) -> PackageInfo:
    mlmodel = load_mlmodel(path)
    spec = mlmodel.get_spec()
    desc = spec.description
    return PackageInfo(
        path=Path(path),
        inputs=[_tensor_info(f) for f in desc.input],
        outputs=[_tensor_info(f) for f in desc.output],
        metadata=dict(desc.metadata.userDefined),
        author=desc.metadata.author,
        license=desc.metadata.license,
        version=desc.metadata.versionString,
        description=desc.metadata.shortDescription,
        op_histogram=dict(sorted(op_histogram(load_program(path)).items())),
        size_bytes=package_size(Path(path)),
        specification_version=spec.specificationVersion,
    )
