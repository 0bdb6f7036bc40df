"""Compiled models in bundles: `xcrun coremlcompiler compile` where it exists, one notice and a
manifest field where it does not. No macOS here: a fake `xcrun` (a shell script on PATH)
stands in for the compiler, writing what `coremlcompiler compile <pkg> <outdir>` writes."""

from __future__ import annotations

import json
import os
import shutil
import stat

import pytest
from click.testing import CliRunner

from coreml_diarize.app.bundle import make_bundle, save_report, verify_bundle
from coreml_diarize.app.cli import main
from coreml_diarize.app.compile import NOT_COMPILED, compile_package, find_xcrun
from coreml_diarize.errors import ArtifactError
from coreml_diarize.mlpackage import file_sha256
from coreml_diarize.specs import Options

POST = "powerset_postprocessor"
POST16 = f"{POST}_fp16"

# `xcrun --find coremlcompiler` with Xcode: the tool's path, exit 0
FINDS_COMPILER = """[ "$1" = --find ] && [ "$2" = coremlcompiler ] && {
  echo /Applications/Xcode.app/Contents/Developer/usr/bin/coremlcompiler; exit 0; }
"""
# mimics `xcrun coremlcompiler compile <pkg> <outdir>`: <outdir>/<stem>.mlmodelc/ with files
FAKE_XCRUN = f"""#!/bin/sh
{FINDS_COMPILER}[ "$1" = coremlcompiler ] && [ "$2" = compile ] || {{ echo "unexpected: $*" >&2; exit 64; }}
out="$4/$(basename "$3" .mlpackage).mlmodelc"
mkdir -p "$out/weights"
cp "$3/Manifest.json" "$out/coremldata.bin"
printf 'program(1.0)\\n' > "$out/model.mil"
"""
FAILING_XCRUN = f"""#!/bin/sh
{FINDS_COMPILER}mkdir -p "$4/$(basename "$3" .mlpackage).mlmodelc" && echo partial > "$4/$(basename "$3" .mlpackage).mlmodelc/half"
echo "coremlcompiler: error: compiler error: Espresso exception: invalid blob" >&2
exit 1
"""
SILENT_XCRUN = "#!/bin/sh\nexit 0\n"
# macOS with the Command Line Tools only: /usr/bin/xcrun exists, coremlcompiler does not (the
# message and exit code 72 users report, e.g. apple/ml-stable-diffusion#17)
CLT_ONLY_XCRUN = """#!/bin/sh
echo 'xcrun: error: unable to find utility "coremlcompiler", not a developer tool or in PATH' >&2
exit 72
"""


