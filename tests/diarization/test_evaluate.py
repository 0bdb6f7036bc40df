"""`evaluate` over a tiny synthetic corpus: serial and Ray give the same numbers, results
survive (resume, --force), a bad file or a killed worker is recorded while the rest finish,
and a pyannote.database protocol names the same corpus.

Kept small (the MIL executor is slow, the machine has 2 cores): two 10 s two-speaker meetings
(training/meetings.py), a 5 s step (2 windows per file), the fp32 online packages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from coreml_diarize.app.cli import main

STEP = ["--step", "5", "--backend", "mil", "--quiet"]


@pytest.fixture(scope="module")
def models(seg_package, emb_package, tmp_path_factory) -> Path:
    """The online fp32 set from random:0: the session's segmentation and embedding packages
    (the slow conversions, shared with the rest of the suite) and the three small ones."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import registry

    out = tmp_path_factory.mktemp("evaluate_models")
    for package in (seg_package, emb_package):
        (out / package.name).symlink_to(package, target_is_directory=True)
    for spec in registry().values():
        if "online" in spec.chains and not (out / f"{spec.filename}.mlpackage").exists():
            convert_model(spec, make_context(spec, source="random:0"), out)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from training.meetings import write_meetings

    folder = tmp_path_factory.mktemp("evaluate_corpus")
    write_meetings(folder, count=2, seconds=10.0, speakers=2)
    return folder


SHORT_S = 0.3  # shorter than one 10 s segmentation window


@pytest.fixture(scope="module")
def serial_run(models, corpus, tmp_path_factory):
    """One serial CLI run on the corpus plus three odd files: unreadable, empty (0 samples,
    shorter than anything pyannote accepts) and 0.3 s (shorter than one window, which pyannote
    pads and scores): (result, out dir, corpus dir)."""
    import soundfile as sf

    with_bad = tmp_path_factory.mktemp("evaluate_with_bad")
    for path in corpus.iterdir():
        shutil.copy(path, with_bad / path.name)
    (with_bad / "broken.wav").write_text("not audio")
    audio, rate = sf.read(corpus / "meeting0.wav", dtype="float32")
    sf.write(with_bad / "short.wav", audio[: int(SHORT_S * rate)], rate, subtype="FLOAT")
    sf.write(with_bad / "empty.wav", audio[:0], rate, subtype="FLOAT")
    out = tmp_path_factory.mktemp("evaluate_out")
    args = ["evaluate", str(with_bad), "--models", str(models), "--out", str(out), *STEP]
    return CliRunner().invoke(main, args), out, with_bad


def _plan(models: Path):
    from coreml_diarize.diarization.evaluate import EvaluationOptions, EvaluationPlan

    return EvaluationPlan.make(models, EvaluationOptions(step_s=5.0, backend="mil"))


def _records(out: Path, key: str) -> dict[str, dict]:
    folder = out / "results" / key
    return {
        p.stem: json.loads(p.read_text())
        for p in folder.glob("*.json")
        if not p.name.startswith(".")
    }


def test_bad_files_recorded_others_scored(serial_run, models):
    result, out, _ = serial_run
    assert result.exit_code != 0, result.output
    assert "failed: broken (fp32)" in result.stderr
    assert "failed: empty (fp32): AudioError: audio file is empty" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: 2 of 5 results failed"
    records = _records(out, _plan(models).keys["fp32"])
    assert records["broken"]["status"] == "failed" and "audio" in records["broken"]["error"]
    assert records["empty"]["status"] == "failed"
    assert {records[u]["status"] for u in ("meeting0", "meeting1", "short")} == {"ok"}
    # the short file: one padded window, scored over its own 0.3 s
    assert records["short"]["converted"]["windows"] == 1
    assert records["short"]["duration_s"] == pytest.approx(SHORT_S)
    report = json.loads((out / "report.json").read_text())
    assert sorted(f["uri"] for f in report["failures"]) == ["broken", "empty"]
    for name in ("report.md", "per_file.csv", "aggregate.csv", "der_per_file.png", "rtf.png"):
        assert (out / name).stat().st_size > 0, name


