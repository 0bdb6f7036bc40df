"""`publish`: plan, model card, one atomic commit through HfApi, refusals. No network.

The Hub is replaced by recorders patched onto `huggingface_hub.HfApi` itself (the class
production instantiates): each checks that the call fits the real method's signature, records
it, and a fake repo only changes when a commit succeeds.
"""

from __future__ import annotations

import inspect
import json
import shutil
import types
from pathlib import Path

import huggingface_hub
import pytest
import yaml
from bundle_standins import PALETTIZE8, convert_source, golden_for, profile_packages, stand_in
from click.testing import CliRunner
from huggingface_hub import CommitOperationAdd, CommitOperationDelete
from huggingface_hub.utils import hf_raise_for_status

from coreml_diarize.app.bundle import make_bundle, save_report
from coreml_diarize.app.cli import main
from coreml_diarize.app.publish import plan_publish
from coreml_diarize.app.publish_card import model_card
from coreml_diarize.app.publish_hub import PublishError, publish
from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import file_sha256, tree_hash

try:  # the HTTP client huggingface_hub 2.x raises with (1.x: httpx)
    import httpx2
except ImportError:  # pragma: no cover
    import httpx as httpx2

TOKEN = "hf_secretTOKEN0123456789"
REPO = "someone/coreml-diarize-test"
SEG = "pyannote_segmentation.mlpackage"
ONLINE = {
    SEG,
    "wespeaker_v2.mlpackage",
    "powerset_postprocessor.mlpackage",
    "embedding_preprocessor.mlpackage",
    "unified_post_embedding.mlpackage",
}
VARIANT = "pyannote_segmentation_palettize8.mlpackage"


# --- bundles ------------------------------------------------------------------------------------

REPORT = {
    "passed": True,
    "backend": "mil",
    "recipe": "fp32",
    "cases": [{"input": "silence"}, {"input": "speech"}],
    "summary": {"segments": {"max_abs": 2.5e-05, "psnr_min": 91.2, "argmax_agreement": 1}},
}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return convert_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def bundle(seg_package, source, tmp_path_factory):
    """A real online bundle (dir + zip): the session's segmentation package and stand-ins for
    the other four (tests/bundle_standins.py); the validation report is written directly
    (running validation is not what is under test here)."""
    root = tmp_path_factory.mktemp("publish")
    others = [p for p in profile_packages(source, root / "pkgs", "online", False) if p.name != SEG]
    package = root / "pkgs" / seg_package.name
    shutil.rmtree(package)
    shutil.copytree(seg_package, package)
    save_report(package, REPORT)
    return make_bundle([package, *others], root / "dist", allow_untrained=True)


def _rewrite(directory: Path, change) -> dict:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@pytest.fixture(scope="module")
def rich_bundle(bundle, source, tmp_path_factory):
    """The online set plus what releases carry: an fp16 palettized variant, golden files, a
    compiled model (listed in the manifest as `build` on macOS lists it), Finder litter and a
    stray file that is not published."""
    root = tmp_path_factory.mktemp("rich")
    pkgs = root / "pkgs"
    shutil.copytree(bundle.directory, pkgs, ignore=shutil.ignore_patterns("golden"))
    for package in pkgs.glob("*.mlpackage"):
        save_report(package, REPORT)
    stand_in(source, pkgs / VARIANT, "segmentation", recipe=PALETTIZE8)
    packages = sorted(pkgs.glob("*.mlpackage"))
    for package in packages:
        golden_for(package, root / "golden", 1.0)
    directory = make_bundle(
        packages, root / "dist", allow_untrained=True, golden=root / "golden"
    ).directory
    compiled = directory / "pyannote_segmentation.mlmodelc"
    (compiled / "weights").mkdir(parents=True)
    (compiled / "model.mil").write_text("program(1.0)\n")
    (compiled / "weights" / "weight.bin").write_bytes(b"\0" * 64)
    (compiled / ".DS_Store").write_bytes(b"x")
    tree, files = tree_hash(compiled)

    def add_compiled(manifest):
        entry = next(a for a in manifest["artifacts"] if a["name"] == SEG)
        entry["compiled"] = {"name": compiled.name, "tree_sha256": tree, "files": files}

    _rewrite(directory, add_compiled)
    (directory / "notes.txt").write_text("not part of a bundle\n")
    return directory


