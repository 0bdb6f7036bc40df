"""Quantize a SAVED .mlpackage into a NEW one: package in, package out, the input never touched.

Everything runs on Linux (no Core ML runtime): the package is read with
`ct.models.MLModel(..., skip_model_load=True)` / coremltools' milproto loader, transformed with
coremltools' own compression passes, and written atomically with deterministic identifiers, so
the same input and recipe give byte-identical output.

* palettize: `ct.optimize.coreml.palettize_weights`; the look-up tables come from a seeded,
  exact 1-D k-means (`kmeans_1d`) handed to coremltools as its `lut_function`, because
  coremltools' built-in k-means (scikit-learn, `random_state=0` hard-coded) cannot be seeded and
  sums cluster members in OpenMP-thread order, so its bytes depend on the thread count.
  `kmeans="coremltools"` uses the built-in one anyway, pinned to one thread.
* linear: `ct.optimize.coreml.linear_quantize_weights` (int8, symmetric, per output channel).
* fp16 / fp16-selective: the saved MIL program goes back through `ct.convert` with
  `FP16ComputePrecision` (selective: numerically sensitive ops stay fp32), which casts the
  weights and inserts casts so the model's inputs and outputs stay fp32.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from coreml_diarize.converters.convert import FP32_SENSITIVE_OPS, save_mlmodel
from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.mlpackage import (
    check_package,
    iter_ops,
    load_mlmodel,
    load_program,
    package_size,
    quiet_coremltools,
    tree_hash,
)
from coreml_diarize.record import CONVERSION_DATE_KEY, PackageRecord, quantization_metadata

from .kmeans import kmeans_1d, kmeans_lut  # noqa: F401  (kmeans_1d: re-exported, callers import it here)
from .mixed_ops import check_mixed_names, lut_sources, mixed_model
from .recipes import QuantizeConfig

# Core ML specification version -> deployment target (the package's own minimum)
SPEC_TARGETS = {7: "iOS16", 8: "iOS17", 9: "iOS18"}
IOS18_SPEC_VERSION = 9


@dataclass(frozen=True)
class QuantizeResult:
    src: Path
    dst: Path
    recipe: dict[str, Any]
    size_before: int
    size_after: int
    seconds: float
    compressed_weights: int  # weight tensors stored compressed (constexpr ops) or cast to fp16
    op_histogram: dict[str, int] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Size before / size after (4.0 = a quarter of the bytes)."""
        return self.size_before / self.size_after if self.size_after else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {
            "src": str(self.src),
            "dst": str(self.dst),
            "recipe": self.recipe,
            "size_before": self.size_before,
            "size_after": self.size_after,
            "ratio": round(self.ratio, 4),
            "seconds": round(self.seconds, 3),
            "compressed_weights": self.compressed_weights,
            "op_histogram": self.op_histogram,
        }


# --- reading the source ----------------------------------------------------------------------


@dataclass(frozen=True)
class ProgramSummary:
    """What a saved program holds, for checks before and after quantization."""

    op_histogram: dict[str, int]
    compute_dtypes: dict[str, int]  # dtype of non-const op outputs -> count
    weight_names: tuple[str, ...]  # const ops holding float tensors
    weight_sizes: dict[str, int]
    weight_dtypes: dict[str, str]  # numpy dtype name per weight
    weight_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def compressed(self) -> int:
        return sum(n for op, n in self.op_histogram.items() if op.startswith("constexpr_"))


def summarize_program(program) -> ProgramSummary:
    from coremltools.converters.mil.mil import types

    ops: collections.Counter = collections.Counter()
    dtypes: collections.Counter = collections.Counter()
    sizes: dict[str, int] = {}
    wdtypes: dict[str, str] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    for op in iter_ops(program.functions["main"]):
        ops[op.op_type] += 1
        out = op.outputs[0] if op.outputs else None
        if out is None:
            continue
        if op.op_type == "const":
            val = out.val
            if isinstance(val, np.ndarray) and val.dtype.kind == "f":
                sizes[op.name] = int(val.size)
                wdtypes[op.name] = val.dtype.name
                shapes[op.name] = tuple(int(d) for d in val.shape)
        elif not op.op_type.startswith("constexpr_") and types.is_tensor(out.sym_type):
            dtypes[types.builtin_to_string(out.dtype)] += 1
    return ProgramSummary(
        dict(sorted(ops.items())),
        dict(sorted(dtypes.items())),
        tuple(sorted(sizes)),
        sizes,
        wdtypes,
        shapes,
    )


