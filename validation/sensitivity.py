"""Per-layer sensitivity to palettization: each weight alone at each width, damage measured.

For every weighted layer (a float const with more than `weight_threshold` elements that the
model spec does not keep uncompressed) and every candidate width, the layer alone is
palettized and the program is run on calibration audio; the damage against the fp32
package's outputs is the table's loss. The table (`quantize/sensitivity_table.py`
`SensitivityTable`, the format agreed for issue #24) is what the mixed-bit recipe search sums.

Faithful to the shipped variants: the program run is the fp16 program `quantize_package`
makes (`QuantizeConfig(mode="fp16")`), and the palettized weight is what its fp16 look-up
table decompresses to: `lut, indices = kmeans_lut(w16, nbits, seed=0)`, `lut[indices]`
(coremltools' `palettize_weights` with that `lut_function`, per tensor or per group of
output channels: `_quantization_passes.palettize_weights.grouped_channelwise_compress`).
Names in the table are the fp32 package's const names (what `QuantizeConfig.exclude` takes);
the fp16 program calls the same tensor `<name>_to_fp16` (coremltools' fp16 cast pass).

Cost: a weight changes only the ops downstream of it, so each calibration item is run once
in full (keeping the values that cross into each layer's downstream part), and each
(layer, width) runs only its downstream ops, as a sub-program through the reference
executor (`MILExecutor`, public API). That is bitwise what a full run gives (same ops on the
same values); tests/validation/test_sensitivity.py checks it against a package that
`quantize_package` palettized for that one layer.
"""

from __future__ import annotations

import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import check_package, tree_hash
from coreml_diarize.quantize import QuantizeConfig, quantize_package
from coreml_diarize.quantize.recipes import DEFAULT_WEIGHT_THRESHOLD
from coreml_diarize.quantize.sensitivity_table import (
    LayerSensitivity,
    SensitivityTable,
    check_settings,
)

from . import metrics
from .mil.executor import MILExecutor
from .mil.loader import MILProgram, Node, read_mil_program
from .sensitivity_calibration import (  # noqa: F401  (re-exported: one import for callers)
    Calibration,
    CalibrationChunk,
    calibration_from_files,
    chunks_of_recording,
    read_rttm_speakers,
    sample_calibration,
)
from .sensitivity_runner import DownstreamRunner, output_channel_axis, palettized  # noqa: F401

DEFAULT_WIDTHS = (8, 6, 4, 2)
FP16_SUFFIX = "_to_fp16"  # coremltools' cast pass names the fp16 copy of a const so


# --- damage -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Damage:
    """How a model's outputs are scored against the fp32 references: the additive loss the
    search sums (named `metric`) and the other metrics."""

    metric: str
    score: Callable[[list[np.ndarray], list[np.ndarray]], tuple[float, dict[str, float]]]


def embedding_damage(refs: list[np.ndarray], outs: list[np.ndarray]) -> tuple[float, dict]:
    """Mean and worst (1 - cosine) over every embedding row."""
    d = 1.0 - np.concatenate([metrics.row_cosines(r, o) for r, o in zip(refs, outs, strict=True)])
    return float(d.mean()), {"worst_1-cosine": float(d.max())}


def segmentation_damage(margin: float) -> Callable:
    def score(refs: list[np.ndarray], outs: list[np.ndarray]) -> tuple[float, dict]:
        """error/spread as the judge computes it (mean |error| / the references' spread
        across chunks), mean over chunks; decisive argmax disagreement pooled and worst."""
        spread = metrics.spread(refs)
        rel = [
            metrics.relative(metrics.mean_abs(r, o), spread)
            for r, o in zip(refs, outs, strict=True)
        ]
        disagree = [
            1.0 - metrics.argmax_agreement(r, o, min_margin=margin)
            for r, o in zip(refs, outs, strict=True)
        ]
        pooled = 1.0 - metrics.argmax_agreement(
            metrics.pooled(refs), metrics.pooled(outs), min_margin=margin
        )
        return float(np.mean(rel)), {
            "worst_chunk_error/spread": float(np.max(rel)),
            f"1-decisive_agreement@{margin:g}nat": float(pooled),
            f"worst_chunk_1-decisive_agreement@{margin:g}nat": float(np.max(disagree)),
        }

    return score


# --- the measurement --------------------------------------------------------------------------


@dataclass(frozen=True)
class _ModelPlan:
    key: str
    output: str
    damage: Damage
    inputs: Callable[[MILProgram, Calibration], list[dict[str, np.ndarray]]]


def _plan(spec) -> _ModelPlan:
    if spec.key in ("segmentation", "offline-segmentation"):
        margin = spec.tolerance_for("palettize")["segments"].argmax_margin or 0.0
        return _ModelPlan(
            spec.key,
            "segments",
            Damage("error/spread", segmentation_damage(margin)),
            lambda p, c: c.segmentation_inputs(_input_shape(p, "audio")),
        )
    if spec.key in ("embedding",):
        return _ModelPlan(
            spec.key,
            "embedding",
            Damage("1-cosine", embedding_damage),
            lambda p, c: c.embedding_inputs(_input_shape(p, "waveform"), _input_shape(p, "mask")),
        )
    raise DiarizeError(
        f"sensitivity is measured for the segmentation and embedding models, not {spec.key}"
    )


