"""The model card (`README.md`) and commit text of a published repo, from its manifests.

One repo can hold several profiles (FluidAudio's `Repo.diarizer` holds the online and the
offline set): the card describes every profile's manifest on the repo after the commit, each
package's variant and which variant each plain name is (`ship`, app/variants.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

from coreml_diarize.errors import DiarizeError

from .bundle_files import MANIFESTS_DIR

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


class RepoFile(Protocol):
    """A file of the commit, as the card sees it (publish.PlannedFile)."""

    path_in_repo: str
    kind: str
    size: int
    sha256: str


def is_untrained(manifest: dict) -> bool:
    weights = [a["source"] for a in manifest["artifacts"] if a["source"].get("kind") != "none"]
    return manifest.get("trained") is False or any(s.get("trained") != "true" for s in weights)


def manifest_path_in_repo(profile: str) -> str:
    """Where a profile's manifest lives on the repo: one per profile, so publishing one set
    never overwrites another's (`manifests/online.json`, `manifests/offline.json`)."""
    return f"{MANIFESTS_DIR}/{profile}.json"


def combined(manifests: Mapping[str, dict]) -> dict:
    """The repo's profiles as one manifest-shaped view for the card's tables."""
    ordered = [manifests[p] for p in sorted(manifests)]
    first = ordered[0]
    return {
        "toolkit": first.get("toolkit") or {},
        "versions": first.get("versions") or {},
        "trained": all(m.get("trained") is not False for m in ordered),
        "artifacts": sorted((a for m in ordered for a in m["artifacts"]), key=lambda a: a["name"]),
        "ship": {k: v for m in ordered for k, v in (m.get("ship") or {}).items()},
    }


def license_of(package: Path | None, entry: dict) -> str:
    """The licence note a package carries (its Core ML `license` field, written from the model
    declaration); a manifest that records it wins, the declaration is the last resort (also
    for another profile's package, which is on the repo but not here: `package` None)."""
    if entry.get("license"):
        return str(entry["license"])
    try:
        if package is None:
            raise DiarizeError("not here")
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


def hub_license(note: str) -> str:
    """'CC-BY-4.0 (pyannote/wespeaker-...)' -> 'cc-by-4.0'; unknown notes -> 'other'."""
    head = note.split("(")[0].strip().lower()
    return HUB_LICENSES.get(head, "other")


def compute_units_for(entry: dict) -> str:
    """What a package is meant to run on: as the manifest records it (`compute_units`), else,
    for bundles from before that field, from its precision with the same rule: fp16 programs
    (palettized ones included) for the Neural Engine, fp32 ones as the CPU reference."""
    if entry.get("compute_units"):
        return str(entry["compute_units"])
    return "cpu_and_ne" if str(entry.get("precision") or "fp32").startswith("fp16") else "cpu_only"


def _front_matter(manifest: dict, licenses: dict[str, str]) -> dict:
    hub = sorted({hub_license(n) for n in licenses.values()})
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
    manifests: Mapping[str, dict],
    *,
    files: Sequence[RepoFile],
    licenses: dict[str, str],
    repo_id: str | None = None,
) -> str:
    """The repo's README.md: Hub metadata (YAML front matter) + what a user needs to trust it.

    `manifests`: profile -> manifest, every profile the repo holds after the commit; `files`:
    this commit's files (their sizes)."""
    manifest = combined(manifests)
    toolkit = manifest.get("toolkit") or {}
    version = toolkit.get("version") or "unknown"
    revision = toolkit.get("git_revision") or "unknown"
    front = yaml.safe_dump(
        _front_matter(manifest, licenses), sort_keys=False, allow_unicode=True, width=1000
    )
    out = ["---", front.rstrip("\n"), "---", ""]
    out += _card_intro(manifest, version, revision)
    out += _card_sets(manifests)
    out += _card_files(manifest, files)
    out += _card_validation(manifest)
    out += _card_provenance(manifest, version, revision)
    out += _card_licenses(licenses)
    out += _card_verify(manifests, files, repo_id or "OWNER/NAME")
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


def _card_sets(manifests: Mapping[str, dict]) -> list[str]:
    """Which profiles the repo holds and which variant each plain name (what FluidAudio
    loads) is."""
    out = [
        "## Model sets",
        "",
        "| set | manifest | plain name (what FluidAudio loads) | variant under that name |",
        "|---|---|---|---|",
    ]
    for profile, manifest in sorted(manifests.items()):
        ship = manifest.get("ship") or {}
        for name, variant in sorted(ship.items()):
            out.append(f"| {profile} | `{manifest_path_in_repo(profile)}` | `{name}` | {variant} |")
        sidecars = {name for a in manifest["artifacts"] for name in a.get("sidecars") or {}}
        for sidecar in sorted(sidecars):
            out.append(f"| {profile} | `{manifest_path_in_repo(profile)}` | `{sidecar}` | — |")
    out += [
        "",
        "Under each plain name ships the variant named above (`coreml-diarize build|package|"
        "publish --ship MODEL=VARIANT` chooses; the default is the fp32 reference); every other "
        "variant keeps a `_<variant>` suffix. `coreml-diarize verify` checks each name against "
        "the recipe and precision recorded inside the package.",
        "",
    ]
    return out


