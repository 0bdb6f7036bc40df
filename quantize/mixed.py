"""Mixed-bit palettization (issue #24): a width per layer, chosen from a measured sensitivity
table, written as a recipe file that `quantize --config` and `build --recipe` apply.

The search is a multiple-choice knapsack, solved exactly: each layer takes one of the table's
widths or stays fp16 ("16"), and the Pareto front of (predicted bytes, predicted loss) over
the layers seen so far is carried from layer to layer; a state that another beats on both
counts can never be part of an optimum, so pruning it loses nothing. The front holds at most
one state per reachable size and in practice a few thousand. The loss model is additive: the
damage of the whole recipe is taken as the sum of the damages each layer causes on its own
(the table's `loss`, measured with only that layer palettized). That is an approximation,
which is why a searched recipe is judged on the diarization chain afterwards (docs/validation.md).

The recipe file: JSON, sorted keys, 2-space indent, `coreml-diarize/mixed-recipe/1`; the
sensitivity table it is searched from: `sensitivity_table.py` (`coreml-diarize/sensitivity/1`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.errors import DiarizeError

from .recipes import IOS18_ONLY_NBITS, QuantizeConfig
from .sensitivity_table import SensitivityTable

RECIPE_SCHEMA = "coreml-diarize/mixed-recipe/1"
FP16 = 16  # the choice "leave this layer fp16, uncompressed"
LUT_ENTRY_BYTES = 2  # fp16 look-up tables: the recipe computes in fp16
# weight.bin (coremltools' MILBlob storage, read off saved packages): each blob is a 64-byte
# header and its data padded to a multiple of 64 bytes; arrays of fewer than 10 elements stay
# inline in the program (coremltools' `should_use_weight_file`)
BLOB_HEADER_BYTES = 64
BLOB_ALIGNMENT = 64
INLINE_BELOW_ELEMENTS = 10
# program text of one constexpr_lut_to_dense op and its two inputs, measured: the segmentation
# package's model.mlmodel grew by 3479 bytes for 20 palettized weights
LUT_OP_PROGRAM_BYTES = 175
# searches with a target size: each pass applies the recipe and measures it; the second pass
# fitted in both cases measured (WeSpeaker at 3.5 MB: 6,014 B missed, then 573 B to spare; the
# segmentation test's target), since the miss changes by far less than itself between passes
SIZE_PASSES = 4
# the recipe file's keys that are QuantizeConfig settings (the rest describe the file)
_CONFIG_KEYS = ("mode", "bits", "granularity", "group_size", "compute", "seed", "kmeans")
# `exclude` (weights whose readers stay fp32) is written only when a recipe sets it
_RECIPE_KEYS = frozenset({"schema", "model", "search", "exclude", *_CONFIG_KEYS})


def _fail(message: str) -> DiarizeError:
    return DiarizeError(f"mixed: {message}")


# --- sizes -----------------------------------------------------------------------------------


def blob_bytes(nbytes: int) -> int:
    """What an array of `nbytes` costs in weight.bin."""
    return BLOB_HEADER_BYTES + -(-nbytes // BLOB_ALIGNMENT) * BLOB_ALIGNMENT


def layer_bytes(
    elements: int, shape: Sequence[int], bits: int, granularity: str, group_size: int | None
) -> int:
    """What one weight costs in the package: its fp16 blob, or its packed indices,
    ceil(elements * bits / 8) bytes, plus its fp16 look-up tables (one per tensor, or one per
    `group_size` output channels on axis 0, the axis coremltools'
    `select_input_output_channel_axis` picks for conv, linear and LSTM weights), each stored
    as blobs (see BLOB_HEADER_BYTES), plus the op's program text."""
    if bits == FP16:
        return blob_bytes(2 * elements)
    tables = 1
    if granularity == "per_grouped_channel":
        tables = math.ceil(shape[0] / group_size)
    lut_entries = tables * (1 << bits)
    lut = lut_entries * LUT_ENTRY_BYTES
    if lut_entries >= INLINE_BELOW_ELEMENTS:
        lut = blob_bytes(lut)
    return blob_bytes(math.ceil(elements * bits / 8)) + lut + LUT_OP_PROGRAM_BYTES