def test_aggregate_is_accumulated_der(serial_run, models):
    """Against pyannote.metrics fed independently: the RTTMs on disk, the stored segments."""
    from pyannote.core import Annotation, Segment, Timeline
    from pyannote.database.util import load_rttm
    from pyannote.metrics.diarization import DiarizationErrorRate

    _, out, corpus = serial_run
    records = _records(out, _plan(models).keys["fp32"])
    metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)  # pyannote's "full" DER
    per_file = []
    for uri in ("meeting0", "meeting1"):
        reference = load_rttm(str(corpus / f"{uri}.rttm"))[uri]
        hypothesis = Annotation(uri=uri)
        for i, (start, end, label) in enumerate(records[uri]["converted"]["segments"]):
            hypothesis[Segment(start, end), i] = label
        uem = Timeline([Segment(0.0, records[uri]["duration_s"])])
        per_file.append(metric(reference, hypothesis, uem=uem))
        assert records[uri]["vs_reference"]["converted"]["der"] == pytest.approx(per_file[-1])
    report = json.loads((out / "report.json").read_text())
    (aggregate,) = report["aggregate"]
    assert aggregate["files"] == 3  # meeting0, meeting1 and short (no reference: vs PyTorch)
    assert aggregate["converted_vs_reference.der"] == pytest.approx(abs(metric))
    assert aggregate["der_delta_vs_fp32"] == 0.0
    assert aggregate["der_delta_vs_torch"] == pytest.approx(
        aggregate["converted_vs_reference.der"] - aggregate["torch_vs_reference.der"]
    )


def test_rerun_skips_done_and_force_recomputes(serial_run, models, corpus):
    """A list file naming the two good files: both done, nothing runs (no worker is loaded)."""
    _, out, _ = serial_run
    key = _plan(models).keys["fp32"]
    before = {p.name: p.stat().st_mtime_ns for p in (out / "results" / key).glob("meeting*")}
    listing = corpus / "files.lst"
    listing.write_text("meeting0.wav\nmeeting1.wav meeting1.rttm\n")
    args = ["evaluate", str(listing), "--models", str(models), "--out", str(out), "--step", "5"]
    result = CliRunner().invoke(main, [*args, "--backend", "mil"])
    assert result.exit_code == 0, result.output
    assert "2 of 2 files already done" in result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (out / "results" / key).glob("meeting*")}
    assert after == before
    # --force plans every file again, the stored PyTorch side included
    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate import ResultStore, plan_jobs

    files = load_corpus(listing)
    store = ResultStore(out, _plan(models))
    assert plan_jobs(files, store, force=False) == []
    forced = plan_jobs(files, store, force=True)
    assert [j.file.uri for j in forced] == ["meeting0", "meeting1"]
    assert all(j.torch is None and j.variants == ("fp32",) for j in forced)


def test_options_key_results_apart(models):
    from dataclasses import replace

    from coreml_diarize.diarization.evaluate import EvaluationPlan

    plan = _plan(models)
    collar = EvaluationPlan.make(models, replace(plan.options, collar=0.25))
    overlap = EvaluationPlan.make(models, replace(plan.options, skip_overlap=True))
    keys = {plan.keys["fp32"], collar.keys["fp32"], overlap.keys["fp32"]}
    assert len(keys) == 3
    # the PyTorch annotation does not depend on the scoring options: shared
    assert plan.torch_key == collar.torch_key == overlap.torch_key


def test_protocol_corpus_matches_directory(corpus, serial_run, models, tmp_path):
    from coreml_diarize.diarization.corpus import load_corpus

    uris = ["meeting0", "meeting1"]
    (tmp_path / "test.lst").write_text("\n".join(uris) + "\n")
    rttm = "".join((corpus / f"{u}.rttm").read_text() for u in uris)
    (tmp_path / "test.rttm").write_text(rttm)
    yml = tmp_path / "database.yml"
    yml.write_text(
        f"Databases:\n  Synth: {corpus}/{{uri}}.wav\n"
        "Protocols:\n  Synth:\n    SpeakerDiarization:\n      Tiny:\n        test:\n"
        "          uri: test.lst\n          annotation: test.rttm\n"
    )
    from_protocol = load_corpus("Synth.SpeakerDiarization.Tiny", database_yml=yml)
    from_dir = [f for f in load_corpus(corpus) if f.uri in uris]
    assert [f.uri for f in from_protocol] == uris
    for a, b in zip(from_protocol, from_dir, strict=True):
        assert a.audio.resolve() == b.audio.resolve()
        assert a.duration_s == b.duration_s == pytest.approx(10.0)
        turns = [
            sorted((s, k) for s, _, k in f.reference.itertracks(yield_label=True)) for f in (a, b)
        ]
        assert turns[0] == turns[1] and len(turns[0]) >= 2
    _, out, _ = serial_run
    args = ["evaluate", "Synth.SpeakerDiarization.Tiny", "--database-yml", str(yml)]
    result = CliRunner().invoke(main, [*args, "--models", str(models), "--out", str(out), *STEP])
    assert result.exit_code == 0, result.output
    assert "| fp32 | 2 |" in result.stdout


