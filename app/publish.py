"""`publish`: a verified bundle onto the Hugging Face Hub, in one atomic commit.

The repo is laid out the way a Swift SDK loads it: every package at the top under its contract
name (`pyannote_segmentation.mlpackage`, `wespeaker_v2_palettize8.mlpackage`, ...), compiled
`.mlmodelc` directories beside them when the bundle has any, `golden/` as it is, `manifest.json`
(so a download of the repo is itself a bundle `coreml-diarize verify` accepts) and a model card
`README.md` generated from the manifest.

Nothing is half-published: the bundle is verified before any network call, and every file goes
into ONE `create_commit` (files are pre-uploaded to storage first, but nothing is visible on the
repo until the commit lands; a failed commit leaves the repo as it was). The token comes from
`HF_TOKEN` and never appears in output or in error messages.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import file_sha256

from .bundle import MANIFEST, safe_extract, verify_bundle

if TYPE_CHECKING:  # pragma: no cover
    from huggingface_hub import HfApi

TOKEN_ENV = "HF_TOKEN"
CARD = "README.md"
LICENSE_FILE = "LICENSE.md"
GOLDEN_DIR = "golden"

# pipeline_tag must be one of the Hub's tasks (huggingface.js packages/tasks/src/pipelines.ts,
# PIPELINE_DATA): there is no speaker-diarization task. `voice-activity-detection` is the audio
# task closest to what these models output (per-frame, per-speaker activity), and the one
# pyannote's own segmentation / diarization repos are listed under.
PIPELINE_TAG = "voice-activity-detection"
BASE_TAGS = (
    "coreml",
    "speaker-diarization",
    "pyannote",
    "pyannote-audio",
    "speaker-embedding",
    "voice-activity-detection",
    "audio",
    "on-device",
)
# Hub licence identifiers (https://hf.co/docs/hub/repositories-licenses) for the SPDX-style
# notes the converters write into each package's `license` field ("MIT (pyannote/...)").
HUB_LICENSES = {
    "mit": "mit",
    "apache-2.0": "apache-2.0",
    "cc-by-4.0": "cc-by-4.0",
    "cc-by-sa-4.0": "cc-by-sa-4.0",
    "cc-by-nc-4.0": "cc-by-nc-4.0",
    "bsd-3-clause": "bsd-3-clause",
}
LICENSE_URLS = {
    "mit": "https://opensource.org/license/mit",
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "apache-2.0": "https://www.apache.org/licenses/LICENSE-2.0",
}
# repo paths a publish owns: a file under one of these that the new bundle does not have is
# deleted in the same commit, so the repo never mixes two releases' models
_MANAGED = re.compile(r"^([^/]+\.(mlpackage|mlmodelc)|golden)/")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class PublishError(DiarizeError):
    """Publishing to the Hub failed; nothing was published."""

    exit_code = 8


# --- the plan -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    """One file of the commit: from the bundle (`source`) or generated (`data`)."""

    path_in_repo: str
    kind: str  # package | compiled | golden | manifest | card | license
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None

    def payload(self) -> Path | bytes:
        return self.source if self.source is not None else (self.data or b"")


@dataclass
class PublishPlan:
    bundle: Path  # what the user named (directory or .zip)
    root: Path  # the bundle directory (extracted when `bundle` is a zip)
    manifest: dict
    files: list[PlannedFile]
    card: str
    commit_message: str
    commit_description: str
    skipped: list[str] = field(default_factory=list)
    _tmp: Any = field(default=None, repr=False)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def paths(self) -> set[str]:
        return {f.path_in_repo for f in self.files}

    def describe(self) -> str:
        """The file plan: path in repo, size, SHA-256 prefix."""
        lines = [f"{len(self.files)} files, {self.total_bytes / 1e6:.2f} MB, one commit:"]
        lines.append(f"  message: {self.commit_message}")
        for f in self.files:
            lines.append(f"  {f.path_in_repo:72} {f.size:>12,}  {f.sha256[:12]}  {f.kind}")
        lines.append(
            "  (files under *.mlpackage/, *.mlmodelc/ and golden/ already on the repo but not in "
            "this plan are deleted in the same commit)"
        )
        for name in self.skipped:
            lines.append(f"  skipped (not part of a published bundle): {name}")
        return "\n".join(lines)

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> PublishPlan:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_repo_id(repo_id: str) -> str:
    if not _REPO_ID.match(repo_id or "") or ".." in repo_id or len(repo_id) > 96:
        raise DiarizeError(f"--repo must be OWNER/NAME (a Hub model repo), got '{repo_id}'")
    return repo_id


def is_untrained(manifest: dict) -> bool:
    weights = [a["source"] for a in manifest["artifacts"] if a["source"].get("kind") != "none"]
    return manifest.get("trained") is False or any(s.get("trained") != "true" for s in weights)


def plan_publish(
    bundle: Path, *, repo_id: str | None = None, allow_untrained: bool = False
) -> PublishPlan:
    """Verify BUNDLE (directory or zip), refuse untrained weights, list what the repo gets.

    Use as a context manager (a zip is unpacked into a temporary directory that lives as long
    as the plan)."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise ArtifactError(f"bundle not found: {bundle}")
    tmp = None
    if bundle.is_file():
        tmp = tempfile.TemporaryDirectory(prefix="coreml-diarize-publish-")
        try:
            root = safe_extract(bundle, Path(tmp.name))
        except BaseException:
            tmp.cleanup()
            raise
    else:
        root = bundle
    try:
        return _plan(bundle, root, tmp, repo_id=repo_id, allow_untrained=allow_untrained)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise


