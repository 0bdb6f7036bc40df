"""Batch shapes in the registry (docs/ane.md, "Batch shapes"): models meant for the Neural
Engine take a flexible batch as enumerated shapes, never as a range, and a TensorSpec's
enumeration must be one Core ML can declare."""

from __future__ import annotations

import pytest

from coreml_diarize.errors import DiarizeError
from coreml_diarize.models import all_specs
from coreml_diarize.specs import TensorSpec


def test_models_meant_for_the_neural_engine_declare_no_range():
    """`build` makes fp16 / palettize8 variants (for cpu_and_ne) of the models with
    device_variants; a range-flexible input runs on the ANE only at its default shape
    (Apple Developer Forums thread 724930), so none of their inputs may be one."""
    meant_for_ane = [s for s in all_specs() if s.device_variants]
    assert {s.key for s in meant_for_ane} >= {"segmentation", "offline-segmentation"}
    ranged = [(s.key, t.name) for s in meant_for_ane for t in s.inputs if t.flexible]
    assert ranged == []


def test_tensor_spec_refuses_enumerations_core_ml_cannot_declare():
    with pytest.raises(DiarizeError, match="default size 3 of axis 0 is not enumerated"):
        TensorSpec("x", (3, 4), "", enumerated={0: (1, 2, 4)})
    with pytest.raises(DiarizeError, match="2..128 distinct sizes"):
        TensorSpec("x", (1, 4), "", enumerated={0: (1,)})  # coremltools needs >= 2 shapes
    with pytest.raises(DiarizeError, match="2..128 distinct sizes"):
        TensorSpec("x", (1, 4), "", enumerated={0: tuple(range(1, 130))})  # the guide's 128
    with pytest.raises(DiarizeError, match="both a range and enumerated"):
        TensorSpec("x", (1, 4), "", flexible={0: (1, 8)}, enumerated={0: (1, 2)})
    spec = TensorSpec("x", (2, 4), "", enumerated={0: (1, 2, 32)})
    assert [spec.accepts(0, n, 2) for n in (1, 2, 3, 32, 33)] == [True, True, False, True, False]
    assert spec.accepts(1, 4, 4) and not spec.accepts(1, 5, 4)