def test_mixed_variant_runs_what_build_recipe_adds(models, tmp_path):
    """`--variants fp32,mixed`: the mixed variant runs `<stem>_mixed` where a model has one
    (what `build --recipe` adds) and the plain package elsewhere; a folder without any mixed
    package is one line."""
    from coreml_diarize.diarization.evaluate import (
        EvaluationOptions,
        EvaluationPlan,
        parse_variants,
    )
    from coreml_diarize.errors import ArtifactError

    options = EvaluationOptions(variants=parse_variants("fp32,mixed"), step_s=5.0, backend="mil")
    with pytest.raises(ArtifactError, match="has no mixed packages"):
        EvaluationPlan.make(models, options)
    folder = tmp_path / "models"
    folder.mkdir()
    for package in models.iterdir():
        (folder / package.name).symlink_to(package.resolve(), target_is_directory=package.is_dir())
    segmentation = folder / "pyannote_segmentation.mlpackage"
    (folder / "pyannote_segmentation_mixed.mlpackage").symlink_to(
        segmentation.resolve(), target_is_directory=True
    )
    plan = EvaluationPlan.make(folder, options)
    mixed, plain = set(plan.packages["mixed"]), set(plan.packages["fp32"])
    assert mixed == plain - {"pyannote_segmentation.mlpackage"} | {
        "pyannote_segmentation_mixed.mlpackage"
    }
    assert plan.keys["mixed"] != plan.keys["fp32"]


def test_unknown_protocol_is_one_line(models, tmp_path):
    yml = tmp_path / "database.yml"
    yml.write_text("Databases:\n  Synth: /nowhere/{uri}.wav\n")
    args = ["evaluate", "Synth.SpeakerDiarization.Nope", "--database-yml", str(yml)]
    result = CliRunner().invoke(main, [*args, "--models", str(models)])
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "error: pyannote.database protocol Synth.SpeakerDiarization.Nope"
    )


class ExitWhenUnpickled:
    """Stands for a file's audio path; unpickled, it ends the process at once: the Ray actor
    that receives the job writes its process id to `pid_file` and dies by `os._exit` (no
    exception, no cleanup: what the OOM killer or a segfault leaves behind)."""

    def __init__(self, pid_file: Path) -> None:
        self.pid_file = pid_file

    def __reduce__(self):
        code = f"import os; open({str(self.pid_file)!r}, 'w').write(str(os.getpid())); os._exit(1)"
        return (exec, (code,))


def _process_gone(pid: int, wait_s: float = 30.0) -> bool:
    import os
    import time

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").is_file() and ") Z" in Path(f"/proc/{pid}/stat").read_text():
            return True  # exited, not yet reaped by the raylet
        time.sleep(0.2)
    return False