@pytest.fixture(scope="module")
def packages(tmp_path_factory):
    """Two validated packages of the postprocessor (cheap): fp32 and fp16, since a bundle holds
    one package per model and variant."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.report import validate_package

    root = tmp_path_factory.mktemp("compile")
    spec = get_spec("postprocessor")
    packages = []
    for precision, name in (("fp32", POST), ("fp16", f"{POST}_fp16")):
        ctx = make_context(spec, options=Options(precision=precision))
        package = convert_model(spec, ctx, root, filename=name).path
        save_report(package, validate_package(package, backend="mil", ctx=ctx).to_dict())
        packages.append(package)
    return packages


def _xcrun(tmp_path, monkeypatch, script: str | None):
    """PATH with only `script` as xcrun (or no xcrun at all), plus /bin for the shell tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if script is not None:
        xcrun = bin_dir / "xcrun"
        xcrun.write_text(script)
        xcrun.chmod(xcrun.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/bin", "/usr/bin"]))
    if script is None and find_xcrun() is not None:
        pytest.skip("an xcrun is installed system-wide")


@pytest.mark.parametrize(
    "script", [None, CLT_ONLY_XCRUN], ids=["no-xcrun", "command-line-tools-only"]
)
def test_without_compiler_one_notice_and_manifest_field(packages, tmp_path, monkeypatch, script):
    """No xcrun (Linux), or an xcrun without coremlcompiler (macOS without Xcode): a notice, not
    an error (issue #21 item 7: the Command Line Tools case exited 5)."""
    _xcrun(tmp_path, monkeypatch, script)
    assert find_xcrun() is None
    result = CliRunner().invoke(
        main, ["package", *map(str, packages), "--out", str(tmp_path / "dist"), "--allow-untrained"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("Core ML compiler not available") == 1  # one notice, two packages
    assert "error" not in result.output
    bundle = tmp_path / "dist" / "coreml-diarize-bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [a["compiled"] for a in manifest["artifacts"]] == [NOT_COMPILED, NOT_COMPILED]
    assert NOT_COMPILED == "not compiled (xcrun not available)"
    assert not list(bundle.glob("*.mlmodelc"))
    assert verify_bundle(bundle) == []
    cli = CliRunner().invoke(main, ["verify", str(bundle), "--run-golden", "--backend", "mil"])
    assert cli.exit_code == 5 and "has no golden data" in cli.output


def test_fake_xcrun_ships_hashed_mlmodelc(packages, tmp_path, monkeypatch):
    _xcrun(tmp_path, monkeypatch, FAKE_XCRUN)
    notices = []
    result = make_bundle(packages, tmp_path / "dist", allow_untrained=True, notify=notices.append)
    assert notices == []
    bundle = result.directory
    assert sorted(p.name for p in bundle.iterdir()) == [
        "README.md",
        "manifest.json",
        f"{POST}.mlmodelc",
        f"{POST}.mlpackage",
        f"{POST16}.mlmodelc",
        f"{POST16}.mlpackage",
    ]
    entry = result.manifest["artifacts"][0]
    compiled = entry["compiled"]
    assert compiled["name"] == f"{POST}.mlmodelc"
    assert set(compiled["files"]) == {"coremldata.bin", "model.mil"}
    for rel, sha in compiled["files"].items():
        assert file_sha256(bundle / compiled["name"] / rel) == sha
    assert json.loads((bundle / "manifest.json").read_text()) == result.manifest
    assert verify_bundle(bundle) == [] and verify_bundle(result.zip_path) == []

    (bundle / compiled["name"] / "model.mil").write_text("program(2.0)\n")
    (bundle / compiled["name"] / "extra.bin").write_bytes(b"x")
    assert verify_bundle(bundle) == [
        f"{POST}.mlmodelc/model.mil: SHA-256 mismatch",
        f"{POST}.mlmodelc/extra.bin: not in manifest",
    ]
    shutil.rmtree(bundle / f"{POST16}.mlmodelc")
    assert f"{POST16}.mlmodelc: missing" in verify_bundle(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["artifacts"][1]["compiled"]["name"] = "../elsewhere.mlmodelc"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert "is not a <stem>.mlmodelc beside it" in verify_bundle(bundle)[-1]


def test_failing_xcrun_clear_error_and_no_half_written_bundle(packages, tmp_path, monkeypatch):
    out = tmp_path / "dist"
    old = make_bundle(packages, out, allow_untrained=True, compile_models=False)
    before = old.zip_path.read_bytes()
    _xcrun(tmp_path, monkeypatch, FAILING_XCRUN)
    with pytest.raises(
        ArtifactError, match=r"coremlcompiler failed on .* \(exit 1\): .*invalid blob"
    ):
        make_bundle(packages, out, allow_untrained=True)
    # the previous bundle is untouched, and no temp dirs are left behind
    assert old.zip_path.read_bytes() == before and verify_bundle(old.directory) == []
    assert sorted(p.name for p in out.iterdir() if p.name != ".coreml-diarize.lock") == [
        "coreml-diarize-bundle",
        "coreml-diarize-bundle.zip",
    ]
    assert not list(old.directory.glob("*.mlmodelc"))

    fresh = tmp_path / "fresh"
    cli = CliRunner().invoke(
        main, ["package", str(packages[0]), "--out", str(fresh), "--allow-untrained"]
    )
    assert cli.exit_code == 5 and "error: coremlcompiler failed on" in cli.output
    assert [p.name for p in fresh.iterdir() if p.name != ".coreml-diarize.lock"] == []


def test_compile_package_is_atomic(packages, tmp_path, monkeypatch):
    _xcrun(tmp_path, monkeypatch, FAKE_XCRUN)
    out = tmp_path / "out"
    out.mkdir()
    (out / f"{POST}.mlmodelc").mkdir()
    (out / f"{POST}.mlmodelc" / "stale").write_text("old")
    target = compile_package(packages[0], out)
    assert target == out / f"{POST}.mlmodelc"
    assert sorted(p.name for p in target.iterdir()) == ["coremldata.bin", "model.mil", "weights"]
    assert [p.name for p in out.iterdir()] == [target.name]  # no staging dir left
    (tmp_path / "bin" / "xcrun").write_text(SILENT_XCRUN)
    with pytest.raises(ArtifactError, match="reported success but wrote no"):
        compile_package(packages[0], out)
    assert (target / "coremldata.bin").is_file()  # the earlier output is kept
