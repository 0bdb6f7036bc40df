"""Device-grade variants: fp16 programs (the Neural Engine's only precision) that still match
PyTorch, judged through the saved package by the MIL executor against pyannote's own forward.

The fp16 WeSpeaker keeps its fbank up to the log in fp32 (ModelSpec.fp32_values): these tests
pin which ops that is, show that the result meets the fp16 bound on every built-in signal, and
that the same program with the fbank in fp16 is caught by the same judge.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.mlpackage import iter_ops, load_program
from coreml_diarize.models import get_spec
from coreml_diarize.quantize import QuantizeConfig, quantize_package
from coreml_diarize.validation.report import validate_package

# every built-in signal of the embedding spec (validation/reference_embedding.py)
SIGNALS = {"noise", "silence", "clipped", "sine_sweep", "speech_0s", "speech_15s", "speech_like"}


def _compute_dtypes(package) -> list[tuple[str, str, str]]:
    """(op type, output name, dtype) of every op that computes (not consts, not casts)."""
    from coremltools.converters.mil.mil import types

    return [
        (op.op_type, op.outputs[0].name, types.builtin_to_string(op.outputs[0].dtype))
        for op in iter_ops(load_program(package).functions["main"])
        if op.outputs
        and op.op_type != "const"
        and not op.op_type.startswith(("constexpr_", "cast"))
    ]


@pytest.fixture(scope="module")
def emb_fp16(emb_package, tmp_path_factory):
    return quantize_package(emb_package, tmp_path_factory.mktemp("fp16"), QuantizeConfig("fp16"))


@pytest.fixture(scope="module")
def emb_fp16_report(emb_fp16, emb_ctx):
    return validate_package(emb_fp16.dst, backend="mil", ctx=emb_ctx)


def test_fp16_wespeaker_keeps_only_the_fbank_in_fp32(emb_fp16, record_property):
    ops = _compute_dtypes(emb_fp16.dst)
    fp32 = [(t, n) for t, n, d in ops if d == "fp32"]
    record_property("fp32_ops", fp32)
    record_property("ops", len(ops))
    # the waveform's reshape, the DFT conv, its square, the mel matmul, the floor and the log
    assert [t for t, _ in fp32] == ["expand_dims", "conv", "mul", "matmul", "clip", "log"]
    assert fp32[-1][1] in get_spec("embedding").fp32_values
    assert {d for t, _, d in ops if t == "linear"} == {"fp16"}
    resnet_convs = [d for t, _, d in ops if t == "conv"][1:]
    assert len(resnet_convs) == 36 and set(resnet_convs) == {"fp16"}


def test_fp16_wespeaker_matches_pytorch_on_every_signal(emb_fp16_report, record_property):
    report = emb_fp16_report
    assert report.passed, report.table()
    cosines = {c.input: c.outputs[0].cosine_min for c in report.cases}
    record_property("cosine_min", cosines)
    assert set(cosines) >= SIGNALS
    assert min(cosines.values()) >= 0.999  # the bound; measured >= 0.99997


def test_fp16_fbank_is_caught_by_the_judge(emb_package, emb_ctx, tmp_path, monkeypatch):
    """Without its fp32 stages the fp16 program loses quiet speech bins to underflow: the same
    validation that passes the shipped recipe must fail it."""
    import coreml_diarize.quantize.apply as apply

    spec = get_spec("embedding")
    naive = dataclasses.replace(spec, fp32_values=(), uncompressed=())
    monkeypatch.setattr(apply, "_spec_of", lambda meta: naive)
    result = quantize_package(emb_package, tmp_path, QuantizeConfig("fp16"))
    assert {d for t, _, d in _compute_dtypes(result.dst) if t == "log"} == {"fp16"}
    monkeypatch.undo()
    report = validate_package(result.dst, backend="mil", ctx=emb_ctx)
    assert not report.passed
    failures = [f for case in report.cases for o in case.outputs for f in o.failures]
    assert any("cosine" in f for f in failures), failures


def test_palettize8_wespeaker_is_an_fp16_program_with_fp16_tables(
    emb_package, emb_ctx, tmp_path, record_property
):
    result = quantize_package(emb_package, tmp_path, QuantizeConfig("palettize", nbits=8))
    program = load_program(result.dst)
    luts = [
        op for op in iter_ops(program.functions["main"]) if op.op_type == "constexpr_lut_to_dense"
    ]
    assert luts and {op.lut.val.dtype for op in luts} == {np.dtype(np.float16)}
    ops = _compute_dtypes(result.dst)
    assert [t for t, _, d in ops if d == "fp32"] == [
        "expand_dims",
        "conv",
        "mul",
        "matmul",
        "clip",
        "log",
    ]
    record_property("size_bytes", result.size_after)
    report = validate_package(result.dst, backend="mil", ctx=emb_ctx)
    record_property("cosine_min", {c.input: c.outputs[0].cosine_min for c in report.cases})
    assert report.passed, report.table()


# --- segmentation on trained weights (the synthetic-speech fixture, tests/fixtures) ----------

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"


@pytest.fixture(scope="module")
def fixture_seg(tmp_path_factory):
    """(context, fp32 package) of the trained fixture, through the real checkpoint loader."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model

    spec = get_spec("segmentation")
    ctx = make_context(spec, source=str(FIXTURE))
    assert ctx.weights.provenance.trained
    return ctx, convert_model(spec, ctx, tmp_path_factory.mktemp("fixture")).path


@pytest.mark.parametrize("recipe", [{"mode": "fp16"}, {"mode": "palettize", "nbits": 8}])
def test_device_segmentation_on_trained_weights(fixture_seg, recipe, tmp_path, record_property):
    """The trained bounds (decisive-frame argmax >= 99.5 %, mean error / spread <= 0.02) hold
    for both device variants on every built-in signal (measured: 1.0000 and <= 0.0015)."""
    ctx, package = fixture_seg
    variant = quantize_package(package, tmp_path, QuantizeConfig.from_mapping(recipe))
    report = validate_package(variant.dst, backend="mil", ctx=ctx)
    (tolerance,) = get_spec("segmentation").tolerance_for(report.recipe).values()
    assert (tolerance.min_argmax_agreement, tolerance.argmax_margin) == (0.995, 1.0)
    assert tolerance.max_relative_to_spread == 0.02
    assert report.trained == "true"
    assert report.passed, report.table()
    worst = {c.input: c.outputs[0].argmax_agreement_confident for c in report.cases}
    record_property("decisive_argmax", worst)
    assert set(worst) >= {"silence", "noise", "sine_sweep", "clipped", "speech_0s", "speech_15s"}
