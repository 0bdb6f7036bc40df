"""The community-1 pipeline source: one local directory or hub repo for every weight family.

A fake `pyannote/speaker-diarization-community-1` (a local directory and an offline hub cache
with the same layout: segmentation/, embedding/, plda/, config.yaml) is built once per module
from seeded weights. Each family must load from its own subfolder, record the SHA-256 of every
file it came from, and round-trip through the package record. No network: the hub is only
ever its local cache (HF_HUB_OFFLINE=1).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from coreml_diarize.checkpoints import save_pyannote_checkpoint
from coreml_diarize.errors import SourceError
from coreml_diarize.plda_sources import (
    CALIBRATION,
    PLDA_FILE,
    TRANSFORM_FILE,
    random_plda_arrays,
    random_plda_files,
    write_npz,
)
from coreml_diarize.record import PackageRecord
from coreml_diarize.sources import PLDA_WEIGHTS, build_architecture, load_weights

REPO = "pyannote/speaker-diarization-community-1"
COMMIT_A = "a1" * 20  # refs/main
COMMIT_B = "b2" * 20  # an older revision with another PLDA
SEG = "segmentation/pytorch_model.bin"
EMB = "embedding/pytorch_model.bin"
XVEC = f"plda/{TRANSFORM_FILE}"
PLDA = f"plda/{PLDA_FILE}"
CONFIG = "pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n"


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plda_digest(transform: Path, plda: Path) -> str:
    """The documented PLDA digest, computed independently: SHA-256 of `<file name>:<sha256>\\n`
    lines in file-name order."""
    lines = sorted(f"{Path(p).name}:{sha256(p)}\n" for p in (transform, plda))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def fake_hub_repo(cache: Path, repo: str, revisions: dict[str, dict[str, Path]], main: str):
    """huggingface_hub's cache layout: models--OWNER--NAME/{blobs,snapshots/<rev>,refs/main},
    snapshot files being symlinks to content-addressed blobs."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    for revision, files in revisions.items():
        for rel, src in files.items():
            blob = folder / "blobs" / sha256(src)
            if not blob.exists():
                shutil.copyfile(src, blob)
            link = folder / "snapshots" / revision / rel
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(blob)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(main)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("community")
    with torch.random.fork_rng(devices=[]):  # seeded, uncalibrated: fast and deterministic
        torch.manual_seed(11)
        seg = build_architecture("segmentation")
        torch.manual_seed(12)
        emb = build_architecture("embedding")
    local = root / "community-1"
    save_pyannote_checkpoint(seg, local / SEG)
    save_pyannote_checkpoint(emb, local / EMB)
    random_plda_files(local / "plda", seed=5)
    (local / "config.yaml").write_text(CONFIG)
    older = root / "older-plda"
    random_plda_files(older, seed=6)

    files_a = {rel: local / rel for rel in (SEG, EMB, XVEC, PLDA, "config.yaml")}
    files_b = {**files_a, XVEC: older / TRANSFORM_FILE, PLDA: older / PLDA_FILE}
    cache = root / "hub"
    fake_hub_repo(cache, REPO, {COMMIT_A: files_a, COMMIT_B: files_b}, main=COMMIT_A)
    # a single-model repo (checkpoint at the root) and a pipeline repo without embedding/
    fake_hub_repo(
        cache, "pyannote/segmentation-3.0", {COMMIT_A: {"pytorch_model.bin": local / SEG}}, COMMIT_A
    )
    partial = {k: v for k, v in files_a.items() if k != EMB}
    fake_hub_repo(cache, "acme/partial-pipeline", {COMMIT_A: partial}, COMMIT_A)
    return SimpleNamespace(
        local=local,
        older=older,
        cache=cache,
        states={"segmentation": seg.state_dict(), "embedding": emb.state_dict()},
    )


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def same_state(model, expected: dict) -> bool:
    got = model.state_dict()
    return got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)


EMBEDDINGS = np.random.default_rng(3).standard_normal((16, 256)) * 20


def same_plda(plda, directory: Path) -> bool:
    """The loaded PLDA computes exactly what pyannote's own PLDA from `directory` computes."""
    from pyannote.audio.core.plda import PLDA as PyannotePLDA

    ref = PyannotePLDA(directory / TRANSFORM_FILE, directory / PLDA_FILE)
    return np.array_equal(plda(EMBEDDINGS), ref(EMBEDDINGS)) and np.array_equal(plda.phi, ref.phi)


