"""`publish`: plan, model card, one atomic commit through HfApi, refusals. No network.

The Hub is replaced by recorders patched onto `huggingface_hub.HfApi` itself (the class
production instantiates): each checks that the call fits the real method's signature, records
it, and a fake repo only changes when a commit succeeds.
"""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.utils import hf_raise_for_status

from coreml_diarize.app.bundle import make_bundle, save_report
from coreml_diarize.app.cli import main
from coreml_diarize.app.publish import PublishError, model_card, plan_publish, publish
from coreml_diarize.mlpackage import file_sha256

try:  # the HTTP client huggingface_hub 2.x raises with (1.x: httpx)
    import httpx2
except ImportError:  # pragma: no cover
    import httpx as httpx2

TOKEN = "hf_secretTOKEN0123456789"
REPO = "someone/coreml-diarize-test"
SEG = "pyannote_segmentation.mlpackage"
VARIANT = "pyannote_segmentation_palettize8.mlpackage"


# --- bundles ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(seg_package, tmp_path_factory):
    """A real bundle (dir + zip) of the session's segmentation package; the validation report is
    written directly (running validation is not what is under test here)."""
    root = tmp_path_factory.mktemp("publish")
    package = root / "pkgs" / seg_package.name
    shutil.copytree(seg_package, package)
    save_report(
        package,
        {
            "passed": True,
            "backend": "mil",
            "recipe": "fp32",
            "cases": [{"input": "silence"}, {"input": "speech"}],
            "summary": {"segments": {"max_abs": 2.5e-05, "psnr_min": 91.2, "argmax_agreement": 1}},
        },
    )
    return make_bundle([package], root / "dist", allow_untrained=True)


def _rewrite(directory: Path, change) -> dict:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@pytest.fixture(scope="module")
def rich_bundle(bundle, tmp_path_factory):
    """The bundle plus what later releases may carry: an fp16 palettized variant, a compiled
    model, golden files, and a stray file that is not published."""
    directory = tmp_path_factory.mktemp("rich") / "coreml-diarize-bundle"
    shutil.copytree(bundle.directory, directory)
    shutil.copytree(directory / SEG, directory / VARIANT)  # same bytes, so same hashes

    def add_variant(manifest):
        entry = dict(manifest["artifacts"][0], name=VARIANT)
        entry.update(precision="fp16", compression="palettize8")
        entry.pop("compute_units", None)  # as in bundles from before that field
        manifest["artifacts"].append(entry)

    _rewrite(directory, add_variant)
    compiled = directory / "pyannote_segmentation.mlmodelc"
    (compiled / "weights").mkdir(parents=True)
    (compiled / "model.mil").write_text("program(1.0)\n")
    (compiled / "weights" / "weight.bin").write_bytes(b"\0" * 64)
    (compiled / ".DS_Store").write_bytes(b"x")
    (directory / "golden").mkdir()
    (directory / "golden" / "segments.json").write_text('{"frames": 589}\n')
    (directory / "notes.txt").write_text("not part of a bundle\n")
    return directory


@pytest.fixture(scope="module")
def trained_bundle(bundle, tmp_path_factory):
    """The bundle's manifest rewritten as if built from the Hub's real checkpoint."""
    directory = tmp_path_factory.mktemp("trained") / "coreml-diarize-bundle"
    shutil.copytree(bundle.directory, directory)

    def hub_source(manifest):
        manifest["trained"] = True
        manifest["artifacts"][0]["source"] = {
            "kind": "hf",
            "location": "pyannote/segmentation-3.0",
            "revision": "e66f3d3b9eb0873085418a7b813d3b369bf160bb",
            "sha256": "da85c29829d4002daedd676e012936488234d9255e65e86dfab9bec6b1729298",
            "trained": "true",
        }

    _rewrite(directory, hub_source)
    return directory


# --- the recording stand-in for the Hub ------------------------------------------------------


def _http_error(status: int, url: str, message: str):
    response = httpx2.Response(status, request=httpx2.Request("POST", url), json={"error": message})
    try:
        hf_raise_for_status(response)
    except huggingface_hub.errors.HfHubHTTPError as exc:
        return exc
    raise AssertionError("no error raised")


