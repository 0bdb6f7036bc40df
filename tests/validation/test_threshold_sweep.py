"""The validation bounds against a corpus: no false failures, and the faults they exist for fail.

Sweep: fp32 segmentation packages of five seeded random weights (and of the trained fixture
tests/fixtures/segmentation-synthetic when its checkpoint is present), each run through the MIL
executor on the built-in signals, pyannote's sample in sliding windows and a few synthetic
espeak-ng conversations (>= 200 chunks in all), judged by the one judge with the spec's
tolerances: every chunk must pass. benchmarks/bench_error_distribution.py measures the same
distributions (and fp16/8-bit ones) that docs/validation.md derives the bounds from.

Faults, each judged by `validate_package` as a user would see it (the reference rebuilt from
the package's recorded provenance): 1% of an fp32 package's weights scaled by 1.01, and 4-bit
and 1-bit look-up tables presented as 8-bit ones; on random:0 weights and on the trained
fixture.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.models import get_spec

SEEDS = (0, 1, 2, 3, 4)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"
SAMPLE_HOP_S = 0.5  # pyannote's 30 s sample: 41 windows of 10 s
SYNTHETIC_PER_SEED = 3
MIN_CHUNKS = 200


def _sample_windows() -> dict[str, np.ndarray]:
    from coreml_diarize import signals

    offsets = np.arange(0.0, 20.0 + 1e-9, SAMPLE_HOP_S)
    return {f"sample@{o:g}s": signals.real_speech(float(o)) for o in offsets}


def _synthetic(seed: int) -> dict[str, np.ndarray]:
    """A few espeak-ng conversations (held-out voices), deterministic in `seed` (espeak-ng is
    installed by `make setup`)."""
    from training.corpus import CorpusConfig, build_pool, median_f0, mix_conversation

    cfg = replace(CorpusConfig.heldout(speakers=4, utterances_per_speaker=3), min_f0_ratio=1.1)
    _, pool = build_pool(cfg, seed=1000 + seed)
    f0 = [median_f0(utts) for utts in pool]
    rng = np.random.default_rng(2000 + seed)
    return {
        f"synthetic{seed}#{i}": mix_conversation(pool, rng, cfg, f0).audio
        for i in range(SYNTHETIC_PER_SEED)
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """source -> the judgement of that source's fp32 package on its corpus."""
    import torch

    from coreml_diarize import signals
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.validation.judge import judge
    from coreml_diarize.validation.mil import MILExecutor

    torch.set_num_threads(1)
    spec = get_spec("segmentation")
    shared = {**signals.standard_signals(), **_sample_windows()}
    sources = [(f"random:{seed}", seed) for seed in SEEDS]
    if (FIXTURE / "pytorch_model.bin").exists():
        sources.append((str(FIXTURE), 5))
    out = {}
    for source, seed in sources:
        ctx = make_context(spec, source=source)
        package = convert_model(spec, ctx, tmp_path_factory.mktemp(f"sweep{seed}")).path
        executor = MILExecutor.from_path(package)
        reference = spec.build_reference(ctx)
        chunks = {**shared, **_synthetic(seed)}
        cases = {name: {"audio": x[None, None, :]} for name, x in chunks.items()}
        refs = {name: reference(c) for name, c in cases.items()}
        outs = {name: executor.predict(c) for name, c in cases.items()}
        tolerances = spec.tolerance_for("fp32", trained=ctx.weights.provenance.trained)
        out[source] = judge(spec, tolerances, refs, outs)
    return out


def test_sweep_covers_enough_chunks(sweep):
    assert sum(len(j.cases) for j in sweep.values()) >= MIN_CHUNKS
    names = {c.input for j in sweep.values() for c in j.cases}
    assert any(n.startswith("synthetic") for n in names)


def test_no_false_failures_on_the_corpus(sweep):
    failures = [f"{source} {f}" for source, j in sweep.items() for f in j.failures]
    failures += [
        f"{source} {case.input}: {f}"
        for source, j in sweep.items()
        for case in j.cases
        for o in case.outputs
        for f in o.failures
    ]
    assert not failures, "\n".join(failures[:20])


