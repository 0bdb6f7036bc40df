"""`publish`, part 1: the plan — what a verified bundle puts on the Hugging Face Hub.

The repo is laid out the way FluidAudio loads it (FluidInference/FluidAudio v0.15.6,
`ModelNames.swift`, `ModelHub.swift`): every package at the top under its contract name (the
variant `--ship` chose under the plain name, the others suffixed), compiled `.mlmodelc`
directories beside them, every sidecar the manifest lists at the root (`plda-parameters.json`,
which the offline diarizer requires there), `golden/` and the bundle's manifest as
`manifests/<profile>.json`: one per profile, because one repo holds both sets (FluidAudio's
`Repo.diarizer`), and a download of the repo is itself a bundle `coreml-diarize verify`
accepts. The model card is `publish_card.py`; the Hub I/O and which files each profile owns
on the repo are `publish_hub.py`.

Every file the manifest lists is published and nothing it does not list (a `.DS_Store`, notes);
a bundle whose profile lacks a model or sidecar FluidAudio loads is refused, and so are two
paths that differ only by case (macOS disks are case-insensitive).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import file_sha256, is_content

from .bundle import MANIFEST, safe_extract, verify_bundle
from .bundle_files import read_manifest
from .publish_card import (
    CARD,
    LICENSE_FILE,
    commit_text,
    hub_license,
    is_untrained,
    license_file,
    license_of,
    manifest_path_in_repo,
    model_card,
)
from .variants import ShipChoice, copy_bundle, plain_name, reship

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
# files every profile shares on the repo (regenerated from all profiles' manifests)
SHARED = (CARD, LICENSE_FILE)


@dataclass(frozen=True)
class PlannedFile:
    """One file of the commit: from the bundle (`source`) or generated (`data`)."""

    path_in_repo: str
    kind: str  # package | compiled | golden | sidecar | manifest | card | license
    size: int
    sha256: str
    source: Path | None = None
    data: bytes | None = None

    def payload(self) -> Path | bytes:
        return self.source if self.source is not None else (self.data or b"")


@dataclass
class PublishPlan:
    bundle: Path  # what the user named (directory or .zip)
    root: Path  # the bundle directory (extracted or re-shipped into a temp dir if needed)
    manifest: dict
    profile: str
    files: list[PlannedFile]  # this profile's files, the card and the licence file
    licenses: dict[str, str]  # package name -> licence note
    card: str  # for this profile alone (publish_hub regenerates it over the repo's profiles)
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

    @property
    def manifest_path(self) -> str:
        return manifest_path_in_repo(self.profile)

    def owned_paths(self) -> set[str]:
        """The repo paths this profile owns (everything but the shared card and licence)."""
        return {f.path_in_repo for f in self.files if f.path_in_repo not in SHARED}

    def describe(self) -> str:
        """The file plan: path in repo, size, SHA-256 prefix."""
        lines = [
            f"{len(self.files)} files, {self.total_bytes / 1e6:.2f} MB, one commit "
            f"({self.profile} set):"
        ]
        lines.append(f"  message: {self.commit_message}")
        for f in self.files:
            lines.append(f"  {f.path_in_repo:72} {f.size:>12,}  {f.sha256[:12]}  {f.kind}")
        lines.append(
            f"  (files the {self.profile} set published earlier (its {self.manifest_path} on the "
            "repo) and not in this plan are deleted in the same commit; other sets' files stay)"
        )
        for name in self.skipped:
            lines.append(f"  skipped (not listed in the manifest): {name}")
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


def plan_publish(
    bundle: Path,
    *,
    repo_id: str | None = None,
    allow_untrained: bool = False,
    ship: ShipChoice | None = None,
) -> PublishPlan:
    """Verify BUNDLE (directory or zip), refuse untrained weights and incomplete profiles, list
    what the repo gets. `ship`: re-choose which variant takes each plain name (the bundle is
    renamed in a temporary copy and verified again).

    Use as a context manager (a zip is unpacked, a re-shipped bundle copied, into a temporary
    directory that lives as long as the plan)."""
    bundle = Path(bundle)
    if not bundle.exists():
        raise ArtifactError(f"bundle not found: {bundle}")
    tmp = None
    if bundle.is_file() or ship is not None:
        tmp = tempfile.TemporaryDirectory(prefix="coreml-diarize-publish-")
    try:
        root = bundle
        if bundle.is_file():
            root = safe_extract(bundle, Path(tmp.name))
        _refuse_problems(bundle, root)
        if ship is not None:  # renamed in a copy: the user's bundle is never changed
            if root == bundle:
                root = copy_bundle(bundle, Path(tmp.name) / bundle.name)
            _reship_in_place(root, ship)
            _refuse_problems(bundle, root)
        return _plan(bundle, root, tmp, repo_id=repo_id, allow_untrained=allow_untrained)
    except BaseException:
        if tmp is not None:
            tmp.cleanup()
        raise


def _reship_in_place(root: Path, ship: ShipChoice) -> None:
    manifest = reship(root, read_manifest(root / MANIFEST), ship)
    fresh = root / f".{MANIFEST}.new"  # a new file: the copy's manifest is a hard link
    fresh.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(fresh, root / MANIFEST)


def _refuse_problems(bundle: Path, root: Path) -> None:
    problems = verify_bundle(root)  # every listed file against the manifest's SHA-256s
    if problems:
        raise ArtifactError(
            f"bundle {bundle} fails verify ({len(problems)} problem(s), first: {problems[0]}); "
            "nothing was published"
        )


def _plan(bundle, root, tmp, *, repo_id, allow_untrained) -> PublishPlan:
    manifest = read_manifest(root / MANIFEST)
    if is_untrained(manifest) and not allow_untrained:
        raise DiarizeError(
            f"bundle {bundle} holds untrained (seeded random) weights; "
            "pass --allow-untrained to publish it anyway"
        )
    _refuse_symlinks(root)
    profile = _check_profile(bundle, manifest)
    files = _listed_files(root, manifest)
    manifest_file = root / MANIFEST
    files.append(
        PlannedFile(
            manifest_path_in_repo(profile),
            "manifest",
            manifest_file.stat().st_size,
            file_sha256(manifest_file),
            manifest_file,
        )
    )
    licenses = {a["name"]: license_of(root / a["name"], a) for a in manifest["artifacts"]}
    files += shared_files({profile: manifest}, files, licenses, repo_id)
    check_case_collisions([f.path_in_repo for f in files])
    claimed = {f.path_in_repo.split("/")[0] for f in files} | {MANIFEST}
    skipped = sorted(
        p.name for p in root.iterdir() if p.name not in claimed and is_content(Path(p.name))
    )
    files.sort(key=lambda f: f.path_in_repo)
    message, description = commit_text(manifest)
    card = next(f.data.decode() for f in files if f.path_in_repo == CARD)
    return PublishPlan(
        bundle, root, manifest, profile, files, licenses, card, message, description, skipped, tmp
    )


def shared_files(
    manifests: dict[str, dict],
    files: list[PlannedFile],
    licenses: dict[str, str],
    repo_id: str | None,
) -> list[PlannedFile]:
    """The card (and LICENSE.md when the models' licences differ) over every profile the repo
    holds after the commit."""
    card = model_card(manifests, files=files, licenses=licenses, repo_id=repo_id)
    out = [_generated(CARD, "card", card)]
    if len({hub_license(n) for n in licenses.values()}) > 1:
        out.append(_generated(LICENSE_FILE, "license", license_file(licenses)))
    return out


def _check_profile(bundle: Path, manifest: dict) -> str:
    """The bundle's profile, and everything FluidAudio loads for it: each model's plain name
    and each sidecar the profile's models declare (`ModelSpec.sidecars`)."""
    from .build import profile_specs

    profile = manifest.get("profile")
    if not profile:
        raise DiarizeError(
            f"bundle {bundle} does not make up one profile (its packages come from several "
            "sets): bundle each profile on its own (`build --profile`)"
        )
    names = {a["name"] for a in manifest["artifacts"]}
    sidecars = {s for a in manifest["artifacts"] for s in a.get("sidecars") or {}}
    missing = []
    for spec in profile_specs(profile):
        if plain_name(spec) not in names:
            missing.append(plain_name(spec))
        missing += sorted(set(spec.sidecars) - sidecars)
    if missing:
        raise DiarizeError(
            f"bundle {bundle} lacks what the {profile} set needs under the names FluidAudio "
            f"loads: {', '.join(missing)}; nothing was published"
        )
    return profile


def _listed_files(root: Path, manifest: dict) -> list[PlannedFile]:
    """Every file the manifest lists (hashes just verified: not recomputed)."""
    files: list[PlannedFile] = []

    def add(path_in_repo: str, kind: str, sha: str) -> None:
        path = root / path_in_repo
        files.append(PlannedFile(path_in_repo, kind, path.stat().st_size, sha, path))

    for entry in manifest["artifacts"]:
        for rel, sha in sorted(entry["files"].items()):
            add(f"{entry['name']}/{rel}", "package", sha)
        for sidecar, sha in sorted((entry.get("sidecars") or {}).items()):
            if all(f.path_in_repo != sidecar for f in files):
                add(sidecar, "sidecar", sha)
        for key, folder in (("golden", "dir"), ("compiled", "name")):
            info = entry.get(key)
            if isinstance(info, dict):
                for rel, sha in sorted(info["files"].items()):
                    add(f"{info[folder]}/{rel}", key, sha)
    return files


def check_case_collisions(paths) -> None:
    """Refuse two paths that differ only by case: on a Mac's case-insensitive disk (APFS by
    default) one would overwrite the other in a download."""
    seen: dict[str, str] = {}
    for path in sorted(paths):
        other = seen.setdefault(path.casefold(), path)
        if other != path:
            raise DiarizeError(
                f"{other} and {path} differ only by case: a Mac cannot hold both; nothing "
                "was published"
            )


def _refuse_symlinks(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_symlink():
            raise ArtifactError(f"symbolic link in bundle: {path.relative_to(root)}")


def _generated(path: str, kind: str, text: str) -> PlannedFile:
    data = text.encode()
    return PlannedFile(path, kind, len(data), hashlib.sha256(data).hexdigest(), data=data)
