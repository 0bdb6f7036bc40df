"""The coremltools side of a mixed recipe (quantize/mixed.py has the search and the files):
which weights it may name, the per-weight palettizer configs, and what a saved program holds."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import iter_ops

from .kmeans import kmeans_lut
from .recipes import QuantizeConfig


def check_mixed_names(
    src: Path, config: QuantizeConfig, sizes: dict[str, int], shapes: dict[str, tuple[int, ...]]
) -> None:
    """Every weight a mixed recipe names exists, may be compressed and will be: coremltools
    skips rank-1 tensors and those it keeps inline (fewer than 10 elements), silently
    (`need_compress_const` in coremltools/optimize/coreml/_quantization_passes.py)."""
    names = [name for name, _ in config.bits or ()]
    unknown = [n for n in names if n not in sizes]
    if unknown:
        close = {n: difflib.get_close_matches(n, list(sizes), n=3, cutoff=0.5) for n in unknown}
        hints = "; ".join(
            f"{n!r}: closest {', '.join(c)}" if c else f"{n!r}: nothing close"
            for n, c in close.items()
        )
        raise DiarizeError(f"bits: {src.name} has no weight named {hints}")
    kept = [n for n in names if n in (config.exclude or ())]
    if kept:
        raise DiarizeError(
            f"bits: {', '.join(kept)} must stay uncompressed in {src.name} (the model's "
            "uncompressed constants, ModelSpec.uncompressed); remove them from the recipe"
        )
    small = [n for n in names if len(shapes[n]) < 2 or sizes[n] < 10]
    if small:
        raise DiarizeError(
            f"bits: coremltools does not palettize {', '.join(small)} (rank-1 or under 10 "
            "elements); remove them from the recipe"
        )


def mixed_model(mlmodel, config: QuantizeConfig):
    """A look-up table of each named weight's own width, nothing else compressed.

    coremltools 9.0, optimize/coreml/_config.py `OptimizationConfig._get_const_op_config`: a
    const's entry in `op_name_configs` wins; any other const falls back to the config of the ops
    that read it, which is `global_config` (None here: left alone). In an fp16 program the
    cast weights are consts named `<name>_to_fp16` (coremltools' converters/mil/mil/passes/
    defs/quantization.py, `CastTypeQuantization.transform_op`: `f"{var.name}_to_{dtype}"`); those
    kept on the fp32 path keep their name, so both spellings are keyed; `apply._checked_result`
    verifies afterwards that exactly the named weights came out compressed."""
    import coremltools.optimize.coreml as cto

    grouped = {"group_size": config.group_size} if config.group_size else {}
    op_configs = {}
    for name, width in config.bits or ():
        if config.kmeans == "coremltools":
            settings = {"mode": "kmeans", "nbits": width}
        else:
            lut = functools.partial(kmeans_lut, nbits=width, seed=config.seed)
            settings = {"mode": "custom", "lut_function": lut}
        # weight_threshold 0: the recipe names the weight, its size does not decide
        op_config = cto.OpPalettizerConfig(
            granularity=config.granularity, weight_threshold=0, **grouped, **settings
        )
        op_configs[name] = op_configs[f"{name}_to_fp16"] = op_config
    opt = cto.OptimizationConfig(global_config=None, op_name_configs=op_configs)
    if config.kmeans != "coremltools":
        return cto.palettize_weights(mlmodel, opt)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # see apply._compressed_model
        return cto.palettize_weights(mlmodel, opt)


def lut_sources(program) -> dict[str, int]:
    """Source weight name -> width of every `constexpr_lut_to_dense` in a saved program: the
    op is named `<name>[_to_fp16]_palettized` by coremltools; the width is log2 of its table
    (the last LUT axis but one on iOS18's op, the only one on iOS16's)."""
    out = {}
    for op in iter_ops(program.functions["main"]):
        if op.op_type != "constexpr_lut_to_dense":
            continue
        name = op.name.removesuffix("_palettized").removesuffix("_to_fp16")
        shape = op.lut.val.shape
        entries = shape[0] if len(shape) == 1 else shape[-2]
        out[name] = int(entries).bit_length() - 1
    return dict(sorted(out.items()))
