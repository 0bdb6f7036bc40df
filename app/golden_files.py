"""Golden I/O files: the on-disk format of a package's golden case, and its place in a bundle.

Layout inside a bundle (one folder per package, named after the package's stem):

    golden/<stem>/golden.json          header: names, shapes, dtype, byte order, files, SHA-256s,
                                       tolerance per output (only the fields that are set)
    golden/<stem>/input.<name>.bin     raw little-endian float32, C (row-major) order
    golden/<stem>/output.<name>.bin    the same, the PyTorch reference's output

What goes in them (real speech, PyTorch references) is computed in `golden.py`; this module
only writes, reads and verifies them, so the bundle code needs nothing of the computation.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import file_sha256, tree_hash
from coreml_diarize.specs import Tolerance

GOLDEN_DIR = "golden"
HEADER = "golden.json"
FORMAT = "coreml-diarize-golden"
FORMAT_VERSION = 1
DTYPE = "float32"
BYTE_ORDER = "little"

Arrays = dict[str, np.ndarray]


@dataclass
class Golden:
    """One package's golden case (what `write_golden` stores, what `read_golden` returns)."""

    package: str  # the package's file name, e.g. pyannote_segmentation.mlpackage
    model: str  # spec key
    recipe: str  # fp32 | fp16 | palettize8 | ...
    compute_units: str  # the units the tolerance applies to (the package's intended units)
    trained: bool
    inputs: Arrays
    outputs: Arrays
    tolerances: dict[str, Tolerance]  # per output
    # per output: how much the reference moves across the validation inputs (from the package's
    # validation report): the unit of max_relative_to_spread
    reference_spread: dict[str, float] = field(default_factory=dict)
    description: str = ""


def _file(kind: str, name: str) -> str:
    return f"{kind}.{name}.bin"


def _tolerance_fields(tol: Tolerance) -> dict[str, float]:
    """The fields of a Tolerance that are set (argmax_margin only where argmax is checked)."""
    out = {k: v for k, v in asdict(tol).items() if v is not None}
    if tol.min_argmax_agreement is None:
        out.pop("argmax_margin", None)
    return out


