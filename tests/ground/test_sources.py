"""Weight sources: local checkpoints in pyannote's format, a fake offline hub cache, bad input."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from coreml_diarize import signals
from coreml_diarize.checkpoints import save_pyannote_checkpoint
from coreml_diarize.errors import SourceError
from coreml_diarize.sources import load_weights, parse_source

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def checkpoint(seg_weights, tmp_path_factory) -> Path:
    return save_pyannote_checkpoint(
        seg_weights.model, tmp_path_factory.mktemp("ckpt") / "pytorch_model.bin"
    )


def _same_outputs(a, b) -> bool:
    x = torch.from_numpy(signals.real_speech(2.0))[None, None]
    with torch.inference_mode():
        return torch.equal(a(x), b(x))


def test_parse_source_forms():
    assert parse_source("random").seed == 0
    assert parse_source("random:42").seed == 42
    hf = parse_source("hf:pyannote/segmentation-3.0@abc")
    assert (hf.kind, hf.repo, hf.revision) == ("hf", "pyannote/segmentation-3.0", "abc")
    assert parse_source("some/dir").kind == "local"
    for bad in ["random:x", "hf:noslash", ""]:
        with pytest.raises(SourceError):
            parse_source(bad)


def test_local_checkpoint_file_and_directory(seg_weights, checkpoint):
    for where in (checkpoint, checkpoint.parent):
        loaded = load_weights("segmentation", str(where))
        assert type(loaded.model).__name__ == "PyanNet"
        assert _same_outputs(loaded.model, seg_weights.model)
        prov = loaded.provenance
        assert prov.kind == "local" and prov.trained
        assert prov.sha256 == hashlib.sha256(checkpoint.read_bytes()).hexdigest()


def _fake_hub_cache(root: Path, repo: str, checkpoint: Path) -> Path:
    """The layout huggingface_hub's cache uses: models--OWNER--NAME/{refs,snapshots,blobs}."""
    folder = root / f"models--{repo.replace('/', '--')}"
    data = checkpoint.read_bytes()
    blob = folder / "blobs" / hashlib.sha256(data).hexdigest()
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "pytorch_model.bin").symlink_to(blob)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(COMMIT)
    return root


def test_hub_source_offline_from_cache(seg_weights, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = _fake_hub_cache(tmp_path / "hub", "acme/seg", checkpoint)
    for source in ("hf:acme/seg", f"hf:acme/seg@{COMMIT}"):
        loaded = load_weights("segmentation", source, cache_dir=cache)
        assert _same_outputs(loaded.model, seg_weights.model)
        assert loaded.provenance.kind == "hf"
        assert loaded.provenance.revision == COMMIT
        assert loaded.provenance.location == "acme/seg"
    with pytest.raises(SourceError, match="not in the local cache"):
        load_weights("segmentation", "hf:acme/absent", cache_dir=cache)
    with pytest.raises(SourceError, match="acme/seg@v9"):
        load_weights("segmentation", "hf:acme/seg@v9", cache_dir=cache)


def _truncate(src: Path, dst: Path) -> Path:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    return dst


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def _bad_checkpoints(tmp: Path, checkpoint: Path, seg_model) -> dict[str, tuple[Path, str]]:
    empty = tmp / "empty.bin"
    empty.write_bytes(b"")
    garbage = tmp / "garbage.bin"
    garbage.write_bytes(b"this is not a checkpoint\n" * 10)
    from coreml_diarize.sources import build_architecture

    other = save_pyannote_checkpoint(build_architecture("embedding"), tmp / "wespeaker.bin")
    ckpt = torch.load(checkpoint, weights_only=False)
    missing = dict(
        ckpt, state_dict={k: v for k, v in ckpt["state_dict"].items() if "classifier" not in k}
    )
    torch.save(missing, tmp / "missing.bin")
    extra = dict(ckpt, state_dict={**ckpt["state_dict"], "extra.weight": torch.zeros(3)})
    torch.save(extra, tmp / "extra.bin")
    evil = dict(ckpt, payload=_Evil())
    torch.save(evil, tmp / "evil.bin")
    plain = {"weights": torch.zeros(3)}
    torch.save(plain, tmp / "plain.bin")
    return {
        "missing file": (tmp / "nope.bin", "not found"),
        "empty file": (empty, "empty"),
        "not a checkpoint": (garbage, "not a PyTorch checkpoint"),
        "truncated": (
            _truncate(checkpoint, tmp / "truncated.bin"),
            "corrupt or truncated|not a PyTorch",
        ),
        "other architecture": (other, "holds WeSpeakerResNet34, expected PyanNet"),
        "missing keys": (tmp / "missing.bin", "cannot load checkpoint"),
        "extra keys": (tmp / "extra.bin", "cannot load checkpoint"),
        "needs unpickling": (tmp / "evil.bin", "arbitrary code.*--trust-checkpoint"),
        "plain state dict": (tmp / "plain.bin", "not a pyannote.audio checkpoint"),
    }


def test_bad_checkpoints_give_one_clear_error(checkpoint, seg_weights, tmp_path, capsys):
    for case, (path, message) in _bad_checkpoints(tmp_path, checkpoint, seg_weights.model).items():
        with pytest.raises(SourceError, match=message) as info:
            load_weights("segmentation", str(path))
        assert "\n" not in str(info.value), case
    assert "pwned" not in capsys.readouterr().out  # the refused pickle never ran


def test_trusted_checkpoint_needing_unpickling_loads(checkpoint, tmp_path, capsys):
    ckpt = torch.load(checkpoint, weights_only=False)
    torch.save(dict(ckpt, payload=_Evil()), tmp_path / "evil.bin")
    loaded = load_weights("segmentation", str(tmp_path / "evil.bin"), trust_checkpoint=True)
    assert type(loaded.model).__name__ == "PyanNet"
    assert "pwned" in capsys.readouterr().out  # trusted: the full unpickler really ran
