"""Spec-driven conversion: wrapper -> torch.jit.trace -> ct.convert -> metadata -> atomic save.

Generic over models: everything model-specific comes from the `ModelSpec` (I/O names and
shapes, wrapper, descriptions) and the `BuildContext` (weights, geometry, options).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from coreml_diarize.atomic import atomic_path
from coreml_diarize.errors import DiarizeError
from coreml_diarize.mlpackage import make_deterministic, package_size, quiet_coremltools
from coreml_diarize.record import CONVERSION_DATE_KEY, PackageRecord
from coreml_diarize.specs import DEPLOYMENT_TARGETS

from .metadata import AUTHOR, conversion_record

PRECISIONS = ("fp32", "fp16", "fp16-selective")

# Ops kept in fp32 by "fp16-selective": numerically sensitive ones (logs, exponentials, norms,
# reductions, pooling statistics), as reference converters in the field do.
FP32_SENSITIVE_OPS = frozenset(
    {
        "log",
        "exp",
        "softmax",
        "sqrt",
        "rsqrt",
        "pow",
        "real_div",
        "instance_norm",
        "layer_norm",
        "batch_norm",
        "reduce_sum",
        "reduce_mean",
        "reduce_max",
        "reduce_log_sum_exp",
        "reduce_l2_norm",
    }
)


@dataclass(frozen=True)
class ConversionResult:
    key: str
    path: Path
    precision: str
    seconds: float
    size_bytes: int
    sidecars: tuple[Path, ...] = ()  # the spec's JSON files written beside the package


def trace_inputs(spec, geometry, seed: int = 0) -> tuple:
    """Deterministic example tensors with the spec's default shapes (values only steer tracing),
    except that an enumerated axis is traced at its smallest size: the converted program's
    axis is symbolic whatever size was traced, and tracing Segmentation at its default 32
    windows took 58 s against 11 s for 1 (measured here)."""
    import torch

    rng = np.random.default_rng(seed)
    shapes = spec.input_shapes(geometry)
    out = []
    for t in spec.inputs:
        shape = list(shapes[t.name])
        for axis, sizes in t.enumerated.items():
            shape[axis] = min(sizes)
        out.append(torch.from_numpy((rng.standard_normal(shape) * 0.1).astype(np.float32)))
    return tuple(out)


# --flexible-batch: speaker slots per embedding call, enumerated (the default stays
# Options.embedding_batch, what FluidAudio sends: 3)
FLEXIBLE_BATCH_SIZES = tuple(range(1, 33))
# several enumerated inputs: coremltools accepts them from iOS 18 / macOS 15 on
# (_converters_entry._validate_enumerated_shape_inputs), each listing as many shapes, paired
# by position
MULTIPLE_ENUMERATED_TARGETS = ("iOS18", "macOS15")


def input_enumerations(spec, options) -> dict[str, dict[int, tuple[int, ...]]]:
    """input name -> {axis: sizes} of the enumerated axes a conversion declares: the spec's,
    plus the `embedding_batch` axes under --flexible-batch (a symbolic dimension, not a model
    name, decides)."""
    found = {}
    for t in spec.inputs:
        enumerated = dict(t.enumerated)
        if options.flexible_batch:
            enumerated.update(
                {a: FLEXIBLE_BATCH_SIZES for a, d in enumerate(t.shape) if d == "embedding_batch"}
            )
        if enumerated:
            found[t.name] = enumerated
    return found


def _ct_inputs(spec, geometry, options):
    import coremltools as ct

    enumerations = input_enumerations(spec, options)
    if len(enumerations) > 1 and options.minimum_deployment_target not in (
        MULTIPLE_ENUMERATED_TARGETS
    ):
        raise DiarizeError(
            f"{spec.key}: enumerated shapes on {len(enumerations)} inputs"
            f" ({', '.join(enumerations)}) need a deployment target of iOS18 or macOS15"
            f" (Core ML before them takes one enumerated input), got"
            f" {options.minimum_deployment_target}: pass --target iOS18"
        )
    out = []
    for t in spec.inputs:
        default = list(geometry.resolve(t.shape))
        enumerated = enumerations.get(t.name, {})
        if enumerated:
            ((axis, sizes),) = enumerated.items()
            if default[axis] not in sizes:
                raise DiarizeError(
                    f"{spec.key}: {t.name}'s default size {default[axis]} is not among {sizes}"
                )
            # one shape per size; coremltools writes the default first (flexible_shape_utils.
            # _add_multiarray_ndshape_enumeration_for_feature), so inputs enumerated alike
            # stay paired by position
            shapes = [tuple(default[:axis] + [size] + default[axis + 1 :]) for size in sizes]
            shape = ct.EnumeratedShapes(shapes=shapes, default=tuple(default))
        else:
            dims = list(default)
            for axis, (lo, hi) in t.flexible.items():
                dims[axis] = ct.RangeDim(lower_bound=lo, upper_bound=hi, default=dims[axis])
            shape = ct.Shape(shape=tuple(dims))
        out.append(ct.TensorType(name=t.name, shape=shape, dtype=np.float32))
    return out


def _target(name: str):
    import coremltools as ct

    if name not in DEPLOYMENT_TARGETS:
        raise DiarizeError(
            f"unknown deployment target '{name}' (choose from {', '.join(DEPLOYMENT_TARGETS)})"
        )
    return getattr(ct.target, name)


def _compute_precision(precision: str):
    import coremltools as ct

    if precision == "fp32":
        return ct.precision.FLOAT32
    if precision == "fp16":
        return ct.precision.FLOAT16
    if precision == "fp16-selective":
        return ct.transform.FP16ComputePrecision(
            op_selector=lambda op: op.op_type not in FP32_SENSITIVE_OPS
        )
    raise DiarizeError(f"unknown precision '{precision}' (choose from {', '.join(PRECISIONS)})")


def to_mlmodel(spec, ctx):
    """Trace the spec's wrapper and convert it to an in-memory ct.models.MLModel with metadata."""
    import coremltools as ct
    import torch

    precision = ctx.options.precision
    wrapper = spec.build_wrapper(ctx).eval()
    example = trace_inputs(spec, ctx.geometry)
    with quiet_coremltools(), torch.no_grad():
        inputs = _ct_inputs(spec, ctx.geometry, ctx.options)  # refuses bad shapes before tracing
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        mlmodel = ct.convert(
            traced,
            inputs=inputs,
            outputs=[ct.TensorType(name=t.name, dtype=np.float32) for t in spec.outputs],
            convert_to="mlprogram",
            compute_precision=_compute_precision(precision),
            minimum_deployment_target=_target(ctx.options.minimum_deployment_target),
        )
    # wrappers may state derived constants of their own (e.g. a fallback frame count)
    constants = {k: str(v) for k, v in getattr(wrapper, "metadata", {}).items()}
    record = conversion_record(spec=spec, ctx=ctx, precision=precision, wrapper_constants=constants)
    describe(mlmodel, spec, record)
    return mlmodel