def _input_shape(program: MILProgram, name: str) -> tuple[int, ...]:
    shape = dict(program.inputs)[name].shape
    if shape is None or any(d is None for d in shape):
        raise DiarizeError(f"{program.path.name}: input {name} has no fixed shape")
    return tuple(int(d) for d in shape)


def weighted_layers(
    program: MILProgram, spec, weight_threshold: int = DEFAULT_WEIGHT_THRESHOLD
) -> list[tuple[str, tuple[int, ...]]]:
    """(const name, shape) of every weight the quantizer would palettize: float consts with
    more than `weight_threshold` elements (`summarize_program`'s weights, the palettizer's
    `weight_threshold`), not in the spec's `uncompressed` list."""
    keep = set(spec.uncompressed_consts())
    found = []
    for node in program.main.nodes:
        val = node.attributes.get("val") if node.op_type == "const" else None
        if (
            isinstance(val, np.ndarray)
            and val.dtype.kind == "f"
            and val.size > weight_threshold
            and node.name not in keep
        ):
            found.append((node.name, tuple(val.shape)))
    return found  # program order: depth, for the plot


def _source_spec(package: Path):
    from coreml_diarize.models import registry
    from coreml_diarize.record import PackageRecord

    record = PackageRecord.from_package(package)
    if record.precision != "fp32" or record.compression not in ("", "none"):
        raise DiarizeError(
            f"{package.name} is a {record.variant} package: measure sensitivity on the fp32 one"
        )
    spec = registry().get(record.model)
    if spec is None:
        raise DiarizeError(f"{package.name}: unknown model {record.model!r}")
    return spec


