"""Which variant of each model ships under its plain name (`--ship`).

FluidAudio loads plain names only (`pyannote_segmentation`, `wespeaker_v2`, `Segmentation`,
`Embedding`, ...: ModelNames.swift in FluidInference/FluidAudio v0.15.6), so whatever a bundle
holds under the plain name is what an app runs. By default that is the fp32 reference; `--ship
MODEL=VARIANT` puts another variant there (e.g. `wespeaker_v2=palettize8`), and the package it
replaces takes a suffixed name like every other variant (`wespeaker_v2_fp32.mlpackage`).

A variant's name is the quantizer's tag for the recipe recorded inside the package
(`QuantizeConfig.name`: fp16, palettize8, palettize8_fp32, palettize4g16...) or, for a package
straight from the converter, its precision (fp32): so `verify` can check what the manifest
claims against the package's own metadata (coreml_diarize/record.py).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import tree_hash
from coreml_diarize.record import PackageRecord
from coreml_diarize.specs import ModelSpec

REFERENCE = "fp32"
PACKAGE_SUFFIX = ".mlpackage"
# `--ship device`: per model, what docs/quantization.md measures as best for the Neural Engine
# ("Device-grade variants", "Recommended starting recipes"): the 8-bit look-up tables inside an
# fp16 program where the model declares that variant (`ModelSpec.device_variants`: segmentation
# and the embedding models), and the fp32 reference where it has none (FBank must stay fp32:
# fp16 underflows its power spectrum; PldaRho and the auxiliary models have no device variants)
DEVICE_PRESET = "device"
DEVICE_RECIPE = {"mode": "palettize", "nbits": 8}


def recipe_tag(recipe: Mapping) -> str:
    """The quantizer's name for a recipe (`QuantizeConfig.name`), e.g. palettize8."""
    from coreml_diarize.quantize.recipes import QuantizeConfig

    known = {f.name for f in fields(QuantizeConfig)}
    return QuantizeConfig.from_mapping({k: v for k, v in recipe.items() if k in known}).name


def variant_of(record: PackageRecord) -> str:
    """A package's variant: the quantizer's tag of its recorded recipe, else its precision."""
    if "mode" in record.recipe:  # written by quantize_package (quantize/apply.py)
        return recipe_tag(record.recipe)
    return record.precision  # the converter records {"precision": ...}


def device_variant(spec: ModelSpec) -> str:
    """The `--ship device` choice for a model (see DEVICE_RECIPE)."""
    tags = {recipe_tag(r) for r in spec.device_variants}
    return recipe_tag(DEVICE_RECIPE) if recipe_tag(DEVICE_RECIPE) in tags else REFERENCE


@dataclass(frozen=True)
class ShipChoice:
    """What `--ship` asked for: the device preset and/or MODEL=VARIANT pairs (MODEL: the plain
    name, e.g. wespeaker_v2, or the registry key, e.g. embedding); pairs override the preset."""

    device: bool = False
    models: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: Iterable[str]) -> ShipChoice:
        device, models = False, {}
        for value in values:
            if value == DEVICE_PRESET:
                device = True
                continue
            model, sep, variant = value.partition("=")
            if not sep or not model.strip() or not variant.strip():
                raise DiarizeError(
                    f"--ship takes MODEL=VARIANT (e.g. wespeaker_v2=palettize8) or "
                    f"'{DEVICE_PRESET}', got '{value}'"
                )
            models[model.strip().removesuffix(PACKAGE_SUFFIX)] = variant.strip()
        return cls(device, models)

    def describe(self) -> str:
        parts = [DEVICE_PRESET] if self.device else []
        return ", ".join(parts + [f"{m}={v}" for m, v in sorted(self.models.items())]) or "fp32"


def _spec(model: str) -> ModelSpec | None:
    from coreml_diarize.models import registry

    return registry().get(model)


def plain_name(spec: ModelSpec) -> str:
    return spec.filename + PACKAGE_SUFFIX


def variant_name(spec: ModelSpec, variant: str) -> str:
    return f"{spec.filename}_{variant}{PACKAGE_SUFFIX}"