def describe(mlmodel, spec, record: PackageRecord) -> None:
    """Author, license, version, descriptions and the package record, in place."""
    from coreml_diarize import __version__

    mlmodel.author = AUTHOR
    mlmodel.license = spec.license_note or "see source weights"
    mlmodel.version = __version__
    mlmodel.short_description = spec.description
    for t in spec.inputs:
        mlmodel.input_description[t.name] = t.description
    for t in spec.outputs:
        mlmodel.output_description[t.name] = t.description
    mlmodel.user_defined_metadata.pop(CONVERSION_DATE_KEY, None)
    mlmodel.user_defined_metadata.update(record.to_metadata())


def save_mlmodel(mlmodel, target: Path) -> Path:
    """Save atomically with deterministic package identifiers."""
    with quiet_coremltools(), atomic_path(target) as tmp:
        mlmodel.save(str(tmp))
        make_deterministic(tmp)
    return target


def convert_model(spec, ctx, out_dir: Path, *, filename: str | None = None) -> ConversionResult:
    """Convert one model of the registry into `out_dir/<filename>.mlpackage`."""
    start = time.perf_counter()
    mlmodel = to_mlmodel(spec, ctx)
    target = Path(out_dir) / f"{filename or spec.filename}.mlpackage"
    save_mlmodel(mlmodel, target)
    return ConversionResult(
        key=spec.key,
        path=target,
        precision=ctx.options.precision,
        seconds=time.perf_counter() - start,
        size_bytes=package_size(target),
        sidecars=write_sidecars(spec, ctx, Path(out_dir)),
    )


def write_sidecars(spec, ctx, out_dir: Path) -> tuple[Path, ...]:
    """The spec's JSON files beside its package: atomic, and deterministic (sorted keys)."""
    written = []
    for name, content in sorted(spec.sidecars.items()):
        target = Path(out_dir) / name
        with atomic_path(target) as tmp:
            tmp.write_text(json.dumps(content(ctx), indent=2, sort_keys=True) + "\n")
        written.append(target)
    return tuple(written)
