"""The community-1 pipeline (pyannote's VBx + PLDA) with its neural and PLDA steps swapped.

Two levels:

* stand-in runners: callables with the offline packages' I/O made of the very torch code the
  packages are converted from (PyanNet forward, WeSpeaker's compute_fbank and ResNet, pyannote's
  PLDA x sqrt(phi)). They isolate the swap layer (community.py): the converted pipeline on them
  must reproduce pyannote's PyTorch pipeline exactly (DER 0) on pyannote's sample and on a
  synthetic espeak-ng conversation;
* the four offline packages converted for real (fp32) and run by the validation backend (the
  MIL executor on Linux) through `compare_file`: DER 0 against PyTorch on a short clip.

Kept short (the MIL executor and ResNet34 on CPU are slow): 12.5 s of audio per run.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

EXCERPT_S = 12.5
SAMPLE_RATE = 16000
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """One torch thread: on a shared 2-core machine two OpenMP threads spin on each other."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class StandIn:
    """A package stand-in: `(**inputs) -> {output: array}`, timed and counted like TimedRunner;
    `batches` records the batch size of each call."""

    def __init__(self, fn) -> None:
        self.fn = fn
        self.seconds = 0.0
        self.calls = 0
        self.batches: list[int] = []

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        start = time.perf_counter()
        out = self.fn(**inputs)
        self.seconds += time.perf_counter() - start
        self.calls += 1
        self.batches.append(int(next(iter(inputs.values())).shape[0]))
        return out


@pytest.fixture(scope="module")
def torch_models(tmp_path_factory):
    """The trained segmentation fixture, seeded random WeSpeaker weights, a seeded random PLDA."""
    from coreml_diarize.diarization.compare import TorchModels
    from coreml_diarize.plda_sources import random_plda_files
    from coreml_diarize.sources import load_weights
    from coreml_diarize.validation.reference_plda import load_pyannote_plda

    folder = tmp_path_factory.mktemp("plda")
    random_plda_files(folder, 0)
    return TorchModels(
        load_weights("segmentation", str(FIXTURE)).model,
        load_weights("embedding", "random:0").model,
        {"segmentation": str(FIXTURE), "embedding": "random:0", "plda": "random:0"},
        load_pyannote_plda(folder),
    )


def standin_chain(torch_models, folder: Path, *, plda_json: dict | None = None):
    """A ChainModels of stand-ins for Segmentation, FBank, Embedding and PldaRho, with a
    plda-parameters.json beside them (keys unknown to the registry: found by file name)."""
    import torch

    from coreml_diarize.diarization.chain import ChainModels, ChainPaths

    seg, emb, plda = torch_models.segmentation, torch_models.embedding, torch_models.plda
    phi = np.asarray(plda.phi, dtype=np.float64)

    def segmentation(audio):
        with torch.inference_mode():
            return {"segments": seg(torch.from_numpy(audio)).numpy()}

    def fbank(audio):
        with torch.inference_mode():
            features = emb.compute_fbank(torch.from_numpy(audio))  # (1, 998, 80)
        return {"fbank_features": features.permute(0, 2, 1).unsqueeze(1).numpy()}

    def embedding(fbank_features, weights):
        with torch.inference_mode():
            features = torch.from_numpy(fbank_features).squeeze(1).permute(0, 2, 1)
            raw = emb.resnet(features, weights=torch.from_numpy(weights))[1]
        return {"embedding": raw.numpy()}

    def rho(embeddings):
        return {"rho": (plda(embeddings) * np.sqrt(phi)).astype(np.float32)}

    folder.mkdir(parents=True, exist_ok=True)
    payload = plda_json or {
        "lda_dimension": int(phi.size),
        "tensors": {"psi": {"data_base64": base64.b64encode(phi.astype("<f4")).decode()}},
        "phi": phi.tolist(),
    }
    (folder / "plda-parameters.json").write_text(json.dumps(payload))
    functions = {"Segmentation": segmentation, "FBank": fbank, "Embedding": embedding}
    functions["PldaRho"] = rho
    paths = {f"stand-in-{k}": folder / f"{k}.mlpackage" for k in functions}
    runners = {f"stand-in-{k}": StandIn(fn) for k, fn in functions.items()}
    return ChainModels(ChainPaths(paths, None, "offline"), "stand-in", runners)