def output_path(src: Path, out: Path, config: QuantizeConfig) -> Path:
    """`out` itself if it names an .mlpackage, else `out/<stem>_<recipe>.mlpackage`."""
    out = Path(out)
    if out.suffix == ".mlpackage":
        return out
    return out / f"{Path(src).name.removesuffix('.mlpackage')}_{config.name}.mlpackage"


def _record_of(source_spec, name: str) -> PackageRecord | None:
    """The package's record, or None for a package this toolkit did not build (quantizing
    those is allowed; they get no spec-driven defaults)."""
    try:
        return PackageRecord.from_metadata(
            dict(source_spec.description.metadata.userDefined), name=name
        )
    except ArtifactError:
        return None


def _spec_of(record: PackageRecord | None):
    """The registered ModelSpec a package was made from, or None (a foreign package)."""
    from coreml_diarize.models import registry

    return registry().get(record.model) if record is not None else None


def _resolve_exclude(
    config: QuantizeConfig, spec, summary: ProgramSummary
) -> tuple[QuantizeConfig, str]:
    """An unset `exclude` becomes the model spec's `uncompressed` weights (those present in
    the package): signal-processing constants that compression would wreck."""
    if config.exclude is not None:
        return config, "recipe"
    names: tuple[str, ...] = ()
    if spec is not None:
        names = tuple(n for n in spec.uncompressed_consts() if n in summary.weight_sizes)
    return dataclasses.replace(config, exclude=names), "model spec" if names else "none"


def _check_source(src: Path, config: QuantizeConfig, spec_version: int, summary: ProgramSummary):
    if summary.compressed:
        raise DiarizeError(
            f"{src.name} already holds compressed weights; quantize the uncompressed package"
        )
    if config.mode.startswith("fp16") and summary.compute_dtypes.get("fp16"):
        raise DiarizeError(f"{src.name} already computes in fp16; start from the fp32 package")
    if config.compute == "fp32" and summary.compute_dtypes.get("fp16"):
        raise DiarizeError(
            f"{src.name} computes in fp16; compute fp32 needs the fp32 package as its source"
        )
    why = config.needs_ios18()
    if why and spec_version < IOS18_SPEC_VERSION:
        target = SPEC_TARGETS.get(spec_version, f"specification version {spec_version}")
        raise DiarizeError(
            f"{why} needs an iOS18 deployment target; {src.name} targets {target} "
            "(re-convert it with --target iOS18)"
        )
    unknown = [n for n in config.exclude or () if n not in summary.weight_sizes]
    if unknown:
        raise DiarizeError(
            f"exclude: {src.name} has no weight named {', '.join(repr(n) for n in unknown)} "
            f"(largest weights: {_largest_weights(summary)})"
        )
    if config.mode == "mixed":
        check_mixed_names(src, config, summary.weight_sizes, summary.weight_shapes)
    if config.family in ("palettize", "linear"):
        eligible = [
            n
            for n, size in summary.weight_sizes.items()
            if size > (config.weight_threshold or 0) and n not in (config.exclude or ())
        ]
        if not eligible:
            raise DiarizeError(
                f"nothing to compress: no weight in {src.name} has more than "
                f"{config.weight_threshold} elements"
            )


def _largest_weights(summary: ProgramSummary) -> str:
    """The largest tensors are the ones a recipe names: list those, not every epsilon."""
    tensors = sorted(
        (n for n, size in summary.weight_sizes.items() if size > 1),
        key=lambda n: (-summary.weight_sizes[n], n),
    )
    return ", ".join(tensors[:12]) + (f", +{len(tensors) - 12} more" if len(tensors) > 12 else "")


# --- the operations --------------------------------------------------------------------------


