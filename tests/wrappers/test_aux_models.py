"""The three auxiliary models: torch wrappers vs independent references, and their conversion.

Every named case of `validation.reference_aux.*_inputs` runs through the wrapper and through the
reference (pyannote's own code where it exists); the converted .mlpackages must carry the
contract's exact I/O and, when the MIL reference executor is available, compute the same.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from coreml_diarize.models import POST_EMBEDDING, POSTPROCESSOR, PREPROCESSOR
from coreml_diarize.specs import BuildContext, ModelSpec, Options, Tolerance
from coreml_diarize.validation import reference_aux as ref
from coreml_diarize.wrappers import post_embedding, powerset, preprocessor

AUX = {spec.key: spec for spec in (POSTPROCESSOR, PREPROCESSOR, POST_EMBEDDING)}

# The named cases each model is validated on (kept explicit so a dropped case fails loudly).
CASES = {
    "postprocessor": [
        "random",
        "segmented",
        "silent",
        "single_speaker",
        "all_overlap",
        "exact_ties",
        "uniform",
        "saturated",
    ],
    "preprocessor": [
        "random",
        "random_dense",
        "silent",
        "all_overlap",
        "single_speaker",
        "overlap_only_pair",
        "fallback_boundary",
    ],
    "post-embedding": [
        "random_d256",
        "d1",
        "d1024",
        "empty_db",
        "zero_embedding",
        "all_zero",
        "self_match",
        "silent",
        "all_overlap",
        "single_speaker",
        "threshold_boundary",
        "threshold_boundary_b",
    ],
}
ALL_CASES = [(key, case) for key, cases in CASES.items() for case in cases]


# --- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ctx() -> BuildContext:
    from coreml_diarize.sources import default_geometry

    return BuildContext(geometry=default_geometry(), options=Options())


@pytest.fixture(scope="module")
def min_num_samples() -> tuple[int, int]:
    """pyannote's own binary search (seconds): run once for the module."""
    return ref.pyannote_min_num_samples()


def build_reference(spec: ModelSpec, ctx: BuildContext, min_num_samples: tuple[int, int]):
    if spec is PREPROCESSOR:
        return ref.preprocessor_reference(ctx, min_num_samples=min_num_samples)
    return spec.build_reference(ctx)


@pytest.fixture(scope="module")
def models(ctx, min_num_samples) -> dict[str, tuple]:
    """key -> (wrapper, reference, named inputs), built once."""
    return {
        key: (
            spec.build_wrapper(ctx),
            build_reference(spec, ctx, min_num_samples),
            spec.example_inputs(ctx),
        )
        for key, spec in AUX.items()
    }


def run_wrapper(spec: ModelSpec, wrapper: torch.nn.Module, inputs: dict) -> dict[str, np.ndarray]:
    args = [torch.from_numpy(np.asarray(inputs[t.name], dtype=np.float32)) for t in spec.inputs]
    with torch.no_grad():
        out = wrapper(*args)
    out = out if isinstance(out, tuple) else (out,)
    return {t.name: o.numpy() for t, o in zip(spec.outputs, out, strict=True)}


def assert_matches(spec: ModelSpec, got: dict, want: dict, where: str) -> None:
    """Shapes, float32, finite, and within the spec's fp32 tolerance (0.0 = exact)."""
    tolerances = spec.tolerance_for("fp32")
    assert set(got) >= set(want), where
    for name, expected in want.items():
        actual = np.asarray(got[name])
        assert actual.shape == expected.shape, f"{where}/{name}: {actual.shape} != {expected.shape}"
        assert actual.dtype == np.float32, f"{where}/{name}: {actual.dtype}"
        assert np.isfinite(actual).all(), f"{where}/{name}: NaN or inf"
        tol: Tolerance = tolerances[name]
        error = float(np.max(np.abs(actual - expected))) if actual.size else 0.0
        assert error <= (tol.max_abs or 0.0), f"{where}/{name}: max |error| {error}"


