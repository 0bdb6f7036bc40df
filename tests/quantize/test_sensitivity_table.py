"""The sensitivity table record (quantize/sensitivity_table.py): the committed tables read and
write back byte for byte, the recipes' recorded table hashes are what the reader reports, merging
split measurements gives the committed table back, and bad tables are one-line errors.

References: the committed files themselves (docs/sensitivity/*.json) and the hashes the committed
recipes recorded when they were searched (quantize/mixed_recipes/*.json)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from coreml_diarize.errors import DiarizeError
from coreml_diarize.quantize.sensitivity_table import TABLE_SCHEMA, SensitivityTable

ROOT = Path(__file__).resolve().parents[2]
TABLES = sorted((ROOT / "docs" / "sensitivity").glob("*.json"))
RECIPES = sorted((ROOT / "quantize" / "mixed_recipes").glob("*.json"))
SEGMENTATION = ROOT / "docs" / "sensitivity" / "pyannote_segmentation.json"
WESPEAKER = ROOT / "docs" / "sensitivity" / "wespeaker_v2.json"


def test_there_are_committed_tables_and_recipes():
    assert len(TABLES) >= 3 and len(RECIPES) >= 3


@pytest.mark.parametrize("path", TABLES, ids=lambda p: p.name)
def test_committed_tables_write_back_byte_identical(path):
    text = path.read_text()
    table = SensitivityTable.from_file(path)
    assert table.dumps() == text
    assert "sha256" not in json.loads(table.dumps())  # provenance of the read, not file content
    assert len(table.layers) == len(json.loads(text)["layers"]) > 0


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_committed_recipes_recorded_the_hash_the_reader_reports(path):
    search = json.loads(path.read_text())["search"]
    table = SensitivityTable.from_file(ROOT / search["table"])
    assert table.sha256 == search["table_sha256"]


def test_the_file_hash_is_not_part_of_the_table():
    read = SensitivityTable.from_file(SEGMENTATION)
    parsed = SensitivityTable.from_mapping(json.loads(SEGMENTATION.read_text()))
    assert read.sha256 and parsed.sha256 == ""
    assert read == parsed


def _only_widths(data: dict, widths: list[int], seconds: float) -> dict:
    keep = {str(w) for w in widths}
    layers = [
        {
            **layer,
            "loss": {w: v for w, v in layer["loss"].items() if w in keep},
            "metrics": {w: v for w, v in layer["metrics"].items() if w in keep},
        }
        for layer in data["layers"]
    ]
    return {**data, "widths": widths, "layers": layers, "seconds": seconds}


def test_two_measurements_of_other_widths_merge_into_the_committed_table():
    text = WESPEAKER.read_text()
    data = json.loads(text)
    assert data["widths"] == [8, 6, 4, 2]
    first = SensitivityTable.from_mapping(_only_widths(data, [4, 2], 1000.0))
    second = SensitivityTable.from_mapping(_only_widths(data, [8, 6], data["seconds"] - 1000.0))
    assert set(first.layers[0].loss) == {4, 2}
    merged = first.merged(second)
    assert merged.widths == (8, 6, 4, 2)
    assert merged.dumps() == text
    assert merged.sha256 == ""
    assert second.merged(first).dumps() == text


def test_tables_of_another_calibration_or_package_do_not_merge():
    data = json.loads(WESPEAKER.read_text())
    table = SensitivityTable.from_mapping(_only_widths(data, [8, 6], 1.0))
    other = {**_only_widths(data, [4, 2], 1.0), "calibration": {**data["calibration"], "calls": 9}}
    with pytest.raises(DiarizeError, match="cannot merge sensitivity tables: calibration"):
        table.merged(SensitivityTable.from_mapping(other))
    moved = {**_only_widths(data, [4, 2], 1.0), "package_tree_sha256": "f" * 64}
    with pytest.raises(DiarizeError, match="cannot merge sensitivity tables: package_tree_sha256"):
        table.merged(SensitivityTable.from_mapping(moved))


def test_most_sensitive_orders_by_loss_at_the_width():
    table = SensitivityTable.from_file(SEGMENTATION)
    data = json.loads(SEGMENTATION.read_text())
    by_loss = sorted(data["layers"], key=lambda x: x["loss"]["4"], reverse=True)
    assert [x.name for x in table.most_sensitive(4, n=5)] == [x["name"] for x in by_loss[:5]]


def _layer0(change: dict):
    def edit(data: dict) -> dict:
        layers = [dict(layer) for layer in data["layers"]]
        layers[0] = {**layers[0], **change}
        return {**data, "layers": layers}

    return edit


def _loss0(width: str, value):
    def edit(data: dict) -> dict:
        layers = [dict(layer) for layer in data["layers"]]
        layers[0]["loss"] = {**layers[0]["loss"], width: value}
        return {**data, "layers": layers}

    return edit


def _without(key: str):
    return lambda data: {k: v for k, v in data.items() if k != key}


def _with(**change):
    return lambda data: {**data, **change}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_with(schema="other"), "t.json is not a sensitivity table"),
        (_with(widths=[8, 5]), "t.json: widths must be among 1, 2, 3, 4, 6, 8, got 5"),
        (_with(widths=[8, 8]), "t.json: widths must be distinct"),
        (_with(baseline_loss=-1.0), "t.json: baseline_loss must be a finite number >= 0"),
        (_with(granularity="per_channel"), "t.json: unknown granularity 'per_channel'"),
        (_with(group_size=16), "t.json: group_size goes with granularity per_grouped_channel"),
        (_with(sha256="0" * 64), "t.json: unknown keys sha256"),
        (_without("model"), "t.json has no 'model'"),
        (_without("calibration"), "t.json has no 'calibration'"),
        (_with(layers=[]), "t.json: layers must be distinct weight names (at least one)"),
        (_loss0("4", math.nan), "t.json: loss of convs_0_weight at 4 bits must be a finite"),
        (_loss0("2", math.inf), "t.json: loss of convs_0_weight at 2 bits must be a finite"),
        (_loss0("4", "0.1"), "t.json: loss of convs_0_weight at 4 bits must be a finite"),
        (_loss0("3", 0.1), "layer 'convs_0_weight' has values for widths [3] the table"),
        (_layer0({"loss": {"8": 0.1}}), "layer 'convs_0_weight' has no loss for widths [6, 4, 2]"),
        (_layer0({"elements": 7}), "layer 'convs_0_weight': 7 elements, but shape [60, 80, 5]"),
        (_layer0({"name": "convs_1_weight"}), "layers must be distinct weight names"),
        (_layer0({"bits": 4}), "layer 'convs_0_weight' has unknown keys bits"),
    ],
)
def test_bad_tables_are_one_line_errors_naming_the_file(tmp_path, edit, message):
    data = json.loads(SEGMENTATION.read_text())
    assert data["schema"] == TABLE_SCHEMA and data["layers"][0]["name"] == "convs_0_weight"
    path = tmp_path / "t.json"
    path.write_text(json.dumps(edit(data)))  # NaN and Infinity are what json writes for them
    with pytest.raises(DiarizeError) as info:
        SensitivityTable.from_file(path)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_unreadable_and_missing_files_are_one_line_errors(tmp_path):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    with pytest.raises(DiarizeError, match=r"^cannot parse t\.json: "):
        SensitivityTable.from_file(path)
    with pytest.raises(DiarizeError, match="sensitivity table not found"):
        SensitivityTable.from_file(tmp_path / "absent.json")
