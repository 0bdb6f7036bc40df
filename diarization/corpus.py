"""The files `evaluate` scores: audio with its reference RTTM (and UEM) where there is one.

A corpus is named three ways, as pyannote's users name theirs:

* a directory: every audio file in it (not recursive), matched by URI (the file's stem) to the
  SPEAKER lines of the directory's `.rttm` files and the lines of its `.uem` files (one RTTM per
  file, or one for the whole corpus: both work, lines are grouped by their URI field);
* a list file: one audio path per line, optionally followed by its RTTM and UEM paths (relative
  paths are relative to the list); without them, `<stem>.rttm` / `<stem>.uem` beside the audio;
* a `pyannote.database` protocol, `Database.Task.Protocol`, found through `database.yml`
  files: `--database-yml`, else pyannote.database's own search (PYANNOTE_DATABASE_CONFIG,
  ./database.yml, ~/.pyannote/database.yml; pyannote/database/registry.py `_find_default_ymls`),
  loaded into a private `Registry` (no process-wide registry is touched).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coreml_diarize.errors import DiarizeError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aiff", ".aif")
PROTOCOL_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")


class CorpusError(DiarizeError):
    """A corpus cannot be read (missing, empty, a protocol that is not there...)."""


@dataclass
class CorpusFile:
    """One file to score. `reference` / `uem` are pyannote.core objects (None: not given)."""

    uri: str
    audio: Path
    reference: Any = None  # Annotation
    uem: Any = None  # Timeline
    duration_s: float = 0.0  # from the audio's header; 0 if unreadable (fails in its job)


def audio_duration(path: Path) -> float:
    """Seconds, from the header only (for longest-first scheduling); 0 when unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - an unreadable file is scored (and fails) in its own job
        return 0.0
    return float(info.frames) / float(info.samplerate) if info.samplerate else 0.0


def _rttm_annotations(paths: list[Path]) -> dict[str, Any]:
    """SPEAKER lines of every RTTM in `paths`, one Annotation per URI (pyannote's loader)."""
    from pyannote.database.util import load_rttm

    out: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = load_rttm(str(path))
        except Exception as exc:  # noqa: BLE001 - pandas/parse errors: name the file
            raise CorpusError(f"{path}: not a readable RTTM file ({exc})") from exc
        for uri, annotation in loaded.items():
            if uri in out:
                out[uri] = out[uri].update(annotation)
            else:
                out[uri] = annotation
    return out


def _uem_timelines(paths: list[Path]) -> dict[str, Any]:
    from pyannote.database.util import load_uem

    out: dict[str, Any] = {}
    for path in paths:
        try:
            loaded = load_uem(str(path))
        except Exception as exc:  # noqa: BLE001
            raise CorpusError(f"{path}: not a readable UEM file ({exc})") from exc
        for uri, timeline in loaded.items():
            out[uri] = out[uri].union(timeline) if uri in out else timeline
    return out


def _directory_corpus(directory: Path) -> list[CorpusFile]:
    audio = sorted(p for p in directory.iterdir() if p.suffix.lower() in AUDIO_SUFFIXES)
    if not audio:
        raise CorpusError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {directory}")
    references = _rttm_annotations(sorted(directory.glob("*.rttm")))
    uems = _uem_timelines(sorted(directory.glob("*.uem")))
    return [CorpusFile(p.stem, p, references.get(p.stem), uems.get(p.stem)) for p in audio]


def _list_corpus(list_file: Path) -> list[CorpusFile]:
    files = []
    for number, line in enumerate(list_file.read_text().splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 3:
            raise CorpusError(f"{list_file}:{number}: expected 'AUDIO [RTTM [UEM]]'")
        paths = [p if p.is_absolute() else list_file.parent / p for p in map(Path, fields)]
        audio = paths[0]
        rttm = paths[1] if len(paths) > 1 else audio.with_suffix(".rttm")
        uem = paths[2] if len(paths) > 2 else audio.with_suffix(".uem")
        for given, path in zip(("RTTM", "UEM"), (rttm, uem), strict=True):
            if len(paths) > 1 + (given == "UEM") and not path.is_file():
                raise CorpusError(f"{list_file}:{number}: {given} file not found: {path}")
        uri = audio.stem
        reference = _rttm_annotations([rttm]).get(uri) if rttm.is_file() else None
        if reference is None and rttm.is_file():  # one RTTM per file, whatever URI it names
            loaded = _rttm_annotations([rttm])
            reference = next(iter(loaded.values()), None) if len(loaded) == 1 else None
            if reference is not None:
                reference.uri = uri
        timeline = _uem_timelines([uem]).get(uri) if uem.is_file() else None
        files.append(CorpusFile(uri, audio, reference, timeline))
    if not files:
        raise CorpusError(f"{list_file} lists no audio file")
    return files


def _protocol_registry(database_yml: Path | None):
    from pyannote.database.registry import Registry, _find_default_ymls

    paths = [database_yml] if database_yml is not None else _find_default_ymls()
    if not paths:
        raise CorpusError("no database.yml: pass --database-yml or set PYANNOTE_DATABASE_CONFIG")
    registry = Registry()
    for path in paths:
        if not Path(path).is_file():
            raise CorpusError(f"database.yml not found: {path}")
        registry.load_database(path)
    return registry


def _protocol_corpus(name: str, subset: str, database_yml: Path | None) -> list[CorpusFile]:
    from pyannote.database import FileFinder

    registry = _protocol_registry(database_yml)
    try:
        protocol = registry.get_protocol(name, preprocessors={"audio": FileFinder(registry)})
    except Exception as exc:  # noqa: BLE001 - pyannote raises ValueError/KeyError/...
        raise CorpusError(f"pyannote.database protocol {name}: {exc}") from exc
    if subset not in ("train", "development", "test"):
        raise CorpusError(f"subset must be train, development or test, got {subset}")
    files = []
    try:
        for item in getattr(protocol, subset)():
            uri = str(item["uri"])
            reference = item.get("annotation")
            uem = item.get("annotated")
            files.append(CorpusFile(uri, Path(str(item["audio"])), reference, uem))
    except Exception as exc:  # noqa: BLE001 - FileFinder: audio not found, missing files...
        raise CorpusError(f"pyannote.database protocol {name} ({subset}): {exc}") from exc
    if not files:
        raise CorpusError(f"protocol {name} has no {subset} files")
    return files


def load_corpus(
    corpus: str | os.PathLike[str],
    *,
    subset: str = "test",
    database_yml: Path | None = None,
) -> list[CorpusFile]:
    """The files of `corpus` (a directory, a list file or a protocol name), with durations."""
    path = Path(corpus)
    if path.is_dir():
        files = _directory_corpus(path)
    elif path.is_file():
        files = _list_corpus(path)
    elif PROTOCOL_NAME.match(str(corpus)):
        files = _protocol_corpus(str(corpus), subset, database_yml)
    else:
        raise CorpusError(
            f"corpus not found: {corpus} (a directory, a list file or Database.Task.Protocol)"
        )
    uris = [f.uri for f in files]
    duplicates = sorted({u for u in uris if uris.count(u) > 1})
    if duplicates:
        raise CorpusError(f"several files share the URI {', '.join(duplicates)}")
    for item in files:
        item.duration_s = audio_duration(item.audio)
    return files
