"""Golden I/O for the offline set (community-1): each package's golden input is what it gets in
the chain on real speech — the sample's chunk into Segmentation and FBank, FBank's features and
a speaker's overlap-free mask into Embedding, every local speaker's embedding into PldaRho —
and each converted package passes its golden case through the MIL executor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.app.golden import check_golden, golden_for_packages
from coreml_diarize.app.golden_files import write_golden

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"


@pytest.fixture(scope="module")
def offline_golden(tmp_path_factory):
    """The four fp32 offline packages (trained segmentation fixture, seeded WeSpeaker and PLDA)
    and their golden cases, written to disk."""
    from coreml_diarize.app.build import profile_specs
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools

    out = tmp_path_factory.mktemp("offline_golden")
    sources = {"segmentation": str(FIXTURE), "embedding": "random:0", "plda": "random:0"}
    packages = []
    with quiet_coremltools():
        for spec in profile_specs("offline"):
            ctx = make_context(spec, source=sources[spec.weights.name])
            packages.append(convert_model(spec, ctx, out).path)
    cases = {g.model: g for g in golden_for_packages(packages)}
    for golden in cases.values():
        write_golden(out / "golden" / golden.package.removesuffix(".mlpackage"), golden)
    return out, cases


def test_offline_golden_inputs_follow_the_chain(offline_golden):
    _, cases = offline_golden
    assert set(cases) == {"offline-segmentation", "fbank", "offline-embedding", "plda-rho"}
    audio = cases["fbank"].inputs["audio"]
    assert audio.shape == (1, 1, 160000) and np.abs(audio).max() > 0.05  # real speech
    np.testing.assert_array_equal(cases["offline-segmentation"].inputs["audio"], audio)
    embedding = cases["offline-embedding"]
    np.testing.assert_array_equal(
        embedding.inputs["fbank_features"], cases["fbank"].outputs["fbank_features"]
    )
    weights = embedding.inputs["weights"]
    assert weights.shape == (1, 589) and set(np.unique(weights)) <= {0.0, 1.0}
    assert weights.sum() > 0, "speaker 1 is silent in the golden chunk: a weak golden case"
    rho = cases["plda-rho"]
    assert rho.inputs["embeddings"].shape == (3, 256)  # one row per local speaker
    # the first row is the Embedding case's own output (the same speaker, the same reference)
    np.testing.assert_allclose(
        rho.inputs["embeddings"][:1], embedding.outputs["embedding"], rtol=0, atol=1e-6
    )
    assert rho.outputs["rho"].shape == (3, 128)


def test_offline_packages_pass_their_golden_cases(offline_golden):
    out, cases = offline_golden
    for golden in cases.values():
        stem = golden.package.removesuffix(".mlpackage")
        report = check_golden(out / golden.package, out / "golden" / stem, backend="mil")
        assert report.passed, report.line()