# --- wrappers vs references ------------------------------------------------------------------


@pytest.mark.parametrize("key", list(CASES))
def test_case_names(models, key: str) -> None:
    assert list(models[key][2]) == CASES[key]


@pytest.mark.parametrize(("key", "case"), ALL_CASES)
def test_wrapper_matches_reference(models, ctx, key: str, case: str) -> None:
    spec = AUX[key]
    wrapper, reference, cases = models[key]
    inputs = cases[case]
    for t in spec.inputs:  # the cases themselves follow the contract
        expected = ctx.geometry.resolve(t.shape)
        shape = inputs[t.name].shape
        assert inputs[t.name].dtype == np.float32
        assert len(shape) == len(expected)
        assert all(
            a == b or axis in t.flexible
            for axis, (a, b) in enumerate(zip(shape, expected, strict=True))
        )
    want = reference(inputs)
    for t in spec.outputs:
        assert np.isfinite(want[t.name]).all(), f"reference {t.name} not finite"
    assert_matches(spec, run_wrapper(spec, wrapper, inputs), want, f"{key}/{case}")


# --- powerset postprocessor ------------------------------------------------------------------


def test_mapping_is_pyannotes(ctx) -> None:
    from pyannote.audio.utils.powerset import Powerset

    g = ctx.geometry
    assert powerset.max_set_size(g.speakers, g.classes) == 2
    wrapper = powerset.build_wrapper(ctx)
    expected = Powerset(g.speakers, 2).mapping
    assert tuple(wrapper.mapping.shape) == (g.classes, g.speakers)
    assert torch.equal(wrapper.mapping, expected)
    with pytest.raises(ValueError):
        powerset.max_set_size(3, 6)


def test_tie_rule_is_first_index(ctx) -> None:
    """Exact ties pick the first maximal class, as torch.argmax in pyannote does."""
    g = ctx.geometry
    wrapper = powerset.build_wrapper(ctx)
    reference = ref.postprocessor_reference(ctx)
    segments = np.full((1, g.frames, g.classes), -5.0, dtype=np.float32)
    segments[0, 0, :] = -1.0  # all tied -> class 0 (nobody)
    segments[0, 1, [1, 2]] = -0.5  # {1} vs {2} -> speaker 1 only
    segments[0, 2, [2, 4]] = -0.5  # {2} vs {1,2} -> speaker 2 only
    segments[0, 3, [4, 6]] = -0.5  # {1,2} vs {2,3} -> speakers 1 and 2
    segments[0, 4, [g.classes - 1, 3]] = -0.5  # order of the tied classes does not matter
    got = run_wrapper(POSTPROCESSOR, wrapper, {"segments": segments})["speaker_masks"][0]
    assert got[:5].tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert np.array_equal(got, reference({"segments": segments})["speaker_masks"][0])
    # the assumption the reference rests on: torch.argmax returns the first maximum
    assert int(torch.argmax(torch.tensor([0.0, 1.0, 1.0, 1.0]))) == 1


def test_exact_ties_case_has_ties(models) -> None:
    segments = models["postprocessor"][2]["exact_ties"]["segments"][0]
    tied = (segments == segments.max(axis=-1, keepdims=True)).sum(axis=-1)
    assert (tied >= 2).all()


# --- embedding preprocessor ------------------------------------------------------------------


def test_min_num_samples_is_pyannotes(ctx, min_num_samples) -> None:
    samples, rate = min_num_samples
    assert rate == ctx.geometry.sample_rate
    assert preprocessor.embedding_min_num_samples(rate) == samples == 400
    # pyannote: ceil(num_frames * min_num_samples / num_samples)
    expected = math.ceil(ctx.geometry.frames * samples / ctx.geometry.samples)
    assert preprocessor.min_num_frames(ctx.geometry) == expected == 2
    meta = preprocessor.build_wrapper(ctx).metadata
    assert meta["embedding_min_num_samples"] == "400" and meta["clean_min_num_frames"] == "2"


