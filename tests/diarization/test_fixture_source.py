"""`--source <trained fixture>` end to end from the CLI: the synthetic-speech segmentation fixture
converts, validates (judged as trained weights) and diarizes, and `compare` rebuilds the same
fixture from the packages' provenance and agrees with pyannote's own pipeline on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"
EMBEDDING_FIXTURE = FIXTURE.parent / "embedding-synthetic"
SAMPLE_RATE = 16000
EXCERPT_S = 12.5  # 3 full windows + a padded one at a 5 s step: short for the MIL executor


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def fixture_models(tmp_path_factory, one_torch_thread):
    """The online chain: segmentation from the fixture, the rest from seeded weights."""
    runner = CliRunner()
    out = tmp_path_factory.mktemp("fixture_models")
    done = runner.invoke(
        main, ["convert", "segmentation", "--source", str(FIXTURE), "--out", str(out)]
    )
    assert done.exit_code == 0, done.output
    rest = ["postprocessor", "preprocessor", "embedding", "post-embedding"]
    done = runner.invoke(main, ["convert", *rest, "--source", "random:0", "--out", str(out)])
    assert done.exit_code == 0, done.output
    return out


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    import soundfile as sf

    from coreml_diarize.audio import bundled_sample_path, read_audio

    samples = read_audio(bundled_sample_path()).samples[: int(EXCERPT_S * SAMPLE_RATE)]
    wav = tmp_path_factory.mktemp("fixture_excerpt") / "sample.wav"
    sf.write(wav, samples, SAMPLE_RATE)
    return wav


def test_fixture_package_validates_as_trained(fixture_models, tmp_path):
    report = tmp_path / "report.json"
    package = fixture_models / "pyannote_segmentation.mlpackage"
    args = ["validate", str(package), "--backend", "mil", "--quiet", "--json", str(report)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    (result,) = json.loads(report.read_text())
    assert result["passed"] and result["model"] == "segmentation"
    assert result["trained"] == "true" and result["source"] == str(FIXTURE)


def test_fixture_chain_diarizes_and_matches_pyannote(fixture_models, excerpt, tmp_path):
    from coreml_diarize.diarization.rttm import read_rttm

    rttm, out = tmp_path / "hyp.rttm", tmp_path / "compare.json"
    common = [str(excerpt), "--models", str(fixture_models), "--backend", "mil", "--step", "5"]
    done = CliRunner().invoke(main, ["diarize", *common, "--rttm", str(rttm), "--quiet"])
    assert done.exit_code == 0, done.output
    hypothesis = read_rttm(rttm)
    # the trained fixture finds speech in the sample's first 12.5 s (two speakers talk there)
    assert hypothesis.get_timeline().support().duration() > 3.0

    done = CliRunner().invoke(main, ["compare", *common, "--json", str(out), "--quiet"])
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    assert report["weights"]["segmentation"] == str(FIXTURE)
    assert report["converted_vs_torch"]["der"] == 0.0


@pytest.fixture(scope="module")
def trained_chain(fixture_models, tmp_path_factory):
    """The online chain on both trained fixtures, with the 8-bit (fp16-program) variants."""
    import shutil

    runner = CliRunner()
    out = tmp_path_factory.mktemp("trained_chain")
    for aux in ("powerset_postprocessor", "embedding_preprocessor", "unified_post_embedding"):
        shutil.copytree(fixture_models / f"{aux}.mlpackage", out / f"{aux}.mlpackage")
    shutil.copytree(
        fixture_models / "pyannote_segmentation.mlpackage", out / "pyannote_segmentation.mlpackage"
    )
    args = ["convert", "embedding", "--source", str(EMBEDDING_FIXTURE), "--out", str(out)]
    done = runner.invoke(main, args)
    assert done.exit_code == 0, done.output
    for stem in ("pyannote_segmentation", "wespeaker_v2"):
        args = ["quantize", str(out / f"{stem}.mlpackage"), "--mode", "palettize", "--nbits", "8"]
        done = runner.invoke(main, [*args, "--out", str(out)])
        assert done.exit_code == 0, done.output
    return out


def test_palettize8_chain_matches_fp32_pytorch_on_trained_weights(trained_chain, excerpt, tmp_path):
    """Issue #14's bar: the 8-bit chain (segmentation + embedding fixtures) against pyannote's
    fp32 PyTorch pipeline, DER <= 1 % (measured on the whole 30 s sample: 0.06 %)."""
    out = tmp_path / "compare.json"
    args = ["compare", str(excerpt), "--models", str(trained_chain), "--backend", "mil"]
    done = CliRunner().invoke(main, [*args, "--variant", "palettize8", "--json", str(out)])
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    assert report["weights"]["embedding"] == str(EMBEDDING_FIXTURE)
    assert report["converted"]["variant"] == "palettize8"
    assert report["converted"]["speech_s"] > 3.0, "degenerate test: no speech found"
    assert report["converted_vs_torch"]["der"] <= 0.01, done.output