def fixed_bytes_of(src: Path, table: SensitivityTable) -> int:
    """The predicted package size minus the table's layers: the source package's bytes with
    every weight it stores as a blob replaced by what the fp16 program stores (fp16, or fp32
    for the weights read on the model's fp32 path: `apply.fp32_path_of`), as blobs. The fp16
    program's text (its casts, longer names) is not modelled: about 3 kB on segmentation."""
    from coreml_diarize.mlpackage import iter_ops, load_mlmodel, load_program, package_size

    from .apply import _record_of, _spec_of, fp32_path_of, summarize_program

    src = Path(src)
    program = load_program(src)
    summary = summarize_program(program)
    spec = _spec_of(_record_of(load_mlmodel(src).get_spec(), src.name))
    keep = fp32_path_of(
        program,
        frozenset(spec.uncompressed_consts() if spec is not None else ()),
        frozenset(spec.fp32_values if spec is not None else ()),
    )
    in_table = {layer.name for layer in table.layers}
    size = package_size(src)
    for op in iter_ops(program.functions["main"]):
        n = summary.weight_sizes.get(op.name, 0) if op.op_type == "const" else 0
        if n < INLINE_BELOW_ELEMENTS:
            continue
        size -= blob_bytes(n * np.dtype(summary.weight_dtypes[op.name]).itemsize)
        if op.name in in_table:
            continue
        on_fp32_path = [
            any(o.name in keep for o in child.outputs) for child in op.outputs[0].child_ops
        ]
        # a weight read on both paths is stored twice: fp32 and a cast fp16 copy
        size += blob_bytes(4 * n) * any(on_fp32_path) + blob_bytes(2 * n) * (not all(on_fp32_path))
    return size


# --- the search ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchResult:
    widths: dict[str, int]  # every layer of the table -> its width (16: left fp16)
    predicted_bytes: int
    predicted_loss: float  # baseline_loss + the layers' losses

    @property
    def bits(self) -> dict[str, int]:
        """The palettized layers only: a recipe's `bits`."""
        return {name: w for name, w in self.widths.items() if w != FP16}


def layer_options(
    table: SensitivityTable, widths: Sequence[int] | None = None
) -> list[list[tuple[int, int, float]]]:
    """Per layer, its choices as (width, bytes, loss): the table's widths (those in `widths`
    if given) and fp16 at no loss (the table's losses are above the fp16 baseline)."""
    allowed = [w for w in table.widths if widths is None or w in widths]
    return [
        [
            (
                w,
                layer_bytes(layer.elements, layer.shape, w, table.granularity, table.group_size),
                float(layer.loss[w]) if w != FP16 else 0.0,
            )
            for w in [*allowed, FP16]
        ]
        for layer in table.layers
    ]


def search(
    table: SensitivityTable,
    *,
    fixed_bytes: int,
    target_bytes: int | None = None,
    max_loss: float | None = None,
    widths: Sequence[int] | None = None,
) -> SearchResult:
    """The exact optimum of the additive model: with `target_bytes`, the least predicted loss
    whose predicted size fits; with `max_loss`, the smallest predicted size whose predicted
    loss stays within it. Ties go to the smaller size, then to the earlier width in the table.
    An unreachable limit is one line naming what is reachable."""
    if (target_bytes is None) == (max_loss is None):
        raise _fail("give exactly one limit: a target size or a maximum loss")
    options = layer_options(table, widths)
    budget_bytes = None if target_bytes is None else target_bytes - fixed_bytes
    sizes, losses, trail = _pareto_front(options, budget_bytes, max_loss, table.baseline_loss)
    if sizes.size == 0:
        smallest = fixed_bytes + sum(min(o[1] for o in layer) for layer in options)
        if target_bytes is not None:
            raise _fail(
                f"no recipe fits {target_bytes / 1e6:.3f} MB: the smallest reachable size is "
                f"{smallest / 1e6:.3f} MB (every layer at its narrowest width)"
            )
        raise _fail(
            f"no recipe stays within loss {max_loss:g} ({table.metric}): the smallest "
            f"reachable loss is {table.baseline_loss:g}, the fp16 program's own"
        )
    # the front is sorted by size with strictly falling loss
    best = sizes.size - 1 if target_bytes is not None else 0
    predicted_loss = float(losses[best])
    picks = []
    for parents, choices in reversed(trail):
        picks.append(int(choices[best]))
        best = int(parents[best])
    picks.reverse()
    return SearchResult(
        widths={
            layer.name: options[i][c][0]
            for i, (layer, c) in enumerate(zip(table.layers, picks, strict=True))
        },
        predicted_bytes=fixed_bytes + sum(options[i][c][1] for i, c in enumerate(picks)),
        predicted_loss=predicted_loss,
    )


