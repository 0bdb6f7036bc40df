"""PLDA (VBx features): wrapper vs pyannote's own PLDA, Core ML conversion, random PLDA files.

The reference is pyannote's `PLDA` loaded with `PLDA.from_pretrained` from seeded random npz
files in pyannote's format; the converted .mlpackage runs through the project's MIL executor.
The random PLDA must make pyannote's VBx separate synthetic speakers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from coreml_diarize.plda_sources import (
    PLDA_FILE,
    TRANSFORM_FILE,
    plda_files_sha256,
    random_plda_arrays,
    random_plda_files,
)
from coreml_diarize.validation import reference_plda as ref
from coreml_diarize.wrappers.plda import (
    NORM_EPS,
    PLDATransform,
    plda_parameters,
    pyannote_plda_constants,
)

CASES = ["random", "clustered_speakers", "zero_row", "large_norm", "small_norm", "single"]
E, L = 256, 128
# fp32 vs pyannote's float64: max |error| relative to the largest |feature| of the case
# (measured ~5e-7 for torch and for the MIL executor).
RTOL = 2e-6
MAX_ROWS = 1024  # flexible N of the converted model


@pytest.fixture(scope="module")
def plda_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("plda")
    random_plda_files(directory, seed=0)
    return directory


@pytest.fixture(scope="module")
def plda(plda_dir):
    return ref.load_pyannote_plda(plda_dir)


@pytest.fixture(scope="module")
def wrapper(plda):
    return PLDATransform.from_pyannote(plda)


@pytest.fixture(scope="module")
def cases():
    return ref.plda_inputs(E)


def run_wrapper(wrapper, embeddings: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return wrapper(torch.from_numpy(np.asarray(embeddings, dtype=np.float32))).numpy()


def relative_error(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


# --- random PLDA files -------------------------------------------------------------------------


def test_files_are_pyannotes_format(plda_dir) -> None:
    with np.load(plda_dir / TRANSFORM_FILE) as x:
        assert sorted(x.files) == ["lda", "mean1", "mean2"]
        assert x["mean1"].shape == (E,) and x["mean2"].shape == (L,)
        assert x["lda"].shape == (E, L)
        assert all(x[k].dtype == np.float64 for k in x.files)
    with np.load(plda_dir / PLDA_FILE) as p:
        assert sorted(p.files) == ["mu", "psi", "tr"]
        assert p["mu"].shape == (L,) and p["psi"].shape == (L,) and p["tr"].shape == (L, L)
        assert (p["psi"] > 0).all()


def test_files_are_deterministic(tmp_path, plda_dir) -> None:
    random_plda_files(tmp_path / "a", seed=0)
    random_plda_files(tmp_path / "b", seed=1)
    for name in (TRANSFORM_FILE, PLDA_FILE):  # byte-identical for a seed, across calls
        assert (tmp_path / "a" / name).read_bytes() == (plda_dir / name).read_bytes()
        assert (tmp_path / "b" / name).read_bytes() != (plda_dir / name).read_bytes()
    assert plda_files_sha256(tmp_path / "a") == plda_files_sha256(plda_dir)
    assert plda_files_sha256(tmp_path / "b") != plda_files_sha256(plda_dir)
    small, _ = random_plda_arrays(3, embedding_dim=32, lda_dimension=8)
    assert small["lda"].shape == (32, 8)


def test_constants_are_pyannotes(plda, plda_dir) -> None:
    """The wrapper's constants are what pyannote's vbx_setup built (incl. its re-sorted psi)."""
    c = pyannote_plda_constants(plda)
    with np.load(plda_dir / TRANSFORM_FILE) as x:
        for key in ("mean1", "mean2", "lda"):
            assert np.array_equal(c[key], x[key])
    with np.load(plda_dir / PLDA_FILE) as p:
        assert np.array_equal(c["plda_mu"], p["mu"])
        assert np.allclose(np.sort(c["plda_psi"]), np.sort(p["psi"]), rtol=1e-8)
    assert np.all(np.diff(c["plda_psi"]) <= 0)  # pyannote sorts decreasing
    assert np.array_equal(plda.phi, c["plda_psi"][:L])


# --- wrapper vs pyannote -----------------------------------------------------------------------


def test_case_names(cases) -> None:
    assert list(cases) == CASES
    assert all(
        c[ref.INPUT].dtype == np.float32 and c[ref.INPUT].shape[1] == E for c in cases.values()
    )


@pytest.mark.parametrize("case", CASES)
def test_wrapper_matches_pyannote(plda, wrapper, cases, case: str) -> None:
    embeddings = cases[case][ref.INPUT]
    want64 = plda(embeddings)  # float64, pyannote's own computation
    assert np.isfinite(want64).all()
    want = ref.plda_reference(plda)(cases[case])[ref.OUTPUT]
    assert want.dtype == np.float32 and want.shape == (embeddings.shape[0], L)
    got = run_wrapper(wrapper, embeddings)
    assert got.dtype == np.float32 and got.shape == want.shape
    assert relative_error(got, want64) <= RTOL, case


def test_zero_row_is_pyannotes_not_a_guard(plda, wrapper) -> None:
    """An all-zero embedding is a regular input (x - mean1 = -mean1): pyannote's finite value."""
    zero = np.zeros((1, E), dtype=np.float32)
    want = plda(zero)
    assert np.isfinite(want).all()
    assert np.linalg.norm(pyannote_plda_constants(plda)["mean1"]) > 100 * NORM_EPS
    assert relative_error(run_wrapper(wrapper, zero), want) <= RTOL