def _card_files(manifest: dict, files: Sequence[RepoFile]) -> list[str]:
    out: list[str] = []
    sizes_by_top: dict[str, int] = {}
    for f in files:
        top = f.path_in_repo.split("/")[0]
        sizes_by_top[top] = sizes_by_top.get(top, 0) + f.size
    out += [
        "## Files",
        "",
        "| file | size | variant | precision | compression | compute units | tree SHA-256 |",
        "|---|---|---|---|---|---|---|",
    ]
    ship = manifest.get("ship") or {}
    compiled_rows = []
    for a in manifest["artifacts"]:
        variant = a.get("variant") or "—"
        if ship.get(a["name"]) == a.get("variant"):
            variant += " (plain name)"
        out.append(
            f"| `{a['name']}` | {_mb(a['size_bytes'])} | {variant} | {a.get('precision') or '—'} "
            f"| {a.get('compression') or 'none'} | {compute_units_for(a)} "
            f"| `{a['tree_sha256'][:16]}…` |"
        )
        if isinstance(a.get("compiled"), dict):
            name = a["compiled"]["name"]
            size = _mb(sizes_by_top[name]) if name in sizes_by_top else "—"
            compiled_rows.append(
                f"| `{name}` | {size} | compiled `{a['name']}` | — | — | {compute_units_for(a)} "
                f"| `{a['compiled']['tree_sha256'][:16]}…` |"
            )
    out += compiled_rows
    golden = sum(len(a["golden"]["files"]) for a in manifest["artifacts"] if a.get("golden"))
    out += [""]
    if golden:
        out += [
            f"`{GOLDEN_DIR}/` ({golden} files): reference inputs and outputs per package, for "
            "checking a runtime against the converter.",
            "",
        ]
    out += [
        "Names follow the coreml-diarize contract: `<model>.mlpackage` for the variant shipped "
        "under the plain name, `<model>_<variant>.mlpackage` for the others (e.g. "
        "`wespeaker_v2_palettize8.mlpackage`), compiled `.mlmodelc` beside their package. "
        f"The shapes of every input and output are in `{MANIFESTS_DIR}/<set>.json`.",
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
    fp32 = [a["name"] for a in manifest["artifacts"] if compute_units_for(a) == "cpu_only"]
    if fp32:
        out += [
            "",
            "**On the GPU.** The fp32 packages here "
            + ", ".join(f"`{name}`" for name in fp32)
            + " were validated with fp32 accumulation. Under emulated fp16 accumulation (the "
            "pessimistic case of `MLModelConfiguration.allowLowPrecisionAccumulationOnGPU = "
            "true`, which FluidAudio sets for every model) the offline Segmentation, FBank, PldaRho "
            "and the post-embedding's distances exceed their validated bounds; the fp16 and "
            "8-bit variants and the embeddings stay within theirs (coreml-diarize's "
            "docs/validation.md). Run fp32 packages with that "
            "flag off, or load them with `.cpuAndNeuralEngine` / `.cpuOnly`.",
        ]
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


def _card_verify(manifests: Mapping[str, dict], files: Sequence[RepoFile], repo: str) -> list[str]:
    shas = {f.path_in_repo: f.sha256 for f in files}
    out = [
        "",
        "## Verify",
        "",
        "A download of this repository is a coreml-diarize bundle: each "
        f"`{MANIFESTS_DIR}/<set>.json` lists the SHA-256 of every file of its packages "
        "(sidecars, golden and compiled files included) and one tree hash per package.",
        "",
        "```bash",
        f"hf download {repo} --local-dir coreml-diarize-bundle",
        "# with the coreml-diarize toolkit installed:",
        "coreml-diarize verify coreml-diarize-bundle",
        "```",
        "",
    ]
    for profile in sorted(manifests):
        path = manifest_path_in_repo(profile)
        if path in shas:
            out += [f"`{path}` itself: SHA-256 `{shas[path]}`.", ""]
    out += [
        "Without the toolkit, `sha256sum <package>/<file>` must match that file's entry under "
        "the package's `\"files\"` in its set's manifest.",
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
        url = LICENSE_URLS.get(hub_license(note))
        lines.append(f"- `{name}`: {note}" + (f" — {url}" if url else ""))
    return "\n".join(lines) + "\n"


def commit_text(manifest: dict) -> tuple[str, str]:
    toolkit = manifest.get("toolkit") or {}
    version = toolkit.get("version") or "unknown"
    revision = toolkit.get("git_revision") or "unknown"
    n = len(manifest["artifacts"])
    profile = f"{manifest['profile']} set, " if manifest.get("profile") else ""
    message = f"coreml-diarize {version} (git {revision}): {profile}{n} Core ML package(s)"
    if is_untrained(manifest):
        message += ", UNTRAINED weights"
    description = "\n".join(
        f"- {a['name']}  tree sha256 {a['tree_sha256']}" for a in manifest["artifacts"]
    )
    return message, description
