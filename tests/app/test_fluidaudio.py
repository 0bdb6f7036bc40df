"""`verify --target fluidaudio`: FluidAudio's loader contract (read from its Swift source, v0.15.6)
checked on bundles, exports and compiled models; every way to fail gives a clear line."""

from __future__ import annotations

import base64
import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from fluidaudio_standins import edit_spec, make_bundles, uncompiled_copy

from coreml_diarize.app.cli import main
from coreml_diarize.app.export import export_fluidaudio
from coreml_diarize.app.fluidaudio import check_fluidaudio
from coreml_diarize.app.fluidaudio_contract import MODEL_SETS, OFFLINE_SET, ONLINE_SET, REPO_FOLDER
from coreml_diarize.models import registry

FLOAT16 = 65552  # FeatureTypes.proto ArrayFeatureType.FLOAT16


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        return make_bundles(tmp_path_factory.mktemp("fa-bundles"), mp, compiled=True)


@pytest.fixture(scope="module")
def exported(bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("fa-export")
    export_fluidaudio([bundles["online"], bundles["offline"]], out)
    return out


@pytest.fixture
def export_copy(exported, tmp_path):
    target = tmp_path / "models"
    shutil.copytree(exported, target)
    return target


@pytest.fixture
def offline_uncompiled(bundles, tmp_path):
    return uncompiled_copy(bundles["offline"], tmp_path)


def _verify(path):
    return CliRunner().invoke(main, ["verify", "--target", "fluidaudio", str(path)])


def _fails_with(path, *expected: str) -> str:
    """verify exits 5 with one error summary line, each expected line among the findings, and
    never a traceback."""
    result = _verify(path)
    assert result.exit_code == 5, result.output
    assert "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and "does not conform" in last, last
    for text in expected:
        assert text in result.output, (text, result.output)
    return result.output


# --- the contract as data -----------------------------------------------------------------


def test_contract_names_are_the_registrys_and_every_rule_is_cited():
    specs = registry().values()
    offline = {s.filename for s in specs if "offline" in s.chains}
    assert {m.stem for m in OFFLINE_SET.models} == offline
    core_online = {s.filename for s in specs if "online" in s.chains and s.role == "core"}
    assert {m.stem for m in ONLINE_SET.models} == core_online
    sidecars = {n for s in specs if "offline" in s.chains for n in s.sidecars}
    assert set(OFFLINE_SET.sidecars) == sidecars
    assert REPO_FOLDER == "speaker-diarization"
    for model_set in MODEL_SETS:
        assert re.search(r"\.swift:\d+", model_set.cite)
        for model in model_set.models:
            for rule in model.inputs + model.outputs:
                assert re.search(r"\.swift:\d+", rule.cite), rule


# --- passes ---------------------------------------------------------------------------------


def test_fresh_export_conforms(exported):
    report = check_fluidaudio(exported)
    assert report.kind == "export" and report.profiles == ["online", "offline"]
    assert report.findings == []
    result = _verify(exported)
    assert result.exit_code == 0, result.output
    assert "conforms to FluidAudio's loader contract" in result.output


def test_bundle_and_its_zip_conform_uncompiled_bundle_only_warns(bundles, offline_uncompiled):
    assert check_fluidaudio(bundles["offline"]).findings == []
    zipped = shutil.make_archive(
        str(offline_uncompiled.parent / "z"),
        "zip",
        offline_uncompiled.parent,
        offline_uncompiled.name,
    )
    report = check_fluidaudio(offline_uncompiled)
    assert report.passed and len(report.warnings) == 4
    assert all("not compiled" in w.message for w in report.warnings)
    assert check_fluidaudio(zipped).passed


# --- fails: files ---------------------------------------------------------------------------


def test_missing_model_or_psi_file_fails(export_copy):
    shutil.rmtree(export_copy / REPO_FOLDER / "FBank.mlmodelc")
    (export_copy / REPO_FOLDER / "plda-parameters.json").unlink()
    _fails_with(
        export_copy,
        "error: FBank.mlmodelc: missing: FluidAudio downloads FluidInference's published models",
        "error: plda-parameters.json: missing",
    )


def test_uncompiled_model_in_the_layout_fails(export_copy, offline_uncompiled):
    folder = export_copy / REPO_FOLDER
    shutil.rmtree(folder / "PldaRho.mlmodelc")
    shutil.copytree(offline_uncompiled / "PldaRho.mlpackage", folder / "PldaRho.mlpackage")
    _fails_with(
        export_copy,
        "error: PldaRho.mlpackage: not compiled: FluidAudio opens only PldaRho.mlmodelc",
    )


def test_compiled_model_without_coremldata_fails(export_copy):
    (export_copy / REPO_FOLDER / "Embedding.mlmodelc" / "coremldata.bin").unlink()
    _fails_with(export_copy, "error: Embedding.mlmodelc: not a compiled model")


# --- fails: names, dtypes, shapes -------------------------------------------------------------


def test_wrong_output_name_fails(offline_uncompiled):
    def rename(desc):
        desc.output[0].name = "features"

    edit_spec(offline_uncompiled / "PldaRho.mlpackage", rename)
    _fails_with(
        offline_uncompiled, "error: PldaRho.mlpackage: no output named 'rho' (has: features)"
    )


def test_wrong_dtypes_fail(offline_uncompiled):
    def fp16_input(desc):
        desc.input[0].type.multiArrayType.dataType = FLOAT16

    def fp16_output(desc):
        desc.output[0].type.multiArrayType.dataType = FLOAT16

    edit_spec(offline_uncompiled / "Segmentation.mlpackage", fp16_input)
    edit_spec(offline_uncompiled / "PldaRho.mlpackage", fp16_output)
    out = _fails_with(
        offline_uncompiled,
        "error: Segmentation.mlpackage input 'audio': declared float16, must be float32",
        "error: PldaRho.mlpackage output 'rho': declared float16, must be float32: FluidAudio "
        "reads the buffer as Float32",
    )
    assert out.count("declared float16") == 2


def _set_batch(desc, name, *, enumerated=None, fixed=False):
    arr = next(f for f in desc.input if f.name == name).type.multiArrayType
    rest = list(arr.shape)[1:]
    arr.ClearField("ShapeFlexibility")
    if fixed:
        del arr.shape[:]
        arr.shape.extend([1, *rest])
        return
    for batch in enumerated:  # the first is what Core ML reports first (coremltools: the default)
        arr.enumeratedShapes.shapes.add().shape.extend([batch, *rest])
    del arr.shape[:]
    arr.shape.extend([enumerated[0], *rest])


def test_batch_sizes_fluidaudio_sends_must_all_be_accepted(offline_uncompiled):
    package = offline_uncompiled / "Segmentation.mlpackage"
    edit_spec(package, lambda d: _set_batch(d, "audio", enumerated=[32, *range(1, 32)]))
    assert check_fluidaudio(offline_uncompiled).passed  # EnumeratedShapes covering 1..32: fine
    edit_spec(
        package, lambda d: _set_batch(d, "audio", enumerated=[32, *range(1, 17), *range(18, 32)])
    )
    _fails_with(
        offline_uncompiled, "error: Segmentation.mlpackage input 'audio'", "refuses batch 17"
    )
    edit_spec(package, lambda d: _set_batch(d, "audio", fixed=True))
    _fails_with(
        offline_uncompiled, "FluidAudio sends (1..32, 1, 160000) and the model refuses batch 2..32"
    )


def test_inputs_fluidaudio_sizes_itself_must_default_to_batch_1(offline_uncompiled):
    edit_spec(
        offline_uncompiled / "FBank.mlpackage",
        lambda d: _set_batch(d, "audio", enumerated=[32, 1]),
    )
    _fails_with(
        offline_uncompiled,
        "error: FBank.mlpackage input 'audio': FluidAudio builds this input from the model's own "
        "first/default shape, (32, 1, 160000); it must be (1, 1, 160000)",
    )


# --- fails: plda-parameters.json ------------------------------------------------------------


def _rewrite_psi(folder, values: np.ndarray, **fields):
    path = folder / "plda-parameters.json"
    doc = json.loads(path.read_text())
    doc["tensors"]["psi"].update(
        data_base64=base64.b64encode(values.tobytes()).decode(), shape=list(values.shape), **fields
    )
    path.write_text(json.dumps(doc))


def test_psi_of_the_wrong_width_fails(export_copy):
    folder = export_copy / REPO_FOLDER
    psi = np.frombuffer(
        base64.b64decode(
            json.loads((folder / "plda-parameters.json").read_text())["tensors"]["psi"][
                "data_base64"
            ]
        ),
        dtype="<f4",
    )
    assert psi.shape == (128,) and np.all(
        psi > 0
    )  # what the fresh export holds, decoded independently
    _rewrite_psi(folder, psi[:127].astype("<f4"))
    _fails_with(
        export_copy,
        "psi holds 127 float32 values, rho has 128: FluidAudio's VBx silently falls back to Phi = 1",
    )


def test_psi_in_float64_fails_even_when_the_byte_count_fits(export_copy):
    folder = export_copy / REPO_FOLDER
    _rewrite_psi(folder, np.linspace(1, 2, 64).astype("<f8"), dtype="float64")
    # 64 float64 = 512 bytes = 128 float32: the width check alone would pass
    _fails_with(
        export_copy, "psi declared float64: FluidAudio ignores dtype and reads the bytes as float32"
    )


def test_non_positive_psi_fails_and_a_shadowing_file_warns(export_copy):
    folder = export_copy / REPO_FOLDER
    shutil.copyfile(folder / "plda-parameters.json", export_copy / "plda-parameters.json")
    values = np.ones(128, dtype="<f4")
    values[5] = -1.0
    _rewrite_psi(export_copy, values)  # the file FluidAudio finds first
    out = _fails_with(export_copy, "1 psi value(s) not positive and finite")
    assert (
        "warning: plda-parameters.json: FluidAudio reads this file, not speaker-diarization/plda-parameters.json"
        in out
    )


def test_vbx_settings_fluidaudio_ignores_are_a_warning(export_copy):
    path = export_copy / REPO_FOLDER / "plda-parameters.json"
    doc = json.loads(path.read_text())
    doc["vbx"]["Fa"] = 0.1
    path.write_text(json.dumps(doc))
    report = check_fluidaudio(export_copy)
    assert report.passed
    (warning,) = report.warnings
    assert "ignores this file's VBx settings: Fa 0.1 (FluidAudio uses 0.07)" in warning.message


# --- compiled models (read as far as Linux allows) ------------------------------------------


def test_compiled_model_metadata_is_checked(export_copy):
    meta = export_copy / REPO_FOLDER / "Embedding.mlmodelc" / "metadata.json"
    doc = json.loads(meta.read_text())
    doc[0]["outputSchema"][0]["dataType"] = "Float16"
    meta.write_text(json.dumps(doc))
    _fails_with(export_copy, "error: Embedding.mlmodelc output 'embedding': declared float16")


def test_compiled_model_without_readable_io_is_a_warning(export_copy):
    (export_copy / REPO_FOLDER / "PldaRho.mlmodelc" / "metadata.json").unlink()
    report = check_fluidaudio(export_copy)
    assert report.passed
    (warning,) = report.warnings
    assert warning.where == "PldaRho.mlmodelc" and "not checkable on Linux" in warning.message


MIL = """program(1.0)
{
    func main<ios17>(tensor<fp32, [?, 1, 160000]> {name})
        [FlexibleShapeInformation = tuple<tuple<tensor<string, []>>>()] {
            tensor<fp32, [?, 589, 7]> segments = reshape(shape = s, x = a);
    } -> (segments);
}
"""


def test_compiled_model_mil_signature_is_read_when_metadata_is_absent(export_copy):
    compiled = export_copy / REPO_FOLDER / "Segmentation.mlmodelc"
    (compiled / "metadata.json").unlink()
    (compiled / "model.mil").write_text(MIL.replace("{name}", "audio"))
    report = check_fluidaudio(export_copy)
    assert report.passed  # name and dtype match; the batch range is not readable here
    (warning,) = report.warnings
    assert "cannot tell here whether" in warning.message and "(1..32, 1, 160000)" in warning.message
    (compiled / "model.mil").write_text(MIL.replace("{name}", "waveform"))
    _fails_with(export_copy, "error: Segmentation.mlmodelc: no input named 'audio' (has: waveform)")


def test_a_folder_without_any_fluidaudio_model_fails(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here\n")
    _fails_with(tmp_path, "no FluidAudio model here")


def test_the_manifest_records_enumerated_batch_sizes(bundles):
    """A Swift app (or this check, on a download) reads the accepted batch sizes from the
    manifest: they must be what the package's own spec declares (read with coremltools)."""
    import coremltools as ct

    manifest = json.loads((bundles["offline"] / "manifest.json").read_text())
    entry = next(a for a in manifest["artifacts"] if a["name"] == "Segmentation.mlpackage")
    spec = ct.models.MLModel(
        str(bundles["offline"] / entry["name"]), skip_model_load=True
    ).get_spec()
    (declared,) = (i for i in spec.description.input if i.name == entry["inputs"][0]["name"])
    shapes = declared.type.multiArrayType.enumeratedShapes.shapes
    assert len(shapes) > 1
    assert entry["inputs"][0]["enumerated"] == {"0": sorted(int(s.shape[0]) for s in shapes)}
    assert entry["inputs"][0]["shape"] == list(shapes[0].shape)  # the default comes first
