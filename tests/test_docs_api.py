"""The coremltools API the docs name exists: every `MLModel` method called in README.md and
docs/*.md is a member of coremltools' `MLModel` class (docs/ane.md once named
`get_compiled_path()`, which coremltools 9.0 does not have: it is `get_compiled_model_path()`).

Python only: Swift code (```swift blocks, and calls with Swift's labelled arguments such as
`MLModel.compileModel(at:)`) names Core ML's own `MLModel`, a different class.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SWIFT_BLOCK = re.compile(r"^```swift\b.*?^```", re.S | re.M)
# a call on coremltools' MLModel: the class, an instance named as the docs name them, or one
# constructed in place; the method, then its first argument (to tell Swift's `label:` apart)
MLMODEL_CALL = re.compile(
    r"(?:\b(?:ct|coremltools)\.models\.MLModel\([^()]*\)|\bMLModel|\bmlmodel|\bml_model|\bmodel)"
    r"\.([A-Za-z_]\w*)\(\s*(\w+\s*:(?!:))?"
)


def mlmodel_calls(text: str) -> set[str]:
    """Method names called on an MLModel in Markdown `text`, Swift left out."""
    text = SWIFT_BLOCK.sub("", text)
    return {m.group(1) for m in MLMODEL_CALL.finditer(text) if m.group(2) is None}


def missing_methods(text: str) -> set[str]:
    from coremltools.models import MLModel

    return {name for name in mlmodel_calls(text) if not hasattr(MLModel, name)}


def test_the_scanner_finds_python_calls_and_leaves_swift_alone():
    assert missing_methods("`model.get_compiled_path()`") == {"get_compiled_path"}
    assert missing_methods("`model.get_compiled_model_path()`") == set()
    assert mlmodel_calls("`ct.models.MLModel(path, skip_model_load=True).get_spec()`") == {
        "get_spec"
    }
    assert mlmodel_calls("`MLModel.get_available_compute_devices()`") == {
        "get_available_compute_devices"
    }
    # Swift: a fenced block, and a labelled argument in prose
    swift = "```swift\nlet out = try model.prediction(from: x)\nmodel.foo()\n```\n"
    assert mlmodel_calls(swift) == set()
    assert mlmodel_calls("first `try await MLModel.compileModel(at: url)`") == set()
    # not calls: file names and attributes
    assert mlmodel_calls("parses `model.mlmodel` and `MLModel.__init__`") == set()


@pytest.mark.parametrize(
    "doc",
    [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))],
    ids=lambda p: p.relative_to(ROOT).as_posix(),
)
def test_docs_name_only_mlmodel_methods_coremltools_has(doc: Path):
    missing = missing_methods(doc.read_text())
    assert not missing, f"{doc.name} calls MLModel methods coremltools lacks: {sorted(missing)}"