def test_degenerate_row_is_finite_where_pyannote_is_nan(plda, wrapper) -> None:
    """The one documented difference: an embedding equal to mean1 (0/0 in pyannote)."""
    mean1 = pyannote_plda_constants(plda)["mean1"]
    with np.errstate(invalid="ignore"):
        assert np.isnan(plda(mean1[None])).all()
    got = run_wrapper(wrapper, mean1[None])
    assert np.isfinite(got).all()


def test_lda_dimension_cut(plda_dir) -> None:
    """PLDA(lda_dimension=k) keeps the first k columns (largest psi)."""
    cut = ref.load_pyannote_plda(plda_dir, lda_dimension=16)
    wrapper = PLDATransform.from_pyannote(cut)
    x = ref.plda_inputs(E)["random"][ref.INPUT]
    want = cut(x)
    assert want.shape == (x.shape[0], 16) and wrapper.lda_dimension == 16
    assert relative_error(run_wrapper(wrapper, x), want) <= RTOL


def test_plda_parameters_json(plda) -> None:
    params = json.loads(json.dumps(plda_parameters(plda)))
    assert params["embedding_dimension"] == E and params["lda_dimension"] == L
    assert np.allclose(params["phi"], plda.phi, rtol=0, atol=0)
    vbx = params["vbx"]
    assert (vbx["Fa"], vbx["Fb"], vbx["ahc_threshold"]) == (0.07, 0.8, 0.6)
    assert vbx["max_iters"] == 20 and vbx["init_smoothing"] == 7.0


# --- VBx really splits speakers ----------------------------------------------------------------


@pytest.mark.parametrize("speakers", [1, 2, 3, 5])
def test_vbx_separates_synthetic_speakers(plda, speakers: int) -> None:
    """pyannote's VBxClustering on the random PLDA finds the speakers: one cluster per
    speaker, each pure (and so, for several speakers, neither one cluster nor singletons)."""
    embeddings, labels = ref.speaker_embeddings(seed=speakers, speakers=speakers, per_speaker=20)
    hard, found = ref.pyannote_vbx_clustering(plda, embeddings)
    assert found == speakers
    assert len(np.unique(hard)) == speakers
    for k in np.unique(hard):  # every cluster holds one speaker only
        assert len(np.unique(labels[hard == k])) == 1
    # VBx alone, from singletons, makes the same decision (AHC is not doing all the work)
    assigned, kept = ref.pyannote_vbx_from_singletons(plda, embeddings)
    assert 1 <= kept < len(labels)
    assert kept == speakers


# --- Core ML -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(wrapper, tmp_path_factory):
    import coremltools as ct

    example = torch.zeros((8, E), dtype=torch.float32)
    traced = torch.jit.trace(wrapper, example)
    rows = ct.RangeDim(lower_bound=1, upper_bound=MAX_ROWS, default=8)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name=ref.INPUT, shape=ct.Shape((rows, E)), dtype=np.float32)],
        outputs=[ct.TensorType(name=ref.OUTPUT, dtype=np.float32)],
        convert_to="mlprogram",
        compute_precision=ct.precision.FLOAT32,
        minimum_deployment_target=ct.target.iOS17,
        skip_model_load=True,
    )
    path = tmp_path_factory.mktemp("plda_mlpackage") / "plda.mlpackage"
    mlmodel.save(str(path))
    return path


def test_converted_io(package) -> None:
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2

    proto = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    (inp,) = proto.description.input
    (out,) = proto.description.output
    assert (inp.name, out.name) == (ref.INPUT, ref.OUTPUT)
    assert inp.type.multiArrayType.dataType == FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    ranges = [(r.lowerBound, r.upperBound) for r in inp.type.multiArrayType.shapeRange.sizeRanges]
    assert ranges == [(1, MAX_ROWS), (E, E)]


@pytest.mark.parametrize("case", CASES)
def test_mil_executor_matches_pyannote(package, plda, cases, case: str) -> None:
    from coreml_diarize.validation.mil import MILExecutor

    embeddings = cases[case][ref.INPUT]
    got = MILExecutor.from_path(package).predict({ref.INPUT: embeddings})[ref.OUTPUT]
    got = np.asarray(got)
    assert got.dtype == np.float32 and got.shape == (embeddings.shape[0], L)
    assert np.isfinite(got).all()
    assert relative_error(got, plda(embeddings)) <= RTOL, case