def runner(chain, stem: str) -> StandIn:
    return chain.runners[f"stand-in-{stem}"]


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    """(samples, wav path, reference) for the first EXCERPT_S s of pyannote's sample."""
    import soundfile as sf
    from pyannote.core import Segment

    from coreml_diarize.audio import bundled_sample_path, read_audio
    from coreml_diarize.diarization.rttm import read_rttm

    sample = bundled_sample_path()
    samples = read_audio(sample).samples[: int(EXCERPT_S * SAMPLE_RATE)]
    wav = tmp_path_factory.mktemp("community_excerpt") / "sample.wav"
    sf.write(wav, samples, SAMPLE_RATE)
    reference = read_rttm(sample.with_suffix(".rttm"), uri="sample")
    reference = reference.crop(Segment(0.0, EXCERPT_S), mode="intersection")
    reference.uri = "sample"
    return samples, wav, reference


@pytest.fixture(scope="module")
def conversation():
    """A 12 s espeak-ng conversation: two 6 s chunks of 2 of 3 voices each."""
    from training.corpus import CorpusConfig, build_pool, median_f0, mix_conversation

    cfg = replace(
        CorpusConfig(),
        speakers=3,
        utterances_per_speaker=3,
        words_per_utterance=(3, 6),
        duration=6.0,
        speakers_per_chunk=(0.0, 0.0, 1.0, 0.0),
        overlap_prob=0.3,
        noise_prob=0.0,
        min_f0_ratio=1.0,
    )
    _, pool = build_pool(cfg, seed=11)
    f0 = [median_f0(utts) for utts in pool]
    rng = np.random.default_rng(12)
    chunks = [mix_conversation(pool, rng, cfg, f0).audio for _ in range(2)]
    return np.concatenate(chunks).astype(np.float32)


@pytest.fixture(scope="module")
def standin_sample(torch_models, excerpt, tmp_path_factory):
    from coreml_diarize.diarization.compare import compare_samples

    samples, _, reference = excerpt
    chain = standin_chain(torch_models, tmp_path_factory.mktemp("standins"))
    lines: list[str] = []
    result = compare_samples(
        samples,
        chain,
        torch_models,
        uri="sample",
        pipeline="community-1",
        reference=reference,
        progress=lines.append,
    )
    return result, chain, lines


# --- the swap layer on stand-ins -------------------------------------------------------------


def test_standins_reproduce_pyannote_on_sample(standin_sample):
    result, chain, lines = standin_sample
    assert result.pipeline == "community-1"
    assert len(result.torch_annotation.labels()) >= 1, "degenerate test: torch found nobody"
    assert result.between.der == 0.0, result.table()
    assert result.between.jer == 0.0, result.table()
    assert result.reference["converted"].der == result.reference["torch"].der
    # pyannote's windowing (1 s step): 3 full windows in one batch, the padded last one alone
    assert result.converted.windows == 4
    assert runner(chain, "Segmentation").batches == [3, 1]
    # one FBank + Embedding call per (window, local speaker), whatever pyannote's batch
    assert runner(chain, "FBank").calls == runner(chain, "Embedding").calls == 4 * 3
    assert runner(chain, "PldaRho").calls >= 1
    assert all(1 <= b <= 32 for b in runner(chain, "PldaRho").batches)
    assert result.converted.rtf > 0 and result.torch_rtf > 0
    assert set(result.converted.model_seconds) == set(chain.runners)
    assert "segmentation: 4/4 windows" in lines
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["pipeline"] == payload["converted"]["pipeline"] == "community-1"
    assert "pipeline community-1" in result.table()