def _plan(bundle, root, tmp, *, repo_id, allow_untrained) -> PublishPlan:
    problems = verify_bundle(root)  # every package file against the manifest's SHA-256s
    if problems:
        raise ArtifactError(
            f"bundle {bundle} fails verify ({len(problems)} problem(s), first: {problems[0]}); "
            "nothing was published"
        )
    manifest = json.loads((root / MANIFEST).read_text())
    if is_untrained(manifest) and not allow_untrained:
        raise DiarizeError(
            f"bundle {bundle} holds untrained (seeded random) weights; "
            "pass --allow-untrained to publish it anyway"
        )
    _refuse_symlinks(root)
    files: list[PlannedFile] = []
    claimed: set[str] = {MANIFEST, CARD}
    for entry in manifest["artifacts"]:
        name = entry["name"]
        claimed.add(name)
        for rel, sha in sorted(entry["files"].items()):  # hashes just verified: not recomputed
            path = root / name / rel
            files.append(PlannedFile(f"{name}/{rel}", "package", path.stat().st_size, sha, path))
    compiled = _compiled_dirs(root)
    for top, directory in compiled.items():
        claimed.add(directory.relative_to(root).parts[0])
        files += _tree(directory, top, "compiled")
    if (root / GOLDEN_DIR).is_dir():
        claimed.add(GOLDEN_DIR)
        files += _tree(root / GOLDEN_DIR, GOLDEN_DIR, "golden")
    manifest_path = root / MANIFEST
    files.append(
        PlannedFile(
            MANIFEST,
            "manifest",
            manifest_path.stat().st_size,
            file_sha256(manifest_path),
            manifest_path,
        )
    )
    licenses = {a["name"]: _license_of(root / a["name"], a) for a in manifest["artifacts"]}
    card = model_card(
        manifest,
        files=files,
        licenses=licenses,
        compiled=sorted(compiled),
        repo_id=repo_id,
    )
    files.append(_generated(CARD, "card", card))
    if len({_hub_license(n) for n in licenses.values()}) > 1:
        files.append(_generated(LICENSE_FILE, "license", license_file(licenses)))
    skipped = sorted(p.name for p in root.iterdir() if p.name not in claimed)
    files.sort(key=lambda f: f.path_in_repo)
    message, description = commit_text(manifest)
    return PublishPlan(bundle, root, manifest, files, card, message, description, skipped, tmp)


def _refuse_symlinks(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(f"symbolic link in bundle: {path.relative_to(root)}")


def _compiled_dirs(root: Path) -> dict[str, Path]:
    """Every `*.mlmodelc` directory in the bundle, by the top-level name it gets in the repo."""
    found: dict[str, Path] = {}
    for directory in sorted(root.rglob("*.mlmodelc")):
        rel = directory.relative_to(root)
        if not directory.is_dir() or any(
            p.endswith((".mlmodelc", ".mlpackage")) for p in rel.parts[:-1]
        ):
            continue
        if directory.name in found:
            raise ArtifactError(
                f"two compiled models named {directory.name} in the bundle "
                f"({found[directory.name].relative_to(root)}, {rel})"
            )
        found[directory.name] = directory
    return found


def _tree(directory: Path, prefix: str, kind: str) -> list[PlannedFile]:
    out = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):  # .DS_Store and friends
            continue
        out.append(
            PlannedFile(
                f"{prefix}/{rel.as_posix()}", kind, path.stat().st_size, file_sha256(path), path
            )
        )
    return out