def test_ray_matches_serial_and_records_a_killed_worker(serial_run, models, corpus, tmp_path):
    """Two local Ray actors score the corpus: the very numbers of the serial loop. The first
    job kills the actor process that takes it (os._exit): that file alone is recorded failed,
    a fresh actor takes the dead one's place and the other files finish."""
    import os

    import ray

    from coreml_diarize.diarization.corpus import CorpusFile, load_corpus
    from coreml_diarize.diarization.evaluate import Job
    from coreml_diarize.diarization.evaluate_ray import ray_outcomes

    _, out, _ = serial_run
    plan = _plan(models)
    serial = _records(out, plan.keys["fp32"])
    files = [f for f in load_corpus(corpus) if f.uri.startswith("meeting")]
    pid_file = tmp_path / "victim.pid"
    victim = CorpusFile("zz_victim", ExitWhenUnpickled(pid_file), None, None, 10.0)
    jobs = [Job(victim, ("fp32",)), *(Job(f, ("fp32",)) for f in files)]

    stats: dict = {}
    outcomes = {
        o.uri: o for o in ray_outcomes(plan, jobs, workers=2, worker_memory_gb=1.0, stats=stats)
    }
    assert not ray.is_initialized(), "the local Ray instance this call started is shut down"
    assert set(outcomes) == {"meeting0", "meeting1", "zz_victim"}
    # the live actors (the survivor and the replacement) compute as the serial loop does: one
    # thread in every pool, at this process's priority (Ray's default would be nice 15)
    assert len(stats["worker_cpu_settings"]) == 2
    for settings in stats["worker_cpu_settings"]:
        assert settings["nice"] == os.nice(0)
        assert settings["threads"]["torch"] == 1 and settings["threads"]["openblas"] == 1
    victim_record = outcomes["zz_victim"].variants["fp32"]
    assert victim_record["status"] == "failed" and "worker died" in victim_record["error"]
    pid = int(pid_file.read_text())
    assert pid != os.getpid() and _process_gone(pid), "an actor process really died"
    for uri in ("meeting0", "meeting1"):
        ray_record = outcomes[uri].variants["fp32"]
        assert ray_record["status"] == "ok"
        for field in ("converted_vs_torch", "vs_reference"):
            assert ray_record[field] == serial[uri][field], (uri, field)
        assert ray_record["converted"]["segments"] == serial[uri]["converted"]["segments"]
        assert outcomes[uri].torch["segments"] == _records(out, plan.torch_key)[uri]["segments"]


def test_interrupt_keeps_finished_results(models, corpus, tmp_path):
    """Ctrl-C after the first file: its result is on disk, the next run plans only the rest."""
    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate import ResultStore, plan_jobs
    from coreml_diarize.diarization.evaluate_run import evaluate_corpus

    plan = _plan(models)
    files = [f for f in load_corpus(corpus) if f.uri.startswith("meeting")]

    def interrupt(line: str) -> None:
        if line.startswith("[1/2]"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        evaluate_corpus(files, plan, tmp_path, progress=interrupt)
    stored = _records(tmp_path, plan.keys["fp32"])
    assert len(stored) == 1 and next(iter(stored.values()))["status"] == "ok"
    (done,) = stored
    left = plan_jobs(files, ResultStore(tmp_path, plan), force=False)
    assert [j.file.uri for j in left] == [f.uri for f in files if f.uri != done]


def test_ctrl_c_stops_a_ray_run_at_once(models, corpus, tmp_path):
    """SIGINT while two actors work on their files: KeyboardInterrupt reaches the driver within
    a second or two, not when a file finishes, and the local Ray instance is shut down."""
    import os
    import signal
    import threading
    import time

    import ray

    from coreml_diarize.diarization.corpus import load_corpus
    from coreml_diarize.diarization.evaluate_run import evaluate_corpus

    plan = _plan(models)
    # four copies of each meeting (8 files, 4 rounds on 2 actors): on a quiet machine the two
    # meetings alone can finish within the 3 s below, and then no signal lands during the run
    many = tmp_path / "corpus"
    many.mkdir()
    for path in corpus.glob("meeting*.wav"):
        rttm = path.with_suffix(".rttm").read_text()
        for copy in range(4):
            uri = f"{path.stem}_{copy}"
            shutil.copy(path, many / f"{uri}.wav")
            (many / f"{uri}.rttm").write_text(rttm.replace(f" {path.stem} ", f" {uri} "))
    files = [f for f in load_corpus(many) if f.uri.startswith("meeting")]
    out = tmp_path / "out"
    sent: dict[str, float] = {}

    def interrupt_once_running() -> None:
        deadline = time.monotonic() + 300
        while not ray.is_initialized() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3.0)  # the actors are loading their chains or scoring: minutes of work left
        sent["at"] = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)

    # a terminal's Ctrl-C: Python's own handler (pytest-xdist workers may run with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=interrupt_once_running, daemon=True).start()
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate_corpus(files, plan, out, workers=2, worker_memory_gb=1.0)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert time.monotonic() - sent["at"] < 5.0
    assert not ray.is_initialized()
    assert all(r["status"] == "ok" for r in _records(out, plan.keys["fp32"]).values())
