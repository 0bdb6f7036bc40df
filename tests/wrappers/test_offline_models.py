"""The offline model set (FluidAudio's OfflineDiarizerModels, docs/offline_contract.md):
Segmentation, FBank, Embedding, PldaRho.

For each: the wrapper against its pyannote reference in torch, the converted .mlpackage run by
the project's MIL executor through `validate_package` (passes), and an injected fault (fails).
Plus the set's own contract: batch ranges, FluidAudio's file names, Embedding(FBank(audio))
== the online embedding model, rho / sqrt(phi) == pyannote's PLDA, plda-parameters.json.

Seeded random weights (random:0) throughout; the slow parts (loading, converting, running a
ResNet34 in the executor) are module fixtures, each done once.
"""

from __future__ import annotations

import base64
import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from coreml_diarize import signals
from coreml_diarize.models import get_spec
from coreml_diarize.validation.reference_embedding import mask_rows

OFFLINE_KEYS = ["offline-segmentation", "fbank", "offline-embedding", "plda-rho"]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def perturbed(module: torch.nn.Module, seed: int = 0, share: float = 0.01, factor: float = 1.01):
    """A copy of `module` with `share` of every floating-point parameter's and buffer's
    entries multiplied by `factor`: a small, realistic conversion fault."""
    module = copy.deepcopy(module)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point() and tensor.numel() > 1:
                hit = (torch.rand(tensor.shape, generator=g) < share).to(tensor.dtype)
                tensor.mul_(1 + (factor - 1) * hit)
    return module.eval()


def convert(spec, ctx, out_dir):
    from coreml_diarize.converters.convert import convert_model

    return convert_model(spec, ctx, out_dir)


def validate(path, ctx):
    from coreml_diarize.validation.report import evaluate_package

    return evaluate_package(path, backend="mil", ctx=ctx)


def rejudge(evaluation, reference_ctx, cases):
    """The package's outputs of `evaluation` on `cases` judged against the references of
    another context (the same tolerances): what validation says of a package that is off by
    that difference."""
    from coreml_diarize.validation.judge import judge

    spec = evaluation.spec
    reference = spec.build_reference(reference_ctx)
    refs = {name: reference(evaluation.inputs[name]) for name in cases}
    outputs = {name: evaluation.outputs[name] for name in cases}
    return judge(spec, evaluation.tolerances, refs, outputs)


def with_weights_model(ctx, model):
    """`ctx` with its weights' model replaced (provenance kept)."""
    return replace(ctx, weights=replace(ctx.weights, model=model))


# --- the registry -------------------------------------------------------------------------


def test_offline_set_is_registered_after_the_online_one():
    from coreml_diarize.models import all_specs

    specs = all_specs()
    keys = [s.key for s in specs]
    assert keys[:5] == [
        "segmentation",
        "postprocessor",
        "preprocessor",
        "embedding",
        "post-embedding",
    ]
    assert keys[5:] == OFFLINE_KEYS
    offline = [s for s in specs if "offline" in s.chains]
    assert [s.filename for s in offline] == ["Segmentation", "FBank", "Embedding", "PldaRho"]
    assert all(s.chains == ("offline",) for s in offline)
    # one model, one set of tolerance tables
    assert get_spec("offline-segmentation").tolerances is get_spec("segmentation").tolerances
    assert get_spec("offline-embedding").tolerances is get_spec("embedding").tolerances
    assert get_spec("fbank").device_variants == () == get_spec("plda-rho").device_variants
    assert set(get_spec("plda-rho").sidecars) == {"plda-parameters.json"}


def test_fbank_frames_are_the_models(emb_weights, emb_ctx):
    from coreml_diarize.wrappers.fbank import KaldiFbankOptions

    g = emb_ctx.geometry
    opts = KaldiFbankOptions.from_pyannote(emb_weights.model)
    assert g.fbank_frames == opts.num_frames(g.samples) == 998
    with torch.inference_mode():
        fbank = emb_weights.model.compute_fbank(torch.zeros(1, 1, g.samples))
    assert fbank.shape == (1, g.fbank_frames, 80)


# --- Segmentation ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seg_spec():
    return get_spec("offline-segmentation")


@pytest.fixture(scope="module")
def seg_offline_package(seg_spec, seg_ctx, tmp_path_factory):
    return convert(seg_spec, seg_ctx, tmp_path_factory.mktemp("offline_seg")).path