def _generated(path: str, kind: str, text: str) -> PlannedFile:
    import hashlib

    data = text.encode()
    return PlannedFile(path, kind, len(data), hashlib.sha256(data).hexdigest(), data=data)


def _license_of(package: Path, entry: dict) -> str:
    """The licence note a package carries (its Core ML `license` field, written from the model
    declaration); a manifest that records it wins, the declaration is the last resort."""
    if entry.get("license"):
        return str(entry["license"])
    try:
        from coreml_diarize.mlpackage import load_mlmodel

        note = load_mlmodel(package).get_spec().description.metadata.license
        if note:
            return note
    except DiarizeError:
        pass
    try:
        from coreml_diarize.models import get_spec

        return get_spec(entry["model"]).license_note or "unknown"
    except DiarizeError:
        return "unknown"


def _hub_license(note: str) -> str:
    """'CC-BY-4.0 (pyannote/wespeaker-...)' -> 'cc-by-4.0'; unknown notes -> 'other'."""
    head = note.split("(")[0].strip().lower()
    return HUB_LICENSES.get(head, "other")


# --- the card -------------------------------------------------------------------------------


def compute_units_for(entry: dict) -> str:
    """What a package is meant to run on: as the manifest records it (`compute_units`), else,
    for bundles from before that field, from its precision with the same rule: fp16 programs
    (palettized ones included) for the Neural Engine, fp32 ones as the CPU reference."""
    if entry.get("compute_units"):
        return str(entry["compute_units"])
    return "cpu_and_ne" if str(entry.get("precision") or "fp32").startswith("fp16") else "cpu_only"


def _front_matter(manifest: dict, licenses: dict[str, str]) -> dict:
    hub = sorted({_hub_license(n) for n in licenses.values()})
    meta: dict[str, Any] = {}
    if len(hub) == 1:
        meta["license"] = hub[0]
        if hub[0] == "other":
            meta["license_name"] = "see-license-md"
            meta["license_link"] = LICENSE_FILE
    else:
        # the Hub takes one licence per repo: `other` + a name and a file in the repo that lists
        # each model's own licence (hub-docs model-cards.md, "Specifying a license")
        meta["license"] = "other"
        meta["license_name"] = "-and-".join(h for h in hub if h != "other") or "per-model"
        meta["license_link"] = LICENSE_FILE
    bases = _base_models(manifest)
    if bases:
        # Hub model IDs only (revisions go in the body). No base_model_relation: the Hub's
        # values (adapter, merge, quantized, finetune) describe weight changes, and the fp32
        # packages are a format conversion; the card body says what each file is.
        meta["base_model"] = bases[0] if len(bases) == 1 else bases
    meta["pipeline_tag"] = PIPELINE_TAG
    # no library_name: Core ML is a file format, not a modelling library of the Hub's list
    # (huggingface.js model-libraries.ts); the `coreml` tag is what makes it findable
    tags = list(BASE_TAGS)
    if is_untrained(manifest):
        tags.append("untrained")
    meta["tags"] = tags
    return meta


def _base_models(manifest: dict) -> list[str]:
    return sorted(
        {
            a["source"]["location"]
            for a in manifest["artifacts"]
            if a["source"].get("kind") == "hf" and a["source"].get("location")
        }
    )


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def _fmt_summary(summary: dict | None) -> str:
    if not summary:
        return "—"
    keys = (
        ("max_abs", "max abs", "{:.3g}"),
        ("psnr_min", "PSNR ≥", "{:.1f} dB"),
        ("cosine_min", "cosine ≥", "{:.5f}"),
        ("argmax_agreement_confident", "argmax", "{:.4f}"),
        ("relative_to_spread", "rel. spread", "{:.2g}"),
    )
    parts = []
    for output, metrics in sorted(summary.items()):
        shown = [
            f"{label} {fmt.format(metrics[key])}"
            for key, label, fmt in keys
            if isinstance(metrics.get(key), int | float)
        ]
        parts.append(f"`{output}`: " + ", ".join(shown))
    return "; ".join(parts)


