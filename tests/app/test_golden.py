"""Golden I/O: real-speech inputs, PyTorch reference outputs and tolerances in every bundle, in a
form Swift reads (little-endian float32 .bin + JSON header); hashed, verified, and checked by
running the packages through the MIL executor."""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.bundle import make_bundle, save_report, verify_bundle
from coreml_diarize.app.cli import main
from coreml_diarize.app.golden import (
    GOLDEN_OFFSET_S,
    check_golden,
    golden_for_packages,
    write_bundle_golden,
)
from coreml_diarize.app.golden_files import golden_problems, read_golden
from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import file_sha256

SEG = "pyannote_segmentation"
POST = "powerset_postprocessor"


@pytest.fixture(scope="module")
def post_package(tmp_path_factory):
    """powerset_postprocessor.mlpackage (no weights: cheap), validated, with its context."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.report import validate_package

    spec = get_spec("postprocessor")
    ctx = make_context(spec)
    package = convert_model(spec, ctx, tmp_path_factory.mktemp("post")).path
    save_report(package, validate_package(package, backend="mil", ctx=ctx).to_dict())
    return package, ctx


@pytest.fixture(scope="module")
def bundle(seg_package, seg_ctx, post_package, tmp_path_factory):
    """A bundle of the segmentation package and the postprocessor, with golden data computed
    from the contexts they were built from (as `build` does)."""
    root = tmp_path_factory.mktemp("golden")
    seg = root / "pkgs" / seg_package.name
    shutil.copytree(seg_package, seg)
    # validation of the segmentation model is not what is under test: a report written directly
    save_report(seg, {"passed": True, "backend": "mil", "recipe": "fp32", "cases": []})
    post, post_ctx = post_package
    contexts = {seg.name: seg_ctx, post.name: post_ctx}
    golden = write_bundle_golden([seg, post], root / "staging", contexts=contexts)
    return make_bundle(
        [seg, post], root / "dist", allow_untrained=True, golden=golden, notify=lambda _: None
    )


def test_golden_written_hashed_and_read_back(bundle, seg_ctx):
    d = bundle.directory
    header = json.loads((d / "golden" / SEG / "golden.json").read_text())
    assert header["format"] == "coreml-diarize-golden" and header["byte_order"] == "little"
    assert header["package"] == f"{SEG}.mlpackage" and header["recipe"] == "fp32"
    assert header["compute_units"] == "cpu_only" and header["trained"] is False
    (audio,) = header["inputs"]
    assert audio == {
        "name": "audio",
        "shape": [1, 1, seg_ctx.geometry.samples],
        "dtype": "float32",
        "file": "input.audio.bin",
        "bytes": 4 * seg_ctx.geometry.samples,
        "sha256": file_sha256(d / "golden" / SEG / "input.audio.bin"),
    }
    (segments,) = header["outputs"]
    assert segments["shape"] == [1, seg_ctx.geometry.frames, seg_ctx.geometry.classes]
    tol = segments["tolerance"]  # the fp32 tolerance validation applies, set fields only
    assert tol["max_prob_abs"] == 7.5e-3 and tol["min_argmax_agreement"] == 0.999
    assert tol["argmax_margin"] == 0.05 and "max_abs" not in tol and "min_cosine" not in tol

    # raw little-endian float32: readable without numpy's help
    raw = (d / "golden" / SEG / "input.audio.bin").read_bytes()
    first = struct.unpack_from("<4f", raw)
    from coreml_diarize import signals

    speech = signals.real_speech(GOLDEN_OFFSET_S, seg_ctx.geometry.samples)
    assert np.array_equal(np.array(first, dtype=np.float32), speech[:4])

    seg, post = read_golden(d / "golden" / SEG), read_golden(d / "golden" / POST)
    assert np.array_equal(seg.inputs["audio"][0, 0], speech)
    # the chain: the postprocessor's golden input is the segmentation reference's output
    assert np.array_equal(post.inputs["segments"], seg.outputs["segments"])
    assert post.tolerances["speaker_masks"].max_abs == 0.0
    assert set(np.unique(post.outputs["speaker_masks"])) <= {0.0, 1.0}

    manifest = json.loads((d / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        info = entry["golden"]
        assert info["dir"] == f"golden/{entry['name'].removesuffix('.mlpackage')}"
        assert set(info["files"]) >= {"golden.json"}
        for rel, sha in info["files"].items():
            assert file_sha256(d / info["dir"] / rel) == sha
    assert verify_bundle(d) == [] and verify_bundle(bundle.zip_path) == []


def test_check_golden_passes_through_mil(bundle):
    d = bundle.directory
    report = check_golden(d / f"{SEG}.mlpackage", d / "golden" / SEG, backend="mil")
    assert report.passed, report.line()
    (segments,) = report.outputs
    assert report.backend == "mil" and segments.argmax_agreement_confident == 1.0
    cli = CliRunner().invoke(
        main, ["verify", str(bundle.zip_path), "--run-golden", "--backend", "mil"]
    )
    assert cli.exit_code == 0, cli.output
    assert f"{POST}.mlpackage [fp32] golden via mil: ok" in cli.output
    assert f"{SEG}.mlpackage [fp32] golden via mil: ok" in cli.output


def test_tampered_golden_file_fails_verify(bundle, tmp_path):
    d = tmp_path / bundle.directory.name
    shutil.copytree(bundle.directory, d)
    blob = d / "golden" / SEG / "output.segments.bin"
    data = bytearray(blob.read_bytes())
    data[100] ^= 0x01
    blob.write_bytes(bytes(data))
    assert verify_bundle(d) == [f"golden/{SEG}/output.segments.bin: SHA-256 mismatch"]
    cli = CliRunner().invoke(main, ["verify", str(d)])
    assert cli.exit_code == 5 and "does not match its manifest" in cli.output

    # header and .bin sizes must agree (what a Swift reader relies on)
    blob.write_bytes(bytes(data[:-4]))
    assert "bytes, header says shape (1, 589, 7)" in golden_problems(d / "golden" / SEG)[0]
    (d / "golden" / POST / "stray.bin").write_bytes(b"x")
    assert f"golden/{POST}/stray.bin: not in manifest" in verify_bundle(d)
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["artifacts"][0]["golden"]["dir"] = "golden/../.."
    (d / "manifest.json").write_text(json.dumps(manifest))
    assert any("is not golden/<stem>" in p for p in verify_bundle(d))


def test_perturbed_weights_fail_check_golden(bundle, tmp_path):
    """A package whose weights moved by 5% no longer reproduces its recorded outputs."""
    package = tmp_path / f"{SEG}.mlpackage"
    shutil.copytree(bundle.directory / package.name, package)
    weights = next(package.rglob("weight.bin"))
    data = bytearray(weights.read_bytes())
    blobs = []  # MIL blob storage: a 64-byte record (sentinel, dtype, size, offset) per blob
    for pos in range(64, len(data), 64):
        sentinel, dtype, size, offset = struct.unpack_from("<IIQQ", data, pos)
        if sentinel == 0xDEADBEEF and dtype == 2:  # float32
            blobs.append((size, offset))
    size, offset = max(blobs)
    values = np.frombuffer(data, dtype="<f4", count=size // 4, offset=offset) * np.float32(1.05)
    data[offset : offset + size] = values.astype("<f4").tobytes()
    weights.write_bytes(bytes(data))
    report = check_golden(package, bundle.directory / "golden" / SEG, backend="mil")
    assert not report.passed
    assert any("probability error" in f for o in report.outputs for f in o.failures), report.line()


def test_aux_golden_needs_upstream_weights(post_package):
    with pytest.raises(DiarizeError, match="bundle a pyannote_segmentation package"):
        golden_for_packages([post_package[0]], contexts={post_package[0].name: post_package[1]})
