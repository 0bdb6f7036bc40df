"""A case-insensitive view of the file system, as macOS gives by default (APFS and HFS+ are
case-insensitive unless formatted otherwise; GitHub's macOS runners are too), for tests on a
Linux machine whose kernel offers no case-folding file system to mount (../shared/notes.md).

Inside `case_insensitive_lookup()`, a path that does not exist as spelled resolves, one component
at a time, to the directory entry that matches it ignoring case, exactly as a lookup on APFS
does: `stat`/`exists`/`is_file`/`is_dir` and `open` (hence `Path.read_text`) see `Manifest.json`
where only `manifest.json` is stored. Directory listings keep the stored names, as on APFS.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
from collections.abc import Iterator

_real_stat = os.stat
_real_listdir = os.listdir


def fold(path) -> str:
    """`path` as a case-insensitive lookup finds it (unchanged when it exists as spelled or
    when nothing matches)."""
    if not isinstance(path, (str, os.PathLike)):
        return path  # a file descriptor
    text = os.fspath(path)
    if isinstance(text, bytes):
        return path
    try:
        _real_stat(text)
        return text
    except OSError:
        pass
    parts = os.path.abspath(text).split(os.sep)
    current = os.sep
    for part in parts[1:]:
        candidate = os.path.join(current, part)
        if not os.path.lexists(candidate):
            try:
                matches = [n for n in _real_listdir(current) if n.casefold() == part.casefold()]
            except OSError:
                return text
            if not matches:
                return text
            candidate = os.path.join(current, matches[0])
        current = candidate
    return current


@contextlib.contextmanager
def case_insensitive_lookup() -> Iterator[None]:
    """Patch the lookups pathlib and open go through; restored on exit."""
    real_open = builtins.open

    def stat(path, *args, **kwargs):
        return _real_stat(fold(path), *args, **kwargs)

    def open_(file, *args, **kwargs):
        return real_open(fold(file), *args, **kwargs)

    saved = (os.stat, builtins.open, io.open)
    os.stat, builtins.open, io.open = stat, open_, open_
    try:
        yield
    finally:
        os.stat, builtins.open, io.open = saved