def _compressed_model(mlmodel, config: QuantizeConfig):
    import coremltools.optimize.coreml as cto

    if config.mode == "mixed":
        return mixed_model(mlmodel, config)
    skip = {name: None for name in config.exclude or ()}  # op_name_configs: None = leave alone
    if config.mode == "linear":
        op_config = cto.OpLinearQuantizerConfig(
            mode="linear_symmetric",
            dtype="int8",
            granularity="per_channel",
            weight_threshold=config.weight_threshold,
        )
        return cto.linear_quantize_weights(
            mlmodel, cto.OptimizationConfig(global_config=op_config, op_name_configs=skip)
        )
    grouped = {"group_size": config.group_size} if config.group_size else {}
    if config.kmeans == "coremltools":
        op_config = cto.OpPalettizerConfig(
            mode="kmeans",
            nbits=config.nbits,
            granularity=config.granularity,
            weight_threshold=config.weight_threshold,
            **grouped,
        )
    else:
        op_config = cto.OpPalettizerConfig(
            mode="custom",
            lut_function=functools.partial(kmeans_lut, nbits=config.nbits, seed=config.seed),
            granularity=config.granularity,
            weight_threshold=config.weight_threshold,
            **grouped,
        )
    opt = cto.OptimizationConfig(global_config=op_config, op_name_configs=skip)
    if config.kmeans != "coremltools":
        return cto.palettize_weights(mlmodel, opt)
    from threadpoolctl import threadpool_limits

    # scikit-learn accumulates cluster sums per OpenMP thread under a lock: the order, hence
    # the last bits of the LUT, depends on thread count and timing. One thread is exact (and
    # faster here: measured 5.3 s vs 11.7 s with 2 threads on a 131k-element LSTM weight).
    with threadpool_limits(limits=1):
        return cto.palettize_weights(mlmodel, opt)


def _inputs_of(op) -> list:
    return [
        v for arg in op.inputs.values() for v in (arg if isinstance(arg, (list, tuple)) else [arg])
    ]


def fp32_path_of(
    program, exclude: frozenset[str], values: frozenset[str] = frozenset()
) -> frozenset[str]:
    """Output names of the ops that read an excluded weight or produce one of `values` (the
    spec's `fp32_values`), and of everything upstream of them.

    Keeping only the reader in fp32 is not enough: if its input was computed in fp16, the
    rounding noise (-66 dB, broadband) reaches the op anyway. SincNet's filterbank and the
    Kaldi fbank kernel both turn such noise into large errors in their quietest bands.
    """
    ops = list(iter_ops(program.functions["main"]))
    produced = {o.name for op in ops for o in op.outputs}
    missing = sorted(values - produced)
    if missing:
        # a renamed wrapper variable must not silently put a sensitive stage into fp16
        raise ArtifactError(
            f"internal error: the program has no value {', '.join(map(repr, missing))} that "
            "the model declares fp32 (ModelSpec.fp32_values)"
        )
    seeds = [
        op
        for op in ops
        if any(getattr(v, "name", None) in exclude for v in _inputs_of(op))
        or any(o.name in values for o in op.outputs)
    ]
    keep: set[str] = set()
    stack = list(seeds)
    while stack:
        op = stack.pop()
        if op is None or op.op_type == "const" or op.outputs[0].name in keep:
            continue
        keep.update(o.name for o in op.outputs)
        stack.extend(getattr(v, "op", None) for v in _inputs_of(op))
    return frozenset(keep)


def _fp16_model(src: Path, config: QuantizeConfig, spec_version: int, fp32_values: frozenset[str]):
    """The saved fp32 program as an fp16 program, but for the ops `fp32_path_of` keeps."""
    import coremltools as ct

    sensitive = FP32_SENSITIVE_OPS if config.mode == "fp16-selective" else frozenset()
    program = load_program(src)
    keep = fp32_path_of(program, frozenset(config.exclude or ()), fp32_values)

    def selector(op) -> bool:
        """True = run this op in fp16."""
        return op.op_type not in sensitive and not any(o.name in keep for o in op.outputs)

    return ct.convert(
        program,
        convert_to="mlprogram",
        compute_precision=ct.transform.FP16ComputePrecision(op_selector=selector),
        minimum_deployment_target=ct.target(spec_version),
        skip_model_load=True,
    )


def _with_source_description(new_model, source_spec):
    """The source's description (I/O docs, shapes incl. flexible ranges, author, metadata)
    on the new program. The I/O must be the same features: quantization changes weights and
    internal precision only."""
    import coremltools as ct

    spec = new_model.get_spec()
    for kind in ("input", "output"):
        new = [(f.name, f.type.multiArrayType.dataType) for f in getattr(spec.description, kind)]
        old = [
            (f.name, f.type.multiArrayType.dataType) for f in getattr(source_spec.description, kind)
        ]
        if new != old:
            raise ArtifactError(
                f"internal error: quantization changed the model's {kind}s ({old} -> {new})"
            )
    spec.description.CopyFrom(source_spec.description)
    return ct.models.MLModel(spec, weights_dir=new_model.weights_dir, skip_model_load=True)


