"""What runs where, and what one job hands the next, checked without GitHub.

- every literal `runs-on` label is a GitHub-hosted label that exists today
  (.github/runner-labels.json: date and sources inside; `macos-14` was retired on 2026-11-02,
  actions/runner-images#13518, and left the macOS job without a runner: issue #21 item 3);
  the one expression label is the ANE job's repository variable, and that job runs only when
  the variable is set;
- the hub-weights half runs only with HF_TOKEN and is skipped with a notice without it
  (item 10), the step's own script run here under bash as the runner runs it;
- the release job attaches files that exist after download: upload-artifact's path rule is
  replayed here from its source (item 4: several paths are rooted at their least common
  ancestor, so `dist/compare/cmp_fp32.json` never existed).
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import subprocess
from pathlib import Path

import pytest
from test_workflow import ROOT, WORKFLOW, _runs, _steps

LABELS = json.loads((ROOT / ".github" / "runner-labels.json").read_text())
HUB_AVAILABLE = "needs.hub-token.outputs.available == 'true'"
EXPRESSION_LABEL = re.compile(r"\$\{\{ vars\.(\w+) \}\}")
WORKSPACE = "/home/runner/work/repo/repo"  # any absolute directory: paths are made absolute
GLOB_CHARS = re.compile(r"[*?\[]")


# --- runner labels ------------------------------------------------------------------------


def test_runner_label_list_is_dated_sourced_and_consistent():
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", LABELS["retrieved"])
    assert any("actions/runner-images" in s for s in LABELS["sources"])
    assert any("docs.github.com" in s for s in LABELS["sources"])
    standard, larger, retired = set(LABELS["standard"]), set(LABELS["larger"]), LABELS["retired"]
    assert not (standard & larger) and not ((standard | larger) & set(retired))
    assert "13518" in retired["macos-14"]


@pytest.mark.parametrize("job_id", sorted(WORKFLOW["jobs"]))
def test_every_runs_on_label_exists(job_id):
    """Standard GitHub-hosted labels only (larger runners cost money and need setup); the one
    exception is a label from a repository variable, on a job that runs only when it is set."""
    job = WORKFLOW["jobs"][job_id]
    label = job["runs-on"]
    assert isinstance(label, str), (job_id, label)
    variable = EXPRESSION_LABEL.fullmatch(label)
    if variable:
        assert " ".join(str(job.get("if", "")).split()).startswith(f"vars.{variable[1]} != ''"), (
            f"{job_id} must run only when vars.{variable[1]} is set"
        )
        return
    assert "${{" not in label, (job_id, label)
    assert label in LABELS["standard"], (
        f"{job_id}: runs-on {label!r} is no current GitHub-hosted label"
        + (f" (retired {LABELS['retired'][label]})" if label in LABELS["retired"] else "")
    )


def test_the_macos_jobs_run_on_apple_silicon_images_with_xcode():
    for job_id in ("macos", "macos-hub"):
        label = WORKFLOW["jobs"][job_id]["runs-on"]
        # macos-15 and newer arm64 images; -intel images are x64
        assert re.fullmatch(r"macos-(1[5-9]|[2-9]\d)", label), (job_id, label)


# --- the hub token and the ANE runner -----------------------------------------------------


def _run_step(job: str, name: str, env: dict[str, str], tmp_path: Path) -> tuple[str, str]:
    """Run one step's script as the runner does (bash --noprofile --norc -eo pipefail), with
    GITHUB_OUTPUT pointing at a file; returns (stdout, the outputs file)."""
    (step,) = [s for s in _steps(job) if s.get("name") == name]
    outputs = tmp_path / "github_output"
    outputs.write_text("")
    script = tmp_path / "step.sh"
    script.write_text(step["run"])
    result = subprocess.run(
        ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"], "GITHUB_OUTPUT": str(outputs), **env},
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, outputs.read_text()


def test_hub_half_runs_with_the_token_and_is_skipped_with_a_notice_without(tmp_path):
    """Issue #21 item 10: a fork's pull request (no secret) gets a notice and a skipped job."""
    job = WORKFLOW["jobs"]["hub-token"]
    assert job["outputs"] == {"available": "${{ steps.check.outputs.available }}"}
    (step,) = [s for s in job["steps"] if s.get("id") == "check"]
    assert step["env"] == {"HF_TOKEN": "${{ secrets.HF_TOKEN }}"}
    stdout, outputs = _run_step("hub-token", step["name"], {"HF_TOKEN": "hf_x"}, tmp_path)
    assert outputs == "available=true\n" and "hf_x" not in stdout
    stdout, outputs = _run_step("hub-token", step["name"], {"HF_TOKEN": ""}, tmp_path)
    assert outputs == "available=false\n"
    assert stdout.startswith("::notice::HF_TOKEN is not set")

    hub = WORKFLOW["jobs"]["macos-hub"]
    assert hub["needs"] == "hub-token" and hub["if"] == HUB_AVAILABLE
    # nothing else depends on the token: the seeded jobs never wait for it
    for job_id in ("linux", "macos", "ane"):
        assert "needs" not in WORKFLOW["jobs"][job_id], job_id