class FakeHub:
    """Patched onto HfApi: records calls (checked against the real signatures); `files` is what
    the repo shows, and only a successful commit changes it."""

    def __init__(self, monkeypatch, *, existing=(), fail=None):
        self.calls: list[tuple[str, dict]] = []
        self.files: dict[str, bytes] = {p: b"old" for p in existing}
        self.storage: list[str] = []  # pre-uploaded blobs (invisible until a commit)
        self.fail = fail or {}
        for name in ("create_repo", "create_branch", "list_repo_files", "create_commit"):
            real = getattr(huggingface_hub.HfApi, name)
            monkeypatch.setattr(huggingface_hub.HfApi, name, self._recorder(name, real))

    def _recorder(self, name, real):
        hub = self

        def method(api_self, *args, **kwargs):
            bound = inspect.signature(real).bind(api_self, *args, **kwargs)  # fits the real API
            arguments = dict(bound.arguments)
            arguments.pop("self")
            hub.calls.append((name, arguments))
            return getattr(hub, f"_{name}")(arguments)

        return method

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def call(self, name: str) -> dict:
        return next(args for n, args in self.calls if n == name)

    def _create_repo(self, args):
        if "create_repo" in self.fail:
            raise self.fail["create_repo"]
        return f"https://huggingface.co/{args['repo_id']}"

    def _create_branch(self, args):
        return None

    def _list_repo_files(self, args):
        return sorted(self.files)

    def _create_commit(self, args):
        operations = list(args["operations"])
        args["operations"] = operations
        for i, op in enumerate(operations):
            if "create_commit" in self.fail and i == len(operations) // 2:
                raise self.fail["create_commit"]  # partway through the upload
            if isinstance(op, CommitOperationAdd):
                self.storage.append(op.path_in_repo)
        for op in operations:  # the commit itself: all at once
            if isinstance(op, CommitOperationAdd):
                self.files[op.path_in_repo] = _content(op)
            else:
                self.files.pop(op.path_in_repo)
        return huggingface_hub.CommitInfo(
            commit_url=f"https://huggingface.co/{args['repo_id']}/commit/abc123",
            commit_message=args["commit_message"],
            commit_description=args.get("commit_description") or "",
            oid="abc123",
            pr_url=None,
        )


def _content(op: CommitOperationAdd) -> bytes:
    source = op.path_or_fileobj
    return source if isinstance(source, bytes) else Path(source).read_bytes()


