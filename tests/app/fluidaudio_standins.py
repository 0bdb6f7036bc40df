"""Cheap bundles for the FluidAudio tests: the registry's own declarations (names, shapes,
flexible batch, metadata, sidecars) converted with a tiny stand-in network instead of the real
weights, so a whole online + offline set converts in seconds. What FluidAudio's loader checks
is the I/O declaration, which these packages get from the same converter as the real ones.

`compiled_stand_in` writes what `xcrun coremlcompiler` leaves for an ML program (coremldata.bin,
metadata.json, model.mil), with the I/O description taken from the package's spec through
coremltools' protobuf: Xcode's metadata.json field names as seen in compiled models
(inputSchema / outputSchema, dataType "Float32", shape "[1, 1, 160000]", hasShapeFlexibility,
shapeFlexibility "1...32 × 1 × 160000" / "a × b | c × d").
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import torch

ONLINE_KEYS = ("segmentation", "embedding")
OFFLINE_KEYS = ("offline-segmentation", "fbank", "offline-embedding", "plda-rho")
FAKE_XCRUN = """#!/bin/sh
[ "$1" = --find ] && [ "$2" = coremlcompiler ] && { echo /fake/coremlcompiler; exit 0; }
[ "$1" = coremlcompiler ] && [ "$2" = compile ] || exit 64
cp -R "$FAKE_COMPILED/$(basename "$3" .mlpackage).mlmodelc" "$4/"
"""


class StandIn(torch.nn.Module):
    """Each output: the first input's leading values, reshaped; every other input is used too
    (so the converter keeps it)."""

    def __init__(self, output_shapes: list[tuple[int, ...]]) -> None:
        super().__init__()
        self.output_shapes = output_shapes

    def forward(self, *inputs: torch.Tensor):
        first = inputs[0].flatten(1)
        extra = sum(x.mean() for x in inputs[1:]) if len(inputs) > 1 else 0.0
        outs = [
            first[:, : math.prod(shape)].reshape((-1, *shape)) + extra
            for shape in self.output_shapes
        ]
        return outs[0] if len(outs) == 1 else tuple(outs)


def convert_stand_ins(keys, out_dir: Path) -> list[Path]:
    """The registry's models `keys`, converted with stand-in networks, each with a passing
    validation report beside it (validation is not what these tests are about)."""
    from coreml_diarize.app.bundle import save_report
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.mlpackage import quiet_coremltools
    from coreml_diarize.models import get_spec
    from coreml_diarize.sources import default_geometry, load_weights
    from coreml_diarize.specs import BuildContext, Options
    from coreml_diarize.wrappers.plda import plda_parameters_file

    ctx = BuildContext(default_geometry(), Options(), None)  # no weights: stand-ins
    packages = []
    for key in keys:
        spec = get_spec(key)
        sidecars = spec.sidecars
        if key == "plda-rho":  # the real plda-parameters.json, from a seeded PLDA
            plda = load_weights("plda", "random:0").model
            sidecars = {name: (lambda ctx, p=plda: plda_parameters_file(p)) for name in sidecars}
        shapes = [ctx.geometry.resolve(t.shape)[1:] for t in spec.outputs]
        stand_in = dataclasses.replace(
            spec, weights=None, build_wrapper=lambda ctx, s=shapes: StandIn(s), sidecars=sidecars
        )
        with quiet_coremltools():
            package = convert_model(stand_in, ctx, out_dir).path
        save_report(package, {"passed": True, "backend": "mil", "recipe": "fp32", "cases": []})
        packages.append(package)
    return packages


_DTYPES = {65568: "Float32", 65552: "Float16", 65600: "Double", 131104: "Int32"}


def _schema(feature) -> dict:
    arr = feature.type.multiArrayType
    shape = list(arr.shape)
    entry = {
        "name": feature.name,
        "type": "MultiArray",
        "isOptional": "0",
        "dataType": _DTYPES[arr.dataType],
        "shape": json.dumps(shape).replace(",", ", ").replace(",  ", ", "),
        "hasShapeFlexibility": "0",
    }
    which = arr.WhichOneof("ShapeFlexibility")
    if which == "shapeRange":
        axes = [
            str(r.lowerBound)
            if r.lowerBound == r.upperBound
            else f"{r.lowerBound}...{r.upperBound}"
            for r in arr.shapeRange.sizeRanges
        ]
        entry.update(hasShapeFlexibility="1", shapeFlexibility=" × ".join(axes))
    elif which == "enumeratedShapes":
        alternatives = [" × ".join(map(str, s.shape)) for s in arr.enumeratedShapes.shapes]
        entry.update(hasShapeFlexibility="1", shapeFlexibility=" | ".join(alternatives))
    return entry


def compiled_stand_in(package: Path, out_dir: Path) -> Path:
    """`out_dir/<stem>.mlmodelc` as coremlcompiler would leave it (see the module docstring)."""
    from coreml_diarize.mlpackage import load_mlmodel

    spec = load_mlmodel(package).get_spec()
    target = Path(out_dir) / (package.name.removesuffix(".mlpackage") + ".mlmodelc")
    (target / "weights").mkdir(parents=True)
    (target / "coremldata.bin").write_bytes(spec.description.SerializeToString())
    weights = package / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    if weights.is_file():  # a stand-in may have no weights at all
        shutil.copyfile(weights, target / "weights" / "weight.bin")
    metadata = [
        {
            "metadataOutputVersion": "3.0",
            "inputSchema": [_schema(f) for f in spec.description.input],
            "outputSchema": [_schema(f) for f in spec.description.output],
            "modelType": {"name": "MLModelType_mlProgram"},
        }
    ]
    (target / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return target


def make_bundles(root: Path, monkeypatch, *, compiled: bool) -> dict[str, Path]:
    """An online and an offline bundle of stand-ins, with `.mlmodelc` when `compiled` (through
    a fake `xcrun` on PATH that copies pre-made compiled models), else without."""
    import os

    from coreml_diarize.app.bundle import make_bundle

    bundles = {}
    fake = root / "fake-compiled"
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    if compiled:
        xcrun = bin_dir / "xcrun"
        xcrun.write_text(FAKE_XCRUN)
        xcrun.chmod(0o755)
    monkeypatch.setenv("PATH", os.pathsep.join([str(bin_dir), "/bin", "/usr/bin"]))
    monkeypatch.setenv("FAKE_COMPILED", str(fake))
    for profile, keys in (("online", ONLINE_KEYS), ("offline", OFFLINE_KEYS)):
        packages = convert_stand_ins(keys, root / f"{profile}-packages")
        if compiled:
            for package in packages:
                compiled_stand_in(package, fake)
        result = make_bundle(
            packages,
            root / "dist",
            name=f"{profile}-bundle",
            allow_untrained=True,
            compile_models=compiled,
            notify=lambda message: None,
        )
        bundles[profile] = result.directory
    return bundles


def uncompiled_copy(bundle: Path, dest: Path) -> Path:
    """A copy of a compiled bundle as a machine without xcrun builds it: no .mlmodelc, and the
    manifest says so."""
    from coreml_diarize.app.compile import NOT_COMPILED

    target = Path(dest) / bundle.name
    shutil.copytree(bundle, target, ignore=shutil.ignore_patterns("*.mlmodelc"))
    manifest = json.loads((target / "manifest.json").read_text())
    for entry in manifest["artifacts"]:
        entry["compiled"] = NOT_COMPILED
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return target


def edit_spec(package: Path, change) -> None:
    """Rewrite a saved package's model description in place with coremltools' protobuf."""
    from coremltools.proto import Model_pb2

    path = Path(package) / "Data" / "com.apple.CoreML" / "model.mlmodel"
    spec = Model_pb2.Model()
    spec.ParseFromString(path.read_bytes())
    change(spec.description)
    path.write_bytes(spec.SerializeToString())