def test_standins_reproduce_pyannote_on_conversation(torch_models, conversation, tmp_path):
    from coreml_diarize.diarization.compare import compare_samples

    chain = standin_chain(torch_models, tmp_path)
    result = compare_samples(
        conversation, chain, torch_models, uri="synthetic", pipeline="community-1"
    )
    assert len(result.torch_annotation.labels()) >= 1, "degenerate test: torch found nobody"
    assert result.between.der == 0.0, result.table()
    assert result.converted.windows == 3  # 12 s: windows at 0, 1 and 2 s, none padded


def test_converted_pipeline_is_pyannotes_community_1(torch_models, tmp_path):
    from pyannote.audio.pipelines import SpeakerDiarization
    from pyannote.audio.pipelines.clustering import VBxClustering
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

    from coreml_diarize.diarization.community import PackagePLDA, PackageSpeakerEmbedding
    from coreml_diarize.diarization.pipelines import PIPELINE_NAMES, converted_pipeline

    assert PIPELINE_NAMES == ("3.1", "community-1")
    chain = standin_chain(torch_models, tmp_path)
    pipeline = converted_pipeline(chain, pipeline="community-1")
    assert type(pipeline) is SpeakerDiarization  # pyannote's class: nothing overridden
    assert isinstance(pipeline.clustering, VBxClustering)
    assert isinstance(pipeline.clustering.plda, PackagePLDA)
    assert isinstance(pipeline._embedding, PackageSpeakerEmbedding)
    assert pipeline.embedding_exclude_overlap is True
    assert pipeline.segmentation_step == 0.1
    expected = SpeakerDiarization.default_parameters(None)
    assert pipeline.parameters(instantiated=True) == {
        "segmentation": dict(expected["segmentation"]),
        "clustering": dict(expected["clustering"]),
    }
    np.testing.assert_array_equal(pipeline.clustering.plda.phi, torch_models.plda.phi)
    # the embedding's other attributes stay pyannote's (computed on the architecture)
    assert pipeline._embedding.dimension == 256 and pipeline._embedding.sample_rate == 16000
    reference = PretrainedSpeakerEmbedding(torch_models.embedding)
    assert pipeline._embedding.min_num_samples == reference.min_num_samples


def test_pipeline_and_chain_must_match(torch_models, tmp_path):
    from coreml_diarize.diarization.chain import ChainModels, ChainPaths
    from coreml_diarize.diarization.pipelines import (
        converted_pipeline,
        make_pipeline,
        pipeline_recipe,
    )
    from coreml_diarize.errors import DiarizeError

    with pytest.raises(DiarizeError, match="unknown pipeline 'nope'"):
        pipeline_recipe("nope")
    offline = standin_chain(torch_models, tmp_path)
    with pytest.raises(DiarizeError, match="runs the online packages"):
        converted_pipeline(offline, pipeline="3.1")
    online = ChainModels(ChainPaths({}, None, "online"), "stand-in", {})
    with pytest.raises(DiarizeError, match="runs the offline packages"):
        converted_pipeline(online, pipeline="community-1")
    with pytest.raises(DiarizeError, match="needs a PLDA"):
        make_pipeline(torch_models.segmentation, torch_models.embedding, pipeline="community-1")


# --- the pieces ------------------------------------------------------------------------------


def test_segmentation_forward_splits_batches_of_32():
    import torch

    from coreml_diarize.diarization.community import package_segmentation_forward
    from coreml_diarize.errors import ArtifactError

    fake = StandIn(lambda audio: {"segments": np.zeros((audio.shape[0], 5, 7), np.float32)})
    counted: list[int] = []
    forward = package_segmentation_forward(fake, 5, 7, name="Segmentation", count=counted.append)
    out = forward(torch.zeros(70, 1, 100))
    assert tuple(out.shape) == (70, 5, 7) and fake.batches == [32, 32, 6] and counted == [70]
    wrong = package_segmentation_forward(fake, 6, 7, name="Segmentation", count=counted.append)
    with pytest.raises(ArtifactError, match=r"Segmentation returns \(3, 5, 7\)"):
        wrong(torch.zeros(3, 1, 100))


