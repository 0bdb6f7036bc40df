"""What a bundle folder is made of, at the bottom of app/: the manifest's name, where validation
reports live, unpacking a bundle zip, checking a folder against the manifest's hashes.

`bundle`, `golden`, `compile` and `publish` all import this module and it imports none of
them, so the app's modules depend on each other in one direction (issue #22 part 7). Which
files of a folder count is one rule for everything: `coreml_diarize.mlpackage.is_content`
(used by `tree_hash`, the zip writer and publish), so a Finder `.DS_Store` never fails
`verify` and is never zipped or published.
"""

from __future__ import annotations

import json
import stat
import zipfile
from pathlib import Path

from coreml_diarize.errors import ArtifactError
from coreml_diarize.mlpackage import is_content, tree_hash

MANIFEST = "manifest.json"
# where a published repo keeps one manifest per profile (app/publish.py): a download of the
# repo holds `manifests/<profile>.json` instead of `manifest.json`
MANIFESTS_DIR = "manifests"
REPORT_SUFFIX = ".validation.json"


def report_path(package: Path) -> Path:
    """Where `validate --save` / `build` keep a package's validation report (beside it)."""
    return Path(package).with_name(Path(package).name + REPORT_SUFFIX)


def manifest_files(bundle: Path) -> list[Path]:
    """The manifests of a bundle folder: its `manifest.json`, or for a download of a published
    repo every `manifests/<profile>.json` (empty when there is none)."""
    bundle = Path(bundle)
    if (bundle / MANIFEST).is_file():
        return [bundle / MANIFEST]
    folder = bundle / MANIFESTS_DIR
    return sorted(p for p in folder.glob("*.json") if is_content(p.relative_to(bundle)))


def read_manifest(path: Path) -> dict:
    """A manifest file, with one clear error when it is missing or not a manifest."""
    try:
        manifest = json.loads(Path(path).read_text())
        if not isinstance(manifest["artifacts"], list):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"missing or corrupt {Path(path).name} in {Path(path).parent}") from exc
    return manifest


def safe_extract(zip_path: Path, dest: Path) -> Path:
    """Unpack a bundle zip, refusing entries that would land outside `dest` (`..`, absolute)."""
    dest = Path(dest).resolve()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if not target.is_relative_to(dest) or member.filename.startswith("/"):
                    raise ArtifactError(f"unsafe path in bundle: {member.filename}")
                if stat.S_ISLNK(member.external_attr >> 16):
                    raise ArtifactError(f"symbolic link in bundle: {member.filename}")
            zf.extractall(dest)
    except zipfile.BadZipFile as exc:
        raise ArtifactError(f"not a valid zip: {zip_path}") from exc
    # Finder's "Compress" adds a __MACOSX/ folder beside the bundle: not part of it
    roots = [p for p in dest.iterdir() if p.is_dir() and is_content(Path(p.name))]
    if len(roots) != 1:
        raise ArtifactError(f"bundle zip must hold exactly one top-level folder: {zip_path}")
    return roots[0]


def tree_problems(directory: Path, expected: dict[str, str], label: str) -> list[str]:
    """A folder's files against the manifest's {relative path: SHA-256}."""
    if not directory.is_dir():
        return [f"{label}: missing"]
    _, files = tree_hash(directory)
    problems = [
        f"{label}/{rel}: missing" if rel not in files else f"{label}/{rel}: SHA-256 mismatch"
        for rel, sha in sorted(expected.items())
        if files.get(rel) != sha
    ]
    return problems + [
        f"{label}/{rel}: not in manifest" for rel in sorted(set(files) - set(expected))
    ]


def manifest_paths(manifest: dict) -> set[str]:
    """Every file a manifest lists, as a path from the bundle root: each package's files, its
    sidecars, golden files and compiled model's files."""
    paths: set[str] = set()
    for entry in manifest["artifacts"]:
        paths |= {f"{entry['name']}/{rel}" for rel in entry["files"]}
        paths |= set(entry.get("sidecars") or {})
        for key, folder in (("golden", "dir"), ("compiled", "name")):
            info = entry.get(key)
            if isinstance(info, dict):
                paths |= {f"{info[folder]}/{rel}" for rel in info.get("files", {})}
    return paths