def test_segmentation_wrapper_matches_pyannote_on_a_batch(seg_spec, seg_ctx):
    cases = seg_spec.example_inputs(seg_ctx)
    batch = cases["batch"]["audio"]
    assert batch.shape == (7, 1, 160000) and cases["silence"]["audio"].shape == (1, 1, 160000)
    assert set(cases) == {"batch", "silence", "speech_0s", "speech_15s"}
    wrapper = seg_spec.build_wrapper(seg_ctx)
    with torch.inference_mode():
        got = wrapper(torch.from_numpy(batch)).numpy()
    want = seg_spec.build_reference(seg_ctx)(cases["batch"])["segments"]
    assert got.shape == want.shape == (7, 589, 7)
    assert np.abs(got - want).max() <= 1e-5
    # a window's result does not depend on the rest of its batch
    with torch.inference_mode():
        alone = wrapper(torch.from_numpy(batch[5:6])).numpy()
    assert np.abs(alone[0] - got[5]).max() <= 1e-5


def test_segmentation_package_enumerates_batches_1_to_32_default_32(seg_offline_package):
    """Every batch FluidAudio sends (32, a last partial batch of 1..31, a warm-up of 1) as
    enumerated shapes, which each can run on the Neural Engine (a range would only at its
    default), with its full batch of 32 as the default; read back with coremltools itself."""
    import coremltools as ct

    from coreml_diarize.errors import DiarizeError
    from coreml_diarize.mlpackage import inspect_package
    from coreml_diarize.validation.mil import MILExecutor

    assert seg_offline_package.name == "Segmentation.mlpackage"
    saved = ct.models.MLModel(str(seg_offline_package), skip_model_load=True).get_spec()
    (feature,) = saved.description.input
    array = feature.type.multiArrayType
    assert feature.name == "audio"
    assert array.WhichOneof("ShapeFlexibility") == "enumeratedShapes"
    shapes = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
    assert sorted(shapes) == [(b, 1, 160000) for b in range(1, 33)]
    assert tuple(array.shape) == (32, 1, 160000)  # the default
    info = inspect_package(seg_offline_package)
    (audio,) = info.inputs
    assert (audio.shape, audio.dtype, audio.flexible) == ((32, 1, 160000), "float32", {})
    assert audio.enumerated == {0: tuple(range(1, 33))} and audio.sizes(0) == tuple(range(1, 33))
    assert [(t.name, t.dtype) for t in info.outputs] == [("segments", "float32")]
    # Core ML refuses a batch outside the set; so does the MIL executor, in one line
    with pytest.raises(DiarizeError, match="accepts only the shapes") as refused:
        MILExecutor.from_path(seg_offline_package).predict(
            {"audio": np.zeros((33, 1, 160000), np.float32)}
        )
    assert "\n" not in str(refused.value)


@pytest.fixture(scope="module")
def seg_evaluation(seg_ctx, seg_offline_package):
    return validate(seg_offline_package, seg_ctx)


def test_segmentation_package_validates_and_a_fault_fails(seg_ctx, seg_evaluation):
    assert seg_evaluation.report.passed, seg_evaluation.report.table()
    assert seg_evaluation.outputs["batch"]["segments"].shape == (7, 589, 7)
    assert seg_evaluation.outputs["silence"]["segments"].shape == (1, 589, 7)
    faulty = with_weights_model(seg_ctx, perturbed(seg_ctx.weights.model))
    assert not rejudge(seg_evaluation, faulty, ["speech_0s", "speech_15s"]).passed


def test_segmentation_package_runs_batch_32(seg_ctx, seg_offline_package):
    """B = 32, FluidAudio's full batch (B = 1 and 7 are validation cases)."""
    from coreml_diarize.validation.metrics import argmax_agreement
    from coreml_diarize.validation.mil import MILExecutor

    # 32 windows of pyannote's sample, 0.5 s apart
    audio = np.stack([signals.real_speech(0.5 * i) for i in range(32)])[:, None, :]
    with torch.inference_mode():
        want = seg_ctx.weights.model(torch.from_numpy(audio)).numpy()
    got = MILExecutor.from_path(seg_offline_package).predict({"audio": audio})["segments"]
    assert got.shape == (32, 589, 7) and got.dtype == np.float32
    assert np.abs(np.exp(got) - np.exp(want)).max() <= 7.5e-3
    assert argmax_agreement(want, got, min_margin=0.05) >= 0.999


# --- FBank ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fbank_spec():
    return get_spec("fbank")