@pytest.fixture(scope="module")
def trained_bundle(bundle, tmp_path_factory):
    """The bundle's manifest rewritten as if built from the Hub's real checkpoint."""
    directory = tmp_path_factory.mktemp("trained") / "coreml-diarize-bundle"
    shutil.copytree(bundle.directory, directory)

    def hub_source(manifest):
        manifest["trained"] = True
        for entry in manifest["artifacts"]:
            entry["source"] = {
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
        contents = existing if isinstance(existing, dict) else dict.fromkeys(existing, b"old")
        self.files: dict[str, bytes] = dict(contents)
        self.storage: list[str] = []  # pre-uploaded blobs (invisible until a commit)
        self.fail = fail or {}
        self.commits = 0
        for name in (
            "create_repo",
            "create_branch",
            "repo_info",
            "list_repo_files",
            "hf_hub_download",
            "create_commit",
        ):
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

    def _repo_info(self, args):
        return types.SimpleNamespace(sha=f"sha{self.commits}")

    def _list_repo_files(self, args):
        return sorted(self.files)

    def _hf_hub_download(self, args):
        target = Path(args["local_dir"]) / args["filename"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.files[args["filename"]])
        return str(target)

    def existing(self) -> list[str]:
        return sorted(p for p in self.files if p != ".gitattributes")

    def _create_commit(self, args):
        # the Hub refuses a commit whose parent is not the branch head (hf_api.py, parent_commit)
        assert args.get("parent_commit") == f"sha{self.commits}"
        self.commits += 1
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
        *ONLINE,
        VARIANT,
        "pyannote_segmentation.mlmodelc",
        "golden",
        "manifests",
        "README.md",
    }
    assert "manifests/online.json" in paths
    assert "pyannote_segmentation.mlmodelc/model.mil" in paths
    assert "pyannote_segmentation.mlmodelc/.DS_Store" not in paths
    assert "golden/pyannote_segmentation_palettize8/golden.json" in paths
    assert plan.skipped == ["notes.txt"]
    entry = next(a for a in manifest["artifacts"] if a["name"] == SEG)
    for rel, sha in entry["files"].items():  # the package files carry the verified hashes
        f = by_path[f"{SEG}/{rel}"]
        assert f.sha256 == sha == file_sha256(rich_bundle / SEG / rel)
    assert by_path["manifests/online.json"].sha256 == file_sha256(rich_bundle / "manifest.json")


def test_card_for_untrained_bundle(rich_bundle):
    with plan_publish(rich_bundle, repo_id=REPO, allow_untrained=True) as plan:
        card = plan.card
    meta, body = _front_matter(card)
    assert meta["license"] == "mit"  # the stand-ins carry the postprocessor's licence note
    assert "base_model" not in meta  # random weights: there is none, and the body says so
    assert "No base model" in body and "seeded random" in body
    assert meta["pipeline_tag"] == "voice-activity-detection"
    assert {"coreml", "speaker-diarization", "pyannote", "untrained"} <= set(meta["tags"])
    assert "UNTRAINED WEIGHTS" in body
    files_table = body.split("## Files", 1)[1].split("## Validation", 1)[0]
    rows = {x.split("|")[1].strip(" `"): x for x in files_table.splitlines() if "| `" in x}
    assert "| fp32 (plain name) | fp32 | none | cpu_only |" in rows[SEG]
    assert "| palettize8 | fp16 | palettize8 | cpu_and_ne" in rows[VARIANT]
    assert "| online | `manifests/online.json` | `pyannote_segmentation.mlpackage` | fp32 |" in body
    assert "compiled `pyannote_segmentation.mlpackage`" in rows["pyannote_segmentation.mlmodelc"]
    assert "`golden/` (18 files" in body  # 6 packages x (header, input, output)
    assert "max abs 2.5e-05" in body and "PSNR ≥ 91.2 dB" in body and "| passed |" in body
    assert "random-init:0" in body
    assert f"hf download {REPO} --local-dir" in body and "coreml-diarize verify" in body
    assert "MIT (pyannote/segmentation-3.0)" in body
    # the GPU advice names the fp32 packages, not the fp16/8-bit ones
    gpu = body.split("**On the GPU.**", 1)[1].split("\n", 1)[0]
    assert f"`{SEG}`" in gpu and f"`{VARIANT}`" not in gpu
    assert "allowLowPrecisionAccumulationOnGPU" in gpu


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
    meta, body = _front_matter(model_card({"online": manifest}, files=files, licenses=licenses))
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
    assert hub.names() == [
        "create_repo",
        "create_branch",
        "repo_info",
        "list_repo_files",
        "create_commit",
    ]
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
    entry = next(a for a in bundle.manifest["artifacts"] if a["name"] == SEG)
    expected = {f"{a['name']}/{rel}" for a in bundle.manifest["artifacts"] for rel in a["files"]}
    expected |= {"manifests/online.json", "README.md"}
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


