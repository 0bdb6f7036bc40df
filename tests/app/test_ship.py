"""`--ship MODEL=VARIANT`: the chosen variant under the plain name FluidAudio loads, the others
suffixed; the manifest, golden I/O and README follow, and `verify` checks every name against
the record inside the package (issue #22 part 2). Plus: Finder's .DS_Store never fails verify
and is never zipped (issue #21 item 11)."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
from bundle_standins import FP16, PALETTIZE8, convert_source, golden_for, stand_in
from click.testing import CliRunner

from coreml_diarize.app.bundle import make_bundle, verify_bundle
from coreml_diarize.app.cli import main
from coreml_diarize.app.golden_files import read_golden
from coreml_diarize.app.variants import ShipChoice, device_variant
from coreml_diarize.errors import DiarizeError
from coreml_diarize.models import all_specs, get_spec
from coreml_diarize.record import PackageRecord

PLAIN = "wespeaker_v2.mlpackage"


@pytest.fixture(scope="module")
def embedding_set(tmp_path_factory):
    """wespeaker_v2 fp32 / _fp16 / _palettize8 stand-ins, each with its own golden case."""
    root = tmp_path_factory.mktemp("ship")
    source = convert_source(root / "src")
    out = root / "pkgs"
    out.mkdir()
    packages = [
        stand_in(source, out / PLAIN, "embedding"),
        stand_in(source, out / "wespeaker_v2_fp16.mlpackage", "embedding", recipe=FP16),
        stand_in(source, out / "wespeaker_v2_palettize8.mlpackage", "embedding", recipe=PALETTIZE8),
    ]
    for fill, package in enumerate(packages):
        golden_for(package, root / "golden", float(fill))
    return packages, root / "golden"


def _bundle(embedding_set, out, ship):
    packages, golden = embedding_set
    return make_bundle(
        packages, out, allow_untrained=True, golden=golden, compile_models=False, ship=ship
    )


def test_ship_puts_the_8bit_model_under_the_plain_name(embedding_set, tmp_path):
    result = _bundle(embedding_set, tmp_path, ShipChoice.parse(["wespeaker_v2=palettize8"]))
    root = result.directory
    # what each name holds, read from the packages themselves
    assert PackageRecord.from_package(root / PLAIN).compression == "palettize8"
    assert PackageRecord.from_package(root / "wespeaker_v2_fp32.mlpackage").precision == "fp32"
    assert not (root / "wespeaker_v2_palettize8.mlpackage").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["ship"] == {PLAIN: "palettize8"}
    variants = {a["name"]: a["variant"] for a in manifest["artifacts"]}
    assert variants == {
        PLAIN: "palettize8",
        "wespeaker_v2_fp16.mlpackage": "fp16",
        "wespeaker_v2_fp32.mlpackage": "fp32",
    }
    # golden I/O followed its package: the 8-bit package's case (filled with 2.0) is now
    # golden/wespeaker_v2/, and its header names the plain name
    golden = read_golden(root / "golden" / "wespeaker_v2")
    assert golden.package == PLAIN and np.all(golden.outputs["y"] == 2.0)
    assert np.all(read_golden(root / "golden" / "wespeaker_v2_fp32").outputs["y"] == 0.0)
    assert "`wespeaker_v2.mlpackage`: palettize8" in (root / "README.md").read_text()
    assert verify_bundle(root) == [] and verify_bundle(result.zip_path) == []


def test_default_ships_the_fp32_reference(embedding_set, tmp_path):
    root = _bundle(embedding_set, tmp_path, None).directory
    assert PackageRecord.from_package(root / PLAIN).precision == "fp32"
    assert json.loads((root / "manifest.json").read_text())["ship"] == {PLAIN: "fp32"}
    assert (root / "wespeaker_v2_palettize8.mlpackage").is_dir()


def test_verify_catches_a_manifest_that_lies_about_the_plain_name(embedding_set, tmp_path):
    root = _bundle(embedding_set, tmp_path, ShipChoice.parse(["embedding=palettize8"])).directory
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    for entry in manifest["artifacts"]:  # claim the plain name is fp32; hashes stay right
        entry["variant"] = {"palettize8": "fp32", "fp32": "palettize8"}.get(
            entry["variant"], entry["variant"]
        )
    manifest["ship"] = {PLAIN: "fp32"}
    path.write_text(json.dumps(manifest))
    problems = verify_bundle(root)
    assert any(p.startswith(f"{PLAIN}: the manifest says embedding fp32") for p in problems)
    # a golden folder that belongs to another package is caught too
    (root / "manifest.json").unlink()
    shutil.rmtree(root)
    root = _bundle(embedding_set, tmp_path / "b", None).directory
    header = root / "golden" / "wespeaker_v2" / "golden.json"
    data = json.loads(header.read_text())
    data["package"] = "wespeaker_v2_palettize8.mlpackage"
    header.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    manifest = json.loads((root / "manifest.json").read_text())
    assert any("golden/wespeaker_v2/golden.json" in p for p in verify_bundle(root)), manifest


def test_ship_device_preset_reads_the_registry():
    # docs/quantization.md: 8-bit tables in an fp16 program where the model has that variant;
    # FBank must stay fp32 (fp16 underflows its power spectrum); PldaRho has no variant
    assert device_variant(get_spec("embedding")) == "palettize8"
    assert device_variant(get_spec("offline-embedding")) == "palettize8"
    assert device_variant(get_spec("segmentation")) == "palettize8"
    assert device_variant(get_spec("fbank")) == "fp32"
    assert device_variant(get_spec("plda-rho")) == "fp32"
    with_8bit = {
        s.key for s in all_specs() if {"mode": "palettize", "nbits": 8} in s.device_variants
    }
    assert {s.key for s in all_specs() if device_variant(s) == "palettize8"} == with_8bit


def test_ship_mistakes_are_one_line_errors(embedding_set, tmp_path):
    with pytest.raises(DiarizeError, match="no palettize4 variant of wespeaker_v2"):
        _bundle(embedding_set, tmp_path / "a", ShipChoice.parse(["wespeaker_v2=palettize4"]))
    with pytest.raises(DiarizeError, match="no Segmentation model in the bundle"):
        _bundle(embedding_set, tmp_path / "b", ShipChoice.parse(["Segmentation=palettize8"]))
    assert not (tmp_path / "a" / "coreml-diarize-bundle").exists()
    packages, _ = embedding_set
    done = CliRunner().invoke(
        main, ["package", str(packages[0]), "--out", str(tmp_path / "c"), "--ship", "oops"]
    )
    assert done.exit_code == 2 and "MODEL=VARIANT" in done.output


def test_finder_litter_neither_fails_verify_nor_ships(embedding_set, tmp_path):
    result = _bundle(embedding_set, tmp_path, None)
    root = result.directory
    for folder in (root, root / PLAIN, root / "golden" / "wespeaker_v2"):
        (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (root / PLAIN / "._Manifest.json").write_bytes(b"AppleDouble")
    assert verify_bundle(root) == []
    # zipping the folder again (the same writer make_bundle uses) leaves the litter out
    from coreml_diarize.app.bundle import _write_zip

    _write_zip(root, tmp_path / "again.zip")
    with zipfile.ZipFile(tmp_path / "again.zip") as zf:
        names = zf.namelist()
    assert names and not [n for n in names if "DS_Store" in n or "/._" in n]
    assert verify_bundle(tmp_path / "again.zip") == []