@pytest.fixture(scope="module")
def fbank_wrapper(fbank_spec, emb_ctx):
    return fbank_spec.build_wrapper(emb_ctx)


def run_fbank(wrapper, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return wrapper(torch.from_numpy(audio)).numpy()


@pytest.mark.parametrize("name", sorted(signals.standard_signals()))
def test_fbank_matches_pyannotes_compute_fbank(name, fbank_spec, fbank_wrapper, emb_ctx):
    """The reference is pyannote's compute_fbank (torchaudio's kaldi.fbank) laid out
    channels-first; the wrapper matches it, and it matches torchaudio in float64."""
    from coreml_diarize.validation.reference_embedding import kaldi_fbank_float64
    from coreml_diarize.wrappers.fbank import KaldiFbankOptions

    case = fbank_spec.example_inputs(emb_ctx)[name]
    want = fbank_spec.build_reference(emb_ctx)(case)["fbank_features"]
    got = run_fbank(fbank_wrapper, case["audio"])
    assert got.shape == want.shape == (1, 1, 80, 998)
    assert np.abs(got - want).max() <= 2e-3
    kaldi = kaldi_fbank_float64(case["audio"][0, 0], KaldiFbankOptions()).numpy()
    centred = kaldi - kaldi.mean(axis=1, keepdims=True)  # (mels, frames), float64
    assert np.abs(want[0, 0] - centred).max() <= 2e-3


@pytest.fixture(scope="module")
def fbank_package(fbank_spec, emb_ctx, tmp_path_factory):
    return convert(fbank_spec, emb_ctx, tmp_path_factory.mktemp("fbank")).path


def test_fbank_package_io_and_ops(fbank_package):
    from coreml_diarize.mlpackage import inspect_package, load_program, op_histogram

    assert fbank_package.name == "FBank.mlpackage"
    info = inspect_package(fbank_package)
    assert [(t.name, t.shape, t.dtype, t.flexible) for t in info.inputs] == [
        ("audio", (1, 1, 160000), "float32", {})
    ]
    assert [(t.name, t.dtype) for t in info.outputs] == [("fbank_features", "float32")]
    ops = op_histogram(load_program(fbank_package))
    assert ops.get("slice_by_index", 0) == 0 and ops["conv"] == 1


def test_fbank_package_validates_and_a_fault_fails(
    fbank_spec, emb_ctx, fbank_package, fbank_wrapper, tmp_path
):
    from coreml_diarize.validation.mil import MILExecutor

    evaluation = validate(fbank_package, emb_ctx)
    assert evaluation.report.passed, evaluation.report.table()
    got = evaluation.outputs["speech_0s"]["fbank_features"]
    assert got.shape == (1, 1, 80, 998)
    # the warm-up: silence is finite (every bin on the log floor, centred to 0)
    assert np.all(np.abs(evaluation.outputs["silence"]["fbank_features"]) < 1e-3)
    # the package equals the torch wrapper it was traced from
    audio = evaluation.inputs["speech_15s"]["audio"]
    out = MILExecutor.from_path(fbank_package).predict({"audio": audio})["fbank_features"]
    assert np.abs(out - run_fbank(fbank_wrapper, audio)).max() <= 1e-3

    faulty = replace(fbank_spec, build_wrapper=lambda ctx: perturbed(fbank_wrapper))
    bad = convert(faulty, emb_ctx, tmp_path).path
    assert not validate(bad, emb_ctx).report.passed


# --- Embedding ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def embedding_spec():
    return get_spec("offline-embedding")


@pytest.fixture(scope="module")
def embedding_wrapper(embedding_spec, emb_ctx):
    return embedding_spec.build_wrapper(emb_ctx)


def run_embedding(wrapper, inputs) -> np.ndarray:
    with torch.inference_mode():
        out = wrapper(
            torch.from_numpy(inputs["fbank_features"]), torch.from_numpy(inputs["weights"])
        )
    return out.numpy()


def test_embedding_inputs_follow_fluidaudio(embedding_spec, emb_ctx):
    embedding_cases = embedding_spec.example_inputs(emb_ctx)
    for case in embedding_cases.values():
        assert case["fbank_features"].shape == (1, 1, 80, 998)
        assert case["weights"].shape == (1, 589)
        assert set(np.unique(case["weights"])) <= {0.0, 1.0}  # FluidAudio sends 0/1
    sums = {name: case["weights"].sum() for name, case in embedding_cases.items()}
    assert sums["silence"] == 0 and sums["speech_0s"] == 589 and 0 < sums["speech_15s"] < 589


@pytest.fixture(scope="module")
def embedding_package(embedding_spec, emb_ctx, tmp_path_factory):
    return convert(embedding_spec, emb_ctx, tmp_path_factory.mktemp("offline_emb")).path


@pytest.fixture(scope="module")
def embedding_evaluation(emb_ctx, embedding_package):
    return validate(embedding_package, emb_ctx)


def test_embedding_wrapper_matches_pyannotes_resnet(
    embedding_wrapper, embedding_evaluation, emb_weights
):
    """The torch wrapper against pyannote's ResNet forward (the references validation
    computed) on every example input."""
    for name, case in embedding_evaluation.inputs.items():
        want = embedding_evaluation.references[name]["embedding"]
        got = run_embedding(embedding_wrapper, case)
        assert got.shape == want.shape == (1, 256)
        assert cosine(got, want).min() >= 0.9999, name
        assert np.linalg.norm(got - want) <= 1e-4 * np.linalg.norm(want), name
    # all-zero weights: pyannote pools to 0 and returns seg_1's bias (finite)
    bias = emb_weights.model.resnet.seg_1.bias.detach().numpy()
    silent = embedding_evaluation.inputs["silence"]
    np.testing.assert_allclose(run_embedding(embedding_wrapper, silent)[0], bias, atol=1e-6)
    np.testing.assert_allclose(
        embedding_evaluation.references["silence"]["embedding"][0], bias, atol=1e-6
    )


def test_embedding_of_fbank_is_the_online_embedding(emb_ctx, fbank_wrapper, embedding_wrapper):
    """Embedding(FBank(audio), mask) == the online wespeaker wrapper on audio + mask: the two
    offline models compose into the online one."""
    from coreml_diarize.wrappers.embedding import build_wrapper

    online = build_wrapper(emb_ctx)
    waveform = np.stack([signals.real_speech(0.0), signals.noise(), signals.speech_like()])
    masks = mask_rows(3, emb_ctx.geometry.frames)
    with torch.inference_mode():
        want = online(torch.from_numpy(waveform), torch.from_numpy(masks)).numpy()
    for i in range(3):
        features = run_fbank(fbank_wrapper, waveform[i][None, None])
        got = run_embedding(
            embedding_wrapper, {"fbank_features": features, "weights": masks[i : i + 1]}
        )
        np.testing.assert_allclose(got[0], want[i], rtol=0, atol=1e-5 * np.abs(want[i]).max())


def test_embedding_package_io(embedding_package):
    from coreml_diarize.mlpackage import inspect_package

    assert embedding_package.name == "Embedding.mlpackage"
    info = inspect_package(embedding_package)
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("fbank_features", (1, 1, 80, 998), "float32"),
        ("weights", (1, 589), "float32"),
    ]
    assert [(t.name, t.dtype) for t in info.outputs] == [("embedding", "float32")]