def _pareto_front(
    options: list[list[tuple[int, int, float]]],
    budget_bytes: int | None,
    budget_loss: float | None,
    baseline_loss: float,
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """(sizes, losses, trail): the non-dominated (bytes, loss) sums over all layers within the
    budgets, sorted by size, and per layer each state's parent index and choice, to walk back.
    A loss is summed from the baseline, layer by layer in table order: one rounding order, so a
    limit equal to a reachable loss is met (and a brute force summing the same way agrees)."""
    sizes = np.zeros(1, dtype=np.int64)
    losses = np.full(1, baseline_loss, dtype=np.float64)
    trail = []
    for layer in options:
        n = sizes.size
        cand_sizes = np.concatenate([sizes + nbytes for _, nbytes, _ in layer])
        cand_losses = np.concatenate([losses + loss for _, _, loss in layer])
        parents = np.tile(np.arange(n), len(layer))
        choices = np.repeat(np.arange(len(layer)), n)
        within = np.ones(cand_sizes.size, dtype=bool)
        if budget_bytes is not None:
            within &= cand_sizes <= budget_bytes
        if budget_loss is not None:
            within &= cand_losses <= budget_loss
        # by size, then loss; stable, so equal states keep the earlier choice
        order = np.lexsort((cand_losses[within], cand_sizes[within]))
        idx = np.flatnonzero(within)[order]
        lo = cand_losses[idx]
        # keep a state only if it is strictly better in loss than every smaller-or-equal size
        best_before = np.concatenate([[np.inf], np.minimum.accumulate(lo)[:-1]])
        keep = lo < best_before
        idx = idx[keep]
        sizes, losses = cand_sizes[idx], cand_losses[idx]
        trail.append((parents[idx], choices[idx]))
        if sizes.size == 0:
            break
    return sizes, losses, trail


# --- recipe files ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MixedRecipe:
    """A recipe file: which model, the QuantizeConfig, and how the search found it."""

    model: str  # ModelSpec.key
    config: QuantizeConfig
    search: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.config.mode != "mixed":
            raise _fail(f"a mixed recipe holds a mode mixed config, got {self.config.mode}")

    def to_dict(self) -> dict[str, Any]:
        settings = self.config.to_dict()
        out = {
            "schema": RECIPE_SCHEMA,
            "model": self.model,
            **{key: settings.get(key) for key in _CONFIG_KEYS},
            "search": dict(self.search) if self.search is not None else None,
        }
        if self.config.exclude is not None:
            out["exclude"] = list(self.config.exclude)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, origin: str = "recipe") -> MixedRecipe:
        if not isinstance(data, Mapping) or data.get("schema") != RECIPE_SCHEMA:
            raise _fail(f"{origin} is not a mixed recipe (schema must be {RECIPE_SCHEMA})")
        unknown = sorted(set(data) - _RECIPE_KEYS)
        if unknown:
            raise _fail(f"{origin}: unknown keys {', '.join(unknown)}")
        if not isinstance(data.get("model"), str) or not data["model"]:
            raise _fail(f"{origin} names no model (the ModelSpec key, e.g. segmentation)")
        settings = {k: data[k] for k in (*_CONFIG_KEYS, "exclude") if data.get(k) is not None}
        if settings.get("mode", "mixed") != "mixed":
            raise _fail(f"{origin}: mode must be mixed, got {settings['mode']!r}")
        config = QuantizeConfig.from_mapping({**settings, "mode": "mixed"})
        return cls(model=data["model"], config=config, search=data.get("search"))

    @classmethod
    def from_file(cls, path: Path) -> MixedRecipe:
        from .recipes import load_recipe_file

        return cls.from_mapping(load_recipe_file(path), origin=Path(path).name)

    def write(self, path: Path) -> Path:
        """Written atomically (temp file, then renamed)."""
        from coreml_diarize.atomic import atomic_path

        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_text(self.to_json())
        return path


def is_mixed_recipe(data: Mapping[str, Any]) -> bool:
    """A loaded recipe file that is a mixed recipe file (rather than flat settings)."""
    return isinstance(data, Mapping) and data.get("schema") == RECIPE_SCHEMA


