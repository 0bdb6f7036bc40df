"""Audio that lies (issue #14): a WAV header promising more samples than the file holds is one
`error:` line naming what is missing, for every command that reads audio, and writes nothing;
valid files with unusual layouts (trailing LIST, streaming sizes, RF64, EXTENSIBLE) are not
false alarms; a directory is called a directory. No conversion: the commands read the audio
before they load any model, so empty stand-in package directories are enough."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.audio import ALLOW_TRUNCATED_ENV, read_audio, wav_truncation
from coreml_diarize.models import registry

RATE = 16000
TRUNCATED = (
    r"meeting\.wav is truncated: its header promises 60\.00 s \(960000 frames\) "
    r"but the file holds 41\.37 s; 18\.63 s are missing"
)


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, exit_code: int, pattern: str) -> None:
    assert result.exit_code == exit_code, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    assert re.search(pattern, errors[0]), errors[0]
    assert "Traceback" not in result.output


def _pcm16(seconds: float, channels: int = 1) -> bytes:
    rng = np.random.default_rng(0)
    samples = (rng.standard_normal((int(seconds * RATE), channels)) * 3000).astype("<i2")
    return samples.tobytes()


def _chunk(chunk_id: bytes, body: bytes, size: int | None = None) -> bytes:
    head = chunk_id + struct.pack("<I", len(body) if size is None else size)
    return head + body + (b"\0" if len(body) % 2 else b"")


def _wav(
    data: bytes,
    *,
    channels: int = 1,
    data_size: int | None = None,
    riff_size: int | None = None,
    before: bytes = b"",
    after: bytes = b"",
) -> bytes:
    """A PCM_16 WAV by hand; data_size / riff_size override what the header claims."""
    fmt = struct.pack("<HHIIHH", 1, channels, RATE, RATE * 2 * channels, 2 * channels, 16)
    body = b"WAVE" + _chunk(b"fmt ", fmt) + before
    body += b"data" + struct.pack("<I", len(data) if data_size is None else data_size) + data
    body += after
    return b"RIFF" + struct.pack("<I", len(body) if riff_size is None else riff_size) + body


def _truncated_meeting(directory: Path) -> Path:
    """60 s promised, 41.37 s there: a recording cut off mid-write."""
    full = _pcm16(60.0)
    path = directory / "meeting.wav"
    path.write_bytes(_wav(full)[: 44 + int(41.37 * RATE) * 2])
    return path


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """The five package names as empty directories: enough to get past find_packages."""
    root = tmp_path / "models"
    for spec in registry().values():
        (root / f"{spec.filename}.mlpackage").mkdir(parents=True)
    return root


# --- truncated WAV through every command that reads audio -----------------------------------


@pytest.mark.parametrize("command", ["diarize", "compare", "validate"])
def test_truncated_wav_is_refused_and_nothing_written(command, models_dir, tmp_path):
    audio = _truncated_meeting(tmp_path)
    out = tmp_path / "out"
    if command == "diarize":
        args = ["diarize", audio, "--models", models_dir, "--rttm", out, "--quiet"]
    elif command == "compare":
        args = ["compare", audio, "--models", models_dir, "--json", out, "--quiet"]
    else:
        package = models_dir / "embedding_preprocessor.mlpackage"
        args = ["validate", package, "--audio", audio, "--json", out, "--quiet"]
    result = run(*args)
    assert_one_line_error(result, 4, TRUNCATED)
    assert ALLOW_TRUNCATED_ENV in result.output  # the way out is named
    assert not out.exists()


def test_truncated_wav_opt_in_reads_the_remnant_with_a_notice(tmp_path, monkeypatch):
    audio = _truncated_meeting(tmp_path)
    monkeypatch.setenv(ALLOW_TRUNCATED_ENV, "1")
    loaded = read_audio(audio)
    assert loaded.samples.size == int(41.37 * RATE)
    assert loaded.notices == ("truncated: header promises 60.00 s, using the 41.37 s present",)
    monkeypatch.delenv(ALLOW_TRUNCATED_ENV)
    assert read_audio(audio, allow_truncated=True).samples.size == int(41.37 * RATE)


def test_header_only_wav_is_truncated_not_empty(tmp_path):
    path = tmp_path / "header_only.wav"
    path.write_bytes(_wav(_pcm16(2.0))[:44])
    found = wav_truncation(path)
    assert (found.declared_frames, found.available_frames) == (32000, 0)


# --- no false alarms -------------------------------------------------------------------------


def _list_chunk() -> bytes:
    return _chunk(b"LIST", b"INFO" + _chunk(b"ISFT", b"Lavf58.76.100\0"))


@pytest.mark.parametrize(
    "case",
    ["trailing LIST", "LIST before data", "odd chunk before data", "cut-off trailing chunk"],
)
def test_valid_layouts_are_not_truncated(case, tmp_path):
    data = _pcm16(2.0)
    if case == "trailing LIST":
        raw = _wav(data, after=_list_chunk())
    elif case == "LIST before data":
        raw = _wav(data, before=_list_chunk())
    elif case == "odd chunk before data":
        raw = _wav(data, before=_chunk(b"junk", b"abc"))  # size 3 + pad byte
    else:  # every sample is there; only metadata after it is lost
        raw = _wav(data, after=_list_chunk())[:-10]
    path = tmp_path / "ok.wav"
    path.write_bytes(raw)
    assert wav_truncation(path) is None
    loaded = read_audio(path)
    assert loaded.samples.size == 2 * RATE
    assert loaded.notices == ()


@pytest.mark.parametrize("size", [0xFFFFFFFF])
def test_streaming_header_is_not_truncated(size, tmp_path):
    path = tmp_path / "stream.wav"
    path.write_bytes(_wav(_pcm16(2.0), data_size=size, riff_size=size))
    assert wav_truncation(path) is None
    loaded = read_audio(path)
    assert loaded.samples.size == 2 * RATE  # libsndfile reads to the end of the file
    assert loaded.notices == ()


def test_zero_data_size_is_not_called_truncated(tmp_path):
    path = tmp_path / "unfinished.wav"
    path.write_bytes(_wav(_pcm16(2.0), data_size=0, riff_size=0))
    assert wav_truncation(path) is None


@pytest.mark.parametrize(
    "fmt,subtype,channels",
    [
        ("WAV", "PCM_16", 1),
        ("WAV", "PCM_24", 1),
        ("WAV", "FLOAT", 1),
        ("WAVEX", "PCM_16", 2),  # WAVE_FORMAT_EXTENSIBLE
        ("RF64", "PCM_16", 1),  # sizes in ds64
        ("WAV", "MS_ADPCM", 1),  # compressed: frame count from `fact`
    ],
)
def test_formats_valid_and_truncated(fmt, subtype, channels, tmp_path):
    samples = (np.random.default_rng(1).standard_normal((3 * RATE, channels)) * 0.1).astype(
        np.float32
    )
    path = tmp_path / "full.wav"
    sf.write(path, samples, RATE, subtype=subtype, format=fmt)
    assert wav_truncation(path) is None
    raw = path.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(raw[: len(raw) * 2 // 3])
    found = wav_truncation(cut)
    assert found is not None and found.declared_frames == 3 * RATE
    assert found.available_frames == pytest.approx(2 * RATE, abs=0.02 * RATE)


def test_non_wav_is_not_inspected(tmp_path):
    path = tmp_path / "x.flac"
    sf.write(path, np.zeros(RATE, dtype=np.float32), RATE)
    assert wav_truncation(path) is None


# --- a directory is a directory ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["diarize", "validate"])
def test_directory_as_audio(command, models_dir, tmp_path):
    folder = tmp_path / "recordings.wav"
    folder.mkdir()
    if command == "diarize":
        args = ["diarize", folder, "--models", models_dir, "--quiet"]
    else:
        args = ["validate", models_dir / "wespeaker_v2.mlpackage", "--audio", folder, "--quiet"]
    assert_one_line_error(run(*args), 4, r"recordings\.wav is a directory")