def test_embedding_package_validates_and_a_fault_fails(emb_ctx, embedding_evaluation):
    assert embedding_evaluation.report.passed, embedding_evaluation.report.table()
    assert embedding_evaluation.outputs["speech_0s"]["embedding"].shape == (1, 256)
    faulty = with_weights_model(emb_ctx, perturbed(emb_ctx.weights.model))
    assert not rejudge(embedding_evaluation, faulty, ["speech_0s", "speech_15s"]).passed


# --- PldaRho --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plda_ctx():
    from coreml_diarize.sources import default_geometry, load_weights
    from coreml_diarize.specs import BuildContext, Options

    return BuildContext(default_geometry(), Options(), load_weights("plda", "random:0"))


@pytest.fixture(scope="module")
def rho_spec():
    return get_spec("plda-rho")


@pytest.fixture(scope="module")
def rho_wrapper(rho_spec, plda_ctx):
    return rho_spec.build_wrapper(plda_ctx)


def test_rho_inputs_cover_fluidaudios_batches(rho_spec, plda_ctx):
    cases = rho_spec.example_inputs(plda_ctx)
    rows = {name: case["embeddings"].shape[0] for name, case in cases.items()}
    assert max(rows.values()) == 32 and min(rows.values()) == 1
    assert all(case["embeddings"].shape[1] == 256 for case in cases.values())
    assert not cases["zero"]["embeddings"].any()  # FluidAudio's (1, 256) warm-up