@pytest.mark.parametrize(
    ("count", "sizes", "calls"),
    [
        # Segmentation's 1..32 (enumerated) and PldaRho's 1..32 (range): FluidAudio's split
        (70, tuple(range(1, 33)), [(0, 32, 32), (32, 64, 32), (64, 70, 6)]),
        (0, tuple(range(1, 33)), []),
        # a package taking only some sizes: the largest that fits, then the last rows padded
        # up to the smallest size it takes (Core ML refuses any other)
        (37, (1, 2, 4, 8, 16, 32), [(0, 32, 32), (32, 36, 4), (36, 37, 1)]),
        (37, (8, 32), [(0, 32, 32), (32, 37, 8)]),
        (3, (4, 32), [(0, 3, 4)]),
        # no upper bound declared: 32 a call
        (40, None, [(0, 32, 32), (32, 40, 8)]),
    ],
)
def test_batch_plan_sends_only_declared_sizes(count, sizes, calls):
    from coreml_diarize.diarization.community import batch_plan

    plan = batch_plan(count, sizes)
    assert plan == calls
    assert all(sent in (sizes or range(1, 33)) for _, _, sent in plan)


def test_segmentation_forward_pads_to_a_declared_batch():
    """A package enumerating only 4 and 32 windows gets 32 + 4 (one zero window of padding)
    for 35 windows, and the padded row's output is dropped."""
    import torch

    from coreml_diarize.diarization.community import package_segmentation_forward

    def segments(audio):  # each window's output is its first sample: rows stay aligned
        return {"segments": np.broadcast_to(audio[:, :, :1], (audio.shape[0], 5, 7)).copy()}

    fake = StandIn(segments)
    forward = package_segmentation_forward(
        fake, 5, 7, name="Segmentation", count=lambda _: None, batch_sizes=(4, 32)
    )
    windows = torch.arange(35, dtype=torch.float32)[:, None, None].expand(35, 1, 100)
    out = forward(windows.contiguous())
    assert fake.batches == [32, 4]
    assert tuple(out.shape) == (35, 5, 7)
    np.testing.assert_array_equal(out[:, 0, 0].numpy(), np.arange(35, dtype=np.float32))


def test_package_plda_is_pyannotes_plda(torch_models):
    from coreml_diarize.diarization.community import PackagePLDA

    plda = torch_models.plda
    phi = np.asarray(plda.phi)
    rho = StandIn(lambda embeddings: {"rho": (plda(embeddings) * np.sqrt(phi)).astype("f4")})
    package = PackagePLDA(rho, phi)
    x = np.random.default_rng(0).standard_normal((70, 256)).astype(np.float32) * 5
    want = plda(x)
    got = package(x)
    assert rho.batches == [32, 32, 6]
    assert got.shape == want.shape == (70, package.lda_dimension)
    assert np.max(np.abs(got - want)) <= 1e-5 * np.max(np.abs(want))
    assert package(np.zeros((0, 256), np.float32)).shape == (0, package.lda_dimension)


def test_read_plda_phi_forms(tmp_path):
    from coreml_diarize.diarization.community import read_plda_phi
    from coreml_diarize.errors import ArtifactError

    phi = np.linspace(8.0, 1.0, 130)
    path = tmp_path / "plda-parameters.json"
    encoded = base64.b64encode(phi.astype("<f4")).decode()
    # FluidAudio's form: only tensors.psi (float32), cut to lda_dimension when given
    path.write_text(json.dumps({"tensors": {"psi": {"data_base64": encoded}}}))
    np.testing.assert_array_equal(read_plda_phi(path), phi.astype(np.float32))
    path.write_text(
        json.dumps({"lda_dimension": 128, "tensors": {"psi": {"data_base64": encoded}}})
    )
    assert read_plda_phi(path).shape == (128,)
    # a plain float64 phi wins over the float32 tensor
    path.write_text(json.dumps({"phi": phi[:128].tolist(), "tensors": {"psi": {}}}))
    np.testing.assert_array_equal(read_plda_phi(path), phi[:128])
    for bad in ({"tensors": {}}, {"phi": [1.0, -2.0]}, []):
        path.write_text(json.dumps(bad))
        with pytest.raises(ArtifactError):
            read_plda_phi(path)
    with pytest.raises(ArtifactError, match="not found"):
        read_plda_phi(tmp_path / "missing.json")


