"""WeSpeaker ResNet34 -> wespeaker_v2.mlpackage: wrapper vs pyannote, calibration, conversion.

All tests share one calibrated model, one set of reference outputs and one converted package
(module-scoped fixtures): a ResNet34 forward on 3 x 10 s costs ~2 s on 2 cores.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from coreml_diarize import signals
from coreml_diarize.validation.reference_embedding import (
    embedding_inputs,
    embedding_reference,
    mask_rows,
)
from coreml_diarize.wrappers.embedding import MaskToFrames, WeightedStatsPool, build_wrapper

MIN_COSINE = 0.9999
MAX_RELATIVE_ERROR = 1e-3
DIFFERENT_INPUTS_MAX_COSINE = 0.7  # "well below 0.9" for a trained-like model


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def relative_error(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.linalg.norm(ours - ref, axis=-1) / np.linalg.norm(ref, axis=-1)


@pytest.fixture(scope="module")
def weights(emb_weights):
    return emb_weights


@pytest.fixture(scope="module")
def ctx(emb_ctx):
    return emb_ctx


@pytest.fixture(scope="module")
def wrapper(ctx):
    return build_wrapper(ctx).eval()


def run_wrapper(wrapper, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        out = wrapper(torch.from_numpy(inputs["waveform"]), torch.from_numpy(inputs["mask"]))
    return out.numpy()


@pytest.fixture(scope="module")
def cases(ctx, wrapper) -> dict[str, tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """name -> (inputs, pyannote's embedding, wrapper's embedding)."""
    reference = embedding_reference(ctx)
    return {
        name: (inputs, reference(inputs)["embedding"], run_wrapper(wrapper, inputs))
        for name, inputs in embedding_inputs(ctx).items()
    }


# --- wrapper vs pyannote's own forward ----------------------------------------------------


def test_validation_inputs_follow_the_contract(ctx):
    inputs = embedding_inputs(ctx)
    assert {
        "noise",
        "silence",
        "clipped",
        "sine_sweep",
        "speech_0s",
        "speech_15s",
        "speech_like",
    } <= set(inputs)
    for case in inputs.values():
        assert case["waveform"].shape == (3, 160000) and case["waveform"].dtype == np.float32
        assert case["mask"].shape == (3, 589) and case["mask"].dtype == np.float32
        sums = case["mask"].sum(axis=1)
        assert sums[0] == 589 and 0 < sums[1] < 589 and sums[2] == 0  # full, partial, empty


@pytest.mark.parametrize(
    "name", ["noise", "silence", "clipped", "sine_sweep", "speech_0s", "speech_15s", "speech_like"]
)
def test_wrapper_matches_pyannote(name, cases, record_property):
    _, ref, ours = cases[name]
    assert ours.shape == ref.shape == (3, 256)
    assert np.isfinite(ours).all() and np.isfinite(ref).all()
    cos, rel = cosine(ours, ref), relative_error(ours, ref)
    record_property("cosine_per_row", cos.tolist())
    record_property("relative_error_per_row", rel.tolist())
    assert cos.min() >= MIN_COSINE, f"{name}: cosine {cos} (relative error {rel})"
    assert rel.max() <= MAX_RELATIVE_ERROR, f"{name}: relative error {rel}"


def test_zero_mask_gives_the_embedding_bias(cases, weights):
    """pyannote pools an all-zero mask to mean 0, std 0 (0 / 1e-8): the embedding is seg_1's
    bias. The wrapper gives the same, for every input signal."""
    bias = weights.model.resnet.seg_1.bias.detach().numpy()
    for name, (_, ref, ours) in cases.items():
        np.testing.assert_allclose(ref[2], bias, rtol=0, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(ours[2], bias, rtol=0, atol=1e-6, err_msg=name)


def test_reference_moves_between_inputs(cases):
    """Degenerate weights would pass every parity test: embeddings must differ across inputs."""
    full = np.stack([ref[0] for _, ref, _ in cases.values()])
    spread = np.std(full, axis=0).mean() / np.abs(full).mean()
    assert spread > 0.05


def test_batch_size_is_free(wrapper, cases):
    """The wrapper has no batch-size constant: batch 1 gives batch 3's first row."""
    inputs, _, ours = cases["speech_0s"]
    one = run_wrapper(wrapper, {"waveform": inputs["waveform"][:1], "mask": inputs["mask"][:1]})
    np.testing.assert_allclose(one[0], ours[0], rtol=0, atol=1e-4 * np.abs(ours[0]).max())


# --- the re-expressed pooling --------------------------------------------------------------


def test_mask_mapping_is_pyannotes_interpolation():
    """Selection-matrix matmul == StatsPool's F.interpolate(nearest), bit for bit."""
    mapping = MaskToFrames(589, 125)
    assert torch.all(mapping.selection.sum(dim=0) == 1)  # one source frame per feature frame
    masks = torch.rand(4, 589, generator=torch.Generator().manual_seed(0))
    masks[1] = (masks[1] > 0.5).float()
    masks[2] = 0.0
    expected = F.interpolate(masks[:, None, :], size=125, mode="nearest")[:, 0, :]
    assert torch.equal(mapping(masks), expected)


