"""The one judge: hand-made arrays with known answers (no models, no backends)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.specs import ModelSpec, TensorSpec, Tolerance
from coreml_diarize.validation import metrics
from coreml_diarize.validation.judge import judge
from coreml_diarize.validation.quantize_report import pooled_accuracy
from coreml_diarize.validation.report import ValidationReport


def _spec(*outputs: str) -> ModelSpec:
    def unused(*_):
        raise AssertionError("the judge needs no wrapper, reference or inputs")

    return ModelSpec(
        key="toy",
        filename="toy",
        role="auxiliary",
        description="hand-made arrays",
        weights=None,
        inputs=(TensorSpec("x", (2, 3), "input"),),
        outputs=tuple(TensorSpec(name, (2, 3), "output") for name in outputs),
        build_wrapper=unused,
        build_reference=unused,
        example_inputs=unused,
        tolerances={},
    )


# two inputs whose references differ by exactly 1.0 everywhere: spread 1.0
REFS = {
    "a": {"y": np.zeros((2, 3), np.float32)},
    "b": {"y": np.ones((2, 3), np.float32)},
}


def _judge(tol: Tolerance, outputs, refs=REFS, **kw):
    return judge(_spec("y"), {"y": tol}, refs, outputs, **kw)


def _shifted(by: float) -> dict:
    return {case: {"y": arrays["y"] + np.float32(by)} for case, arrays in REFS.items()}


# --- max_abs and the fp32 floor ---------------------------------------------------------------


def test_max_abs_within_and_beyond():
    tol = Tolerance(max_abs=1e-3)
    assert _judge(tol, _shifted(5e-4)).passed
    j = _judge(tol, _shifted(2e-3))
    assert not j.passed and not j.failures  # per output, not judgement-wide
    (failure,) = {f for f in j.all_failures()}
    assert failure.startswith("y: max abs error 0.002 > 0.001")
    assert j.cases[0].outputs[0].max_abs == pytest.approx(2e-3, rel=1e-3)


def test_max_prob_abs_judges_log_probabilities_as_probabilities():
    # row 0: the likely class moves by 0.01 in log space (probability 0.5 -> 0.505);
    # row 1: a near-impossible class moves by 2 (log-probability -20 -> -18): huge in log
    # space, 1.5e-8 as a probability
    ref = np.log(np.array([[0.5, 0.3, 0.2], [1.0, 1e-9, 1e-9]], np.float64))
    ref[1, 1:] = -20.0
    ref = ref.astype(np.float32)
    refs = {"a": {"y": ref}, "b": {"y": ref[:, ::-1].copy()}}
    got = ref.copy()
    got[0, 0] += 0.01
    got[1, 1] = -18.0
    tol = Tolerance(max_prob_abs=0.01)
    j = _judge(tol, {"a": {"y": got}, "b": refs["b"]}, refs=refs)
    assert j.passed, j.all_failures()
    result = j.cases[0].outputs[0]
    assert result.max_abs == pytest.approx(2.0)  # what a log-space max_abs would have seen
    assert result.prob_max_abs == pytest.approx(0.5 * (np.exp(0.01) - 1), rel=1e-4)
    assert j.summary()["y"]["prob_max_abs"] == pytest.approx(result.prob_max_abs)
    assert j.cases[1].outputs[0].prob_max_abs == 0.0
    # a decision-relevant change: the likely class loses 0.2 of probability
    far = ref.copy()
    far[0, 0] = np.log(0.3)
    j = _judge(tol, {"a": {"y": far}, "b": refs["b"]}, refs=refs)
    assert not j.passed
    (failure,) = j.all_failures()
    assert failure.startswith("y: max probability error 0.2 > 0.01")
    # unset: not computed
    assert _judge(Tolerance(), {"a": {"y": far}, "b": refs["b"]}, refs=refs).passed
    assert _judge(Tolerance(), _shifted(1.0)).cases[0].outputs[0].prob_max_abs is None


# --- cosine, argmax ---------------------------------------------------------------------------


def test_min_cosine_within_and_beyond():
    ref = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]], np.float32)
    refs = {"a": {"y": ref}, "b": {"y": -ref}}
    tol = Tolerance(min_cosine=0.999)
    near = {"a": {"y": ref + [0, 0.01, 0]}, "b": {"y": -ref}}  # cos 0.99995 on row 0
    j = _judge(tol, near, refs=refs)
    assert j.passed and j.cases[0].outputs[0].cosine_min == pytest.approx(0.99995, abs=1e-5)
    far = {"a": {"y": ref + [0, 0.1, 0]}, "b": {"y": -ref}}  # cos 0.995
    j = _judge(tol, far, refs=refs)
    assert not j.passed and j.all_failures()[0].startswith("y: cosine 0.995")


def test_argmax_agreement_counts_decisive_rows_only():
    # row 0 decisive (margin 5), row 1 a near-tie (margin 5e-4 < the default 1e-3)
    ref = np.array([[0.0, 5.0, 0.0], [1.0, 1.0005, 0.0]], np.float32)
    refs = {"a": {"y": ref}, "b": {"y": ref[:, ::-1].copy()}}
    tol = Tolerance(min_argmax_agreement=1.0)
    tie_flipped = {"a": {"y": np.array([[0, 5, 0], [1.001, 1, 0]], np.float32)}, "b": refs["b"]}
    j = _judge(tol, tie_flipped, refs=refs)
    result = j.cases[0].outputs[0]
    assert (result.argmax_agreement, result.argmax_agreement_confident) == (0.5, 1.0)
    assert j.passed
    decisive_flipped = {"a": {"y": np.array([[6, 5, 0], [1, 1.0005, 0]], np.float32)}}
    j = _judge(tol, {**decisive_flipped, "b": refs["b"]}, refs=refs)
    assert j.cases[0].outputs[0].argmax_agreement_confident == 0.0
    assert not j.passed and j.all_failures()[0].startswith("y: argmax agreement 0.0000 < 1.0")
    # a wider margin leaves no decisive row at all: nothing to disagree on
    wide = Tolerance(min_argmax_agreement=1.0, argmax_margin=10.0)
    assert _judge(wide, {**decisive_flipped, "b": refs["b"]}, refs=refs).passed


# --- spread -----------------------------------------------------------------------------------


def test_error_relative_to_spread():
    tol = Tolerance(max_relative_to_spread=0.02)
    j = _judge(tol, _shifted(0.01))
    assert j.reference_spread["y"] == pytest.approx(1.0)
    assert j.passed and j.cases[0].outputs[0].relative_to_spread == pytest.approx(0.01, rel=1e-3)
    j = _judge(tol, _shifted(0.05))
    assert not j.passed and j.all_failures()[0].startswith("y: error/spread 0.05 > 0.02")


def test_min_reference_spread_fails_a_constant_reference():
    constant = {"a": REFS["a"], "b": {"y": np.zeros((2, 3), np.float32)}}
    tol = Tolerance(max_relative_to_spread=0.02, min_reference_spread=0.05)
    j = _judge(tol, constant, refs=constant)  # a perfect match, but of a constant
    assert j.reference_spread["y"] == 0.0
    assert not j.passed and all(c.passed for c in j.cases)
    (failure,) = j.failures
    assert "barely depends on its input" in failure
    assert j.cases[0].outputs[0].relative_to_spread is None  # no spread to divide by
    assert _judge(tol, REFS).passed  # spread 1.0 >= 0.05


# --- unusable outputs -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_output_fails(bad):
    out = _shifted(0.0)
    out["a"]["y"][1, 2] = bad
    j = _judge(Tolerance(), out)  # even with nothing else to check
    assert not j.passed
    assert j.all_failures() == ["y: NaN or inf in output"]
    assert math.isinf(j.cases[0].outputs[0].max_abs)


def test_shape_mismatch_fails():
    out = {"a": {"y": np.zeros((3, 2), np.float32)}, "b": REFS["b"]}
    j = _judge(Tolerance(max_abs=1.0), out)
    assert j.all_failures() == ["y: shape (3, 2) != (2, 3)"]


def test_missing_output_fails_the_judgement():
    spec = _spec("y", "z")
    tol = {"y": Tolerance(max_abs=0.0), "z": Tolerance(max_abs=0.0)}
    refs = {case: {"y": a["y"], "z": a["y"]} for case, a in REFS.items()}
    outs = {"a": refs["a"], "b": {"y": REFS["b"]["y"]}}
    j = judge(spec, tol, refs, outs)
    assert j.failures == ["b: package has no output(s) z"]
    assert [c.input for c in j.cases] == ["a"] and not j.passed


def test_summary_is_the_worst_per_output():
    out = {"a": {"y": REFS["a"]["y"] + 0.01}, "b": {"y": REFS["b"]["y"] + 0.03}}
    j = _judge(Tolerance(max_relative_to_spread=0.1), out)
    worst = j.summary()["y"]
    assert worst["max_abs"] == pytest.approx(0.03, rel=1e-3)
    assert worst["relative_to_spread"] == pytest.approx(0.03, rel=1e-3)


# --- the report built on it -------------------------------------------------------------------


def test_validation_report_keeps_its_format():
    j = _judge(Tolerance(max_abs=1e-3), _shifted(2e-3))
    report = ValidationReport(
        **vars(j),
        package="toy.mlpackage",
        model="toy",
        recipe="fp32",
        backend="mil",
        compute_units="all",
        trained="false",
        source="random-init:0",
        versions={},
        seconds=0.0,
    )
    d = report.to_dict()
    assert set(d) == {
        "package",
        "model",
        "recipe",
        "backend",
        "compute_units",
        "trained",
        "source",
        "versions",
        "reference_spread",
        "cases",
        "failures",
        "seconds",
        "passed",
        "summary",
        "available_devices",
        "neural_engine_checked",
        "placement",
        "notes",
    }
    assert d["passed"] is False and [c["input"] for c in d["cases"]] == ["a", "b"]
    lines = report.table().splitlines()
    assert lines[1].split() == [
        "input",
        "output",
        "max_abs",
        "prob_abs",
        "psnr",
        "cos_min",
        "argmax",
        "rel",
        "ok",
    ]
    assert lines[2].split()[:2] == ["a", "y"] and lines[2].endswith("FAIL")
    assert lines[-3].startswith("  FAIL y: max abs error") and lines[-1] == "FAILED"


def test_pooled_information_metrics():
    ref = np.array([[0.0, 5.0, 0.0], [3.0, 0.0, 0.0]], np.float32)
    refs = [ref, ref[:, ::-1].copy()]  # row 0 keeps its argmax, row 1 moves: argmax spread 0.5
    outs = [ref, np.array([[0, 5, 0], [0, 0, 3]], np.float32)]
    tol = Tolerance(min_argmax_agreement=0.5, min_cosine=0.5)
    row = pooled_accuracy("y", "torch", refs, outs, tol)
    assert (row.argmax_agreement, row.confident_share, row.argmax_spread) == (1.0, 1.0, 0.5)
    assert row.argmax_relative == 0.0 and row.max_abs == 0.0 and row.cosine_min == 1.0
    assert row.spread == pytest.approx(metrics.mean_abs(*refs))
    broken = pooled_accuracy("y", "torch", refs, [ref, np.full_like(ref, np.nan)], tol)
    assert not broken.finite and math.isinf(broken.max_abs)
    assert metrics.relative(1.0, 0.0) == math.inf and math.isnan(metrics.relative(1.0, math.nan))


def test_quantize_does_not_import_validation():
    """ground <- wrappers <- converters <- quantize <- validation <- app."""
    root = Path(__file__).resolve().parents[2]
    for layer in ("quantize", "converters", "wrappers"):
        for path in (root / layer).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom):
                    names = [node.module or ""]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                assert not any("validation" in n for n in names), (path.name, names)