def _source_row(source: dict) -> tuple[str, str, str, str, str]:
    kind = source.get("kind", "?")
    if kind == "none":
        return ("none", "no weights (tensor ops only)", "—", "—", "n/a")
    files = source.get("files") if isinstance(source.get("files"), dict) else {}
    # a pipeline source (community-1) holds one subfolder per weight family
    in_folder = ", ".join(f"`{f}`" for f in sorted(files) if "/" in f)
    if kind == "random":
        where = f"seeded random init ({source.get('sha256', '')})"
    elif kind == "hf":
        where = f"[{source.get('location')}](https://huggingface.co/{source.get('location')})"
    elif in_folder:
        where = f"local pipeline directory `{source.get('location')}`"
    else:
        where = f"local checkpoint `{source.get('location')}`"
    if in_folder:
        where += f": {in_folder}"
    sha = source.get("sha256") or "—"
    return (kind, where, source.get("revision") or "—", f"`{sha}`", source.get("trained", "?"))


def model_card(
    manifest: dict,
    *,
    files: list[PlannedFile],
    licenses: dict[str, str],
    compiled: list[str] | None = None,
    repo_id: str | None = None,
) -> str:
    """The repo's README.md: Hub metadata (YAML front matter) + what a user needs to trust it."""
    toolkit = manifest.get("toolkit") or {}
    version = toolkit.get("version") or "unknown"
    revision = toolkit.get("git_revision") or "unknown"
    front = yaml.safe_dump(
        _front_matter(manifest, licenses), sort_keys=False, allow_unicode=True, width=1000
    )
    out = ["---", front.rstrip("\n"), "---", ""]
    out += _card_intro(manifest, version, revision)
    out += _card_files(manifest, files, compiled or [])
    out += _card_validation(manifest)
    out += _card_provenance(manifest, version, revision)
    out += _card_licenses(licenses)
    out += _card_verify(files, repo_id or "OWNER/NAME")
    return "\n".join(out)


def _card_intro(manifest: dict, version: str, revision: str) -> list[str]:
    out = ["# pyannote speaker diarization for Core ML", ""]
    out += [
        "pyannote.audio's speaker-diarization models converted to Core ML by "
        f"coreml-diarize {version} (git `{revision}`), for on-device "
        "diarization in Swift apps. Each package was validated against its PyTorch reference "
        "before it was bundled; `manifest.json` records every file's SHA-256, the weights' "
        "provenance and the validation results.",
        "",
    ]
    if is_untrained(manifest):
        out += [
            "> **UNTRAINED WEIGHTS.** These packages hold seeded random (calibrated) weights, not "
            "pyannote's trained checkpoints: they exercise the conversion and the Swift loading "
            "path, and produce no meaningful diarization. For testing only.",
            "",
        ]
    return out


def _card_files(manifest: dict, files: list[PlannedFile], compiled: list[str]) -> list[str]:
    out: list[str] = []
    sizes_by_top: dict[str, int] = {}
    for f in files:
        top = f.path_in_repo.split("/")[0]
        sizes_by_top[top] = sizes_by_top.get(top, 0) + f.size
    out += [
        "## Files",
        "",
        "| file | size | precision | compression | compute units | tree SHA-256 |",
        "|---|---|---|---|---|---|",
    ]
    for a in manifest["artifacts"]:
        out.append(
            f"| `{a['name']}` | {_mb(a['size_bytes'])} | {a.get('precision') or '—'} "
            f"| {a.get('compression') or 'none'} | {compute_units_for(a)} "
            f"| `{a['tree_sha256'][:16]}…` |"
        )
    by_stem = {a["name"].removesuffix(".mlpackage"): a for a in manifest["artifacts"]}
    for name in compiled:
        package = by_stem.get(name.removesuffix(".mlmodelc"))
        what = f"compiled `{package['name']}`" if package else "compiled model"
        units = compute_units_for(package) if package else "—"
        out.append(
            f"| `{name}` | {_mb(sizes_by_top.get(name, 0))} | {what} | — | {units} | "
            "not in manifest |"
        )
    golden = [f for f in files if f.kind == "golden"]
    out += [""]
    if golden:
        out += [
            f"`{GOLDEN_DIR}/` ({len(golden)} files, {_mb(sum(f.size for f in golden))}): "
            "reference inputs and outputs for checking a runtime against the converter.",
            "",
        ]
    out += [
        "Names follow the coreml-diarize contract: `<model>.mlpackage` for the reference "
        "conversion, `<model>_<variant>.mlpackage` for compressed variants (e.g. "
        "`wespeaker_v2_palettize8.mlpackage`), compiled `.mlmodelc` beside their package. "
        "The shapes of every input and output are in `manifest.json`.",
        "",
    ]
    return out


