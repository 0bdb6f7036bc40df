"""Shared, session-scoped fixtures: loading and converting models is the slow part of the suite."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # no telemetry from tests
os.environ["HF_HUB_OFFLINE"] = "1"  # no network in tests, ever


@pytest.fixture(scope="session")
def seg_weights():
    from coreml_diarize.sources import load_weights

    return load_weights("segmentation", "random:0")


@pytest.fixture(scope="session")
def seg_ctx(seg_weights):
    from coreml_diarize.sources import segmentation_geometry
    from coreml_diarize.specs import BuildContext, Options

    return BuildContext(
        segmentation_geometry(seg_weights.model, embedding_dim=256), Options(), seg_weights
    )


@pytest.fixture(scope="session")
def seg_package(seg_ctx, tmp_path_factory):
    """The fp32 segmentation mlpackage, converted once per session."""
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec

    return convert_model(get_spec("segmentation"), seg_ctx, tmp_path_factory.mktemp("seg")).path


@pytest.fixture(scope="session")
def emb_weights():
    from coreml_diarize.sources import load_weights

    return load_weights("embedding", "random:0")


@pytest.fixture(scope="session")
def emb_ctx(emb_weights):
    from coreml_diarize.sources import default_geometry
    from coreml_diarize.specs import BuildContext, Options

    return BuildContext(default_geometry(), Options(), emb_weights)


@pytest.fixture(scope="session")
def emb_package(emb_ctx, tmp_path_factory):
    """wespeaker_v2.mlpackage (fp32) through the project's converter, once per session."""
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import get_spec

    return convert_model(get_spec("embedding"), emb_ctx, tmp_path_factory.mktemp("emb")).path


@pytest.fixture
def coreml_standin(monkeypatch):
    """Core ML on this machine: validation/backends.py gets the stand-in of coremltools'
    MLModel and MLComputePlan (tests/coreml_standin.py) and is told it runs on macOS. The
    fixture is the installer: `coreml_standin(GITHUB_HOSTED_VM)` switches the emulated Mac
    (default: an Apple silicon Mac with a Neural Engine); it returns the MLModel class."""
    import coreml_standin as standin

    def use(machine: standin.Machine = standin.APPLE_SILICON_MAC):
        return standin.install(monkeypatch, machine)

    use()
    return use