def test_weighted_stats_pool_matches_pyannote():
    from pyannote.audio.models.blocks.pooling import StatsPool

    g = torch.Generator().manual_seed(0)
    features = torch.relu(torch.randn(4, 64, 125, generator=g))
    weights = torch.rand(4, 125, generator=g)
    weights[1] = (weights[1] > 0.7).float()
    weights[2] = 0.0
    weights[3, :] = 0.0
    weights[3, 60] = 1.0  # a single active frame: unbiased variance 0 / 1e-8
    ours = WeightedStatsPool()(features, weights)
    ref = StatsPool()(features, weights=weights)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert torch.all(ours[2] == 0)


def test_weighted_stats_pool_zero_mask_without_epsilon():
    """fp16 rounds pyannote's 1e-8 to 0: an empty slot must still give 0, not 0/0 = NaN."""
    pool = WeightedStatsPool()
    pool.eps = 0.0
    features = torch.relu(torch.randn(2, 8, 125, generator=torch.Generator().manual_seed(1)))
    weights = torch.zeros(2, 125)
    weights[1, 10] = 1.0  # one frame: variance denominator 0 as well
    out = pool(features, weights)
    assert torch.isfinite(out).all()
    assert torch.all(out[0] == 0)
    torch.testing.assert_close(out[1, :8], features[1, :, 10])  # mean = that frame, std 0
    assert torch.all(out[1, 8:] == 0)


# --- calibration: seeded random weights that behave like trained ones ---------------------


def speaker_turn_mask(geometry, chunk_offset_s: float, speaker: str) -> np.ndarray:
    """Segmentation frames of one chunk where `speaker` alone talks in the bundled sample's RTTM."""
    from coreml_diarize.audio import bundled_sample_path

    turns = collections.defaultdict(list)
    for line in bundled_sample_path().with_suffix(".rttm").read_text().splitlines():
        fields = line.split()
        start, duration, who = float(fields[3]), float(fields[4]), fields[7]
        turns[who].append((start, start + duration))
    t = chunk_offset_s + (np.arange(geometry.frames) + 0.5) * geometry.frame_step_s
    active = {
        who: np.any([(t >= a) & (t < b) for a, b in spans], axis=0) for who, spans in turns.items()
    }
    others = np.any([v for who, v in active.items() if who != speaker], axis=0)
    return (active[speaker] & ~others).astype(np.float32)


@pytest.fixture(scope="module")
def calibration_embeddings(ctx, weights, cases) -> dict[str, np.ndarray]:
    """Embeddings (pyannote's forward) of two speakers' turns in two chunks of the bundled
    sample, and of whole chunks of speech and noise (full-mask rows of the parity cases)."""
    g = ctx.geometry
    offsets = (11.0, 18.0)
    speakers = ("speaker90", "speaker91")
    masks = np.stack([[speaker_turn_mask(g, o, who) for who in speakers] for o in offsets])
    assert (masks.sum(axis=-1) > 100).all()  # every turn spans > 1.5 s
    waveform = torch.from_numpy(np.stack([signals.real_speech(o) for o in offsets]))[:, None, :]
    with torch.inference_mode():  # weights with a speaker axis: (chunks, speakers, frames)
        out = weights.model(waveform, weights=torch.from_numpy(masks)).numpy()
    embeddings = {
        f"{who}@{o:g}s": out[i, j] for i, o in enumerate(offsets) for j, who in enumerate(speakers)
    }
    for name in ("speech_0s", "speech_15s", "noise"):
        embeddings[name] = cases[name][1][0]
    return embeddings


@pytest.mark.parametrize(
    "a, b",
    [
        ("speaker90@11s", "speaker91@11s"),
        ("speaker90@18s", "speaker91@18s"),
        ("speaker90@11s", "speaker91@18s"),
        ("noise", "speech_0s"),
        ("noise", "speech_15s"),
        ("noise", "speaker91@11s"),
    ],
)
def test_calibrated_embeddings_tell_inputs_apart(a, b, calibration_embeddings, record_property):
    """Default-init WeSpeaker gives cosine 0.91-0.997 between anything; calibrated, different
    speakers' turns and noise vs speech must be far apart."""
    c = float(cosine(calibration_embeddings[a], calibration_embeddings[b]))
    record_property("cosine", c)
    assert c < DIFFERENT_INPUTS_MAX_COSINE, f"{a} vs {b}: cosine {c:.3f}"


def test_same_input_same_embedding(weights, cases):
    inputs, ref, _ = cases["speech_15s"]
    waveform = torch.from_numpy(inputs["waveform"][:1, None, :])
    mask = torch.from_numpy(inputs["mask"][:1])
    with torch.inference_mode():
        first = weights.model(waveform, weights=mask).numpy()
        second = weights.model(waveform, weights=mask).numpy()
    assert np.array_equal(first, second)
    np.testing.assert_allclose(first[0], ref[0], rtol=0, atol=1e-5 * np.abs(ref[0]).max())


