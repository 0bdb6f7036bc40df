"""Compiled models: `xcrun coremlcompiler compile` turns an .mlpackage into the .mlmodelc an app
loads directly (no compile step on the device, the first load is faster).

Only macOS with Xcode (or its command line tools) has `xcrun`; elsewhere bundles ship without
compiled models, say so once, and record `"compiled": NOT_COMPILED` in each manifest entry.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import tree_hash

NOT_COMPILED = "not compiled (xcrun not available)"
NOTICE = (
    "xcrun not found (Core ML compilation needs macOS with Xcode): the bundle ships "
    ".mlpackage files only; apps compile them on first load"
)
TIMEOUT_S = 1800


def find_xcrun() -> str | None:
    """Path of `xcrun` on PATH, or None."""
    return shutil.which("xcrun")


def compiled_name(package: Path) -> str:
    return Path(package).name.removesuffix(".mlpackage") + ".mlmodelc"


def compile_package(package: Path, out_dir: Path, *, xcrun: str | None = None) -> Path:
    """`xcrun coremlcompiler compile <package> <tmp>` -> `out_dir/<stem>.mlmodelc`, atomically:
    compiled in a temp dir beside the target and renamed into place only when complete, so a
    failure leaves nothing behind (and an existing .mlmodelc untouched)."""
    from coreml_diarize.atomic import _replace

    package, out_dir = Path(package), Path(out_dir)
    xcrun = xcrun or find_xcrun()
    if xcrun is None:
        raise DiarizeError(f"cannot compile {package.name}: {NOTICE}")
    name = compiled_name(package)
    target = out_dir / name
    # hidden temp dir: the bundle's file listing and zip never see it, and it is removed anyway
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out_dir))
    try:
        try:
            subprocess.run(
                [xcrun, "coremlcompiler", "compile", str(package), str(staging)],
                check=True,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_S,
            )
        except subprocess.CalledProcessError as exc:
            detail = (exc.stderr or exc.stdout or "").strip().splitlines()
            raise ArtifactError(
                f"coremlcompiler failed on {package.name} (exit {exc.returncode})"
                + (f": {detail[-1]}" if detail else "")
            ) from exc
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ArtifactError(
                f"could not run {xcrun} coremlcompiler on {package.name}: {exc}"
            ) from exc
        produced = staging / name
        if not produced.is_dir() or not any(produced.iterdir()):
            raise ArtifactError(f"coremlcompiler reported success but wrote no {name}")
        _replace(produced, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def compiled_entry(package: Path, bundle_dir: Path, xcrun: str | None) -> dict | str:
    """Compile a bundle's package beside it; its manifest field: the .mlmodelc's name, tree
    hash and files' SHA-256s, or NOT_COMPILED without xcrun."""
    if xcrun is None:
        return NOT_COMPILED
    target = compile_package(package, bundle_dir, xcrun=xcrun)
    tree, files = tree_hash(target)
    return {"name": target.name, "tree_sha256": tree, "files": files}


def verify_compiled_entry(bundle: Path, entry: dict) -> list[str]:
    from .bundle import tree_problems

    info = entry["compiled"]
    name = str(info.get("name", ""))
    if Path(name).name != name or not name.endswith(".mlmodelc"):
        return [f"{entry['name']}: compiled model {name!r} is not a <stem>.mlmodelc beside it"]
    return tree_problems(Path(bundle) / info["name"], info["files"], info["name"])