def write_golden(directory: Path, golden: Golden) -> Path:
    """Write `golden` into `directory` (created; must not hold another package's files).
    Returns the header's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def tensor(kind: str, name: str, array: np.ndarray) -> dict[str, Any]:
        array = np.asarray(array)
        if not np.all(np.isfinite(array)):
            raise DiarizeError(f"golden {kind} {name} of {golden.package} is not finite")
        path = directory / _file(kind, name)
        path.write_bytes(np.ascontiguousarray(array, dtype="<f4").tobytes())
        return {
            "name": name,
            "shape": [int(d) for d in array.shape],
            "dtype": DTYPE,
            "file": path.name,
            "bytes": path.stat().st_size,
            "sha256": file_sha256(path),
        }

    outputs = []
    for name, array in golden.outputs.items():
        entry = tensor("output", name, array)
        entry["tolerance"] = _tolerance_fields(golden.tolerances[name])
        if name in golden.reference_spread:
            entry["reference_spread"] = float(golden.reference_spread[name])
        outputs.append(entry)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package": golden.package,
        "model": golden.model,
        "recipe": golden.recipe,
        "compute_units": golden.compute_units,
        "trained": golden.trained,
        "dtype": DTYPE,
        "byte_order": BYTE_ORDER,
        "layout": "row-major (C order), no header: prod(shape) x 4 bytes",
        "description": golden.description,
        "inputs": [tensor("input", n, a) for n, a in golden.inputs.items()],
        "outputs": outputs,
    }
    path = directory / HEADER
    path.write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
    return path


def golden_problems(directory: Path) -> list[str]:
    """Does the folder hold what its header says (files present, sizes = shapes x 4 bytes,
    SHA-256s match)? Returns the problems found (empty = consistent)."""
    directory = Path(directory)
    label = directory.name
    try:
        header = json.loads((directory / HEADER).read_text())
        tensors = list(header["inputs"]) + list(header["outputs"])
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{label}/{HEADER}: missing or corrupt"]
    problems = []
    if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
        problems.append(f"{label}/{HEADER}: not a {FORMAT} v{FORMAT_VERSION} header")
    if header.get("dtype") != DTYPE or header.get("byte_order") != BYTE_ORDER:
        problems.append(f"{label}/{HEADER}: dtype/byte order must be {DTYPE}/{BYTE_ORDER}")
    for t in tensors:
        try:
            path = directory / t["file"]
            expected = 4 * math.prod(int(d) for d in t["shape"])
            if Path(t["file"]).name != t["file"] or t.get("dtype", DTYPE) != DTYPE:
                raise ValueError
        except (KeyError, TypeError, ValueError):
            problems.append(f"{label}/{HEADER}: malformed tensor entry {t!r:.80}")
            continue
        if not path.is_file():
            problems.append(f"{label}/{t['file']}: missing")
        elif path.stat().st_size != expected:
            problems.append(
                f"{label}/{t['file']}: {path.stat().st_size} bytes, header says shape "
                f"{tuple(t['shape'])} ({expected} bytes)"
            )
        elif file_sha256(path) != t.get("sha256"):
            problems.append(f"{label}/{t['file']}: SHA-256 differs from {HEADER}")
    return problems


def read_golden(directory: Path) -> Golden:
    """Read a golden folder back; ArtifactError if it is inconsistent (see `golden_problems`)."""
    directory = Path(directory)
    problems = golden_problems(directory)
    if problems:
        raise ArtifactError(f"golden data in {directory} is corrupt: {'; '.join(problems[:3])}")
    header = json.loads((directory / HEADER).read_text())

    def load(t: dict) -> np.ndarray:
        data = (directory / t["file"]).read_bytes()
        return np.frombuffer(data, dtype="<f4").reshape(t["shape"]).astype(np.float32)

    known = {f.name for f in fields(Tolerance)}
    outs = header["outputs"]
    return Golden(
        package=header["package"],
        model=header["model"],
        recipe=header["recipe"],
        compute_units=header["compute_units"],
        trained=bool(header["trained"]),
        inputs={t["name"]: load(t) for t in header["inputs"]},
        outputs={t["name"]: load(t) for t in outs},
        tolerances={
            t["name"]: Tolerance(**{k: v for k, v in t["tolerance"].items() if k in known})
            for t in outs
        },
        reference_spread={
            t["name"]: t["reference_spread"] for t in outs if "reference_spread" in t
        },
        description=header.get("description", ""),
    )


# --- bundles: copying, hashing and verifying golden folders ----------------------------------


def golden_stem(package_name: str) -> str:
    return package_name.removesuffix(".mlpackage")


def add_golden(golden_root: Path, bundle_dir: Path, package_name: str) -> dict:
    """Copy golden_root/<stem>/ into bundle_dir/golden/<stem>/; its manifest entry (relative
    folder and every file's SHA-256, hashed from the copy)."""
    import shutil

    stem = golden_stem(package_name)
    source = Path(golden_root) / stem
    if not (source / HEADER).is_file():
        raise DiarizeError(f"no golden data for {package_name} in {golden_root}")
    problems = golden_problems(source)
    if not problems and json.loads((source / HEADER).read_text())["package"] != package_name:
        problems = [f"{stem}/{HEADER} is for another package"]
    if problems:
        raise ArtifactError(f"golden data for {package_name} is inconsistent: {problems[0]}")
    target = Path(bundle_dir) / GOLDEN_DIR / stem
    shutil.copytree(source, target)
    tree, files = tree_hash(target)
    return {"dir": f"{GOLDEN_DIR}/{stem}", "header": HEADER, "tree_sha256": tree, "files": files}


def verify_golden_entry(bundle: Path, entry: dict) -> list[str]:
    """Hashes of the package's golden files against the manifest, then header vs .bin files."""
    from .bundle_files import tree_problems

    info = entry["golden"]
    parts = Path(str(info.get("dir", ""))).parts
    if len(parts) != 2 or parts[0] != GOLDEN_DIR or parts[1] in ("..", "."):
        return [f"{entry['name']}: golden folder {info.get('dir')!r} is not golden/<stem>"]
    directory = Path(bundle) / info["dir"]
    problems = tree_problems(directory, info["files"], info["dir"])
    if not problems and directory.is_dir():
        problems += [f"{GOLDEN_DIR}/{p}" for p in golden_problems(directory)]
    if not problems:  # golden I/O is per package: a renamed package's golden must follow it
        named = json.loads((directory / HEADER).read_text()).get("package")
        if named != entry["name"]:
            problems.append(f"{info['dir']}/{HEADER}: is for {named}, not {entry['name']}")
    return problems
