"""`export --layout fluidaudio`: DIR/speaker-diarization/ exactly as FluidAudio's offline mode reads
it (plain names, compiled models, plda-parameters.json), both sets in one folder, atomically."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner
from fluidaudio_standins import make_bundles, uncompiled_copy

from coreml_diarize.app.cli import main
from coreml_diarize.app.export import export_fluidaudio
from coreml_diarize.atomic import LOCK_NAME
from coreml_diarize.errors import ArtifactError
from coreml_diarize.mlpackage import file_sha256, tree_hash

# FluidAudio's names (ModelNames.swift:345-382), written down here, not read from the code
ONLINE = ["pyannote_segmentation.mlmodelc", "wespeaker_v2.mlmodelc"]
OFFLINE = [
    "Embedding.mlmodelc",
    "FBank.mlmodelc",
    "PldaRho.mlmodelc",
    "Segmentation.mlmodelc",
    "plda-parameters.json",
]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        return make_bundles(tmp_path_factory.mktemp("export-bundles"), mp, compiled=True)


def _listing(directory):
    """What a directory holds besides atomic_path's (harmless, hidden) lock file."""
    return sorted(p.name for p in directory.iterdir() if p.name != LOCK_NAME)


def _export(*args):
    return CliRunner().invoke(main, ["export", *map(str, args)])


def test_both_sets_in_one_folder_byte_for_byte(bundles, tmp_path):
    result = _export(bundles["online"], bundles["offline"], "--layout", "fluidaudio", tmp_path)
    assert result.exit_code == 0, result.output
    assert "note:" not in result.output
    folder = tmp_path / "speaker-diarization"
    assert _listing(tmp_path) == ["speaker-diarization"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(ONLINE + OFFLINE)
    for name in ONLINE + OFFLINE[:-1]:
        source = bundles["online" if name in ONLINE else "offline"] / name
        assert tree_hash(folder / name) == tree_hash(source)
    sidecar = folder / "plda-parameters.json"
    assert file_sha256(sidecar) == file_sha256(bundles["offline"] / "plda-parameters.json")


def test_one_set_and_a_zipped_bundle(bundles, tmp_path):
    zipped = shutil.make_archive(
        str(tmp_path / "offline"), "zip", bundles["offline"].parent, bundles["offline"].name
    )
    result = export_fluidaudio([zipped], tmp_path / "out")
    assert result.profiles == ["offline"] and result.uncompiled == []
    assert sorted(p.name for p in result.directory.iterdir()) == OFFLINE


def test_uncompiled_bundle_one_line_note_and_plain_mlpackages(bundles, tmp_path):
    bundle = uncompiled_copy(bundles["offline"], tmp_path)
    result = _export(bundle, "--layout", "fluidaudio", tmp_path / "out")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "FluidAudio will not load the .mlpackage files" in notes[0]
    folder = tmp_path / "out" / "speaker-diarization"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        n.replace(".mlmodelc", ".mlpackage") for n in OFFLINE
    )


def test_failed_export_leaves_the_previous_one_untouched(bundles, tmp_path):
    out = tmp_path / "out"
    export_fluidaudio([bundles["offline"]], out)
    before = tree_hash(out)
    tampered = tmp_path / "tampered" / bundles["online"].name
    shutil.copytree(bundles["online"], tampered)
    blob = next((tampered / "wespeaker_v2.mlpackage").rglob("model.mlmodel"))
    blob.write_bytes(blob.read_bytes() + b"\0")
    result = _export(bundles["offline"], tampered, "--layout", "fluidaudio", out)
    assert result.exit_code == 5 and "does not match its manifest" in result.output
    assert "Traceback" not in result.output
    assert tree_hash(out) == before
    assert _listing(out) == ["speaker-diarization"]  # no temp dirs left behind


def test_incomplete_set_and_a_set_given_twice_are_refused(bundles, tmp_path):
    partial = tmp_path / "partial" / bundles["offline"].name
    shutil.copytree(bundles["offline"], partial)
    manifest = json.loads((partial / "manifest.json").read_text())
    manifest["artifacts"] = [a for a in manifest["artifacts"] if a["name"] != "FBank.mlpackage"]
    (partial / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="lacks FBank.mlpackage: FluidAudio's offline set"):
        export_fluidaudio([partial], tmp_path / "out")
    with pytest.raises(ArtifactError, match="are both the offline set"):
        export_fluidaudio([bundles["offline"], bundles["offline"]], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_usage_errors_are_one_line(tmp_path):
    result = _export("--layout", "fluidaudio", tmp_path)
    assert result.exit_code == 2 and "name a bundle and DIR" in result.output
    result = _export(tmp_path / "nope", tmp_path / "out", "--layout", "fluidaudio")
    assert result.exit_code == 5 and "bundle not found" in result.output