def ship_names(entries: list[dict], choice: ShipChoice) -> tuple[dict[str, str], dict[str, str]]:
    """For manifest entries (each with `name`, `model`, `variant`): their names in the bundle
    ({old name: new name}) and what ships under each plain name ({plain name: variant})."""
    by_model: dict[str, dict[str, str]] = {}  # model -> variant -> current name
    for e in entries:
        if _spec(e["model"]) is None or not e.get("variant"):
            continue  # a model the registry does not know keeps its name
        variants = by_model.setdefault(e["model"], {})
        if e["variant"] in variants:
            raise DiarizeError(
                f"{variants[e['variant']]} and {e['name']} are both the {e['variant']} variant "
                f"of {e['model']}: bundle one of them"
            )
        variants[e["variant"]] = e["name"]
    wanted = dict(choice.models)
    known = {name for m in by_model for name in (m, _spec(m).filename)}
    unknown = sorted(set(wanted) - known)
    if unknown:
        raise DiarizeError(
            f"--ship: no {unknown[0]} model in the bundle (has: {', '.join(sorted(known))})"
        )
    names: dict[str, str] = {}
    shipped: dict[str, str] = {}
    for model, variants in sorted(by_model.items()):
        spec = _spec(model)
        asked = wanted.get(spec.filename, wanted.get(model))
        if asked is None and choice.device:
            asked = device_variant(spec)
        if asked is not None and asked not in variants:
            raise DiarizeError(
                f"--ship {spec.filename}={asked}: the bundle has no {asked} variant of "
                f"{spec.filename} (has: {', '.join(sorted(variants))})"
            )
        if asked is None:  # default: the reference, else whatever already has the plain name
            named = [v for v, n in variants.items() if n == plain_name(spec)]
            asked = REFERENCE if REFERENCE in variants else (named[0] if named else None)
        for variant, name in variants.items():
            names[name] = plain_name(spec) if variant == asked else variant_name(spec, variant)
        if asked is not None:
            shipped[plain_name(spec)] = asked
    return names, shipped


def reship(root: Path, manifest: dict, choice: ShipChoice) -> dict:
    """Rename a bundle folder's packages (and their golden and compiled folders) so that the
    chosen variants have the plain names; returns the updated manifest (not written)."""
    from .golden_files import HEADER, golden_stem

    root = Path(root)
    names, shipped = ship_names(manifest["artifacts"], choice)
    moves: list[tuple[Path, Path]] = []
    for entry in manifest["artifacts"]:
        new = names.get(entry["name"], entry["name"])
        if new == entry["name"]:
            continue
        moves.append((root / entry["name"], root / new))
        golden, compiled = entry.get("golden"), entry.get("compiled")
        if isinstance(golden, dict):
            target = f"{Path(golden['dir']).parent.as_posix()}/{golden_stem(new)}"
            moves.append((root / golden["dir"], root / target))
            golden["dir"] = target
        if isinstance(compiled, dict):
            target = new.removesuffix(PACKAGE_SUFFIX) + ".mlmodelc"
            moves.append((root / compiled["name"], root / target))
            compiled["name"] = target
        entry["name"] = new
    # two steps through hidden names (which no listing counts): a swap never collides
    staged = [(src, src.with_name(f".reship-{i}"), dst) for i, (src, dst) in enumerate(moves)]
    for src, tmp, _ in staged:
        os.replace(src, tmp)
    for _, tmp, dst in staged:
        if dst.exists():
            raise DiarizeError(f"cannot rename to {dst.name}: it exists in {root}")
        os.replace(tmp, dst)
    for entry in manifest["artifacts"]:  # each golden header names its package
        golden = entry.get("golden")
        if not isinstance(golden, dict):
            continue
        header_path = root / golden["dir"] / HEADER
        header = json.loads(header_path.read_text())
        if header.get("package") != entry["name"]:
            header["package"] = entry["name"]
            fresh = header_path.with_name(f".{HEADER}.new")  # a new file: never a hard link
            fresh.write_text(json.dumps(header, indent=2, sort_keys=True) + "\n")
            os.replace(fresh, header_path)
            golden["tree_sha256"], golden["files"] = tree_hash(root / golden["dir"])
    manifest["artifacts"].sort(key=lambda e: e["name"])
    manifest["ship"] = shipped
    return manifest


def copy_bundle(src: Path, dst: Path) -> Path:
    """A working copy of a bundle folder (hard links where the file system allows: the files
    are only renamed, never written, except golden headers, which are replaced whole)."""

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, dst, copy_function=link)
    return dst