def test_publish_replaces_only_what_the_same_set_published(bundle, monkeypatch):
    earlier = {  # the online set's previous release, as its manifest on the repo lists it
        "profile": "online",
        "artifacts": [
            {
                "name": "wespeaker_v2_palettize4.mlpackage",
                "files": {"Manifest.json": "0" * 64},
                "golden": {"dir": "golden/old", "files": {"golden.json": "1" * 64}},
            }
        ],
    }
    old = {
        "manifests/online.json": json.dumps(earlier).encode(),
        "wespeaker_v2_palettize4.mlpackage/Manifest.json": b"{}",
        "golden/old/golden.json": b"{}",
        "notes.md": b"ours? no",
        "someone_else.mlpackage/Manifest.json": b"{}",  # in no manifest: not ours
    }
    hub = FakeHub(monkeypatch, existing={".gitattributes": b"", **old})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with plan_publish(bundle.directory, allow_untrained=True) as plan:
        result = publish(plan, REPO, private=True, create_pr=True)
    assert hub.call("create_repo")["private"] is True
    assert "create_branch" not in hub.names()
    assert hub.call("hf_hub_download")["filename"] == "manifests/online.json"
    commit = hub.call("create_commit")
    assert commit["create_pr"] is True
    deletes = [
        op.path_in_repo for op in commit["operations"] if isinstance(op, CommitOperationDelete)
    ]
    assert deletes == ["golden/old/golden.json", "wespeaker_v2_palettize4.mlpackage/Manifest.json"]
    assert result.deleted == deletes
    assert "notes.md" in hub.files and "someone_else.mlpackage/Manifest.json" in hub.files


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
    from coreml_diarize.app.publish_card import _source_row

    files = {"plda/plda.npz": "a" * 64, "plda/xvec_transform.npz": "b" * 64}
    source = {"kind": "local", "location": "/m/community-1", "files": files, "trained": "true"}
    kind, where, _, _, trained = _source_row(source)
    assert kind == "local" and trained == "true"
    assert where == (
        "local pipeline directory `/m/community-1`: `plda/plda.npz`, `plda/xvec_transform.npz`"
    )
    plain = {"kind": "local", "location": "/m/seg.bin", "files": {"seg.bin": "c" * 64}}
    assert _source_row(plain)[1] == "local checkpoint `/m/seg.bin`"


# --- both sets in one repo (issue #22 part 1) --------------------------------------------------


@pytest.fixture(scope="module")
def offline_bundle(source, tmp_path_factory):
    """Stand-ins for the offline set (Segmentation, FBank, Embedding, PldaRho, their device
    variants) and PldaRho's plda-parameters.json sidecar."""
    root = tmp_path_factory.mktemp("offline")
    packages = profile_packages(source, root / "pkgs", "offline")
    return make_bundle(packages, root / "dist", name="offline", allow_untrained=True)


def test_dry_run_of_the_offline_bundle_lists_the_plda_parameters(offline_bundle, monkeypatch):
    hub = FakeHub(monkeypatch)
    result = _cli(
        ["publish", str(offline_bundle.zip_path), "--repo", REPO, "--dry-run", "--allow-untrained"]
    )
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.strip().startswith("plda-parameters"))
    sidecar = offline_bundle.directory / "plda-parameters.json"
    assert line.split()[-1] == "sidecar" and file_sha256(sidecar)[:12] in line
    assert "manifests/offline.json" in result.output and hub.calls == []