def check_family(loaded, family: str, pipeline, plda_dir: Path) -> None:
    assert loaded.family == family
    prov = loaded.provenance
    assert prov.trained and prov.seed is None
    if family == "plda":
        assert type(loaded.model).__name__ == "PLDA" and same_plda(loaded.model, plda_dir)
        expected = {XVEC: sha256(plda_dir / TRANSFORM_FILE), PLDA: sha256(plda_dir / PLDA_FILE)}
        assert dict(prov.files) == expected
        assert prov.sha256 == plda_digest(plda_dir / TRANSFORM_FILE, plda_dir / PLDA_FILE)
    else:
        assert same_state(loaded.model, pipeline.states[family])
        rel = SEG if family == "segmentation" else EMB
        assert dict(prov.files) == {rel: sha256(pipeline.local / rel)}
        assert prov.sha256 == sha256(pipeline.local / rel)


FAMILIES = ("segmentation", "embedding", "plda")


def test_local_pipeline_directory_gives_each_family_its_subfolder(pipeline):
    for family in FAMILIES:
        loaded = load_weights(family, str(pipeline.local))
        check_family(loaded, family, pipeline, pipeline.local / "plda")
        assert loaded.provenance.kind == "local"
        assert loaded.provenance.location == str(pipeline.local)
        assert loaded.provenance.revision is None


def test_hub_pipeline_offline_from_cache(pipeline):
    for family in FAMILIES:
        loaded = load_weights(family, f"hf:{REPO}", cache_dir=pipeline.cache)
        check_family(loaded, family, pipeline, pipeline.local / "plda")
        prov = loaded.provenance
        assert (prov.kind, prov.location, prov.revision) == ("hf", REPO, COMMIT_A)


def test_hub_revision_picks_that_snapshot(pipeline):
    loaded = load_weights("plda", f"hf:{REPO}@{COMMIT_B}", cache_dir=pipeline.cache)
    check_family(loaded, "plda", pipeline, pipeline.older)
    assert loaded.provenance.revision == COMMIT_B
    main = load_weights("plda", f"hf:{REPO}", cache_dir=pipeline.cache)
    assert main.provenance.sha256 != loaded.provenance.sha256
    assert not same_plda(loaded.model, pipeline.local / "plda")


def test_single_model_sources_keep_working(pipeline, tmp_path):
    loaded = load_weights("segmentation", "hf:pyannote/segmentation-3.0", cache_dir=pipeline.cache)
    assert same_state(loaded.model, pipeline.states["segmentation"])
    assert dict(loaded.provenance.files) == {"pytorch_model.bin": sha256(pipeline.local / SEG)}
    assert loaded.provenance.sha256 == sha256(pipeline.local / SEG)
    assert loaded.provenance.revision == COMMIT_A
    # a plain PLDA directory (the npz files at its root): the same digest as from the pipeline
    flat = load_weights("plda", str(pipeline.local / "plda"))
    assert same_plda(flat.model, pipeline.local / "plda")
    assert set(flat.provenance.files) == {TRANSFORM_FILE, PLDA_FILE}
    piped = load_weights("plda", str(pipeline.local))
    assert flat.provenance.sha256 == piped.provenance.sha256
    # the digest changes if either file changes
    changed = tmp_path / "changed"
    shutil.copytree(pipeline.local / "plda", changed)
    shutil.copyfile(pipeline.older / PLDA_FILE, changed / PLDA_FILE)
    assert load_weights("plda", str(changed)).provenance.sha256 != flat.provenance.sha256