def _card_validation(manifest: dict) -> list[str]:
    out = [
        "## Validation",
        "",
        "Every package was run against an independent PyTorch reference on deterministic "
        "signals (silence, noise, sweeps, clipped audio, real speech) before bundling; the "
        "worst value of each metric over all inputs:",
        "",
        "| package | backend | inputs | worst case | result |",
        "|---|---|---|---|---|",
    ]
    for a in manifest["artifacts"]:
        v = a.get("validation") or {}
        out.append(
            f"| `{a['name']}` | {v.get('backend') or '—'} | {len(v.get('inputs') or [])} "
            f"| {_fmt_summary(v.get('summary'))} | {'passed' if v.get('passed') else 'NOT passed'} |"
        )
    return out


def _card_provenance(manifest: dict, version: str, revision: str) -> list[str]:
    untrained = is_untrained(manifest)
    out = ["", "## Provenance", ""]
    bases = _base_models(manifest)
    if bases:
        out.append("Converted from " + ", ".join(f"`{b}`" for b in bases) + " (revisions below).")
    else:
        out.append(
            "No base model: no package holds weights from a Hub checkpoint"
            + (" (seeded random weights)." if untrained else ".")
        )
    out += [
        "",
        "| package | weights | source | revision | checkpoint SHA-256 | trained |",
        "|---|---|---|---|---|---|",
    ]
    for a in manifest["artifacts"]:
        kind, where, rev, sha, trained = _source_row(a.get("source") or {})
        out.append(f"| `{a['name']}` | {kind} | {where} | {rev} | {sha} | {trained} |")
    labels = {"calibration": "calibration of the random weights", "trained_on": "trained on"}
    notes = sorted(
        {
            f"{label}: `{a['source'][key]}`"
            for a in manifest["artifacts"]
            for key, label in labels.items()
            if a.get("source", {}).get(key)
        }
    )
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    versions = manifest.get("versions") or {}
    out += [
        "",
        f"Built by coreml-diarize {version}, git revision `{revision}`"
        + (
            " with " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items()) if k != "python")
            if versions
            else ""
        )
        + ".",
        "",
    ]
    return out


def _card_licenses(licenses: dict[str, str]) -> list[str]:
    out = [
        "## Licenses",
        "",
        "Each package's license, as recorded in its Core ML metadata (the upstream model's):",
        "",
        "| file | license |",
        "|---|---|",
    ]
    for name, note in sorted(licenses.items()):
        out.append(f"| `{name}` | {note} |")
    return out


def _card_verify(files: list[PlannedFile], repo: str) -> list[str]:
    out: list[str] = []
    manifest_sha = next((f.sha256 for f in files if f.path_in_repo == MANIFEST), None)
    out += [
        "",
        "## Verify",
        "",
        "A download of this repository is a coreml-diarize bundle: `manifest.json` lists the "
        "SHA-256 of every file of every package and one tree hash per package.",
        "",
        "```bash",
        f"hf download {repo} --local-dir coreml-diarize-bundle",
        "# with the coreml-diarize toolkit installed:",
        "coreml-diarize verify coreml-diarize-bundle",
        "```",
        "",
    ]
    if manifest_sha:
        out += [
            f"`manifest.json` itself: SHA-256 `{manifest_sha}`. Without the toolkit, "
            "`sha256sum <package>/<file>` must match that file's entry under the package's "
            '`"files"` in `manifest.json`.',
            "",
        ]
    return out


def license_file(licenses: dict[str, str]) -> str:
    """LICENSE.md for a repo whose models carry different licences (`license_link`)."""
    lines = [
        "# Licences",
        "",
        "The models in this repository are under different licences, each the licence of the "
        "upstream model it was converted from:",
        "",
    ]
    for name, note in sorted(licenses.items()):
        url = LICENSE_URLS.get(_hub_license(note))
        lines.append(f"- `{name}`: {note}" + (f" — {url}" if url else ""))
    return "\n".join(lines) + "\n"


def commit_text(manifest: dict) -> tuple[str, str]:
    toolkit = manifest.get("toolkit") or {}
    version = toolkit.get("version") or "unknown"
    revision = toolkit.get("git_revision") or "unknown"
    n = len(manifest["artifacts"])
    message = f"coreml-diarize {version} (git {revision}): {n} Core ML package(s)"
    if is_untrained(manifest):
        message += ", UNTRAINED weights"
    description = "\n".join(
        f"- {a['name']}  tree sha256 {a['tree_sha256']}" for a in manifest["artifacts"]
    )
    return message, description