def _recipe_metadata(
    config: QuantizeConfig, src: Path, record: PackageRecord | None, src_hash: str, size: int
) -> dict[str, Any]:
    recipe = config.to_dict()
    recipe["source"] = {
        "file": src.name,
        "tree_sha256": src_hash,
        "size_bytes": size,
        "recipe": dict(record.recipe) if record is not None else {},
    }
    return recipe


def quantize_package(
    src: Path, out: Path, config: QuantizeConfig, *, search: Mapping[str, Any] | None = None
) -> QuantizeResult:
    """Write `config` applied to the package `src` as a new package (see `output_path`).
    `search`: how a mixed recipe was found (quantize/mixed.py), recorded with the recipe."""
    start = time.perf_counter()
    src = check_package(Path(src))
    dst = output_path(src, out, config)
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise DiarizeError(f"refusing to write {dst}: it would overwrite the input {src}")
    src_hash, _ = tree_hash(src)
    size_before = package_size(src)

    source = load_mlmodel(src)
    source_spec = source.get_spec()
    spec_version = int(source_spec.specificationVersion)
    record = _record_of(source_spec, src.name)
    summary = summarize_program(load_program(src))
    spec = _spec_of(record)
    config, exclude_from = _resolve_exclude(config, spec, summary)
    _check_source(src, config, spec_version, summary)
    fp32_values = frozenset(spec.fp32_values if spec is not None else ())
    source_in_fp16 = bool(summary.compute_dtypes.get("fp16"))

    new = _transformed(
        src, source, config, fp32_values, fp16_first=config.computes_in_fp16 and not source_in_fp16
    )
    if config.family == "fp16":
        precision = config.mode
    elif config.computes_in_fp16 and not source_in_fp16:
        precision = "fp16"
    else:
        precision = record.precision if record is not None else "fp32"
    recipe = _recipe_metadata(config, src, record, src_hash, size_before)
    recipe["exclude_from"] = exclude_from
    if search:
        recipe["search"] = dict(search)
    meta = new.user_defined_metadata
    meta.pop(CONVERSION_DATE_KEY, None)  # a timestamp would make equal inputs differ in bytes
    # the source's record is carried over; the quantization rewrites its own keys in place
    meta.update(
        quantization_metadata(precision=precision, compression=config.compression, recipe=recipe)
    )
    save_mlmodel(new, dst)

    summary = summarize_program(load_program(dst))
    return QuantizeResult(
        src=src,
        dst=dst,
        recipe=recipe,
        size_before=size_before,
        size_after=package_size(dst),
        seconds=time.perf_counter() - start,
        compressed_weights=_checked_result(dst, config, summary),
        op_histogram=summary.op_histogram,
    )


def _transformed(src: Path, source, config: QuantizeConfig, fp32_values, *, fp16_first: bool):
    """The new in-memory model: made fp16 first (`fp16_first`), then compressed, with the
    source's description. coremltools' own errors become one line naming the recipe."""
    source_spec = source.get_spec()
    try:
        with quiet_coremltools():
            new = source
            if fp16_first:
                new = _fp16_model(src, config, int(source_spec.specificationVersion), fp32_values)
            if config.family != "fp16":
                new = _compressed_model(new, config)
            return _with_source_description(new, source_spec)
    except DiarizeError:
        raise
    except Exception as exc:  # coremltools reports bad combinations as ValueError & co
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DiarizeError(
            f"coremltools could not apply {config.name} to {src.name}: {first}"
        ) from exc


def _checked_result(dst: Path, config: QuantizeConfig, summary: ProgramSummary) -> int:
    """How many weights the saved program holds compressed (or in fp16); an fp16 recipe whose
    program computes nothing in fp16 is an internal error."""
    if config.computes_in_fp16 and not summary.compute_dtypes.get("fp16"):
        raise ArtifactError(f"internal error: {dst.name} computes nothing in fp16")
    if config.family == "fp16":
        return sum(1 for d in summary.weight_dtypes.values() if d == "float16")
    if config.mode == "mixed":
        compressed = lut_sources(load_program(dst))
        wanted = config.bits_by_name
        if compressed != wanted:
            raise ArtifactError(
                f"internal error: {dst.name} holds look-up tables {compressed}, the recipe "
                f"asked for {wanted}"
            )
    return summary.compressed