def one_line_error(family: str, source: str, **kwargs) -> str:
    with pytest.raises(SourceError) as info:
        load_weights(family, source, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def test_missing_subfolder_or_file_names_the_file(pipeline, tmp_path):
    message = one_line_error("embedding", "hf:acme/partial-pipeline", cache_dir=pipeline.cache)
    assert EMB in message and "acme/partial-pipeline" in message
    assert "not in the local cache" in message

    partial = tmp_path / "partial"
    shutil.copytree(pipeline.local, partial)
    shutil.rmtree(partial / "embedding")
    assert EMB in one_line_error("embedding", str(partial))
    (partial / "plda" / PLDA_FILE).unlink()
    assert f"plda/{PLDA_FILE}" in one_line_error("plda", str(partial))
    assert "PLDA source not found" in one_line_error("plda", str(tmp_path / "nowhere"))
    assert "directory" in one_line_error("plda", str(pipeline.local / SEG))


def test_corrupt_plda_files_give_one_line_errors(tmp_path):
    transform, plda = random_plda_arrays(0)
    cases = {
        "missing key": ({**transform}, {"mu": plda["mu"], "tr": plda["tr"]}, "lacks psi"),
        "wrong shape": ({**transform, "mean2": transform["mean2"][:-1]}, plda, "mean2 has shape"),
        "non-finite": (transform, {**plda, "psi": plda["psi"] * np.nan}, "NaN"),
        "negative psi": (transform, {**plda, "psi": -plda["psi"]}, "psi must be positive"),
        "singular tr": (transform, {**plda, "tr": plda["tr"] * 0}, "cannot load PLDA"),
    }
    for case, (t, p, expected) in cases.items():
        folder = tmp_path / case.replace(" ", "-")
        folder.mkdir()
        write_npz(folder / TRANSFORM_FILE, t)
        write_npz(folder / PLDA_FILE, p)
        assert expected in one_line_error("plda", str(folder)), case
    garbage = tmp_path / "garbage"
    random_plda_files(garbage, seed=0)
    (garbage / PLDA_FILE).write_bytes(b"not a zip file\n" * 4)
    assert "corrupt PLDA file" in one_line_error("plda", str(garbage))
    pickled = tmp_path / "pickled"
    random_plda_files(pickled, seed=0)
    np.savez(pickled / PLDA_FILE, mu=np.array([object()]), tr=plda["tr"], psi=plda["psi"])
    assert "corrupt PLDA file" in one_line_error("plda", str(pickled))


def test_random_plda_is_deterministic_per_seed():
    a, b, c = (load_weights(PLDA_WEIGHTS, f"random:{s}") for s in (4, 4, 5))
    assert type(a.model).__name__ == "PLDA"
    assert np.array_equal(a.model(EMBEDDINGS), b.model(EMBEDDINGS))
    assert not np.allclose(a.model(EMBEDDINGS), c.model(EMBEDDINGS))
    prov = a.provenance
    assert (prov.kind, prov.location, prov.seed, prov.trained) == (
        "random",
        "random-init:4",
        4,
        False,
    )
    assert prov.calibration == CALIBRATION and not prov.files
    assert "source.files" not in prov.as_metadata()
    assert load_weights("plda", "random").provenance.seed == 0


def record_for(prov) -> PackageRecord:
    return PackageRecord(
        model=prov.family,
        role="core",
        precision="fp32",
        compression="none",
        recipe={},
        geometry={},
        thresholds={},
        minimum_deployment_target="iOS17",
        source={k.removeprefix("source."): v for k, v in prov.as_metadata().items()},
    )


def test_package_record_round_trips_per_file_provenance(pipeline):
    for source, family in ((f"hf:{REPO}@{COMMIT_B}", "plda"), (str(pipeline.local), "plda")):
        prov = load_weights(family, source, cache_dir=pipeline.cache).provenance
        meta = record_for(prov).to_metadata()
        raw = meta["coreml_diarize.source.files"]
        assert json.loads(raw) == dict(prov.files) and " " not in raw  # compact JSON
        back = PackageRecord.from_metadata(meta)
        assert back == record_for(prov) and back.to_metadata() == meta
        assert back.source_files == dict(prov.files)
        assert back.source["sha256"] == prov.sha256
        # the source string reloads the same weights (the family picks its subfolder again)
        text = back.source_text()
        assert text == source
        again = load_weights(family, text, cache_dir=pipeline.cache).provenance
        assert again.files == prov.files and again.sha256 == prov.sha256


def test_package_record_without_files_key_stays_readable():
    meta = {
        "coreml_diarize.model": "segmentation",
        "coreml_diarize.source.kind": "hf",
        "coreml_diarize.source.location": "pyannote/segmentation-3.0",
        "coreml_diarize.source.revision": COMMIT_A,
        "coreml_diarize.source.sha256": "0" * 64,
    }
    record = PackageRecord.from_metadata(meta)
    assert record.source_files == {}
    assert record.source_text() == f"hf:pyannote/segmentation-3.0@{COMMIT_A}"
    broken = PackageRecord.from_metadata({**meta, "coreml_diarize.source.files": "{not json"})
    assert broken.source_files == {}
