"""Segmentation: wrapper parity with pyannote's own PyanNet, calibrated weights, the saved package."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from coreml_diarize import signals
from coreml_diarize.models import get_spec

SPEC = get_spec("segmentation")


def _pyannote(model, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model(torch.from_numpy(audio)[None, None]).numpy()


def _wrapper(wrapper, audio: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return wrapper(torch.from_numpy(audio)[None, None]).numpy()


@pytest.fixture(scope="module")
def wrapper(seg_ctx):
    return SPEC.build_wrapper(seg_ctx)


@pytest.mark.parametrize(
    "name,make",
    [
        ("noise", signals.noise),
        ("silence", signals.silence),
        ("sine_sweep", signals.sine_sweep),
        ("speech", lambda: signals.real_speech(3.0)),
        ("clipped", signals.clipped),
    ],
)
def test_wrapper_matches_pyannote_forward(seg_weights, wrapper, name, make):
    audio = make()
    expected = _pyannote(seg_weights.model, audio)
    got = _wrapper(wrapper, audio)
    assert got.shape == expected.shape == (1, 589, 7)
    assert np.isfinite(got).all()
    assert np.abs(got - expected).max() <= 1e-5, name


def test_sinc_conv_is_pyannotes_filterbank(seg_weights, wrapper):
    """The precomputed Conv1d reproduces pyannote's SincNet encoder output."""
    x = torch.from_numpy(signals.real_speech(1.0))[None, None]
    with torch.inference_mode():
        expected = seg_weights.model.sincnet.conv1d[0](x)
        got = wrapper.sinc_filters(x)
    assert wrapper.sinc_filters.stride == (10,)
    assert tuple(wrapper.sinc_filters.weight.shape) == (80, 1, 251)
    assert torch.allclose(got, expected, atol=1e-5)


def test_log_softmax_is_normalised_and_finite_in_fp16(wrapper):
    """exp(log-probs) sums to 1; even in fp16 extreme logits give no -inf/NaN."""
    from coreml_diarize.wrappers.segmentation import stable_log_softmax

    out = _wrapper(wrapper, signals.noise())
    assert np.allclose(np.exp(out).sum(-1), 1.0, atol=1e-5)
    extreme = torch.tensor([[0.0, 60.0, -60.0, 30.0]], dtype=torch.float16)
    stable = stable_log_softmax(extreme)
    assert torch.isfinite(stable).all()
    assert torch.allclose(stable.float(), torch.log_softmax(extreme.float(), -1), atol=0.1)


def test_calibrated_random_weights_depend_on_input(seg_weights):
    """Seeded weights must not be near-constant (which would make every parity check trivial)."""
    a = _pyannote(seg_weights.model, signals.real_speech(0.0))[0]
    b = _pyannote(seg_weights.model, signals.real_speech(15.0))[0]
    assert np.abs(a - b).max() > 1.0  # default init: <= 3.5e-3
    classes_used = set(a.argmax(-1)) | set(b.argmax(-1))
    assert len(classes_used) >= 5
    assert (a.argmax(-1) != b.argmax(-1)).sum() > 50


def test_frames_and_classes_derived_from_the_model(seg_ctx, seg_weights):
    g = seg_ctx.geometry
    out = _pyannote(seg_weights.model, signals.silence())
    assert (g.frames, g.classes) == out.shape[1:]
    assert g.speakers == len(seg_weights.model.specifications.classes)


def test_saved_package_has_contract_io_and_metadata(seg_package):
    from coreml_diarize.mlpackage import inspect_package

    info = inspect_package(seg_package)
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [
        ("audio", (1, 1, 160000), "float32")
    ]
    assert [(t.name, t.shape, t.dtype) for t in info.outputs] == [
        ("segments", (1, 589, 7), "float32")
    ]
    meta = info.metadata
    for key in [
        "source.kind",
        "source.sha256",
        "source.trained",
        "toolkit.version",
        "toolkit.git_revision",
        "versions.coremltools",
        "versions.torch",
        "versions.pyannote.audio",
        "precision",
        "compression",
        "thresholds",
    ]:
        assert f"coreml_diarize.{key}" in meta, key
    assert meta["coreml_diarize.source.sha256"] == "random-init:0"
    assert meta["coreml_diarize.source.trained"] == "false"
    assert info.author and info.license and info.version and info.description
    assert info.op_histogram.get("lstm") == 4
    assert "slice_by_index" not in info.op_histogram
    assert info.specification_version >= 8  # iOS 17 / macOS 14


def test_same_seed_twice_gives_identical_package(seg_ctx, seg_package, tmp_path):
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import tree_hash
    from coreml_diarize.sources import load_weights
    from coreml_diarize.specs import BuildContext

    ctx = BuildContext(seg_ctx.geometry, seg_ctx.options, load_weights("segmentation", "random:0"))
    again = convert_model(SPEC, ctx, tmp_path).path
    assert tree_hash(again) == tree_hash(seg_package)


def test_different_seed_gives_different_weights(seg_weights):
    from coreml_diarize.sources import load_weights

    other = load_weights("segmentation", "random:1").model.state_dict()
    mine = seg_weights.model.state_dict()
    assert any(not torch.equal(mine[k], other[k]) for k in mine)
