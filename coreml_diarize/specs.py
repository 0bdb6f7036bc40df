"""One declaration per model: the registry every stage (convert, quantize, validate, package) reads.

No stage branches on a model's name: each asks the spec for its wrapper, its reference, its I/O
and its tolerances. Adding a sixth model means writing one wrapper and one `ModelSpec` here.

Shapes are declared with symbolic dimensions ("frames", "classes", ...) that are resolved against
a `Geometry` derived from the segmentation architecture itself, so 589 and 7 are never hard-coded.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DiarizeError

if TYPE_CHECKING:  # heavy imports only where used
    import torch

Dim = int | str
# Compute units that ask for the Neural Engine. The NE computes in fp16 only, and Core ML never
# places an fp32-typed ML program there: "a float 32 typed model ... will execute on a
# combination of the GPU and CPU" (coremltools' "Typed Execution" guide and its workflow
# example, apple.github.io/coremltools/docs-guides/source/typed-execution[-example].html).
# So an fp32 package asked to run on `cpu_and_ne` runs on the CPU in fp32, and is judged by its
# fp32 bounds; what the units change is whether an fp16 program's ops may land on the NE.
NEURAL_ENGINE_UNITS = ("cpu_and_ne",)
DEPLOYMENT_TARGETS = ("iOS16", "iOS17", "iOS18", "macOS13", "macOS14", "macOS15")
# What the embedding models emit (Options.embedding_output): "raw" = pyannote's WeSpeaker output,
# what pyannote's PLDA (and so PldaRho) expects; "l2" = that vector divided by its L2 norm, what
# FluidAudio documents for `ChunkEmbedding.embedding256` (docs/offline_contract.md, "Embedding
# scale" says what each choice changes, measured).
EMBEDDING_OUTPUTS = ("raw", "l2")
# wespeaker_v2's Kaldi front end: "dense" = one strided conv with a (514, 400) DFT kernel, 0.99 MB
# of fp32 constants (wrappers/fbank.py); "factored" = framing conv + two-stage DFT, 0.12 MB
# (wrappers/fbank_factored.py). Measured in docs/quantization.md, "The front end".
FBANK_FRONT_ENDS = ("dense", "factored")


@dataclass(frozen=True)
class Geometry:
    """Sizes every model agrees on, derived from the segmentation model (never hard-coded)."""

    sample_rate: int
    samples: int  # one chunk: 10 s
    frames: int  # segmentation frames per chunk (589 for PyanNet on 10 s)
    classes: int  # powerset classes (7 for 3 speakers, max 2 per frame)
    speakers: int  # 3
    embedding_dim: int  # 256 for WeSpeaker ResNet34
    frame_step_s: float  # seconds between segmentation frames
    embedding_batch: int = 3  # speaker slots per wespeaker call (the contract's 3)

    @property
    def fbank_frames(self) -> int:
        """Kaldi fbank frames per chunk for WeSpeaker's front end (25 ms windows every 10 ms,
        snip_edges): 998 for 10 s at 16 kHz. The same integer arithmetic as
        wrappers.fbank.KaldiFbankOptions.num_frames, which the FBank / Embedding wrappers
        check against the loaded model's own hparams."""
        window = int(self.sample_rate * 25.0 * 0.001)
        shift = int(self.sample_rate * 10.0 * 0.001)
        return 1 + (self.samples - window) // shift

    def resolve(self, shape: tuple[Dim, ...]) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else int(getattr(self, d)) for d in shape)


