"""The embedding output's scale (issue #22 part 5): `Options.embedding_output` "raw" (pyannote's
vector, the default) or "l2" (unit norm, as FluidAudio documents `embedding256`).

References are independent of the wrapper: numpy float64 x / ||x|| of pyannote's own ResNet
output, and pyannote's PLDA for what a normalised vector does to PldaRho.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from coreml_diarize.errors import DiarizeError
from coreml_diarize.models import get_spec
from coreml_diarize.specs import EMBEDDING_OUTPUTS, Options


def unit_rows(x: np.ndarray) -> np.ndarray:
    """float64 numpy x / ||x|| per row (the independent reference)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)  # a zero row stays zero


def test_option_defaults_to_raw_and_refuses_unknown_values():
    assert Options().embedding_output == "raw"
    assert EMBEDDING_OUTPUTS == ("raw", "l2")
    assert Options().thresholds()["embedding_output"] == "raw"  # recorded in every package
    with pytest.raises(DiarizeError, match="unknown embedding output 'unit'"):
        Options(embedding_output="unit")


def test_l2_normalise_is_unit_norm_and_safe_in_fp16():
    """Rows of norm 1e-3 .. 4e3 (the trained fixture's raw embeddings reach 417) in fp16:
    the direct x / sqrt(sum x^2) overflows fp16 (65504) above norm 256; the wrapper's
    formulation must give the float64 unit vector to fp16 precision, and 0 for a zero row."""
    from coreml_diarize.wrappers.embedding import L2Normalise

    rng = np.random.default_rng(0)
    rows = rng.standard_normal((6, 256))
    rows *= (np.array([1e-3, 1.0, 30.0, 417.0, 4e3, 0.0]) / np.linalg.norm(rows, axis=1))[:, None]
    x16 = torch.from_numpy(rows).half()
    want = unit_rows(x16.double().numpy())
    with torch.no_grad():
        naive = (x16 / torch.sqrt((x16 * x16).sum(-1, keepdim=True))).float().numpy()
        got = L2Normalise()(x16).float().numpy()
    assert not np.isfinite(naive[3:5]).all() or np.abs(naive[3:5]).max() < 1e-3  # overflowed
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=2e-3)  # fp16: 11-bit mantissa
    assert np.abs(got[5]).max() == 0.0
    np.testing.assert_allclose(np.linalg.norm(got[:5], axis=1), 1.0, atol=2e-3)


@pytest.fixture(scope="module")
def l2_ctx(emb_ctx):
    return replace(emb_ctx, options=Options(embedding_output="l2"))


@pytest.mark.parametrize("key", ["embedding", "offline-embedding"])
def test_wrapper_and_reference_follow_the_option(key, emb_ctx, l2_ctx):
    """raw: pyannote's vector (the wrapper as before); l2: that vector / its norm (real
    speech, full / two-turn / empty masks), for both embedding models."""
    spec = get_spec(key)
    inputs = spec.example_inputs(emb_ctx)["speech_0s"]
    pyannote = spec.build_reference(emb_ctx)(inputs)["embedding"]
    np.testing.assert_allclose(
        spec.build_reference(l2_ctx)(inputs)["embedding"], unit_rows(pyannote), rtol=0, atol=1e-6
    )
    args = [torch.from_numpy(v) for v in inputs.values()]
    with torch.inference_mode():
        raw = spec.build_wrapper(emb_ctx)(*args).numpy()
        unit = spec.build_wrapper(l2_ctx)(*args).numpy()
    np.testing.assert_allclose(raw, pyannote, rtol=0, atol=1e-4 * np.abs(pyannote).max())
    np.testing.assert_allclose(unit, unit_rows(pyannote), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def l2_offline_package(l2_ctx, tmp_path_factory):
    from coreml_diarize.converters.convert import convert_model

    return convert_model(
        get_spec("offline-embedding"), l2_ctx, tmp_path_factory.mktemp("emb_l2")
    ).path


def test_l2_package_records_the_option_and_validates_from_its_record(l2_offline_package):
    """The option is in the package record (and so the bundle manifest's `thresholds`), and
    validation rebuilds the L2-normalised reference from that record alone (no ctx passed)."""
    from coreml_diarize.record import PackageRecord
    from coreml_diarize.validation.report import evaluate_package

    record = PackageRecord.from_package(l2_offline_package)
    assert record.embedding_output == "l2"
    assert record.thresholds["embedding_output"] == "l2"
    evaluation = evaluate_package(l2_offline_package, backend="mil")
    assert evaluation.report.passed, evaluation.report.table()
    for name, outputs in evaluation.outputs.items():
        got = outputs["embedding"]
        np.testing.assert_allclose(np.linalg.norm(got, axis=-1), 1.0, atol=1e-5, err_msg=name)


def test_a_raw_package_is_not_accepted_as_l2(emb_ctx, l2_ctx, l2_offline_package):
    """Judged against the raw reference, the L2 package fails (and a raw package against the
    L2 one would too): validation sees the scale, it is not a cosine-only check."""
    from coreml_diarize.validation.judge import judge
    from coreml_diarize.validation.mil import MILExecutor

    spec = get_spec("offline-embedding")
    runner = MILExecutor.from_path(l2_offline_package)
    cases = {n: c for n, c in spec.example_inputs(emb_ctx).items() if n in ("noise", "speech_0s")}
    raw_reference = spec.build_reference(emb_ctx)
    refs = {n: raw_reference(c) for n, c in cases.items()}
    outs = {n: runner.predict(c) for n, c in cases.items()}
    tolerances = {"embedding": replace(spec.tolerance_for("fp32")["embedding"], max_abs=1e-3)}
    assert not judge(spec, tolerances, refs, outs).passed


def test_pldarho_of_a_normalised_embedding_is_not_pyannotes():
    """Why the offline Embedding stays raw: pyannote's PLDA (xvec_tf starts with
    l2norm(x - mean1)) of l2norm(x) differs from its PLDA of x once mean1 != 0, so a PldaRho
    fed by an L2 Embedding cannot give pyannote's features (pyannote's own PLDA as judge)."""
    from coreml_diarize.sources import load_weights

    plda = load_weights("plda", "random:0").model
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 256)) * 2.0  # raw-like rows, norms ~32
    raw, normalised = plda(x), plda(unit_rows(x))
    assert np.abs(raw - normalised).max() > 0.1 * np.abs(raw).max()


def test_build_refuses_l2_with_pldarho_in_one_line(tmp_path):
    from coreml_diarize.app.cli import main

    result = CliRunner().invoke(
        main,
        ["build", "--profile", "offline", "--embedding-output", "l2", "--out", str(tmp_path)],
    )
    assert result.exit_code != 0
    assert "PldaRho" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not any(tmp_path.iterdir())  # refused before any work


def test_convert_cli_rejects_an_unknown_output(tmp_path):
    from coreml_diarize.app.cli import main

    result = CliRunner().invoke(
        main, ["convert", "embedding", "--embedding-output", "unit", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_the_library_build_refuses_l2_with_pldarho_too(tmp_path):
    """The refusal lives in build_all, not only in the CLI: a library caller gets it as well."""
    from coreml_diarize.app.build import build_all
    from coreml_diarize.specs import Options

    with pytest.raises(DiarizeError, match="PldaRho"):
        build_all(
            tmp_path,
            sources={},
            profile="offline",
            options=Options(embedding_output="l2"),
        )
    assert not any(tmp_path.iterdir())
