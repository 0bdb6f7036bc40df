"""Compiled models: `xcrun coremlcompiler compile` turns an .mlpackage into the .mlmodelc an app
loads directly (no compile step on the device, the first load is faster).

Only macOS with Xcode has the compiler. Every Mac has `/usr/bin/xcrun`, but with only the
Command Line Tools (no Xcode) `xcrun coremlcompiler` fails with `xcrun: error: unable to find
utility "coremlcompiler", not a developer tool or in PATH` (exit 72; reported in
apple/ml-stable-diffusion#17 and hollance/MobileNet-CoreML#3). So the compiler counts as
available only when `xcrun --find coremlcompiler` succeeds (xcrun(1): `--find` prints a tool's
path, or fails when the active developer directory has no such tool). Without it bundles ship
without compiled models, say so once, and record `"compiled": NOT_COMPILED` in each manifest
entry; a compiler that exists and then fails still stops the command (ArtifactError, exit 5).
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
    "Core ML compiler not available (`xcrun coremlcompiler` needs macOS with Xcode; xcrun is "
    "missing, or the Command Line Tools alone lack coremlcompiler): the bundle ships "
    ".mlpackage files only; apps compile them on first load"
)
TIMEOUT_S = 1800
# `xcrun --find` only looks a tool up; it can be slow the first time (it builds its cache)
FIND_TIMEOUT_S = 120


def find_xcrun() -> str | None:
    """Path of an `xcrun` that can run `coremlcompiler`, or None: no xcrun on PATH (Linux), or
    an xcrun whose developer directory has no coremlcompiler (Command Line Tools only)."""
    xcrun = shutil.which("xcrun")
    if xcrun is None:
        return None
    try:
        probe = subprocess.run(
            [xcrun, "--find", "coremlcompiler"],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=FIND_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return xcrun if probe.returncode == 0 else None


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
    from .bundle_files import tree_problems

    info = entry["compiled"]
    name = str(info.get("name", ""))
    if Path(name).name != name or not name.endswith(".mlmodelc"):
        return [f"{entry['name']}: compiled model {name!r} is not a <stem>.mlmodelc beside it"]
    return tree_problems(Path(bundle) / info["name"], info["files"], info["name"])
