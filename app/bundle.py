"""Release bundles: the validated packages, a manifest with hashes and provenance, a README, a zip.

A package whose model declares sidecar files (`ModelSpec.sidecars`, e.g. PldaRho's
plda-parameters.json) must have them beside it; they are copied to the bundle root and hashed.
The manifest names the profile (`ModelSpec.chains`) the packages make up, when they make up one,
each package's variant (app/variants.py) and which variant ships under each plain name (`ship`).

Deterministic: the manifest has no timestamps, files are listed in sorted order, and the zip
uses fixed timestamps and permissions, so the same packages give a byte-identical bundle.
"""

from __future__ import annotations

import json
import shutil
import stat
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from coreml_diarize.atomic import atomic_path
from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import (
    check_package,
    file_sha256,
    inspect_package,
    is_content,
    package_files,
    tree_hash,
)
from coreml_diarize.record import PackageRecord
from coreml_diarize.specs import intended_compute_units

from .bundle_files import (  # noqa: F401  (re-exported: the names bundle users import)
    MANIFEST,
    REPORT_SUFFIX,
    manifest_files,
    read_manifest,
    report_path,
    safe_extract,
    tree_problems,
)
from .variants import ShipChoice, reship, variant_of

SCHEMA_VERSION = 1
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def save_report(package: Path, report_dict: dict) -> Path:
    """Store a validation report beside its package, tagged with the package's tree hash so a
    report can never vouch for a package that changed after it was validated."""
    target = report_path(package)
    payload = dict(report_dict, package_tree_sha256=tree_hash(package)[0])
    with atomic_path(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return target


@dataclass
class BundleResult:
    directory: Path
    zip_path: Path
    manifest: dict


def _artifact_entry(package: Path, allow_untrained: bool) -> dict:
    # the report vouches for exact bytes: check it before reading the package's contents
    check_package(package)
    tree, files = tree_hash(package)
    rp = report_path(package)
    if not rp.is_file():
        raise DiarizeError(
            f"{package.name} has no validation report ({rp.name}); run `coreml-diarize validate --save` first"
        )
    report = json.loads(rp.read_text())
    if report.get("package_tree_sha256") != tree:
        raise DiarizeError(
            f"{package.name} changed after it was validated (stale {rp.name}); validate it again"
        )
    if not report.get("passed"):
        raise DiarizeError(f"{package.name} failed validation; refusing to package it")
    info = inspect_package(package)
    record = PackageRecord.from_metadata(info.metadata, name=package.name)
    sidecars = _sidecar_files(package, record)
    if record.trained is False and not allow_untrained:
        raise DiarizeError(
            f"{package.name} holds untrained ({record.source.get('location')}) weights; "
            "pass --allow-untrained to package it anyway"
        )
    return {
        "name": package.name,
        **_record_fields(record),
        "variant": variant_of(record),
        "description": info.description,
        **_io_fields(info),
        "size_bytes": info.size_bytes,
        "tree_sha256": tree,
        "files": files,
        "validation": _validation_summary(report),
        "sidecars": {path.name: file_sha256(path) for path in sidecars},
    }


def _spec_of(record: PackageRecord):
    """The registry's declaration of a package's model (None for a model it does not know)."""
    from coreml_diarize.models import registry

    return registry().get(record.model)


def _sidecar_files(package: Path, record: PackageRecord) -> list[Path]:
    """The sidecar files the package's model declares, which must lie beside the package."""
    spec = _spec_of(record)
    paths = [package.parent / name for name in sorted(spec.sidecars)] if spec else []
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DiarizeError(
            f"{package.name} needs {', '.join(missing)} beside it (written by convert/build)"
        )
    return paths


def _profile(records_models: list[str]) -> str | None:
    """The one profile every bundled model belongs to (None if there is no single one)."""
    from coreml_diarize.models import registry

    specs = registry()
    chains = [set(specs[m].chains) if m in specs else set() for m in records_models]
    common = set.intersection(*chains) if chains else set()
    return next(iter(common)) if len(common) == 1 else None


def _record_fields(record: PackageRecord) -> dict:
    """What the manifest says of a package, from its record."""
    return {
        "model": record.model,
        "role": record.role,
        "precision": record.precision,
        "compression": record.compression,
        "compute_units": intended_compute_units(record.precision),
        "recipe": dict(record.recipe),
        "thresholds": dict(record.thresholds),
        # the per-file hashes as an object, not the metadata's JSON string
        "source": {
            **record.source,
            **({"files": record.source_files} if record.source_files else {}),
        },
        "toolkit": {"version": record.toolkit_version, "git_revision": record.git_revision},
        "versions": dict(record.versions),
    }


def _io_fields(info) -> dict:
    return {
        "inputs": [
            {
                "name": t.name,
                "shape": list(t.shape),  # the default shape
                "dtype": t.dtype,
                "flexible": t.flexible,  # axis -> [lower, upper] of a range
                "enumerated": {axis: list(sizes) for axis, sizes in t.enumerated.items()},
            }
            for t in info.inputs
        ],
        "outputs": [
            {"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in info.outputs
        ],
    }


def _validation_summary(report: dict) -> dict:
    return {
        "passed": True,
        "backend": report.get("backend"),
        "recipe": report.get("recipe"),
        "inputs": sorted(c["input"] for c in report.get("cases", [])),
        "summary": report.get("summary"),
    }


def build_manifest(packages: list[Path], *, allow_untrained: bool = False) -> dict:
    entries = [_artifact_entry(p, allow_untrained) for p in sorted(packages, key=lambda p: p.name)]
    if not entries:
        raise DiarizeError("no .mlpackage to bundle")
    first = entries[0]
    return {
        "schema_version": SCHEMA_VERSION,
        "profile": _profile([e["model"] for e in entries]),
        "toolkit": first["toolkit"],
        "versions": first["versions"],
        "trained": all(
            e["source"].get("trained") == "true"
            for e in entries
            if e["source"].get("kind") != "none"
        ),
        "artifacts": entries,
    }


def _readme(manifest: dict) -> str:
    lines = [
        "# coreml-diarize bundle",
        "",
        "Core ML packages for on-device speaker diarization (FluidAudio-style), each validated against",
        "its PyTorch reference before packaging. `manifest.json` lists every file's SHA-256, the",
        "weights' provenance and the validation summary; `coreml-diarize verify` re-checks it.",
        "",
    ]
    if not manifest["trained"]:
        lines += [
            "**These packages hold UNTRAINED (seeded random) weights: for testing only.**",
            "",
        ]
    sidecars = sorted({name for a in manifest["artifacts"] for name in a.get("sidecars", {})})
    if sidecars:
        lines += [f"Beside the packages: {', '.join(f'`{n}`' for n in sidecars)}.", ""]
    if manifest.get("ship"):
        lines += [
            "Under each plain name (what FluidAudio loads) ships the variant named here; the",
            "others keep a `_<variant>` suffix (`--ship MODEL=VARIANT` chooses):",
            "",
            *[f"- `{name}`: {variant}" for name, variant in sorted(manifest["ship"].items())],
            "",
        ]
    lines += [
        "| package | inputs | outputs | precision | compute units | MB |",
        "|---|---|---|---|---|---|",
    ]
    for a in manifest["artifacts"]:
        ins = ", ".join(f"`{t['name']}` {tuple(t['shape'])}" for t in a["inputs"])
        outs = ", ".join(f"`{t['name']}` {tuple(t['shape'])}" for t in a["outputs"])
        compression = "" if a["compression"] in (None, "", "none") else f" {a['compression']}"
        lines.append(
            f"| {a['name']} | {ins} | {outs} | {a['precision']}{compression}"
            f" | {a['compute_units']} | {a['size_bytes'] / 1e6:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _empty_dirs(directory: Path) -> list[Path]:
    """Folders with nothing of the bundle's content inside: a package without constants keeps
    an empty `Data/com.apple.CoreML/weights`, which its Manifest.json lists as an item, and
    coremltools' package reader (so Core ML too) refuses the package when it is missing."""
    files = package_files(directory)
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_dir()
        and is_content(p.relative_to(directory))
        and not any(f.is_relative_to(p) for f in files)
    )


def _write_zip(directory: Path, target: Path) -> None:
    """Fixed timestamps, permissions and order: the same directory gives the same bytes. Empty
    folders are stored as directory entries (a zip of files alone would drop them)."""
    entries = [(p, False) for p in package_files(directory)]  # no .DS_Store and friends
    entries += [(p, True) for p in _empty_dirs(directory)]
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for path, is_dir in sorted(entries):
            name = f"{directory.name}/{path.relative_to(directory).as_posix()}"
            info = zipfile.ZipInfo(name + "/" if is_dir else name, ZIP_EPOCH)
            mode = stat.S_IFDIR | 0o755 if is_dir else stat.S_IFREG | 0o644
            info.external_attr = mode << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, b"" if is_dir else path.read_bytes(), compresslevel=9)


def make_bundle(
    packages: list[Path],
    out_dir: Path,
    *,
    name: str = "coreml-diarize-bundle",
    allow_untrained: bool = False,
    golden: Path | None = None,
    compile_models: bool = True,
    notify: Callable[[str], None] | None = None,
    ship: ShipChoice | None = None,
) -> BundleResult:
    """`golden`: a folder of golden/<stem>/ folders (golden.write_bundle_golden), copied in and
    hashed per package. `compile_models`: ship `<stem>.mlmodelc` beside each package when xcrun
    exists (macOS); otherwise one notice and `"compiled": "not compiled (...)"` per entry.
    `ship`: which variant of each model takes its plain name (default: the fp32 reference)."""
    from .compile import NOTICE, compiled_entry, find_xcrun
    from .golden_files import add_golden

    manifest = build_manifest([Path(p) for p in packages], allow_untrained=allow_untrained)
    directory = Path(out_dir) / name
    zip_path = Path(out_dir) / f"{name}.zip"
    xcrun = find_xcrun() if compile_models else None
    if compile_models and xcrun is None:
        (notify or (lambda m: print(m, file=sys.stderr)))(f"note: {NOTICE}")
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        for entry, package in zip(
            manifest["artifacts"], sorted(packages, key=lambda p: Path(p).name), strict=True
        ):
            shutil.copytree(package, tmp / entry["name"])
            for sidecar in entry["sidecars"]:
                shutil.copyfile(Path(package).parent / sidecar, tmp / sidecar)
            if golden is not None:
                entry["golden"] = add_golden(Path(golden), tmp, entry["name"])
            if compile_models:
                entry["compiled"] = compiled_entry(tmp / entry["name"], tmp, xcrun)
        # packages (and their golden / compiled folders) are copied under their own names
        # first, then renamed: one renaming for make_bundle and `publish --ship`
        manifest = reship(tmp, manifest, ship or ShipChoice())
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        (tmp / "README.md").write_text(_readme(manifest))
    with atomic_path(zip_path) as tmp_zip:
        _write_zip(directory, tmp_zip)
    return BundleResult(directory, zip_path, manifest)


# --- verify ---------------------------------------------------------------------------------


def verify_bundle(bundle: Path) -> list[str]:
    """Re-check every hash in the manifest (every `manifests/<profile>.json` of a download of a
    published repo) and each package's variant against its own record; returns the problems
    found (empty = intact)."""
    import tempfile

    bundle = Path(bundle)
    if not bundle.exists():
        raise ArtifactError(f"bundle not found: {bundle}")
    if bundle.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            return verify_bundle(safe_extract(bundle, Path(tmp)))
    manifests = manifest_files(bundle)
    if not manifests:
        raise ArtifactError(f"missing or corrupt {MANIFEST} in {bundle}")
    problems: list[str] = []
    for path in manifests:
        problems += _manifest_problems(bundle, read_manifest(path))
    return problems


def _manifest_problems(bundle: Path, manifest: dict) -> list[str]:
    problems = []
    for entry in manifest["artifacts"]:
        package = bundle / entry["name"]
        if not package.is_dir():
            problems.append(f"{entry['name']}: missing")
            continue
        found = tree_problems(package, entry["files"], entry["name"])
        if not found and tree_hash(package)[0] != entry["tree_sha256"]:
            found.append(f"{entry['name']}: tree hash mismatch")
        if not found and "variant" in entry:  # only intact bytes are worth reading
            found += _variant_problems(package, entry, manifest.get("ship") or {})
        problems += found
        for sidecar, sha in sorted(entry.get("sidecars", {}).items()):
            path = bundle / sidecar
            if not path.is_file():
                problems.append(f"{sidecar}: missing")
            elif file_sha256(path) != sha:
                problems.append(f"{sidecar}: SHA-256 mismatch")
        if isinstance(entry.get("golden"), dict):
            from .golden_files import verify_golden_entry

            problems += verify_golden_entry(bundle, entry)
        if isinstance(entry.get("compiled"), dict):
            from .compile import verify_compiled_entry

            problems += verify_compiled_entry(bundle, entry)
    return problems


def _record_in(package: Path) -> PackageRecord:
    """The record in a package's model specification, read straight from the protobuf: a zip
    keeps files only, so an empty weights folder (a weightless model) is gone from an unpacked
    bundle, and `load_mlmodel`'s structural check would refuse an intact package."""
    from coremltools.proto import Model_pb2

    manifest = json.loads((package / "Manifest.json").read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    spec = Model_pb2.Model()
    spec.ParseFromString((package / "Data" / root).read_bytes())
    return PackageRecord.from_metadata(
        dict(spec.description.metadata.userDefined), name=package.name
    )


def _variant_problems(package: Path, entry: dict, ship: dict) -> list[str]:
    """The manifest's claims about a package (model, variant, the name that follows from
    `ship`) against the record inside the package."""
    from .variants import plain_name, variant_name

    try:
        record = _record_in(package)
    except (DiarizeError, OSError, ValueError, KeyError) as exc:
        return [f"{entry['name']}: cannot read its record ({exc})"]
    name, claimed = entry["name"], entry["variant"]
    if record.model != entry.get("model") or variant_of(record) != claimed:
        return [
            f"{name}: the manifest says {entry.get('model')} {claimed}, the package records "
            f"{record.model} {variant_of(record)}"
        ]
    spec = _spec_of(record)
    if spec is None:
        return []
    plain = plain_name(spec)
    expected = plain if ship.get(plain) == claimed else variant_name(spec, claimed)
    if name != expected:
        return [f"{name}: a {claimed} package should be named {expected} (manifest `ship`)"]
    return []
