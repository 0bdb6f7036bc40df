"""Write artifacts atomically: build in a temp dir beside the target, then rename.

A crash, a full disk or a concurrent build never leaves a half-written artifact: the
previous artifact stays intact until the new one is complete.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import DiarizeError

LOCK_NAME = ".coreml-diarize.lock"  # one per output directory; harmless to leave behind


def ensure_writable_dir(path: Path) -> Path:
    """Create `path` if needed and check we can write into it (one clear error otherwise)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DiarizeError(f"cannot create output directory {path}: {exc.strerror}") from exc
    if not path.is_dir():
        raise DiarizeError(f"output path {path} exists and is not a directory")
    if not os.access(path, os.W_OK | os.X_OK):
        raise DiarizeError(f"output directory {path} is not writable")
    return path


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path in the target's directory; on success rename it onto `target`.

    Works for files and directories (an .mlpackage is a directory). The temp name is unique,
    so two builds into the same directory never write into each other's temp space; the
    final rename is the only moment the target changes.
    """
    target = Path(target)
    parent = ensure_writable_dir(target.parent)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=parent))
    tmp = tmp_dir / target.name
    try:
        yield tmp
        if not tmp.exists():
            raise DiarizeError(f"internal error: nothing was written for {target.name}")
        with _lock(parent / LOCK_NAME):
            _replace(tmp, target)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise DiarizeError(f"no space left on device while writing {target}") from exc
        raise DiarizeError(f"could not write {target}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An advisory lock around the swap, so concurrent builds into one directory take turns
    (each builds in its own temp dir; only the final moves are serialised)."""
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _replace(src: Path, target: Path) -> None:
    """Move `src` onto `target`. Directories cannot be renamed over atomically on POSIX, so the
    old one is first moved aside (a rename, instant) and removed only once the new one is in place."""
    if target.is_dir() and not target.is_symlink():
        aside = target.with_name(f".{target.name}.old.{os.getpid()}")
        shutil.rmtree(aside, ignore_errors=True)
        os.rename(target, aside)
        try:
            os.rename(src, target)
        except OSError:
            os.rename(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(src, target)