def test_validate_reports_per_compute_unit_are_uploaded():
    """cpu_only reports from the hosted macOS jobs; cpu_only and cpu_and_ne from the ane job,
    which runs on the self-hosted Apple-silicon runner that vars.ANE_RUNNER names, only when it
    is set, and never for a fork's pull request."""
    for job, units in (
        ("macos", ["cpu_only"]),
        ("macos-hub", ["cpu_only"]),
        ("ane", ["cpu_only", "cpu_and_ne"]),
    ):
        script = " ".join(_runs(job).replace("\\\n", " ").split())
        uploads = [
            s["with"]["path"].split()
            for s in _steps(job)
            if "upload-artifact@" in s.get("uses", "")
            and any("/device/" in p for p in s["with"]["path"].split())
        ]
        assert len(uploads) == 1, job
        reports = [p for p in uploads[0] if "/device/" in p]
        expected = [f"artifacts/device/validate_{u}.json" for u in units] + [
            f"artifacts/device/validate_offline_{u}.json" for u in units
        ]
        # the Macs also time both fbank front ends; the ane job validates the mixed-bit set
        extra = {
            "macos": ["artifacts/device/front_end.json"],
            "macos-hub": [],
            "ane": [
                "artifacts/device/front_end.json",
                "artifacts/device/validate_mixed_cpu_and_ne.json",
            ],
        }[job]
        assert sorted(reports) == sorted(expected + extra), job
        for path in extra:  # every extra report is written by a step of the same job
            assert f"--out {path}" in script or f"--json {path}" in script, (job, path)
        for unit in units:
            written = (
                '--compute-units "$units" --json "artifacts/device/validate_${units}.json"'
                if len(units) > 1
                else f"--compute-units {unit} --json artifacts/device/validate_{unit}.json"
            )
            assert written in script, (job, written)
        assert "--backend coreml" in script
    ane = WORKFLOW["jobs"]["ane"]
    assert ane["runs-on"] == "${{ vars.ANE_RUNNER }}"
    condition = " ".join(ane["if"].split())
    assert condition.startswith("vars.ANE_RUNNER != '' && (")
    assert "github.event.pull_request.head.repo.full_name == github.repository" in condition
    assert "for units in cpu_only cpu_and_ne" in _runs("ane")


# --- artifacts: what upload-artifact stores, where download-artifact puts it ---------------


def _search_path(pattern: str) -> str:
    """@actions/glob's Pattern.searchPath: the literal segments before the first one holding a
    glob character, made absolute (actions/toolkit packages/glob/src/internal-pattern.ts)."""
    literal = []
    for segment in posixpath.join(WORKSPACE, pattern).split("/"):
        if GLOB_CHARS.search(segment):
            break
        literal.append(segment)
    return posixpath.normpath("/".join(literal))


def _search_paths(patterns: list[str]) -> list[str]:
    """getSearchPaths (actions/toolkit packages/glob/src/internal-pattern-helper.ts):
    duplicates and paths under another search path are dropped, order kept."""
    candidates = {_search_path(p) for p in patterns}
    result: list[str] = []
    for path in map(_search_path, patterns):
        if path in result:
            continue
        parent, child = posixpath.dirname(path), path
        while parent != child and parent not in candidates:
            parent, child = posixpath.dirname(parent), parent
        if parent == child:  # no ancestor among the search paths
            result.append(path)
    return result


def _least_common_ancestor(paths: list[str]) -> str:
    """getMultiPathLCA (actions/upload-artifact src/shared/search.ts): the leading path
    segments all search paths share."""
    split = [posixpath.normpath(p).split("/") for p in paths]
    common = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common) or "/"