def _front_matter(card: str) -> tuple[dict, str]:
    assert card.startswith("---\n")
    head, body = card[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _cli(args, **kw):
    return CliRunner().invoke(main, args, **kw)


# --- plan and card -------------------------------------------------------------------------------


def test_plan_lays_out_the_repo_for_the_swift_sdk(rich_bundle):
    with plan_publish(rich_bundle, allow_untrained=True) as plan:
        paths = plan.paths
        manifest = plan.manifest
        by_path = {f.path_in_repo: f for f in plan.files}
    tops = {p.split("/")[0] for p in paths}
    assert tops == {
        SEG,
        VARIANT,
        "pyannote_segmentation.mlmodelc",
        "golden",
        "manifest.json",
        "README.md",
    }
    assert "pyannote_segmentation.mlmodelc/model.mil" in paths
    assert "pyannote_segmentation.mlmodelc/.DS_Store" not in paths
    assert "golden/segments.json" in paths
    assert "LICENSE.md" not in paths  # one licence for everything
    assert plan.skipped == ["notes.txt"]
    entry = manifest["artifacts"][0]
    for rel, sha in entry["files"].items():  # the package files carry the verified hashes
        f = by_path[f"{SEG}/{rel}"]
        assert f.sha256 == sha == file_sha256(rich_bundle / SEG / rel)
    assert by_path["manifest.json"].sha256 == file_sha256(rich_bundle / "manifest.json")


def test_card_for_untrained_bundle(rich_bundle):
    with plan_publish(rich_bundle, repo_id=REPO, allow_untrained=True) as plan:
        card = plan.card
    meta, body = _front_matter(card)
    assert meta["license"] == "mit"
    assert "base_model" not in meta  # random weights: there is none, and the body says so
    assert "No base model" in body and "seeded random" in body
    assert meta["pipeline_tag"] == "voice-activity-detection"
    assert {"coreml", "speaker-diarization", "pyannote", "untrained"} <= set(meta["tags"])
    assert "UNTRAINED WEIGHTS" in body
    files_table = body.split("## Files", 1)[1].split("## Validation", 1)[0]
    rows = {x.split("|")[1].strip(" `"): x for x in files_table.splitlines() if "| `" in x}
    assert "fp32 | none | cpu_only |" in rows[SEG]
    assert "fp16 | palettize8 | cpu_and_ne" in rows[VARIANT]
    assert "compiled `pyannote_segmentation.mlpackage`" in rows["pyannote_segmentation.mlmodelc"]
    assert "`golden/` (1 files" in body
    assert "max abs 2.5e-05" in body and "PSNR ≥ 91.2 dB" in body and "| passed |" in body
    assert "random-init:0" in body
    assert f"hf download {REPO} --local-dir" in body and "coreml-diarize verify" in body
    assert "MIT (pyannote/segmentation-3.0)" in body


def test_card_for_trained_bundle_with_mixed_licences(trained_bundle):
    with plan_publish(trained_bundle, repo_id=REPO) as plan:
        manifest = plan.manifest
        files = plan.files
        meta, body = _front_matter(plan.card)
    assert meta["base_model"] == "pyannote/segmentation-3.0"
    assert "untrained" not in meta["tags"] and "UNTRAINED" not in body
    assert "e66f3d3b9eb0873085418a7b813d3b369bf160bb" in body  # the upstream revision
    # a second model under another licence: `other` + a name + a LICENSE.md in the repo
    embedding = dict(manifest["artifacts"][0], name="wespeaker_v2.mlpackage", model="embedding")
    embedding["source"] = dict(
        embedding["source"], location="pyannote/wespeaker-voxceleb-resnet34-LM"
    )
    manifest = dict(manifest, artifacts=[*manifest["artifacts"], embedding])
    licenses = {
        SEG: "MIT (pyannote/segmentation-3.0)",
        "wespeaker_v2.mlpackage": "CC-BY-4.0 (pyannote/wespeaker-voxceleb-resnet34-LM)",
    }
    meta, body = _front_matter(model_card(manifest, files=files, licenses=licenses))
    assert meta["license"] == "other"
    assert meta["license_name"] == "cc-by-4.0-and-mit"
    assert meta["license_link"] == "LICENSE.md"
    assert meta["base_model"] == [
        "pyannote/segmentation-3.0",
        "pyannote/wespeaker-voxceleb-resnet34-LM",
    ]
    assert "CC-BY-4.0 (pyannote/wespeaker-voxceleb-resnet34-LM)" in body


# --- publishing -------------------------------------------------------------------------------


def test_publish_zip_is_one_commit_with_the_planned_files(bundle, monkeypatch):
    hub = FakeHub(monkeypatch, existing=[".gitattributes"])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(
        [
            "publish",
            str(bundle.zip_path),
            "--repo",
            REPO,
            "--revision",
            "v0.1",
            "--allow-untrained",
        ]
    )
    assert result.exit_code == 0, result.output
    assert hub.names() == ["create_repo", "create_branch", "list_repo_files", "create_commit"]
    assert hub.call("create_repo") == {
        "repo_id": REPO,
        "repo_type": "model",
        "private": None,  # not False: an organisation's private default is kept
        "exist_ok": True,
        "token": TOKEN,
    }
    assert hub.call("create_branch")["branch"] == "v0.1"
    commit = hub.call("create_commit")
    assert commit["revision"] == "v0.1" and commit["create_pr"] is False
    version = bundle.manifest["toolkit"]["version"]
    revision = bundle.manifest["toolkit"]["git_revision"]
    assert f"coreml-diarize {version}" in commit["commit_message"]
    assert revision in commit["commit_message"] and "UNTRAINED" in commit["commit_message"]
    ops = commit["operations"]
    assert all(isinstance(op, CommitOperationAdd) for op in ops)
    entry = bundle.manifest["artifacts"][0]
    expected = {f"{SEG}/{rel}" for rel in entry["files"]} | {"manifest.json", "README.md"}
    assert {op.path_in_repo for op in ops} == expected
    for rel, sha in entry["files"].items():  # what the repo now holds is the bundle's bytes
        assert file_sha256_bytes(hub.files[f"{SEG}/{rel}"]) == sha
    assert hub.files["README.md"].decode().startswith("---\nlicense: mit\n")
    assert ".gitattributes" in hub.files  # not ours: left alone
    assert f"published {len(expected)} files" in result.output
    assert "https://huggingface.co/someone/coreml-diarize-test/commit/abc123" in result.output
    assert TOKEN not in result.output


def file_sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def test_publish_removes_stale_models_in_the_same_commit(bundle, monkeypatch):
    old = ["wespeaker_v2_palettize4.mlpackage/Manifest.json", "golden/old.json", "notes.md"]
    hub = FakeHub(monkeypatch, existing=[".gitattributes", *old])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with plan_publish(bundle.directory, allow_untrained=True) as plan:
        result = publish(plan, REPO, private=True, create_pr=True)
    assert hub.call("create_repo")["private"] is True
    assert "create_branch" not in hub.names()
    commit = hub.call("create_commit")
    assert commit["create_pr"] is True
    deletes = [
        op.path_in_repo for op in commit["operations"] if isinstance(op, CommitOperationDelete)
    ]
    assert deletes == ["golden/old.json", "wespeaker_v2_palettize4.mlpackage/Manifest.json"]
    assert result.deleted == deletes
    assert "notes.md" in hub.files and "golden/old.json" not in hub.files


def test_dry_run_needs_no_token_and_no_network(bundle, monkeypatch):
    hub = FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = _cli(
        ["publish", str(bundle.directory), "--repo", REPO, "--dry-run", "--allow-untrained"]
    )
    assert result.exit_code == 0, result.output
    assert hub.calls == []
    entry = bundle.manifest["artifacts"][0]
    rel, sha = sorted(entry["files"].items())[-1]
    size = (bundle.directory / SEG / rel).stat().st_size
    line = next(x for x in result.output.splitlines() if f"{SEG}/{rel}" in x)
    assert f"{size:,}" in line and sha[:12] in line
    card = result.output.split("--- README.md (model card) ---\n", 1)[1]
    meta, _ = _front_matter(card)
    assert meta["license"] == "mit" and "coreml" in meta["tags"]


def _one_error_line(result) -> str:
    lines = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(lines) == 1, result.output
    assert TOKEN not in result.output
    return lines[0]


def test_no_token_refused_before_any_call(bundle, monkeypatch):
    hub = FakeHub(monkeypatch)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    result = _cli(["publish", str(bundle.zip_path), "--repo", REPO, "--allow-untrained"])
    assert result.exit_code == PublishError.exit_code
    assert "HF_TOKEN" in _one_error_line(result)
    assert hub.calls == []


def test_repo_creation_refused(bundle, monkeypatch):
    refused = _http_error(
        403,
        "https://huggingface.co/api/repos/create",
        f"You don't have the rights to create a model under 'someone' (token {TOKEN})",
    )
    hub = FakeHub(monkeypatch, fail={"create_repo": refused})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(["publish", str(bundle.directory), "--repo", REPO, "--allow-untrained"])
    assert result.exit_code == PublishError.exit_code
    line = _one_error_line(result)
    assert "403" in line and "nothing was published" in line and "***" in line
    assert hub.names() == ["create_repo"] and hub.files == {}


@pytest.mark.parametrize(
    "failure",
    [
        _http_error(500, "https://huggingface.co/api/models/x/commit/main", "internal error"),
        httpx2.ReadTimeout("timed out"),
    ],
    ids=["hub-error", "connection-lost"],
)
def test_upload_failing_partway_publishes_nothing(bundle, monkeypatch, failure):
    hub = FakeHub(monkeypatch, existing=[".gitattributes"], fail={"create_commit": failure})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(["publish", str(bundle.zip_path), "--repo", REPO, "--allow-untrained"])
    assert result.exit_code == PublishError.exit_code
    line = _one_error_line(result)
    assert "upload to" in line and "nothing was published" in line
    assert "published " not in result.output.replace("nothing was published", "")
    assert hub.storage  # some files had gone to storage...
    assert list(hub.files) == [".gitattributes"]  # ...but the repo shows none of them


def test_untrained_refused_without_flag(bundle, monkeypatch):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(["publish", str(bundle.zip_path), "--repo", REPO])
    assert result.exit_code == 2
    assert "--allow-untrained" in _one_error_line(result)
    assert hub.calls == []


def test_bundle_failing_verify_refused(bundle, tmp_path, monkeypatch):
    directory = tmp_path / "coreml-diarize-bundle"
    shutil.copytree(bundle.directory, directory)
    blob = next((directory / SEG).rglob("weight.bin"))
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(["publish", str(directory), "--repo", REPO, "--allow-untrained"])
    assert result.exit_code == 5
    assert "fails verify" in _one_error_line(result) and "SHA-256 mismatch" in result.output
    assert hub.calls == []


def test_missing_bundle_and_bad_repo(tmp_path, monkeypatch):
    hub = FakeHub(monkeypatch)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    result = _cli(["publish", str(tmp_path / "nope.zip"), "--repo", REPO, "--dry-run"])
    assert result.exit_code == 5 and "bundle not found" in _one_error_line(result)
    result = _cli(["publish", str(tmp_path), "--repo", "not-a-repo-id", "--dry-run"])
    assert result.exit_code == 2 and "OWNER/NAME" in _one_error_line(result)
    assert hub.calls == []


def test_model_card_names_the_files_of_a_pipeline_source():
    """A community-1 directory is one source for several families: the card names the file
    each package came from, not a "checkpoint"."""
    from coreml_diarize.app.publish import _source_row

    files = {"plda/plda.npz": "a" * 64, "plda/xvec_transform.npz": "b" * 64}
    source = {"kind": "local", "location": "/m/community-1", "files": files, "trained": "true"}
    kind, where, _, _, trained = _source_row(source)
    assert kind == "local" and trained == "true"
    assert where == (
        "local pipeline directory `/m/community-1`: `plda/plda.npz`, `plda/xvec_transform.npz`"
    )
    plain = {"kind": "local", "location": "/m/seg.bin", "files": {"seg.bin": "c" * 64}}
    assert _source_row(plain)[1] == "local checkpoint `/m/seg.bin`"
