"""`export --layout fluidaudio`: bundles laid out as FluidAudio's offline mode reads them.

FluidAudio loads the diarizer's models from `<models dir>/speaker-diarization/` (Repo.diarizer's
folderName, ModelNames.swift:43, 141-142, 312; repoPath = directory/folderName, ModelHub.swift:
324): the plain names only (`Segmentation.mlmodelc`, ..., `pyannote_segmentation.mlmodelc`,
`wespeaker_v2.mlmodelc`, ModelNames.swift:345-382) as compiled models, plus
`plda-parameters.json` for the offline set. One folder holds both sets, as the Hub repo does.
With `ModelHub.offlineMode = true` nothing is downloaded; without it a missing or unloadable
model is replaced by FluidInference's published one (docs/fluidaudio.md).

The bundle's plain-named package is what ships (a bundle may put another variant under the plain
name); suffixed variants (`_fp16`, `_palettize8`) are never loaded by FluidAudio and are left out.
Bundles built without xcrun have no `.mlmodelc`: their `.mlpackage`s are written under the
plain names so they can be compiled in place on a Mac, and the caller is told FluidAudio will
not load them as they are.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from coreml_diarize.atomic import atomic_path
from coreml_diarize.errors import ArtifactError

from .bundle import MANIFEST, safe_extract, verify_bundle
from .fluidaudio_contract import MODEL_SETS, REPO_FOLDER, ModelSetRule
from .fluidaudio_psi import PSI_PROBES

LAYOUTS = ("fluidaudio",)


@dataclass
class ExportResult:
    directory: Path  # DIR/speaker-diarization
    profiles: list[str]
    files: list[str]  # names written into `directory`
    uncompiled: list[str] = field(default_factory=list)  # .mlpackage written for lack of .mlmodelc
    shadowing: list[str] = field(default_factory=list)  # files FluidAudio would read first


@dataclass(frozen=True)
class _Planned:
    name: str  # in DIR/speaker-diarization
    source: Path
    profile: str


def _model_set(manifest: dict, bundle: Path) -> ModelSetRule:
    """The FluidAudio set a bundle is: its manifest's profile, else the set its names form."""
    names = {a.get("name", "") for a in manifest.get("artifacts", [])}
    for model_set in MODEL_SETS:
        if manifest.get("profile") == model_set.profile or any(
            f"{m.stem}.mlpackage" in names for m in model_set.models
        ):
            return model_set
    raise ArtifactError(
        f"{bundle} holds no model FluidAudio loads (profile {manifest.get('profile')!r}; "
        "expected the online or the offline set)"
    )


def _plan_bundle(root: Path, bundle: Path) -> tuple[str, list[_Planned]]:
    problems = verify_bundle(root)
    if problems:
        raise ArtifactError(
            f"bundle {bundle} does not match its manifest ({len(problems)} problem(s), first: "
            f"{problems[0]}); nothing was exported"
        )
    manifest = json.loads((root / MANIFEST).read_text())
    model_set = _model_set(manifest, bundle)
    entries = {a["name"]: a for a in manifest["artifacts"]}
    planned, missing = [], []
    for rule in model_set.models:
        entry = entries.get(f"{rule.stem}.mlpackage")
        if entry is None:
            missing.append(f"{rule.stem}.mlpackage")
            continue
        compiled = entry.get("compiled")
        if isinstance(compiled, dict):
            planned.append(_Planned(rule.compiled, root / compiled["name"], model_set.profile))
        else:
            planned.append(_Planned(entry["name"], root / entry["name"], model_set.profile))
    for sidecar in model_set.sidecars:
        if not (root / sidecar).is_file():
            missing.append(sidecar)
        planned.append(_Planned(sidecar, root / sidecar, model_set.profile))
    if missing:
        raise ArtifactError(
            f"bundle {bundle} lacks {', '.join(missing)}: FluidAudio's {model_set.profile} set "
            "needs every one of them"
        )
    return model_set.profile, planned


def export_fluidaudio(bundles: list[Path], out_dir: Path) -> ExportResult:
    """Write `out_dir/speaker-diarization/` from one bundle per model set (dirs or zips),
    atomically: built in a temp dir beside it and renamed into place."""
    if not bundles:
        raise ArtifactError("name at least one bundle to export")
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        planned: list[_Planned] = []
        profiles: dict[str, Path] = {}
        for bundle in map(Path, bundles):
            if not bundle.exists():
                raise ArtifactError(f"bundle not found: {bundle}")
            root = bundle
            if bundle.is_file():
                tmp = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="coreml-diarize-export-")
                )
                root = safe_extract(bundle, Path(tmp))
            profile, files = _plan_bundle(root, bundle)
            if profile in profiles:
                raise ArtifactError(
                    f"{profiles[profile]} and {bundle} are both the {profile} set: give one bundle per set"
                )
            profiles[profile] = bundle
            planned += files
        target = out_dir / REPO_FOLDER
        with atomic_path(target) as tmp:
            tmp.mkdir()
            for item in planned:
                if item.source.is_dir():
                    shutil.copytree(item.source, tmp / item.name)
                else:
                    shutil.copyfile(item.source, tmp / item.name)
    # FluidAudio probes <models dir>/plda-parameters.json before speaker-diarization/'s
    shadowing = (
        [PSI_PROBES[0]] if "offline" in profiles and (out_dir / PSI_PROBES[0]).is_file() else []
    )
    return ExportResult(
        directory=target,
        profiles=list(profiles),
        files=sorted(p.name for p in planned),
        uncompiled=sorted(p.name for p in planned if p.name.endswith(".mlpackage")),
        shadowing=shadowing,
    )