def test_a_set_lacking_what_fluidaudio_loads_is_refused(offline_bundle, tmp_path):
    directory = tmp_path / "b"
    shutil.copytree(offline_bundle.directory, directory)

    def drop_plda(manifest):
        manifest["artifacts"] = [a for a in manifest["artifacts"] if a["model"] != "plda-rho"]

    _rewrite(directory, drop_plda)
    result = _cli(["publish", str(directory), "--repo", REPO, "--dry-run", "--allow-untrained"])
    line = _one_error_line(result)
    assert result.exit_code == 2
    assert "lacks what the offline set needs" in line
    assert "PldaRho.mlpackage" in line and "plda-parameters.json" in line


def test_online_then_offline_leaves_both_sets_complete(bundle, offline_bundle, monkeypatch):
    hub = FakeHub(monkeypatch, existing=[".gitattributes"])
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    for b in (bundle, offline_bundle):
        with plan_publish(b.zip_path, allow_untrained=True) as plan:
            publish(plan, REPO)
    for b, profile in ((bundle, "online"), (offline_bundle, "offline")):
        assert (
            hub.files[f"manifests/{profile}.json"] == (b.directory / "manifest.json").read_bytes()
        )
        for a in b.manifest["artifacts"]:
            for rel, sha in a["files"].items():
                assert file_sha256_bytes(hub.files[f"{a['name']}/{rel}"]) == sha
    assert (
        hub.files["plda-parameters.json"]
        == (offline_bundle.directory / "plda-parameters.json").read_bytes()
    )
    card = hub.files["README.md"].decode()  # one card for both sets
    assert "`manifests/online.json`" in card and "`manifests/offline.json`" in card
    # a download of the repo is a bundle: verify checks both manifests
    from coreml_diarize.app.bundle import verify_bundle

    download = Path(str(bundle.directory) + "-download")
    for path, data in hub.files.items():
        (download / path).parent.mkdir(parents=True, exist_ok=True)
        (download / path).write_bytes(data)
    assert verify_bundle(download) == []
    (download / "plda-parameters.json").write_text("{}")
    assert verify_bundle(download) == ["plda-parameters.json: SHA-256 mismatch"]

    # publishing online again (without the wespeaker_v2 variants) deletes only online files
    before = dict(hub.files)
    smaller = Path(str(bundle.directory) + "-smaller")
    shutil.copytree(bundle.directory, smaller)
    with plan_publish(smaller, allow_untrained=True) as plan:
        result = publish(plan, REPO)
    assert result.deleted == []  # same files: nothing the online set had is gone
    offline_paths = {
        p
        for p in before
        if p.split("/")[0]
        in {*(a["name"] for a in offline_bundle.manifest["artifacts"]), "plda-parameters.json"}
    }
    assert offline_paths and all(hub.files.get(p) == before[p] for p in offline_paths)


def test_paths_differing_only_by_case_are_refused(bundle, monkeypatch):
    hub = FakeHub(monkeypatch, existing={"Wespeaker_v2.mlpackage/Manifest.json": b"{}"})
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with (
        plan_publish(bundle.directory, allow_untrained=True) as plan,
        pytest.raises(DiarizeError, match="differ only by case"),
    ):
        publish(plan, REPO)
    assert "create_commit" not in hub.names()


def test_publish_ship_renames_in_a_copy(bundle, offline_bundle, tmp_path):
    before = (offline_bundle.directory / "manifest.json").read_bytes()
    result = _cli(
        [
            "publish",
            str(offline_bundle.directory),
            "--repo",
            REPO,
            "--dry-run",
            "--allow-untrained",
            "--ship",
            "device",
        ]
    )
    assert result.exit_code == 0, result.output
    card = result.output.split("--- README.md (model card) ---\n", 1)[1]
    assert "| offline | `manifests/offline.json` | `Embedding.mlpackage` | palettize8 |" in card
    assert "| offline | `manifests/offline.json` | `FBank.mlpackage` | fp32 |" in card
    assert "Embedding_fp32.mlpackage/" in result.output
    assert (offline_bundle.directory / "manifest.json").read_bytes() == before  # untouched
