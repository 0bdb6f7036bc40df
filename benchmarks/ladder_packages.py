"""The packages of the quantization ladder (bench_quantize_ladder.py): the fp32 folders both
chains read, each row's variant of the judged model, and the static figures of a package
(size, bits per weight, `inspect --ane`'s prediction)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from ladder_judges import const_values, weight_name

REPO = Path(__file__).resolve().parent.parent
FIXTURES = {
    "segmentation": REPO / "tests" / "fixtures" / "segmentation-synthetic",
    "embedding": REPO / "tests" / "fixtures" / "embedding-synthetic",
}
UNIFORM = {
    "fp32": None,
    "fp16": {"mode": "fp16"},
    "palettize8": {"mode": "palettize", "nbits": 8},
    "palettize6": {"mode": "palettize", "nbits": 6},
    "palettize4": {"mode": "palettize", "nbits": 4},
}
DEFAULT_TARGET = "iOS17"  # convert's default


@dataclass(frozen=True)
class Judged:
    """The model whose variants a ladder compares: its online and offline registry keys."""

    online: str
    offline: str
    family: str


MODELS = {
    "wespeaker_v2": Judged("embedding", "offline-embedding", "embedding"),
    "pyannote_segmentation": Judged("segmentation", "offline-segmentation", "segmentation"),
}


def fp32_dir(
    cache: Path,
    front_end: str = "dense",
    target: str = DEFAULT_TARGET,
    judged: Judged | None = None,
) -> Path:
    """Every package of both chains, fp32, converted from the trained fixtures (PLDA seeded):
    `cache/fp32`. Otherwise (`front_end` other than dense, `target` other than iOS17):
    `cache/fp32[_<front_end>][_<target>]`, the dense iOS17 folder's packages linked, and
    converted anew: wespeaker_v2 with `Options(fbank_front_end=front_end)`, the `judged`
    model's online and offline packages at `minimum_deployment_target=target`."""
    dense = cache / "fp32"
    if front_end == "dense" and target == DEFAULT_TARGET:
        if not (dense / "PldaRho.mlpackage").is_dir():
            _convert_all(dense)
        return dense
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import registry
    from coreml_diarize.specs import Options

    keys = {"embedding": "embedding"} if front_end != "dense" else {}
    if target != DEFAULT_TARGET:
        if judged is None:
            raise ValueError("another target converts the judged model: give `judged`")
        keys.update({judged.online: judged.family, judged.offline: judged.family})
    name = "fp32" + (f"_{front_end}" if front_end != "dense" else "")
    out = cache / (name + (f"_{target.lower()}" if target != DEFAULT_TARGET else ""))
    specs = {key: registry()[key] for key in keys}
    if all((out / f"{s.filename}.mlpackage").is_dir() for s in specs.values()):
        return out
    fp32_dir(cache)
    out.mkdir(parents=True, exist_ok=True)
    own = {f"{s.filename}.mlpackage" for s in specs.values()}
    for item in dense.iterdir():
        if item.name not in own and not (out / item.name).exists():
            (out / item.name).symlink_to(item.resolve())
    for key, spec in specs.items():
        options = Options(
            fbank_front_end=front_end if key == "embedding" else "dense",
            minimum_deployment_target=target,
        )
        ctx = make_context(spec, source=str(FIXTURES[keys[key]]), options=options)
        convert_model(spec, ctx, out)
    return out


def _convert_all(out: Path) -> None:
    command = [
        str(REPO / ".venv" / "bin" / "coreml-diarize"),
        "convert",
        "all",
        "--source",
        "random:0",
        "--segmentation-source",
        str(FIXTURES["segmentation"]),
        "--embedding-source",
        str(FIXTURES["embedding"]),
        "--plda-source",
        "random:0",
        "--out",
        str(out),
    ]
    subprocess.run(command, check=True)


def mixed_config(recipe: dict[str, Any], names: dict[str, str] | None = None):
    """A mixed recipe file as a QuantizeConfig, its `bits` renamed for another package of the
    same weights (`names`: online const name -> this package's)."""
    from coreml_diarize.quantize import QuantizeConfig

    data = {k: v for k, v in recipe.items() if k not in ("schema", "model", "search")}
    if names is not None:
        data["bits"] = {names[k]: v for k, v in recipe["bits"].items() if k in names}
    return QuantizeConfig.from_mapping(data)


def same_weight_names(a: Path, b: Path) -> dict[str, str]:
    """Const name in package `a` -> the name of the identical constant in package `b` (the online
    and offline packages of one network number their consts differently)."""

    def digest(v: np.ndarray) -> str:
        return hashlib.sha256(np.ascontiguousarray(v, dtype=np.float32).tobytes()).hexdigest()

    by_digest = {digest(v): k for k, v in const_values(b).items()}
    return {k: by_digest[digest(v)] for k, v in const_values(a).items() if digest(v) in by_digest}


def build_row(src: Path, row: str, setting: Any, cache: Path) -> Path:
    """The row's variant of the fp32 package `src` (cached)."""
    from coreml_diarize.quantize import QuantizeConfig, quantize_package

    if setting is None:
        return src
    config = setting if isinstance(setting, QuantizeConfig) else QuantizeConfig(**setting)
    # keyed by the settings too: a recipe file changed under the same name is a new package
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()
    dst = cache / "variants" / src.parent.name / f"{src.stem}_{row}_{digest[:12]}.mlpackage"
    if dst.is_dir():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    quantize_package(src, dst, config)
    return dst


def bits_per_weight(variant: Path, fp32: Path, spec) -> dict[str, float]:
    """Mean stored bits per element over the palettizable weights (consts of > 2048 elements
    not in the spec's `uncompressed`), and over every weight of that size. Index bits only:
    the look-up tables' bytes are in the package size, not here."""
    from coreml_diarize.mlpackage import load_program

    keep = set(spec.uncompressed_consts())
    sizes = {k: v.size for k, v in const_values(fp32).items()}
    bits: dict[str, float] = {}
    for op in load_program(variant).functions["main"].operations:
        name = weight_name(op)
        if name not in sizes or op.op_type not in ("const", "constexpr_lut_to_dense"):
            continue
        if op.op_type == "const":
            bits[name] = 8 * op.outputs[0].val.dtype.itemsize
        elif op.op_type == "constexpr_lut_to_dense":
            lut = op.lut.val
            bits[name] = float(np.log2(lut.shape[-2] if lut.ndim > 1 else lut.shape[0]))
        else:  # other compression ops: leave the row without a figure rather than guess
            bits[name] = float("nan")
    palettizable = [k for k in sizes if k not in keep]

    def mean(names: list[str]) -> float:
        return sum(bits[k] * sizes[k] for k in names) / sum(sizes[k] for k in names)

    return {
        "bits_per_weight": mean(palettizable),
        "bits_per_weight_all": mean(list(sizes)),
        "palettizable_elements": int(sum(sizes[k] for k in palettizable)),
        "widths": {
            str(b): int(sum(sizes[k] for k in palettizable if bits[k] == b))
            for b in set(bits[k] for k in palettizable)
        },
    }


def ane_figures(path: Path) -> dict[str, Any]:
    from coreml_diarize.validation.ane import ane_report

    report = ane_report(path)
    return {
        "ops": report.op_count,
        "eligible_ops": report.eligible_count,
        "eligible_op_share": report.eligible_share,
        "eligible_flop_share": report.eligible_flop_share,
        "switches": report.switches,
    }


def package_bytes(path: Path) -> int:
    from coreml_diarize.mlpackage import package_size

    return package_size(path)
