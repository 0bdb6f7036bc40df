"""Issue #21 item 1: on macOS's case-insensitive file systems a bundle's `manifest.json` answers
to `Manifest.json`, the name that marks an .mlpackage. `validate <bundle dir>` took the bundle for
a package and failed with "corrupt Manifest.json" (exit 5). These tests run the CLI flows inside
a case-folding view of the file system (tests/casefold.py), as a Mac would."""

from __future__ import annotations

import shutil

import pytest
from casefold import case_insensitive_lookup
from click.testing import CliRunner

from coreml_diarize.app.bundle import make_bundle, save_report
from coreml_diarize.app.cli import main
from coreml_diarize.app.golden import write_bundle_golden
from coreml_diarize.mlpackage import collect_packages, is_package_dir


@pytest.fixture(scope="module")
def bundle(seg_package, tmp_path_factory):
    """A bundle of two validated packages with golden I/O (golden inputs come from the
    segmentation model, so it is in; the postprocessor is cheap)."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec
    from coreml_diarize.validation.report import validate_package

    spec = get_spec("postprocessor")
    root = tmp_path_factory.mktemp("casefold")
    packages = [
        convert_model(spec, make_context(spec), root / "build").path,
        root / "build" / seg_package.name,
    ]
    shutil.copytree(seg_package, packages[1])
    for package in packages:
        save_report(package, validate_package(package, backend="mil").to_dict())
    golden = write_bundle_golden(packages, root / "golden")
    return make_bundle(
        packages, root / "dist", golden=golden, allow_untrained=True, compile_models=False
    ).directory


def test_the_view_folds_case_as_macos_does(bundle):
    """The stand-in itself: the lookup that broke on a Mac succeeds in the view, not outside."""
    assert (bundle / "manifest.json").is_file()
    assert not (bundle / "Manifest.json").is_file()
    with case_insensitive_lookup():
        assert (bundle / "Manifest.json").is_file()
        assert (bundle / "MANIFEST.JSON").read_text() == (bundle / "manifest.json").read_text()


def test_a_bundle_is_not_taken_for_a_package(bundle):
    with case_insensitive_lookup():
        assert not is_package_dir(bundle)
        packages = collect_packages([bundle])
    assert [p.name for p in packages] == [
        "powerset_postprocessor.mlpackage",
        "pyannote_segmentation.mlpackage",
    ]
    assert is_package_dir(packages[0])


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "{bundle}", "--backend", "mil", "--quiet"],
        ["verify", "{bundle}"],
        ["verify", "{bundle}", "--run-golden", "--backend", "mil"],
    ],
    ids=["validate", "verify", "verify-golden"],
)
def test_cli_flows_on_a_case_insensitive_disk(bundle, args):
    args = [a.format(bundle=bundle) for a in args]
    with case_insensitive_lookup():
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "Manifest.json" not in result.output
