"""RTTM files: a diarization written through pyannote.core's writer, a reference read back."""

from __future__ import annotations

from pathlib import Path

from coreml_diarize.errors import DiarizeError


def write_rttm(annotation, path: Path | str) -> Path:
    """RTTM through pyannote.core's own writer, written atomically."""
    from coreml_diarize.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        annotation.write_rttm(handle)
    return path


def read_rttm(path: Path | str, uri: str | None = None):
    """An RTTM file as one Annotation: the SPEAKER lines of `uri` when the file has them,
    else all SPEAKER lines (a reference for one file is usually the whole RTTM)."""
    from pyannote.core import Annotation, Segment

    path = Path(path)
    if not path.is_file():
        raise DiarizeError(f"RTTM file not found: {path}")
    rows: list[tuple[str, float, float, str, int]] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        try:
            start, duration, speaker = float(fields[3]), float(fields[4]), fields[7]
        except (IndexError, ValueError) as exc:
            raise DiarizeError(f"{path}:{number}: not an RTTM SPEAKER line") from exc
        rows.append((fields[1], start, duration, speaker, number))
    if not rows:
        raise DiarizeError(f"{path}: no RTTM SPEAKER lines")
    keep = uri if uri is not None and any(r[0] == uri for r in rows) else None
    annotation = Annotation(uri=uri)
    for file_uri, start, duration, speaker, number in rows:
        if keep is None or file_uri == keep:
            annotation[Segment(start, start + duration), number] = speaker
    return annotation