def test_probability_bound_keeps_its_margin(sweep):
    """The measured worst case stays well inside the bound: a margin, not a coin toss."""
    bound = get_spec("segmentation").tolerance_for("fp32")["segments"].max_prob_abs
    worst = max(o.prob_max_abs for j in sweep.values() for c in j.cases for o in c.outputs)
    assert worst * 2 <= bound, (worst, bound)


# --- faults that must fail validation ----------------------------------------------------------


def _perturb_weights(package: Path, *, fraction: float, factor: float, seed: int = 0) -> int:
    """Scale a random `fraction` of every fp32 weight tensor's elements by `factor`, in the
    saved weight blob. Returns how many elements changed."""
    from coreml_diarize.validation.mil import read_mil_program

    blob = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    data = bytearray(blob.read_bytes())
    rng = np.random.default_rng(seed)
    changed = 0
    for where in read_mil_program(package).blob_ranges.values():
        if where.dtype != "fp32":
            continue
        span = slice(where.offset, where.offset + where.nbytes)
        w = np.frombuffer(bytes(data[span]), dtype=np.float32).copy()
        pick = rng.random(w.size) < fraction
        w[pick] *= np.float32(factor)
        data[span] = w.tobytes()
        changed += int(pick.sum())
    blob.write_bytes(bytes(data))
    return changed


def _present_as(package: Path, target: Path, *, nbits: int) -> Path:
    """A copy of a palettized package whose record says it is `palettize<nbits>`."""
    from coreml_diarize.converters.convert import save_mlmodel
    from coreml_diarize.mlpackage import load_mlmodel
    from coreml_diarize.record import PackageRecord

    record = PackageRecord.from_package(package)
    relabelled = record.quantized(
        precision=record.precision,
        compression=f"palettize{nbits}",
        recipe={**record.recipe, "nbits": nbits},
    )
    mlmodel = load_mlmodel(package)
    mlmodel.user_defined_metadata.update(relabelled.to_metadata())
    return save_mlmodel(mlmodel, target / package.name)


@pytest.fixture(scope="module")
def trained_package(tmp_path_factory):
    """The trained fixture's fp32 segmentation package."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model

    spec = get_spec("segmentation")
    ctx = make_context(spec, source=str(FIXTURE))
    return convert_model(spec, ctx, tmp_path_factory.mktemp("trained")).path


@pytest.fixture(scope="module", params=["random:0", "trained"])
def fp32_package(request):
    """An fp32 segmentation package: seeded random weights, then the trained fixture."""
    return request.getfixturevalue(
        "seg_package" if request.param == "random:0" else "trained_package"
    )


def test_untouched_fp32_package_passes(fp32_package):
    from coreml_diarize.validation.report import validate_package

    report = validate_package(fp32_package, backend="mil")
    assert report.passed, report.table()
    assert report.summary()["segments"]["prob_max_abs"] > 0


def test_one_percent_of_weights_scaled_by_1_01_fails(fp32_package, tmp_path):
    from coreml_diarize.validation.report import validate_package

    package = tmp_path / fp32_package.name
    shutil.copytree(fp32_package, package)
    changed = _perturb_weights(package, fraction=0.01, factor=1.01)
    assert changed > 1000
    report = validate_package(package, backend="mil")
    assert not report.passed, report.table()
    assert any("max probability error" in f for f in report.all_failures())


@pytest.fixture(scope="module")
def palettized(fp32_package, tmp_path_factory):
    """nbits -> a palettized package made from the fp32 package."""
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    out = {}
    for nbits in (8, 4, 1):
        target = tmp_path_factory.mktemp(f"pal{nbits}")
        config = QuantizeConfig(mode="palettize", nbits=nbits)
        out[nbits] = quantize_package(fp32_package, target, config).dst
    return out


def test_true_8bit_package_passes(palettized):
    from coreml_diarize.validation.report import validate_package

    report = validate_package(palettized[8], backend="mil")
    assert report.recipe == "palettize8"
    assert report.passed, report.table()


@pytest.mark.parametrize("nbits", [4, 1])
def test_fewer_bits_presented_as_8bit_fail(palettized, tmp_path, nbits):
    from coreml_diarize.record import PackageRecord
    from coreml_diarize.validation.report import validate_package

    package = _present_as(palettized[nbits], tmp_path, nbits=8)
    assert PackageRecord.from_package(package).variant == "palettize8"
    report = validate_package(package, backend="mil")
    assert report.recipe == "palettize8"
    assert not report.passed, report.table()
