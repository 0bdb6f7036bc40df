"""`evaluate --pipeline community-1`: the offline packages (Segmentation, FBank, Embedding,
PldaRho + plda-parameters.json) in pyannote's community-1 pipeline, scored against pyannote's own
community-1 pipeline on the same weights, for every variant the offline set has, on a directory
corpus and on a pyannote.database protocol; two Ray actors give the serial loop's numbers.

Kept small: two 10 s two-speaker meetings (training/meetings.py), one 10 s window each (the
pipeline itself is tested on longer audio in test_community.py); the offline set is converted once for the module (the trained segmentation fixture,
seeded WeSpeaker and PLDA, as tests/diarization/test_community.py builds it) with the device
variants the registry declares (`ModelSpec.device_variants`: Segmentation and Embedding have
fp16 and palettize8; FBank and PldaRho are fp32 only).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "segmentation-synthetic"
VARIANTS = ("fp32", "fp16", "palettize8")
OPTIONS = ["--pipeline", "community-1", "--step", "5", "--backend", "mil", "--quiet"]


@pytest.fixture(scope="module")
def offline_models(tmp_path_factory) -> Path:
    """The offline set with its device variants, converted once for the module."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools
    from coreml_diarize.models import registry
    from coreml_diarize.quantize.apply import quantize_package
    from coreml_diarize.quantize.recipes import QuantizeConfig

    out = tmp_path_factory.mktemp("offline_models")
    sources = {"segmentation": str(FIXTURE), "embedding": "random:0", "plda": "random:0"}
    with quiet_coremltools():
        for spec in registry().values():
            if "offline" not in spec.chains:
                continue
            source = sources[spec.weights.name] if spec.weights is not None else "random:0"
            converted = convert_model(spec, make_context(spec, source=source), out)
            for recipe in spec.device_variants:  # what `build --profile offline` writes
                quantize_package(converted.path, out, QuantizeConfig.from_mapping(recipe))
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from training.meetings import write_meetings

    folder = tmp_path_factory.mktemp("community_corpus")
    write_meetings(folder, count=2, seconds=10.0, speakers=2)
    return folder


@pytest.fixture(scope="module")
def directory_run(offline_models, corpus, tmp_path_factory):
    """One serial CLI run, all three variants: (result, out dir)."""
    out = tmp_path_factory.mktemp("community_out")
    args = ["evaluate", str(corpus), "--models", str(offline_models), "--out", str(out)]
    args += ["--variants", ",".join(VARIANTS), *OPTIONS]
    return CliRunner().invoke(main, args), out


def _plan(models: Path, variants=VARIANTS):
    from coreml_diarize.diarization.evaluate import EvaluationOptions, EvaluationPlan

    options = EvaluationOptions(
        pipeline="community-1", variants=variants, step_s=5.0, backend="mil"
    )
    return EvaluationPlan.make(models, options)


def _records(out: Path, key: str) -> dict[str, dict]:
    return {
        p.stem: json.loads(p.read_text())
        for p in (out / "results" / key).glob("*.json")
        if not p.name.startswith(".")
    }