def _artifact_layout(path_input: str) -> dict[str, str]:
    """upload-artifact's findFilesToUpload for literal file paths (src/shared/search.ts):
    {file in the workspace: its path inside the artifact}. Several search paths: the root is
    their least common ancestor; one file named exactly: its parent; else the search path."""
    patterns = [
        line.strip()
        for line in path_input.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert not any(GLOB_CHARS.search(p) for p in patterns), "replay literal paths only"
    files = [posixpath.join(WORKSPACE, p) for p in patterns]
    searched = _search_paths(patterns)
    if len(searched) > 1:
        root = _least_common_ancestor(searched)
    elif len(files) == 1 and searched[0] == files[0]:
        root = posixpath.dirname(files[0])
    else:
        root = searched[0]
    return {f: posixpath.relpath(f, root) for f in files}


def test_the_replayed_rule_matches_upload_artifacts_documented_examples():
    """The examples in getMultiPathLCA's comment, and the layouts its README describes."""
    assert _least_common_ancestor(["/foo/", "/bar/"]) == "/"
    assert _least_common_ancestor(["/r/foo/bar", "/r/foo/voo/two", "/r/foo/mo/"]) == "/r/foo"
    one = _artifact_layout("artifacts/coreml-diarize-bundle.zip")
    assert list(one.values()) == ["coreml-diarize-bundle.zip"]
    two = _artifact_layout("a/b/x.json\na/c/y.json\n")
    assert sorted(two.values()) == ["b/x.json", "c/y.json"]
    same_dir = _artifact_layout("a/b/x.json\na/b/y.json")
    assert sorted(same_dir.values()) == ["x.json", "y.json"]
    nested = _artifact_layout("a/b\na/b/c/y.json")  # a path under another is no search path
    assert _search_paths(["a/b", "a/b/c/y.json"]) == [posixpath.join(WORKSPACE, "a/b")]
    assert nested[posixpath.join(WORKSPACE, "a/b/c/y.json")] == "c/y.json"


def _uploads() -> dict[str, tuple[str, dict[str, str]]]:
    """artifact name -> (job, {workspace file: path in the artifact})."""
    out = {}
    for job_id, job in WORKFLOW["jobs"].items():
        for step in job.get("steps", []):
            if "upload-artifact@" in step.get("uses", ""):
                name = step["with"]["name"]
                assert name not in out, f"two uploads named {name}"
                out[name] = (job_id, _artifact_layout(step["with"]["path"]))
    return out


def _downloaded(job_id: str) -> set[str]:
    """Every file (relative to the workspace) the job's download-artifact steps produce."""
    uploads, files = _uploads(), set()
    needs = WORKFLOW["jobs"][job_id]["needs"]
    for step in _steps(job_id):
        if "download-artifact@" in step.get("uses", ""):
            producer, layout = uploads[step["with"]["name"]]
            assert producer in needs, f"{step['with']['name']} comes from {producer}, not needed"
            files |= {posixpath.join(step["with"]["path"], p) for p in layout.values()}
    return files


def test_every_file_the_release_attaches_exists_after_download():
    (step,) = [s for s in _steps("release") if "gh release upload" in s.get("run", "")]
    command = step["run"][step["run"].index('gh release upload "$TAG"') :]
    attached = re.findall(r"(dist/\S+)", command)
    downloaded = _downloaded("release")
    missing = [f for f in attached if f not in downloaded]
    assert not missing, (
        f"not in the downloaded artifacts: {missing}; there are {sorted(downloaded)}"
    )
    assert "dist/coreml-diarize-bundle.zip" in attached
    assert {f"dist/compare/compare/cmp_{v}.json" for v in ("fp32", "palettize8")} <= set(attached)
    # the path the release used before issue #21 item 4 was never there
    assert "dist/compare/cmp_fp32.json" not in downloaded


def test_compare_artifact_is_rooted_at_artifacts():
    _, layout = _uploads()["coreml-diarize-compare"]
    assert sorted(layout.values()) == sorted(
        p.removeprefix("artifacts/")
        for p in WORKFLOW["jobs"]["macos-hub"]["steps"][
            [s.get("with", {}).get("name") for s in _steps("macos-hub")].index(
                "coreml-diarize-compare"
            )
        ]["with"]["path"].split()
    )