def _offline_specs():
    from coreml_diarize.models import registry

    return [spec for spec in registry().values() if "offline" in spec.chains]


def test_find_packages_offline_needs_the_plda_parameters(tmp_path):
    from coreml_diarize.diarization.chain import find_packages
    from coreml_diarize.errors import ArtifactError

    specs = _offline_specs()
    if not specs:
        pytest.skip("the registry has no offline models yet")
    for spec in specs:
        (tmp_path / f"{spec.filename}.mlpackage").mkdir()
    sidecars = [name for spec in specs for name in spec.sidecars]
    if sidecars:
        with pytest.raises(ArtifactError, match=f"lacks {sidecars[0]}"):
            find_packages(tmp_path, chain="offline")
        for name in sidecars:
            (tmp_path / name).write_text("{}")
    paths = find_packages(tmp_path, chain="offline")
    assert paths.chain == "offline"
    assert {p.name for p in paths.paths.values()} == {f"{s.filename}.mlpackage" for s in specs}


def test_diarize_file_looks_for_the_pipelines_packages(tmp_path):
    from coreml_diarize.diarization.compare import compare_file
    from coreml_diarize.diarization.diarize import diarize_file
    from coreml_diarize.errors import ArtifactError, DiarizeError

    specs = _offline_specs()
    if not specs:
        pytest.skip("the registry has no offline models yet")
    wav = tmp_path / "missing.wav"  # the packages are checked before the audio is read
    for run in (diarize_file, compare_file):
        with pytest.raises(ArtifactError, match=f"lacks {specs[0].filename}.mlpackage"):
            run(wav, tmp_path, pipeline="community-1")
        with pytest.raises(DiarizeError, match="unknown pipeline"):
            run(wav, tmp_path, pipeline="2.1")


# --- the real packages -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_packages(tmp_path_factory):
    """The offline packages in fp32: the trained segmentation fixture, seeded WeSpeaker and PLDA."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools

    specs = _offline_specs()
    assert {s.filename for s in specs} == {"Segmentation", "FBank", "Embedding", "PldaRho"}
    out = tmp_path_factory.mktemp("offline_models")
    sources = {"segmentation": str(FIXTURE), "embedding": "random:0", "plda": "random:0"}
    with quiet_coremltools():
        for spec in specs:
            source = sources[spec.weights.name] if spec.weights is not None else "random:0"
            convert_model(spec, make_context(spec, source=source), out)
    return out


def test_real_packages_reproduce_pyannote(offline_packages, excerpt, tmp_path):
    """`compare --pipeline community-1` from the CLI: the four packages (MIL executor) inside
    pyannote's community-1 pipeline vs pyannote's own, DER 0; `diarize` agrees with it."""
    from click.testing import CliRunner

    from coreml_diarize.app.cli import main
    from coreml_diarize.diarization.rttm import read_rttm

    _, wav, _ = excerpt
    out, rttm = tmp_path / "compare.json", tmp_path / "hyp.rttm"
    common = [str(wav), "--models", str(offline_packages), "--pipeline", "community-1"]
    common += ["--backend", "mil", "--quiet"]
    done = CliRunner().invoke(main, ["compare", *common, "--json", str(out)])
    assert done.exit_code == 0, done.output
    report = json.loads(out.read_text())
    assert report["pipeline"] == "community-1"
    assert report["converted"]["backend"] == "mil" and report["converted"]["windows"] == 4
    assert report["weights"]["plda"] == "random:0"
    assert report["converted_vs_torch"]["der"] == 0.0, done.output
    assert report["converted"]["rtf"] > 0 and report["torch"]["rtf"] > 0

    done = CliRunner().invoke(main, ["diarize", *common, "--rttm", str(rttm)])
    assert done.exit_code == 0, done.output
    speakers = report["converted"]["speakers"]
    assert len(speakers) >= 1, "degenerate test: nobody found"
    assert sorted(read_rttm(rttm).labels()) == sorted(speakers)