# the most shapes an enumerated input may list (coremltools' "Flexible Input Shapes" guide:
# "You can provide up to 128 different shapes")
MAX_ENUMERATED_SHAPES = 128


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    description: str
    # axis -> (lower, upper) bounds for a flexible dimension; the default size is `shape`'s.
    flexible: Mapping[int, tuple[int, int]] = field(default_factory=dict)
    # axis -> the sizes it accepts, declared as Core ML enumerated shapes (one shape per size);
    # the default size is `shape`'s and must be one of them. Models meant for the Neural Engine
    # take a flexible batch this way: a range-flexible input runs on the ANE only at its
    # default shape, an enumerated one at each of its shapes (docs/ane.md, "Batch shapes").
    enumerated: Mapping[int, tuple[int, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for axis, sizes in self.enumerated.items():
            if axis in self.flexible:
                raise DiarizeError(f"{self.name}: axis {axis} is both a range and enumerated")
            # coremltools' EnumeratedShapes takes 2 or more shapes (input_types.py), and its
            # "Flexible Input Shapes" guide allows up to 128
            if not 2 <= len(sizes) <= MAX_ENUMERATED_SHAPES or len(set(sizes)) != len(sizes):
                raise DiarizeError(
                    f"{self.name}: axis {axis} needs 2..{MAX_ENUMERATED_SHAPES} distinct sizes"
                )
            default = self.shape[axis]
            if isinstance(default, int) and default not in sizes:
                raise DiarizeError(
                    f"{self.name}: default size {default} of axis {axis} is not enumerated"
                )
        if len(self.enumerated) > 1:  # one shape per size: several axes would multiply them
            raise DiarizeError(f"{self.name}: enumerate one axis at most")

    def accepts(self, axis: int, size: int, default: int) -> bool:
        """Whether Core ML takes `size` along `axis` (whose declared size is `default`)."""
        if axis in self.enumerated:
            return size in self.enumerated[axis]
        if axis in self.flexible:
            lower, upper = self.flexible[axis]
            return lower <= size <= upper
        return size == default


@dataclass(frozen=True)
class Tolerance:
    """What counts as a match for one output. Unset fields are not checked."""

    max_abs: float | None = None
    min_cosine: float | None = None  # per row of the last axis
    min_argmax_agreement: float | None = None  # over the last axis
    # argmax agreement counts only rows whose reference leads its runner-up by more than this
    # (log-prob units): decisive frames. Near-ties are a coin toss for any precision.
    argmax_margin: float = 1e-3
    # error / spread of the reference across inputs must stay below this (0 < x < 1)
    max_relative_to_spread: float | None = None
    # the reference must move at least this much between inputs (else: degenerate weights)
    min_reference_spread: float | None = None
    # log-probability outputs: the largest |exp(got) - exp(ref)|, the error in probability
    # space. Unlike max_abs on log-probabilities it does not blow up on near-impossible
    # classes (-15 vs -14.99 is 3e-7 here), and it still sees any decision-relevant change.
    max_prob_abs: float | None = None


@dataclass(frozen=True)
class Options:
    """Conversion-time options shared by all models (recorded in metadata)."""

    precision: str = "fp32"  # fp32 | fp16
    minimum_deployment_target: str = "iOS17"
    min_activity_frames: float = 10.0  # unified_post_embedding: valid = activity >= this
    min_speaker_duration_s: float = 1.0  # unified_post_embedding: shorter speakers zeroed
    clean_fallback: bool = True  # embedding_preprocessor: pyannote's fallback to the raw mask
    embedding_batch: int = 3  # wespeaker batch (3 = the contract)
    flexible_batch: bool = False  # wespeaker: batch 1..32 instead of fixed
    embedding_output: str = "raw"  # embedding models: raw | l2 (EMBEDDING_OUTPUTS)
    fbank_front_end: str = "dense"  # wespeaker_v2's front end: dense | factored (FBANK_FRONT_ENDS)

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "fp16-selective"):
            raise DiarizeError(
                f"unknown precision '{self.precision}' (choose from fp32, fp16, fp16-selective)"
            )
        if self.minimum_deployment_target not in DEPLOYMENT_TARGETS:
            raise DiarizeError(
                f"unknown deployment target '{self.minimum_deployment_target}'"
                f" (choose from {', '.join(DEPLOYMENT_TARGETS)})"
            )
        if not (self.min_activity_frames >= 0 and self.min_speaker_duration_s >= 0):
            raise DiarizeError("thresholds must be non-negative numbers")
        if not 1 <= self.embedding_batch <= 32:
            raise DiarizeError(f"embedding batch must be 1..32, got {self.embedding_batch}")
        if self.embedding_output not in EMBEDDING_OUTPUTS:
            raise DiarizeError(
                f"unknown embedding output '{self.embedding_output}'"
                f" (choose from {', '.join(EMBEDDING_OUTPUTS)})"
            )
        if self.fbank_front_end not in FBANK_FRONT_ENDS:
            raise DiarizeError(
                f"unknown fbank front end '{self.fbank_front_end}'"
                f" (choose from {', '.join(FBANK_FRONT_ENDS)})"
            )

    def thresholds(self) -> dict[str, Any]:
        """The options recorded in every package's metadata (`coreml_diarize.thresholds`),
        from which `context.options_for` rebuilds them (validation, golden I/O)."""
        return {
            "min_activity_frames": self.min_activity_frames,
            "min_speaker_duration_s": self.min_speaker_duration_s,
            "clean_fallback": self.clean_fallback,
            "embedding_output": self.embedding_output,
            "fbank_front_end": self.fbank_front_end,
        }


@dataclass(frozen=True)
class WeightFamily:
    """One kind of pyannote model whose weights the toolkit loads (declared in sources.py):
    how its untrained architecture is built, which class a checkpoint must hold, how seeded
    random weights are calibrated, and, for the model that defines them, the shared sizes.

    Torch families (a pyannote checkpoint) set `build` and `calibrate`; families whose weights
    are plain files (the PLDA's two npz files) set `load_files` and `load_random` instead."""

    name: str  # "segmentation" | "embedding" | "plda": also the CLI's --<name>-source option
    architecture: str  # the pyannote class a checkpoint must hold
    build: Callable[[], Any] | None = None  # untrained architecture from torch's current RNG
    calibrate: Callable[[Any, Any], None] | None = None  # (model, calibration audio), in place
    # model, embedding_batch -> Geometry, for the family the shared sizes come from
    geometry: Callable[[Any, int], Geometry] | None = None
    # the files a source holds for this family: in its `<name>/` subfolder of a pipeline
    # source (community-1's layout), else at the source's root
    files: tuple[str, ...] = ("pytorch_model.bin",)
    # local directory holding `files` -> the loaded model (None: a pyannote checkpoint)
    load_files: Callable[[Any], Any] | None = None
    # seed -> (model, calibration note) (None: `build` from a seeded RNG, then `calibrate`)
    load_random: Callable[[int], tuple[Any, str]] | None = None


@dataclass(frozen=True)
class BuildContext:
    """Everything a wrapper or reference needs: weights (if any), geometry, options."""

    geometry: Geometry
    options: Options
    weights: Any = None  # sources.LoadedWeights for models with weights


Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ModelSpec:
    key: str  # CLI name
    filename: str  # artifact stem: <filename>.mlpackage
    role: str  # "core" | "auxiliary"
    description: str
    weights: WeightFamily | None  # the weights it needs (sources.py), None for weightless
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    build_wrapper: Callable[[BuildContext], torch.nn.Module]
    # an independent implementation (pyannote / numpy) used by validation
    build_reference: Callable[[BuildContext], Callable[[Arrays], Arrays]]
    # deterministic named validation inputs
    example_inputs: Callable[[BuildContext], dict[str, Arrays]]
    # precision/compression -> output name -> Tolerance ("fp32", "fp16", "palettize8", ...):
    # what weights that were trained must meet
    tolerances: Mapping[str, Mapping[str, Tolerance]]
    license_note: str = ""
    # wrapper parameters that weight compression leaves alone: signal-processing constants
    # (a sinc filterbank, a DFT kernel) rather than learned weights, tiny, and where 256 levels
    # destroy the dynamic range the rest of the model depends on
    uncompressed: tuple[str, ...] = ()
    # values of the converted MIL program (by name) that fp16 programs compute in fp32, together
    # with everything upstream of them: the stages measured to need fp32 (docs/quantization.md)
    fp32_values: tuple[str, ...] = ()
    # the quantization recipes `build` makes from the fp32 package (QuantizeConfig settings)
    device_variants: tuple[Mapping[str, Any], ...] = ()
    # the model sets (profiles) this model belongs to, which are also the diarization chains
    # that run it: "online" = the 3.1-style chain of five packages (../shared/contract.md),
    # "offline" = pyannote community-1's set as FluidAudio's offline diarizer loads it
    # (docs/offline_contract.md). `build --profile P` builds the models whose chains name P.
    chains: tuple[str, ...] = ()
    # JSON files written beside the package and bundled with it: file name -> a function of
    # the same context as the wrapper giving the file's (JSON-able) content, e.g. the PLDA
    # parameters VBx needs. Names are static so `package` can find them beside a package.
    sidecars: Mapping[str, Callable[[BuildContext], Any]] = field(default_factory=dict)
    # the same keys as `tolerances`, for seeded random (untrained) weights only, where those
    # are more fragile than trained ones (docs/validation.md says why for each)
    untrained_tolerances: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)

    def uncompressed_consts(self) -> tuple[str, ...]:
        """The const names coremltools gives those parameters (dots become underscores)."""
        return tuple(name.replace(".", "_") for name in self.uncompressed)

    def input_shapes(self, geometry: Geometry) -> dict[str, tuple[int, ...]]:
        return {t.name: geometry.resolve(t.shape) for t in self.inputs}

    def output_shapes(self, geometry: Geometry) -> dict[str, tuple[int, ...]]:
        return {t.name: geometry.resolve(t.shape) for t in self.outputs}

    def tolerance_for(
        self, recipe: str, compute_units: str = "cpu_only", *, trained: bool = True
    ) -> Mapping[str, Tolerance]:
        """The tolerances for a package made by `recipe`, run on `compute_units` (which do not
        change them: see `tolerance_key`); a `DiarizeError` where the model declares none for
        that recipe (FBank, PldaRho: fp32 only, measured to need it)."""
        table = self.tolerances if trained else {**self.tolerances, **self.untrained_tolerances}
        key = self.tolerance_key(recipe)
        if key not in table:
            raise DiarizeError(
                f"{self.filename} has no tolerance for {recipe} packages (declared: "
                f"{', '.join(sorted(table))}): it is meant to stay "
                f"{' or '.join(sorted(table))}, so such a package cannot be validated"
            )
        return table[key]

    def tolerance_key(self, recipe: str) -> str:
        """Which entry of the tolerance tables judges `recipe`: the recipe itself
        (palettize8), its family (palettize), or fp16 for anything else reduced. The compute
        units do not change it: an fp32 program never runs on the Neural Engine (see
        NEURAL_ENGINE_UNITS), and a reduced one is judged by its own bounds wherever it runs."""
        if recipe in self.tolerances:
            return recipe
        family = recipe.rstrip("0123456789")
        return family if family in self.tolerances else "fp16"


def intended_compute_units(precision: str) -> str:
    """The Core ML compute units a package of this precision is meant for: fp16 programs
    (palettized ones included) for the Neural Engine, fp32 ones as the CPU reference."""
    return "cpu_and_ne" if precision.startswith("fp16") else "cpu_only"