def test_preprocessor_without_fallback(models, ctx) -> None:
    """clean_fallback=False is the plain clean-mask product; the cases do exercise the
    difference (the fallback changes the masks on the overlap-heavy cases)."""
    plain_ctx = dataclasses.replace(ctx, options=Options(clean_fallback=False))
    wrapper = preprocessor.build_wrapper(plain_ctx)
    reference = ref.preprocessor_reference(plain_ctx)
    _, with_fallback, cases = models["preprocessor"]
    differs = set()
    for case, inputs in cases.items():
        want = reference(inputs)
        assert_matches(PREPROCESSOR, run_wrapper(PREPROCESSOR, wrapper, inputs), want, case)
        if not np.array_equal(want["mask"], with_fallback(inputs)["mask"]):
            differs.add(case)
    assert {"all_overlap", "overlap_only_pair", "fallback_boundary"} <= differs


def test_fallback_boundary(models) -> None:
    """At exactly min_num_frames clean frames pyannote falls back; one more and it does not."""
    wrapper, _, cases = models["preprocessor"]
    inputs = cases["fallback_boundary"]
    masks = inputs["speaker_masks"][0]
    clean = masks * (masks.sum(axis=1, keepdims=True) < 2)
    assert clean.sum(axis=0).tolist() == [1.0, 2.0, 3.0]
    got = run_wrapper(PREPROCESSOR, wrapper, inputs)["mask"]
    assert np.array_equal(got[:2], masks[:, :2].T)  # fallback: whole masks
    assert np.array_equal(got[2], clean[:, 2])  # enough clean frames: clean mask


# --- unified post-embedding ------------------------------------------------------------------


def test_zero_vectors_are_at_distance_one(models) -> None:
    wrapper, _, cases = models["post-embedding"]
    empty = run_wrapper(POST_EMBEDDING, wrapper, cases["empty_db"])["distances"]
    assert np.all(empty == 1.0)
    zero = run_wrapper(POST_EMBEDDING, wrapper, cases["zero_embedding"])["distances"]
    assert np.all(zero[1] == 1.0) and np.all(zero[:, 3] == 1.0)
    assert np.all(run_wrapper(POST_EMBEDDING, wrapper, cases["all_zero"])["distances"] == 1.0)


def test_thresholds_on_both_sides(models, ctx) -> None:
    wrapper, _, cases = models["post-embedding"]
    out = run_wrapper(POST_EMBEDDING, wrapper, cases["threshold_boundary"])
    keep = math.ceil(ctx.options.min_speaker_duration_s / ctx.geometry.frame_step_s)
    valid = math.ceil(ctx.options.min_activity_frames)
    assert out["activity"].tolist() == [keep - 1, keep, valid]
    assert out["valid"].tolist() == [1.0, 1.0, 1.0]
    kept = out["filtered_masks"][0].sum(axis=0)
    assert kept.tolist() == [0.0, keep, 0.0]  # 59 frames < 1 s dropped, 60 kept, 10 dropped
    out_b = run_wrapper(POST_EMBEDDING, wrapper, cases["threshold_boundary_b"])
    assert out_b["valid"].tolist() == [0.0, 1.0, 1.0]  # valid - 1 frames is not valid


def test_post_embedding_other_thresholds(models, ctx) -> None:
    options = Options(min_activity_frames=25.0, min_speaker_duration_s=0.5)
    other = dataclasses.replace(ctx, options=options)
    wrapper = post_embedding.build_wrapper(other)
    reference = ref.post_embedding_reference(other)
    for case, inputs in ref.post_embedding_inputs(other).items():
        got = run_wrapper(POST_EMBEDDING, wrapper, inputs)
        assert_matches(POST_EMBEDDING, got, reference(inputs), case)