def test_calibration_is_deterministic(weights):
    """Two loads of random:0 give bit-identical weights (and the same provenance note)."""
    from coreml_diarize.sources import load_weights

    again = load_weights("embedding", "random:0")
    ours, theirs = weights.model.state_dict(), again.model.state_dict()
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"differs: {different[:5]}"
    assert weights.provenance == again.provenance
    assert weights.provenance.calibration.startswith("lsuv")


# --- conversion ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def package(emb_package) -> Path:
    return emb_package


def test_package_has_the_contract_io(package):
    import coremltools as ct
    from coremltools.proto import FeatureTypes_pb2 as ft

    assert package.name == "wespeaker_v2.mlpackage"
    spec = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    shapes = {f.name: tuple(f.type.multiArrayType.shape) for f in spec.description.input}
    assert shapes == {"waveform": (3, 160000), "mask": (3, 589)}
    outputs = {f.name: tuple(f.type.multiArrayType.shape) for f in spec.description.output}
    assert outputs == {"embedding": (3, 256)}
    for feature in [*spec.description.input, *spec.description.output]:
        assert feature.type.multiArrayType.dataType == ft.ArrayFeatureType.FLOAT32


def test_program_has_no_slicing(package, record_property):
    from coreml_diarize.mlpackage import load_program, op_histogram

    ops = op_histogram(load_program(package))
    record_property("op_histogram", dict(ops))
    assert ops.get("slice_by_index", 0) == 0
    assert not {"gather", "gather_along_axis", "gather_nd"} & set(ops)
    # 1 fbank conv + ResNet34 (conv1, 16 blocks x 2, 3 projection shortcuts)
    assert ops["conv"] == 37


def test_saved_package_reproduces_the_wrapper(package, wrapper, record_property):
    """The package as saved on disk, run by the project's MIL executor, vs the torch wrapper:
    a speech, a noise and a silent slot with full, partial and zero masks."""
    from coreml_diarize.validation.mil.executor import MILExecutor

    inputs = {
        "waveform": np.stack([signals.real_speech(0.0), signals.noise(), signals.silence()]),
        "mask": mask_rows(3, 589),
    }
    ours = MILExecutor.from_path(package).predict(inputs)["embedding"]
    expected = run_wrapper(wrapper, inputs)
    assert np.isfinite(ours).all()
    cos = cosine(ours, expected)
    record_property("cosine_per_row", cos.tolist())
    assert cos.min() >= MIN_COSINE, cos


def test_flexible_batch_package_matches_pyannote_for_1_and_5_slots(ctx, tmp_path):
    """--flexible-batch: the converted embedding model takes 1..32 speaker slots, as enumerated
    shapes (each can run on the Neural Engine; a range would only at its default), paired
    across its two inputs, which Core ML accepts from iOS 18 on; the default stays 3."""
    from dataclasses import replace

    import coremltools as ct

    from coreml_diarize import signals
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.errors import DiarizeError
    from coreml_diarize.models import get_spec
    from coreml_diarize.specs import Options
    from coreml_diarize.validation.mil import MILExecutor

    spec = get_spec("embedding")
    # before iOS 18 Core ML takes one enumerated input: one clear line, nothing written
    with pytest.raises(DiarizeError, match="iOS18") as refused:
        convert_model(spec, replace(ctx, options=Options(flexible_batch=True)), tmp_path)
    assert "\n" not in str(refused.value) and not list(tmp_path.iterdir())
    options = Options(flexible_batch=True, minimum_deployment_target="iOS18")
    package = convert_model(spec, replace(ctx, options=options), tmp_path).path
    # read back with coremltools itself: enumerated shapes, not a range
    saved = ct.models.MLModel(str(package), skip_model_load=True).get_spec()
    for feature, width in zip(saved.description.input, (160000, 589), strict=True):
        array = feature.type.multiArrayType
        assert array.WhichOneof("ShapeFlexibility") == "enumeratedShapes", feature.name
        shapes = [tuple(s.shape) for s in array.enumeratedShapes.shapes]
        assert sorted(shapes) == [(b, width) for b in range(1, 33)], feature.name
        assert tuple(array.shape) == (3, width) == shapes[0]  # default: FluidAudio's 3 slots
    executor = MILExecutor.from_path(package)
    # the two inputs are enumerated together: slot counts must agree, 33 is refused
    with pytest.raises(DiarizeError, match="together"):
        executor.predict({"waveform": np.zeros((2, 160000)), "mask": np.zeros((3, 589))})
    with pytest.raises(DiarizeError, match="accepts only"):
        executor.predict({"waveform": np.zeros((33, 160000)), "mask": np.zeros((33, 589))})
    for batch in (1, 5):
        waveform = np.stack([signals.real_speech(2.0 * i) for i in range(batch)])
        mask = np.ones((batch, ctx.geometry.frames), dtype=np.float32)
        mask[-1, :200] = 0.0
        got = executor.predict({"waveform": waveform, "mask": mask})["embedding"]
        with torch.inference_mode():
            ref = ctx.weights.model(
                torch.from_numpy(waveform)[:, None], weights=torch.from_numpy(mask)
            ).numpy()
        cos = np.sum(got * ref, 1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
        assert got.shape == (batch, 256)
        assert cos.min() >= 0.9999