def measure_sensitivity(
    package_fp32: Path,
    *,
    widths: Sequence[int] = DEFAULT_WIDTHS,
    granularity: str = "per_tensor",
    group_size: int | None = None,
    calibration: Calibration | None = None,
    layers: Sequence[str] | None = None,
    fp16_package: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> SensitivityTable:
    """Palettize each weighted layer of `package_fp32` alone at each of `widths` and measure
    the damage on `calibration` (default: pyannote's sample) against the fp32 package.

    `layers` restricts the measurement to those const names (tests, quick looks);
    `fp16_package`: the `quantize --mode fp16` package of `package_fp32`, if already made
    (its recorded source hash must be `package_fp32`'s)."""
    start = time.perf_counter()
    package_fp32 = check_package(Path(package_fp32))
    widths = check_settings(list(dict.fromkeys(int(w) for w in widths)), granularity, group_size)
    spec = _source_spec(package_fp32)
    plan = _plan(spec)
    calibration = calibration or sample_calibration()
    program32 = read_mil_program(package_fp32)
    candidates = weighted_layers(program32, spec)
    if layers is not None:
        unknown = sorted(set(layers) - {n for n, _ in candidates})
        if unknown:
            raise DiarizeError(f"{package_fp32.name}: no weighted layer {', '.join(unknown)}")
        candidates = [(n, s) for n, s in candidates if n in set(layers)]
    say = progress or (lambda _msg: None)

    source_hash = tree_hash(package_fp32)[0]
    if fp16_package is not None:
        program16 = read_mil_program(_check_fp16_of(Path(fp16_package), source_hash))
    else:
        with tempfile.TemporaryDirectory(prefix="sensitivity-") as tmp:
            fp16 = quantize_package(package_fp32, Path(tmp), QuantizeConfig(mode="fp16")).dst
            program16 = read_mil_program(fp16)
    fp16_names = _fp16_names(program32, program16, [n for n, _ in candidates])
    skipped = {}
    if group_size is not None:
        for name, shape in candidates:
            axis = output_channel_axis(program16, fp16_names[name])
            if axis is None or shape[axis] % group_size:
                # coremltools leaves such a weight uncompressed (palettize_weights.transform_op:
                # block_sizes None / grouped_channelwise_compress returns None)
                skipped[name] = (
                    "no output-channel axis"
                    if axis is None
                    else (f"{shape[axis]} channels not divisible by {group_size}")
                )
        candidates = [(n, s) for n, s in candidates if n not in skipped]
    inputs = plan.inputs(program16, calibration)
    say(f"{len(candidates)} layers x {len(widths)} widths on {len(inputs)} calls")

    variants = {}  # (fp32 name, width) -> dequantized fp16 weight
    for name, _ in candidates:
        w16 = _value_of(program16, fp16_names[name])
        axis = output_channel_axis(program16, fp16_names[name]) if group_size else 0
        for width in widths:
            variants[name, width] = palettized(
                w16, width, granularity=granularity, group_size=group_size, axis=axis
            ).astype(w16.dtype)
    say(f"k-means done ({time.perf_counter() - start:.0f} s)")

    runner = DownstreamRunner(program16, [fp16_names[n] for n, _ in candidates])
    executor32 = MILExecutor(program32)
    refs, base = [], []
    outs: dict[tuple[str, int], list[np.ndarray]] = {key: [] for key in variants}
    for i, item in enumerate(inputs):
        refs.append(executor32.predict(item)[plan.output])
        baseline, recorded = runner.record(item)
        base.append(baseline[plan.output])
        for (name, width), value in variants.items():
            outs[name, width].append(runner.run(fp16_names[name], value, recorded)[plan.output])
        say(f"calibration call {i + 1}/{len(inputs)} ({time.perf_counter() - start:.0f} s)")

    baseline_loss, baseline_metrics = plan.damage.score(refs, base)
    table_layers = []
    for name, shape in candidates:
        losses, per_width = {}, {}
        for width in widths:
            loss, extra = plan.damage.score(refs, outs[name, width])
            losses[width] = max(0.0, loss - baseline_loss) if math.isfinite(loss) else loss
            per_width[width] = {f"{plan.damage.metric}_raw": loss, **extra}
        table_layers.append(
            LayerSensitivity(name, int(np.prod(shape)), tuple(shape), losses, per_width)
        )
    return SensitivityTable(
        model=spec.key,
        package=package_fp32.name,
        package_tree_sha256=source_hash,
        granularity=granularity,
        group_size=group_size,
        metric=plan.damage.metric,
        baseline_loss=baseline_loss,
        baseline_metrics=baseline_metrics,
        skipped=skipped,
        calibration={
            "description": calibration.description,
            "items": len(refs) if plan.output != "embedding" else sum(len(r) for r in refs),
            "calls": len(inputs),
            "chunks": [c.name for c in calibration.chunks],
        },
        widths=widths,
        layers=tuple(table_layers),
        seconds=round(time.perf_counter() - start, 1),
        versions=_versions(),
    )


def _check_fp16_of(fp16_package: Path, source_hash: str) -> Path:
    from coreml_diarize.record import PackageRecord

    record = PackageRecord.from_package(check_package(fp16_package))
    source = dict(record.recipe).get("source", {})
    if record.recipe.get("mode") != "fp16" or source.get("tree_sha256") != source_hash:
        raise DiarizeError(
            f"{fp16_package.name} is not the fp16 package of the measured fp32 package"
        )
    return fp16_package


def _const_node(program: MILProgram, name: str) -> Node:
    """The top-level const op called `name` (its op name, as `summarize_program` reports)."""
    for node in program.main.nodes:
        if node.op_type == "const" and node.name == name:
            return node
    raise ArtifactError(f"{program.path}: no const {name}")


def _fp16_names(program32: MILProgram, program16: MILProgram, names: Sequence[str]) -> dict:
    """fp32 const name -> the value name of the fp16 program's const holding the same tensor
    in fp16 (coremltools' cast pass calls it `<name>_to_fp16`)."""
    out = {}
    consts16 = {n.name for n in program16.main.nodes if n.op_type == "const"}
    for name in names:
        node16 = _const_node(
            program16, name + FP16_SUFFIX if name + FP16_SUFFIX in consts16 else name
        )
        w32 = np.asarray(_const_node(program32, name).attributes["val"])
        w16 = np.asarray(node16.attributes["val"])
        if w16.dtype != np.float16 or not np.array_equal(w32.astype(np.float16), w16):
            raise ArtifactError(
                f"internal error: the fp16 program holds no fp16 copy of {name} ({node16.name})"
            )
        out[name] = node16.outputs[0][0]
    return out


def _value_of(program: MILProgram, value_name: str) -> np.ndarray:
    for node in program.main.nodes:
        if node.op_type == "const" and node.outputs[0][0] == value_name:
            return np.asarray(node.attributes["val"])
    raise ArtifactError(f"{program.path}: no const value {value_name}")


def _versions() -> dict[str, str]:
    import coremltools
    import torch

    return {"coremltools": coremltools.__version__, "torch": torch.__version__.split("+")[0]}


def plot_table(table: SensitivityTable, path: Path) -> None:
    """Loss per layer (program order as measured, most sensitive at 4 bits marked) per width,
    log scale; zero losses (at or below the fp16 baseline) drawn at the plot's floor."""
    from matplotlib.figure import Figure

    names = [x.name for x in table.layers]
    positive = [v for x in table.layers for v in x.loss.values() if v > 0 and math.isfinite(v)]
    floor = min(positive) / 3 if positive else 1e-9
    fig = Figure(figsize=(max(7.0, 0.28 * len(names)), 4.5))
    ax = fig.add_subplot()
    for width in table.widths:
        ax.plot(
            range(len(names)),
            [max(x.loss.get(width, 0.0), floor) for x in table.layers],
            marker="o",
            markersize=3,
            label=f"{width} bits",
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_ylabel(f"{table.metric} above fp16 (baseline {table.baseline_loss:.2g})")
    grouping = f", {table.group_size} channels per LUT" if table.group_size else ""
    ax.set_title(
        f"{table.package}: one layer palettized\n{table.granularity}{grouping}, "
        f"{table.calibration.get('items')} calibration items, {table.metric} vs fp32",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