# --- conversion ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def converted(ctx, tmp_path_factory) -> dict[str, str]:
    from coreml_diarize.converters.convert import convert_model

    out = tmp_path_factory.mktemp("aux_mlpackages")
    return {key: str(convert_model(spec, ctx, out).path) for key, spec in AUX.items()}


def _program(spec_proto):
    function = spec_proto.mlProgram.functions["main"]
    return function, function.block_specializations[function.opset]


@pytest.mark.parametrize("key", list(AUX))
def test_converted_io_is_the_contract(converted, ctx, key: str) -> None:
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    spec = AUX[key]
    proto = ct.models.MLModel(converted[key], skip_model_load=True).get_spec()
    float32 = FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    inputs = {f.name: f.type.multiArrayType for f in proto.description.input}
    outputs = {f.name: f.type.multiArrayType for f in proto.description.output}
    assert list(inputs) == [t.name for t in spec.inputs]
    assert list(outputs) == [t.name for t in spec.outputs]
    for t in spec.inputs:
        array = inputs[t.name]
        assert tuple(array.shape) == ctx.geometry.resolve(t.shape)
        assert array.dataType == float32
        if t.flexible:  # speaker_db: (1..1024, E)
            ranges = [(r.lowerBound, r.upperBound) for r in array.shapeRange.sizeRanges]
            expected = [
                t.flexible.get(axis, (size, size))
                for axis, size in enumerate(ctx.geometry.resolve(t.shape))
            ]
            assert ranges == expected
            assert ranges[0][1] >= 256
    # outputs: float32, and the program's own output types have the contract's shapes
    function, block = _program(proto)
    assert list(block.outputs) == [t.name for t in spec.outputs]
    types = {o.name: o.type.tensorType for op in block.operations for o in op.outputs}
    flexible_out = key == "post-embedding"  # distances: (S, D), D follows speaker_db
    for t in spec.outputs:
        assert outputs[t.name].dataType == float32
        tensor = types[t.name]
        dims = [d.constant.size if d.HasField("constant") else None for d in tensor.dimensions]
        expected = list(ctx.geometry.resolve(t.shape))
        if flexible_out and t.name == "distances":
            expected[1] = None
        assert dims == expected, t.name
    assert function.opset == "CoreML7"  # iOS 17


def test_converted_postprocessor_has_no_argmax(converted) -> None:
    """Core ML's reduce_argmax leaves ties undefined: the tie rule must not depend on it."""
    import coremltools as ct

    proto = ct.models.MLModel(converted["postprocessor"], skip_model_load=True).get_spec()
    ops = {op.type for op in _program(proto)[1].operations}
    assert "reduce_argmax" not in ops and "reduce_argmin" not in ops


def test_converted_metadata_records_thresholds(converted, ctx) -> None:
    import coremltools as ct

    meta = ct.models.MLModel(converted["preprocessor"], skip_model_load=True).user_defined_metadata
    thresholds = json.loads(meta["coreml_diarize.thresholds"])
    assert thresholds["min_activity_frames"] == ctx.options.min_activity_frames
    assert thresholds["min_speaker_duration_s"] == ctx.options.min_speaker_duration_s
    assert thresholds["clean_fallback"] is True
    geometry = json.loads(meta["coreml_diarize.geometry"])
    # the fallback threshold follows from the recorded geometry and pyannote's constant
    window = preprocessor.embedding_min_num_samples(geometry["sample_rate"])
    assert math.ceil(geometry["frames"] * window / geometry["samples"]) == 2


@pytest.mark.parametrize(("key", "case"), ALL_CASES)
def test_mil_executor_matches_reference(converted, models, key: str, case: str) -> None:
    executor = pytest.importorskip("coreml_diarize.validation.mil.executor")
    spec = AUX[key]
    _, reference, cases = models[key]
    inputs = cases[case]
    got = executor.MILExecutor.from_path(converted[key]).predict(inputs)
    got = {name: np.asarray(value) for name, value in got.items()}
    assert_matches(spec, got, reference(inputs), f"mil/{key}/{case}")