# --- publishing ---------------------------------------------------------------------------------


@dataclass
class PublishResult:
    repo_id: str
    commit_url: str | None
    commit_oid: str | None
    pr_url: str | None
    files: int
    deleted: list[str]
    total_bytes: int


def resolve_token(token: str | None = None) -> str:
    token = token or os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise PublishError(
            f"no Hub token: set {TOKEN_ENV} to a token with write access "
            "(or use --dry-run to see the plan without publishing)"
        )
    return token


def _scrub(text: str, token: str) -> str:
    text = " ".join(str(text).split())  # one line
    return text.replace(token, "***") if token else text


def _http_reason(exc: BaseException, token: str) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    server = getattr(exc, "server_message", None)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
    reason = f"HTTP {status}: {server or first}" if status else first
    return _scrub(reason, token)[:300]


def publish(
    plan: PublishPlan,
    repo_id: str,
    *,
    api: HfApi | None = None,
    token: str | None = None,
    revision: str | None = None,
    private: bool = False,
    create_pr: bool = False,
    progress=None,
) -> PublishResult:
    """Create REPO if needed and upload PLAN as one commit; raise PublishError on any failure."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    check_repo_id(repo_id)
    token = resolve_token(token)
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    say = progress or (lambda line: None)
    existing = _prepare_repo(api, repo_id, token=token, revision=revision, private=private)
    stale = sorted(p for p in existing if _MANAGED.match(p) and p not in plan.paths)
    operations: list[Any] = [
        CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=f.payload())
        for f in plan.files
    ]
    operations += [CommitOperationDelete(path_in_repo=p) for p in stale]
    say(
        f"uploading {len(plan.files)} files ({plan.total_bytes / 1e6:.2f} MB)"
        + (f", deleting {len(stale)} stale" if stale else "")
        + f" to {repo_id} in one commit"
    )
    info = _commit(
        api, plan, repo_id, operations, token=token, revision=revision, create_pr=create_pr
    )
    return PublishResult(
        repo_id=repo_id,
        commit_url=getattr(info, "commit_url", None),
        commit_oid=getattr(info, "oid", None),
        pr_url=getattr(info, "pr_url", None),
        files=len(plan.files),
        deleted=stale,
        total_bytes=plan.total_bytes,
    )


def _prepare_repo(api, repo_id: str, *, token, revision: str | None, private: bool) -> list[str]:
    """Create the repo (and branch) if needed; the files it holds now."""
    try:
        # private=None, not False, without --private: an organisation whose default is private
        # keeps it (False would force a public repo); an existing repo's visibility is untouched
        api.create_repo(
            repo_id,
            repo_type="model",
            private=True if private else None,
            exist_ok=True,
            token=token,
        )
        if revision and revision != "main":
            api.create_branch(
                repo_id, branch=revision, repo_type="model", exist_ok=True, token=token
            )
        return api.list_repo_files(repo_id, repo_type="model", revision=revision, token=token)
    except Exception as exc:
        raise PublishError(
            f"cannot create or access {repo_id} ({_http_reason(exc, token)}); "
            "check the token's write access to it; nothing was published"
        ) from exc


def _commit(api, plan: PublishPlan, repo_id: str, operations, *, token, revision, create_pr):
    """One commit for the whole plan: it lands whole or not at all."""
    try:
        return api.create_commit(
            repo_id,
            operations,
            commit_message=plan.commit_message,
            commit_description=plan.commit_description,
            repo_type="model",
            revision=revision,
            create_pr=create_pr,
            token=token,
        )
    except Exception as exc:
        from huggingface_hub.errors import HfHubHTTPError

        if isinstance(exc, HfHubHTTPError):  # the Hub answered: no commit was made
            outcome = "the commit was refused, so nothing was published"
        else:  # the upload broke off; only a drop during the final call leaves any doubt
            outcome = (
                "no commit was made, so nothing was published (if the connection dropped "
                f"at the very end, check https://huggingface.co/{repo_id}/commits)"
            )
        raise PublishError(
            f"upload to {repo_id} failed ({_http_reason(exc, token)}): {outcome}; "
            "files already sent to storage are not part of the repo; run publish again"
        ) from exc
