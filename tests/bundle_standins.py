"""Small real bundles for the publish / ship tests, fast: one cheap converted package (the
powerset postprocessor, no weights) copied under any model's name, with the package record in
its metadata rewritten to say which model, precision and recipe it is (the bundle, verify and
publish read only the record, the files and their hashes; what the program computes is not
under test here). Validation reports are written directly, as tests/app/test_publish.py does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from coreml_diarize.app.bundle import save_report
from coreml_diarize.app.golden_files import Golden, write_golden
from coreml_diarize.specs import Tolerance

SPEC_FILE = Path("Data") / "com.apple.CoreML" / "model.mlmodel"
PALETTIZE8 = {"mode": "palettize", "nbits": 8}
FP16 = {"mode": "fp16"}


def convert_source(out: Path) -> Path:
    """The postprocessor package (converts in about a second)."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools
    from coreml_diarize.models import get_spec

    spec = get_spec("postprocessor")
    with quiet_coremltools():
        return convert_model(spec, make_context(spec), out).path


def stand_in(
    source: Path, target: Path, model: str, *, recipe: dict | None = None, trained: bool = False
) -> Path:
    """A copy of `source` named `target` whose record says: model `model`, made by `recipe`
    (None: the fp32 conversion); validation report beside it."""
    from coremltools.proto import Model_pb2

    from coreml_diarize.record import METADATA_PREFIX

    shutil.copytree(source, target)
    spec_path = target / SPEC_FILE
    spec = Model_pb2.Model()
    spec.ParseFromString(spec_path.read_bytes())
    meta = spec.description.metadata.userDefined
    meta[METADATA_PREFIX + "model"] = model
    if recipe is None:
        meta[METADATA_PREFIX + "precision"] = "fp32"
        meta[METADATA_PREFIX + "compression"] = "none"
        meta[METADATA_PREFIX + "recipe"] = json.dumps({"precision": "fp32"})
    else:  # the complete recipe, as quantize_package records it (quantize/apply.py)
        from coreml_diarize.quantize.recipes import QuantizeConfig

        recipe = QuantizeConfig.from_mapping(recipe).to_dict()
        meta[METADATA_PREFIX + "precision"] = "fp16"
        nbits = recipe.get("nbits")
        meta[METADATA_PREFIX + "compression"] = f"{recipe['mode']}{nbits}" if nbits else "none"
        meta[METADATA_PREFIX + "recipe"] = json.dumps(recipe, sort_keys=True)
    meta[METADATA_PREFIX + "source.kind"] = "random"
    meta[METADATA_PREFIX + "source.location"] = "random-init:0"
    meta[METADATA_PREFIX + "source.trained"] = "true" if trained else "false"
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    save_report(target, {"passed": True, "backend": "mil", "recipe": "x", "cases": []})
    return target


def golden_for(package: Path, golden_root: Path, fill: float) -> Path:
    """A tiny golden case for `package` (values `fill`, so each package's is recognisable)."""
    case = Golden(
        package=package.name,
        model="stand-in",
        recipe="x",
        compute_units="cpu_only",
        trained=False,
        inputs={"x": np.full((1, 4), fill, np.float32)},
        outputs={"y": np.full((1, 4), fill, np.float32)},
        tolerances={"y": Tolerance(max_abs=1e-3)},
    )
    write_golden(golden_root / package.name.removesuffix(".mlpackage"), case)
    return golden_root


def profile_packages(source: Path, out: Path, profile: str, variants=True) -> list[Path]:
    """Stand-ins for every model of a profile under its contract name, the device variants
    the registry declares, and the sidecars beside them."""
    from coreml_diarize.app.build import profile_specs
    from coreml_diarize.app.variants import recipe_tag

    out.mkdir(parents=True, exist_ok=True)
    packages = []
    for spec in profile_specs(profile):
        packages.append(stand_in(source, out / f"{spec.filename}.mlpackage", spec.key))
        for recipe in spec.device_variants if variants else ():
            name = f"{spec.filename}_{recipe_tag(recipe)}.mlpackage"
            packages.append(stand_in(source, out / name, spec.key, recipe=dict(recipe)))
        for sidecar in spec.sidecars:
            (out / sidecar).write_text(json.dumps({"stand_in": sidecar}) + "\n")
    return packages