def package_model(src: Path) -> str | None:
    """The registry key recorded in a package this toolkit built (None for a foreign one)."""
    from coreml_diarize.mlpackage import load_mlmodel

    from .apply import _record_of

    record = _record_of(load_mlmodel(src).get_spec(), Path(src).name)
    return record.model if record is not None else None


def check_recipe_model(recipe: MixedRecipe, src: Path) -> None:
    """A recipe is for one model: applying it to another's package is one line."""
    model = package_model(src)
    if model is not None and model != recipe.model:
        raise _fail(f"the recipe is for model {recipe.model}; {Path(src).name} holds {model}")


def search_recipe(
    src: Path,
    table_path: Path,
    *,
    target_mb: float | None = None,
    max_loss: float | None = None,
    settings: Mapping[str, Any] | None = None,
) -> tuple[MixedRecipe, SearchResult]:
    """Search a recipe for the package `src` from the sensitivity table at `table_path`
    (measured on that very package: its tree hash must match). `settings`: further
    QuantizeConfig settings (seed, kmeans); granularity and group size are the table's."""
    from coreml_diarize.mlpackage import check_package, load_mlmodel, tree_hash

    from .apply import IOS18_SPEC_VERSION

    src = check_package(Path(src))
    table = SensitivityTable.from_file(table_path)
    src_hash, _ = tree_hash(src)
    if table.package_tree_sha256 != src_hash:
        raise _fail(
            f"{Path(table_path).name} was measured on another package ({table.package}, tree "
            f"{table.package_tree_sha256[:12]}), not {src.name} (tree {src_hash[:12]})"
        )
    model = package_model(src) or table.model
    if model != table.model:
        raise _fail(
            f"{Path(table_path).name} is a table for {table.model}; {src.name} holds {model}"
        )
    settings = dict(settings or {})
    for key, value in (("granularity", table.granularity), ("group_size", table.group_size)):
        if settings.get(key) is not None and settings[key] != value:
            raise _fail(f"{key} comes from the sensitivity table ({value}), not {settings[key]}")
    ios18 = int(load_mlmodel(src).get_spec().specificationVersion) >= IOS18_SPEC_VERSION
    fixed_bytes = fixed_bytes_of(src, table)
    target_bytes = None if target_mb is None else round(target_mb * 1e6)
    correction = 0  # bytes the size model missed, measured on the applied recipe
    for _ in range(SIZE_PASSES):
        result = search(
            table,
            fixed_bytes=fixed_bytes + correction,
            target_bytes=target_bytes,
            max_loss=max_loss,
            # the widths the package's target has: 3-bit tables need iOS18
            widths=[w for w in table.widths if ios18 or w not in IOS18_ONLY_NBITS],
        )
        if not result.bits:
            raise _fail(
                f"the fp16 package already meets the limit ({result.predicted_bytes / 1e6:.3f}"
                " MB): there is nothing to palettize"
            )
        config = QuantizeConfig.from_mapping(
            {
                **settings,
                "mode": "mixed",
                "bits": result.bits,
                "granularity": table.granularity,
                "group_size": table.group_size,
            }
        )
        search_record = {
            "table": str(table_path),
            "table_sha256": table.sha256,
            "target_mb": target_mb,
            "max_loss": max_loss,
            "predicted_bytes": result.predicted_bytes,
            "predicted_loss": result.predicted_loss,
            "size_correction_bytes": correction,
        }
        if target_bytes is None:
            break
        # the model leaves out the program text and metadata (a few kB): the package the
        # recipe makes is measured, and the search repeated with what it missed
        applied = applied_size(src, config, search_record)
        if applied <= target_bytes:
            break
        correction += applied - target_bytes
    else:
        raise _fail(
            f"no recipe found that measures within {target_mb:.3f} MB after {SIZE_PASSES} "
            f"passes (the last was {applied / 1e6:.4f} MB)"
        )
    return MixedRecipe(model=model, config=config, search=search_record), result


def applied_size(src: Path, config: QuantizeConfig, search_record: Mapping[str, Any]) -> int:
    """The bytes of the package `config` makes from `src` (written to a temporary folder)."""
    import tempfile

    from coreml_diarize.mlpackage import package_size

    from .apply import quantize_package

    with tempfile.TemporaryDirectory(prefix="mixed-size.") as tmp:
        return package_size(quantize_package(src, Path(tmp), config, search=search_record).dst)