def test_every_variant_scored_against_pyannotes_community_1(directory_run, offline_models, corpus):
    """Each variant's stored result: the packages it ran (only the models with that variant
    swapped), the community-1 pipeline, and DERs that pyannote.metrics gives on the stored
    segments against pyannote's own community-1 annotation and the RTTMs."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    result, out = directory_run
    assert result.exit_code == 0, result.output
    plan = _plan(offline_models)
    torch = _records(out, plan.torch_key)
    assert set(torch) == {"meeting0", "meeting1"}
    assert torch["meeting0"]["pipeline"] == "community-1"
    assert torch["meeting0"]["weights"]["plda"] == "random:0"
    expected = {
        "fp32": ["Embedding", "FBank", "PldaRho", "Segmentation"],
        "fp16": ["Embedding_fp16", "FBank", "PldaRho", "Segmentation_fp16"],
        "palettize8": ["Embedding_palettize8", "FBank", "PldaRho", "Segmentation_palettize8"],
    }

    def annotation(segments, uri):
        out = Annotation(uri=uri)
        for i, (start, end, label) in enumerate(segments):
            out[Segment(start, end), i] = label
        return out

    for variant in VARIANTS:
        records = _records(out, plan.keys[variant])
        assert set(records) == {"meeting0", "meeting1"}, variant
        for uri, record in records.items():
            assert record["status"] == "ok" and record["pipeline"] == "community-1"
            assert [p.removesuffix(".mlpackage") for p in record["packages"]] == expected[variant]
            assert record["converted"]["windows"] == 1  # 10 s: one 10 s window, none padded
            reference = load_rttm(str(corpus / f"{uri}.rttm"))[uri]
            hypothesis = annotation(record["converted"]["segments"], uri)
            pytorch = annotation(torch[uri]["segments"], uri)
            uem = Timeline([Segment(0.0, 10.0)])
            metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
            assert record["converted_vs_torch"]["der"] == pytest.approx(
                metric(pytorch, hypothesis, uem=uem)
            )
            assert record["vs_reference"]["converted"]["der"] == pytest.approx(
                metric(reference, hypothesis, uem=uem)
            )
            assert record["vs_reference"]["torch"]["der"] == pytest.approx(
                metric(reference, pytorch, uem=uem)
            )
    # fp32 packages in fp32 reproduce pyannote's community-1 pipeline (test_community.py)
    fp32 = _records(out, plan.keys["fp32"])
    assert all(r["converted_vs_torch"]["der"] == 0.0 for r in fp32.values())
    report = (out / "report.md").read_text()
    assert "- fp16: Embedding_fp16, Segmentation_fp16; fp32 (no fp16 variant): FBank, PldaRho" in (
        report
    )
    aggregate = json.loads((out / "report.json").read_text())["aggregate"]
    assert [a["variant"] for a in aggregate] == list(VARIANTS)
    assert all(a["files"] == 2 for a in aggregate)


def test_protocol_names_the_same_results(directory_run, offline_models, corpus, tmp_path):
    """The same files named by a pyannote.database protocol: every result is already stored
    (same URIs, same keys), nothing runs, and the report covers both files and variants."""
    _, out = directory_run
    uris = ["meeting0", "meeting1"]
    (tmp_path / "test.lst").write_text("\n".join(uris) + "\n")
    (tmp_path / "test.rttm").write_text("".join((corpus / f"{u}.rttm").read_text() for u in uris))
    yml = tmp_path / "database.yml"
    yml.write_text(
        f"Databases:\n  Synth: {corpus}/{{uri}}.wav\n"
        "Protocols:\n  Synth:\n    SpeakerDiarization:\n      Tiny:\n        test:\n"
        "          uri: test.lst\n          annotation: test.rttm\n"
    )
    before = {p: p.stat().st_mtime_ns for p in (out / "results").glob("*/meeting*.json")}
    args = ["evaluate", "Synth.SpeakerDiarization.Tiny", "--database-yml", str(yml)]
    args += ["--models", str(offline_models), "--out", str(out), "--variants", ",".join(VARIANTS)]
    result = CliRunner().invoke(main, [*args, *OPTIONS])
    assert result.exit_code == 0, result.output
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert len(before) == 2 * (len(VARIANTS) + 1)  # + the PyTorch annotations
    for variant in VARIANTS:
        assert f"| {variant} | 2 |" in result.stdout


def test_ray_matches_serial(directory_run, offline_models, corpus):
    """Two Ray actors on the community-1 fp32 chain: the serial loop's very numbers."""
    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate import Job
    from coreml_diarize.diarization.evaluate_ray import ray_outcomes

    _, out = directory_run
    plan = _plan(offline_models, ("fp32",))
    assert plan.keys["fp32"] == _plan(offline_models).keys["fp32"]  # the variant list is no key
    serial = _records(out, plan.keys["fp32"])
    jobs = [Job(f, ("fp32",)) for f in load_corpus(corpus)]
    outcomes = {o.uri: o for o in ray_outcomes(plan, jobs, workers=2, worker_memory_gb=1.0)}
    assert set(outcomes) == set(serial) == {"meeting0", "meeting1"}
    for uri, outcome in outcomes.items():
        record = outcome.variants["fp32"]
        assert record["status"] == "ok", record
        for field in ("converted_vs_torch", "vs_reference", "packages"):
            assert record[field] == serial[uri][field], (uri, field)
        assert record["converted"]["segments"] == serial[uri]["converted"]["segments"]
        assert outcome.torch["segments"] == _records(out, plan.torch_key)[uri]["segments"]
