"""`package` and `verify`: manifests with hashes and provenance, refusals, determinism."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
from click.testing import CliRunner

from coreml_diarize.app.bundle import make_bundle, report_path, save_report, verify_bundle
from coreml_diarize.app.cli import main
from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import file_sha256


@pytest.fixture(scope="module")
def validated(seg_package, tmp_path_factory):
    """A copy of the segmentation package with its validation report beside it."""
    from coreml_diarize.validation.report import validate_package

    root = tmp_path_factory.mktemp("validated")
    package = root / seg_package.name
    shutil.copytree(seg_package, package)
    save_report(package, validate_package(package, backend="mil").to_dict())
    return package


def test_untrained_weights_refused_without_flag(validated, tmp_path):
    with pytest.raises(DiarizeError, match="untrained.*--allow-untrained"):
        make_bundle([validated], tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_bundle_manifest_matches_files_and_verifies(validated, tmp_path):
    result = make_bundle([validated], tmp_path, allow_untrained=True)
    manifest = json.loads((result.directory / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and manifest["trained"] is False
    (entry,) = manifest["artifacts"]
    assert entry["source"]["sha256"] == "random-init:0"
    assert entry["validation"]["passed"] and entry["validation"]["backend"] == "mil"
    assert entry["inputs"][0]["name"] == "audio" and entry["outputs"][0]["shape"] == [1, 589, 7]
    for rel, sha in entry["files"].items():  # independent re-hash of every file
        assert file_sha256(result.directory / entry["name"] / rel) == sha
    assert manifest["versions"]["coremltools"] == "9.0"
    assert "UNTRAINED" in (result.directory / "README.md").read_text()
    assert verify_bundle(result.directory) == []
    assert verify_bundle(result.zip_path) == []


def test_two_bundles_are_byte_identical(validated, tmp_path):
    a = make_bundle([validated], tmp_path / "a", allow_untrained=True)
    b = make_bundle([validated], tmp_path / "b", allow_untrained=True)
    assert a.zip_path.read_bytes() == b.zip_path.read_bytes()


def test_tampered_bundle_fails_verify(validated, tmp_path):
    result = make_bundle([validated], tmp_path, allow_untrained=True)
    blob = next((result.directory / validated.name).rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    data[1000] ^= 0xFF
    blob.write_bytes(bytes(data))
    problems = verify_bundle(result.directory)
    assert problems and "SHA-256 mismatch" in problems[0]
    cli = CliRunner().invoke(main, ["verify", str(result.directory)])
    assert cli.exit_code == 5 and "does not match its manifest" in cli.output


def test_missing_or_stale_or_failed_report_refused(validated, tmp_path):
    package = tmp_path / validated.name
    shutil.copytree(validated, package)
    with pytest.raises(DiarizeError, match="no validation report"):
        make_bundle([package], tmp_path / "o1", allow_untrained=True)
    shutil.copy(report_path(validated), report_path(package))
    (package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin").write_bytes(b"changed")
    with pytest.raises(DiarizeError, match="changed after it was validated"):
        make_bundle([package], tmp_path / "o2", allow_untrained=True)
    shutil.rmtree(package)
    shutil.copytree(validated, package)
    failed = json.loads(report_path(validated).read_text())
    failed["passed"] = False
    report_path(package).write_text(json.dumps(failed))
    with pytest.raises(DiarizeError, match="failed validation"):
        make_bundle([package], tmp_path / "o3", allow_untrained=True)


def test_zip_with_escaping_path_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("bundle/manifest.json", "{}")
        zf.writestr("../escape.txt", "x")
    with pytest.raises(ArtifactError, match="unsafe path"):
        verify_bundle(evil)
    assert not (tmp_path.parent / "escape.txt").exists()


def test_a_package_without_constants_survives_the_zip(tmp_path):
    """The preprocessor has no weights: its package keeps an empty `weights` folder that its
    Manifest.json lists. A zip of files alone dropped it, and coremltools' package reader (as
    Core ML's) then refused the extracted package."""
    import coremltools as ct

    from coreml_diarize.app.bundle_files import safe_extract
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.report import validate_package

    spec = get_spec("preprocessor")
    ctx = make_context(spec)
    package = convert_model(spec, ctx, tmp_path / "build").path
    assert (package / "Data/com.apple.CoreML/weights").is_dir()
    assert not any((package / "Data/com.apple.CoreML/weights").iterdir())
    save_report(package, validate_package(package, backend="mil", ctx=ctx).to_dict())
    result = make_bundle([package], tmp_path / "dist", compile_models=False)
    root = safe_extract(result.zip_path, tmp_path / "unzipped")
    extracted = root / package.name
    assert (extracted / "Data/com.apple.CoreML/weights").is_dir()
    ct.models.MLModel(str(extracted), skip_model_load=True)  # raises if an item is missing
    assert verify_bundle(result.zip_path) == []
