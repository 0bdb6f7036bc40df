"""End-to-end diarization: the converted chain vs pyannote's own pipeline on the same weights.

Kept short on purpose (the MIL executor is slow): a 12.5 s excerpt of pyannote's bundled
sample = 3 full windows + 1 zero-padded last window at pyannote's 1 s step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main

EXCERPT_S = 12.5
SAMPLE_RATE = 16000


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """With other processes on a 2-core machine, torch's 2-thread OpenMP kernels spin on each
    other (measured: pyannote's LSTM 4x slower); one thread keeps both pipelines fast."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The five fp32 packages from seeded weights, plus the torch models they came from."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.diarization.compare import TorchModels
    from coreml_diarize.models import registry

    out = tmp_path_factory.mktemp("diarize_models")
    models = {}
    for spec in registry().values():
        if "online" not in spec.chains:
            continue
        ctx = make_context(spec, source="random:0")
        convert_model(spec, ctx, out)
        if ctx.weights is not None:
            models[spec.key] = ctx.weights.model
    torch_models = TorchModels(
        models["segmentation"], models["embedding"], {"segmentation": "random:0"}
    )
    return out, torch_models


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    """(samples, wav path, cropped reference RTTM path) for the first EXCERPT_S seconds."""
    import soundfile as sf
    from pyannote.core import Segment

    from coreml_diarize.audio import bundled_sample_path, read_audio
    from coreml_diarize.diarization.rttm import read_rttm, write_rttm

    sample = bundled_sample_path()
    samples = read_audio(sample).samples[: int(EXCERPT_S * SAMPLE_RATE)]
    folder = tmp_path_factory.mktemp("excerpt")
    wav = folder / "sample.wav"
    sf.write(wav, samples, SAMPLE_RATE)
    reference = read_rttm(sample.with_suffix(".rttm"), uri="sample")
    cropped = reference.crop(Segment(0.0, EXCERPT_S), mode="intersection")
    cropped.uri = "sample"
    rttm = write_rttm(cropped, folder / "sample.rttm")
    return samples, wav, rttm


@pytest.fixture(scope="module")
def comparison(built, excerpt):
    from coreml_diarize.diarization.chain import ChainModels, find_packages
    from coreml_diarize.diarization.compare import compare_samples
    from coreml_diarize.diarization.rttm import read_rttm

    models_dir, torch_models = built
    samples, _, rttm = excerpt
    chain = ChainModels.load(find_packages(models_dir), backend="mil")
    lines: list[str] = []
    result = compare_samples(
        samples,
        chain,
        torch_models,
        uri="sample",
        reference=read_rttm(rttm),
        progress=lines.append,
    )
    return result, lines


def test_converted_chain_matches_pyannote_pipeline(comparison):
    result, lines = comparison
    # pyannote's windowing: 10 s windows every 1 s, the last one zero-padded
    assert result.converted.windows == 4
    assert result.converted.backend == "mil"
    assert len(result.torch_annotation.labels()) >= 1, "degenerate test: torch found nobody"
    assert result.between.der <= 0.01, result.table()
    assert result.between.jer <= 0.01, result.table()
    # the scores against the reference come from the same metric code for both pipelines
    assert abs(result.reference["converted"].der - result.reference["torch"].der) <= 0.01
    assert all(np.isfinite(s.der) for s in result.reference.values())
    assert result.converted.rtf > 0 and result.torch_rtf > 0
    assert "segmentation: 4/4 windows" in lines and "embeddings: 4/4 windows" in lines
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["converted_vs_torch"]["der"] == result.between.der


def test_rttm_roundtrip(comparison, tmp_path):
    from coreml_diarize.diarization.rttm import read_rttm, write_rttm

    annotation = comparison[0].converted.annotation
    path = write_rttm(annotation, tmp_path / "out" / "sample.rttm")
    lines = path.read_text().splitlines()
    assert lines and all(line.split()[0] == "SPEAKER" and len(line.split()) == 10 for line in lines)
    back = read_rttm(path, uri="sample")
    assert sorted(back.labels()) == sorted(annotation.labels())
    # RTTM keeps 3 decimals: every turn comes back within half a millisecond
    turns = sorted((s.start, s.end, str(k)) for s, _, k in annotation.itertracks(yield_label=True))
    again = sorted((s.start, s.end, str(k)) for s, _, k in back.itertracks(yield_label=True))
    assert len(turns) == len(again)
    for (s0, e0, k0), (s1, e1, k1) in zip(turns, again, strict=True):
        assert k0 == k1 and abs(s0 - s1) <= 5.1e-4 and abs(e0 - e1) <= 1.1e-3


def test_cli_diarize_writes_rttm(built, excerpt, tmp_path):
    from coreml_diarize.diarization.rttm import read_rttm

    models_dir, _ = built
    _, wav, _ = excerpt
    rttm = tmp_path / "hyp.rttm"
    # a 5 s step: one full window + the padded last one, keeps the test short
    args = ["diarize", str(wav), "--models", str(models_dir), "--backend", "mil"]
    result = CliRunner().invoke(main, [*args, "--rttm", str(rttm), "--step", "5", "--every", "1"])
    assert result.exit_code == 0, result.output
    assert "segmentation: 2/2 windows" in result.stderr
    assert "2 windows" in result.stderr.splitlines()[-1]
    assert read_rttm(rttm).labels() == read_rttm(rttm, uri="sample").labels()
    assert len(result.stdout.strip().splitlines()) == len(rttm.read_text().splitlines())


def test_cli_compare_rebuilds_torch_weights_from_provenance(built, excerpt, tmp_path):
    import soundfile as sf

    models_dir, _ = built
    samples, _, rttm = excerpt
    short = tmp_path / "sample.wav"
    sf.write(short, samples[: 10 * SAMPLE_RATE], SAMPLE_RATE)  # exactly one window
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        main,
        ["compare", str(short), "--models", str(models_dir), "--backend", "mil"]
        + ["--reference", str(rttm), "--json", str(out), "--quiet"],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["weights"] == {"segmentation": "random:0", "embedding": "random:0"}
    assert report["converted"]["windows"] == 1
    assert report["converted_vs_torch"]["der"] <= 0.01
    assert set(report["vs_reference"]) == {"converted", "torch"}
    assert "converted vs torch" in result.stdout


def _one_line_error(result, code: int) -> str:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", ["diarize", "compare"])
def test_missing_models_dir(command, excerpt, tmp_path):
    _, wav, _ = excerpt
    result = CliRunner().invoke(main, [command, str(wav), "--models", str(tmp_path / "nope")])
    assert "models directory not found" in _one_line_error(result, 5)


def test_missing_package(built, excerpt, tmp_path):
    models_dir, _ = built
    _, wav, _ = excerpt
    partial = tmp_path / "partial"
    partial.mkdir()
    for package in Path(models_dir).glob("*.mlpackage"):
        if package.name != "wespeaker_v2.mlpackage":
            (partial / package.name).symlink_to(package, target_is_directory=True)
    result = CliRunner().invoke(main, ["diarize", str(wav), "--models", str(partial)])
    assert "lacks wespeaker_v2.mlpackage" in _one_line_error(result, 5)


def test_bad_audio(built, tmp_path):
    models_dir, _ = built
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    result = CliRunner().invoke(main, ["diarize", str(bad), "--models", str(models_dir)])
    assert "not a readable audio file" in _one_line_error(result, 4)
    result = CliRunner().invoke(
        main, ["diarize", str(tmp_path / "missing.wav"), "--models", str(models_dir)]
    )
    assert "audio file not found" in _one_line_error(result, 4)


def test_variant_picks_compressed_packages_when_present(tmp_path):
    from coreml_diarize.diarization.chain import find_packages
    from coreml_diarize.models import registry

    for spec in registry().values():  # find_packages only looks at names
        (tmp_path / f"{spec.filename}.mlpackage").mkdir()
    fake = tmp_path / "pyannote_segmentation_palettize8.mlpackage"
    fake.mkdir()
    paths = find_packages(tmp_path, "palettize8")
    assert paths["segmentation"] == fake
    assert paths["embedding"].name == "wespeaker_v2.mlpackage"  # no variant: the plain one
    assert find_packages(tmp_path)["segmentation"].name == "pyannote_segmentation.mlpackage"
