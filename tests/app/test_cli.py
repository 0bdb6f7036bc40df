"""The CLI drives the library: convert + inspect through Click's runner, errors as one line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from coreml_diarize.app.cli import main
from coreml_diarize.atomic import LOCK_NAME


def test_inspect_json_reports_contract_io_and_ops(seg_package):
    result = CliRunner().invoke(main, ["inspect", str(seg_package), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["inputs"][0]["name"] == "audio"
    assert info["outputs"][0]["shape"] == [1, 589, 7]
    assert info["op_histogram"]["lstm"] == 4
    assert info["size_bytes"] > 1_000_000


def test_convert_segmentation_via_cli(tmp_path):
    result = CliRunner().invoke(
        main, ["convert", "segmentation", "--source", "random:3", "--out", str(tmp_path)]
    )
    assert result.exit_code == 0, result.output
    package = tmp_path / "pyannote_segmentation.mlpackage"
    assert (package / "Manifest.json").is_file()
    assert "UNTRAINED" in result.output
    # nothing but the package is left in the output directory (temp dirs are gone)
    visible = sorted(p.name for p in tmp_path.iterdir() if p.name != LOCK_NAME)
    assert visible == ["pyannote_segmentation.mlpackage"]
    meta = json.loads(CliRunner().invoke(main, ["inspect", str(package), "--json"]).output)[
        "metadata"
    ]
    assert meta["coreml_diarize.source.sha256"] == "random-init:3"


def test_unknown_model_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["convert", "nonsense", "--out", str(tmp_path)])
    assert result.exit_code == 2
    from coreml_diarize.models import registry

    keys = ", ".join(registry())
    assert keys.startswith("segmentation, postprocessor, preprocessor, embedding, post-embedding")
    assert "plda-rho" in keys
    assert result.output.strip().splitlines() == [
        f"error: unknown model 'nonsense' (choose from: {keys})"
    ]
    assert list(tmp_path.iterdir()) == []


def test_missing_checkpoint_is_one_line_error(tmp_path):
    result = CliRunner().invoke(
        main,
        [
            "convert",
            "segmentation",
            "--source",
            str(tmp_path / "x.bin"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1
    assert "checkpoint not found" in result.output
    assert not (tmp_path / "o" / "pyannote_segmentation.mlpackage").exists()