def test_rho_wrapper_is_pyannotes_plda_times_sqrt_phi(rho_spec, plda_ctx, rho_wrapper):
    plda = plda_ctx.weights.model
    sqrt_phi = np.sqrt(plda.phi)
    reference = rho_spec.build_reference(plda_ctx)
    for name, case in rho_spec.example_inputs(plda_ctx).items():
        x = case["embeddings"]
        with torch.inference_mode():
            got = rho_wrapper(torch.from_numpy(x)).numpy()
        want = np.asarray(plda(x), dtype=np.float64)  # pyannote's PLDA, float64
        assert got.shape == want.shape == (x.shape[0], 128)
        scale = np.abs(want * sqrt_phi).max()
        assert np.abs(got / sqrt_phi - want).max() <= 2e-6 * np.abs(want).max(), name
        assert np.abs(got - reference(case)["rho"]).max() <= 2e-6 * scale, name


@pytest.fixture(scope="module")
def rho_conversion(rho_spec, plda_ctx, tmp_path_factory):
    return convert(rho_spec, plda_ctx, tmp_path_factory.mktemp("plda_rho"))


def test_rho_package_io(rho_conversion):
    from coreml_diarize.mlpackage import inspect_package

    assert rho_conversion.path.name == "PldaRho.mlpackage"
    info = inspect_package(rho_conversion.path)
    assert [(t.name, t.shape, t.dtype, t.flexible) for t in info.inputs] == [
        ("embeddings", (1, 256), "float32", {0: (1, 32)})
    ]
    assert [(t.name, t.dtype) for t in info.outputs] == [("rho", "float32")]


def test_rho_package_validates_and_a_fault_fails(
    rho_spec, plda_ctx, rho_conversion, rho_wrapper, tmp_path
):
    from coreml_diarize.validation.mil import MILExecutor

    evaluation = validate(rho_conversion.path, plda_ctx)
    assert evaluation.report.passed, evaluation.report.table()
    # rho / sqrt(phi) is pyannote's PLDA, for N = 1 .. 32
    plda = plda_ctx.weights.model
    executor = MILExecutor.from_path(rho_conversion.path)
    x = evaluation.inputs["speakers_32"]["embeddings"]
    for n in (32, 7, 1):
        rho = executor.predict({"embeddings": x[:n]})["rho"]
        want = plda(x[:n])
        assert rho.shape == (n, 128) and rho.dtype == np.float32
        assert np.abs(rho / np.sqrt(plda.phi) - want).max() <= 2e-6 * np.abs(want).max()

    faulty = replace(rho_spec, build_wrapper=lambda ctx: perturbed(rho_wrapper))
    bad = convert(faulty, plda_ctx, tmp_path).path
    assert not validate(bad, plda_ctx).report.passed


def test_plda_parameters_json_is_fluidaudios(rho_conversion, plda_ctx):
    """FluidAudio reads tensors.psi.data_base64 only: little-endian float32, one value per rho
    column, = phi (descending, aligned with rho). Our VBx parameters ride along."""
    (path,) = rho_conversion.sidecars
    assert path.name == "plda-parameters.json" and path.parent == rho_conversion.path.parent
    params = json.loads(path.read_text())
    plda = plda_ctx.weights.model
    psi = np.frombuffer(base64.b64decode(params["tensors"]["psi"]["data_base64"]), dtype="<f4")
    assert psi.shape == (128,) and np.array_equal(psi, plda.phi[:128].astype(np.float32))
    assert np.all(np.diff(psi) <= 0)
    entry = params["tensors"]["psi"]
    assert (entry["shape"], entry["dtype"], entry["layout"]) == ([128], "float32", "row-major")
    tr = np.frombuffer(base64.b64decode(params["tensors"]["tr"]["data_base64"]), dtype="<f4")
    assert tr.size == 128 * 128 and params["tensors"]["tr"]["shape"] == [128, 128]
    assert params["rho_scaling"] == "sqrt_phi" and params["lda_dimension"] == 128
    assert np.array_equal(params["phi"], plda.phi)  # float64, exactly
    vbx = params["vbx"]
    assert (vbx["Fa"], vbx["Fb"], vbx["ahc_threshold"]) == (0.07, 0.8, 0.6)
    assert params["source"]["source.sha256"] == "random-init:0"
    # deterministic: the same context gives the same bytes
    again = get_spec("plda-rho").sidecars["plda-parameters.json"](plda_ctx)
    assert json.dumps(again, sort_keys=True) == json.dumps(params, sort_keys=True)
