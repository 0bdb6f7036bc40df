"""The five models, declared once each. Every stage reads these declarations (see specs.py).

Each entry names its wrapper (wrappers/), its independent reference (validation/references*),
its deterministic validation inputs and its tolerances per precision / compression recipe.
Heavy modules are imported inside the small adapter functions so listing specs stays cheap.
"""

from __future__ import annotations

from .errors import DiarizeError
from .sources import EMBEDDING_WEIGHTS, SEGMENTATION_WEIGHTS
from .specs import ModelSpec, TensorSpec, Tolerance

# what `build` makes of each model with weights, beside its fp32 reference: the fp16 program and
# 8-bit look-up tables inside an fp16 program (both can run on the Neural Engine)
# the 3.1-style chain FluidAudio's online diarizer runs (../shared/contract.md)
ONLINE = ("online",)
DEVICE_VARIANTS = ({"mode": "fp16"}, {"mode": "palettize", "nbits": 8})


def _lazy(module: str, name: str):
    """`coreml_diarize.<module>.<name>`, imported on first call (keeps listing specs cheap)."""

    def call(ctx):
        import importlib

        return getattr(importlib.import_module(f"coreml_diarize.{module}"), name)(ctx)

    return call


SEGMENTATION = ModelSpec(
    key="segmentation",
    filename="pyannote_segmentation",
    role="core",
    description="pyannote segmentation-3.0 (PyanNet): 10 s audio -> per-frame powerset log-probabilities",
    weights=SEGMENTATION_WEIGHTS,
    inputs=(
        TensorSpec("audio", (1, 1, "samples"), "10 s of 16 kHz mono audio, float32 in [-1, 1]"),
    ),
    outputs=(
        TensorSpec(
            "segments",
            (1, "frames", "classes"),
            "powerset log-probabilities per frame (classes: {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3})",
        ),
    ),
    build_wrapper=_lazy("wrappers.segmentation", "build_wrapper"),
    build_reference=_lazy("validation.reference_segmentation", "segmentation_reference"),
    example_inputs=_lazy("validation.reference_segmentation", "segmentation_inputs"),
    tolerances={
        # fp32, judged in probability space (docs/validation.md, "Segmentation fp32"): over
        # 200 chunks (built-ins, pyannote's sample in 1 s steps, espeak-ng conversations; seeds
        # 0-4, MIL executor) the worst max |exp(got) - exp(ref)| is 1.48e-3, as large as torch
        # fp32 itself is from float64 (1.45e-3): the bound is 5x that worst case (the trained
        # fixture's worst over 203 chunks: 2.2e-5). A fault of 1% of the weights x 1.01 moves
        # probabilities by up to 0.98 (random:0) / 0.10 (trained fixture) on the built-in
        # inputs. Log-prob max abs reached 8.4e-3 (any fixed log bound fails on near-impossible
        # classes), so frames count for argmax only when their reference margin exceeds
        # 0.05 nat, 3x the largest flip such an error can cause (2 x 8.4e-3); none flipped.
        "fp32": {
            "segments": Tolerance(
                max_prob_abs=7.5e-3,
                min_argmax_agreement=0.999,
                argmax_margin=0.05,
                min_reference_spread=0.05,
            )
        },
        # Reduced precision: log-probs of near-impossible classes (-15 vs -13) make a max-abs
        # bound meaningless, so these are judged by decisions (argmax on decisive frames: the
        # reference's top class leads by >= 1 nat) and by the mean error relative to how much
        # the output moves between inputs (docs/validation.md).
        **{
            recipe: {
                "segments": Tolerance(
                    min_argmax_agreement=0.995,
                    argmax_margin=1.0,
                    max_relative_to_spread=0.02,
                    min_reference_spread=0.05,
                )
            }
            for recipe in ("fp16", "palettize", "linear")
        },
    },
    # Calibrated random weights are far more fragile than trained ones (1e-3 relative input
    # noise flips ~1/2 of their argmaxes). Measured over 200 chunks (seeds 0-4, built-ins,
    # pyannote's sample, synthetic conversations; docs/validation.md): palettize8 decisive
    # (1-nat) argmax agreement worst 0.983, error/spread worst 0.094. Bounds: 0.95 (3x the
    # worst disagreement) and 0.1. Counting near-ties (a 1e-3 margin) falsely failed 1 chunk.
    untrained_tolerances={
        recipe: {
            "segments": Tolerance(
                min_argmax_agreement=0.95,
                argmax_margin=1.0,
                max_relative_to_spread=0.1,
                min_reference_spread=0.05,
            )
        }
        for recipe in ("fp16", "palettize", "linear")
    },
    license_note="MIT (pyannote/segmentation-3.0)",
    chains=ONLINE,
    uncompressed=("sinc_filters.weight",),
    device_variants=DEVICE_VARIANTS,
)

EMBEDDING = ModelSpec(
    key="embedding",
    filename="wespeaker_v2",
    role="core",
    description="WeSpeaker ResNet34 speaker embedding (pyannote): audio + frame masks -> 256-d embeddings",
    weights=EMBEDDING_WEIGHTS,
    inputs=(
        TensorSpec(
            "waveform", ("embedding_batch", "samples"), "one 10 s, 16 kHz waveform per speaker slot"
        ),
        TensorSpec(
            "mask", ("embedding_batch", "frames"), "per-segmentation-frame weights per speaker slot"
        ),
    ),
    outputs=(
        TensorSpec(
            "embedding", ("embedding_batch", "embedding_dim"), "raw (not L2-normalised) embeddings"
        ),
    ),
    build_wrapper=_lazy("wrappers.embedding", "build_wrapper"),
    build_reference=_lazy("validation.reference_embedding", "embedding_reference"),
    example_inputs=_lazy("validation.reference_embedding", "embedding_inputs"),
    tolerances={
        "fp32": {"embedding": Tolerance(min_cosine=0.9999, min_reference_spread=0.05)},
        "fp16": {"embedding": Tolerance(min_cosine=0.999, min_reference_spread=0.05)},
        "palettize": {"embedding": Tolerance(min_cosine=0.998, min_reference_spread=0.05)},
        "linear": {"embedding": Tolerance(min_cosine=0.998, min_reference_spread=0.05)},
    },
    # 8-bit weights on calibrated random weights: every one of the 36 palettized tensors costs
    # 2e-5..3e-4 of cosine on its own (measured one at a time); random weights have no
    # structure for the look-up tables to exploit (docs/quantization.md). Measured worst over
    # 29 chunks of seeds 0-2: 1 - cosine = 7.0e-3; bound 1.5e-2 (2x). 4-bit: cosine < 0.3.
    untrained_tolerances={
        recipe: {"embedding": Tolerance(min_cosine=0.985, min_reference_spread=0.05)}
        for recipe in ("palettize", "linear")
    },
    license_note="CC-BY-4.0 (pyannote/wespeaker-voxceleb-resnet34-LM)",
    chains=ONLINE,
    uncompressed=("fbank.log_mel.frames.weight", "fbank.log_mel.mel_of_squares"),
    # the fbank up to its log: fp16 underflows quiet bins of the power spectrum
    fp32_values=("log_mel_energy",),
    device_variants=DEVICE_VARIANTS,
)

_EXACT = Tolerance(max_abs=0.0)

POSTPROCESSOR = ModelSpec(
    key="postprocessor",
    filename="powerset_postprocessor",
    role="auxiliary",
    description="powerset log-probabilities -> hard per-speaker masks (argmax, one-hot, mapping)",
    weights=None,
    inputs=(TensorSpec("segments", (1, "frames", "classes"), "powerset log-probabilities"),),
    outputs=(
        TensorSpec("speaker_masks", (1, "frames", "speakers"), "1.0 where a speaker is active"),
    ),
    build_wrapper=_lazy("wrappers.powerset", "build_wrapper"),
    build_reference=_lazy("validation.reference_aux", "postprocessor_reference"),
    example_inputs=_lazy("validation.reference_aux", "postprocessor_inputs"),
    tolerances={"fp32": {"speaker_masks": _EXACT}, "fp16": {"speaker_masks": _EXACT}},
    license_note="MIT",
    chains=ONLINE,
)

PREPROCESSOR = ModelSpec(
    key="preprocessor",
    filename="embedding_preprocessor",
    role="auxiliary",
    description="audio + speaker masks -> per-speaker waveforms and overlap-free masks",
    weights=None,
    inputs=(
        TensorSpec("audio", (1, 1, "samples"), "10 s of 16 kHz mono audio"),
        TensorSpec("speaker_masks", (1, "frames", "speakers"), "hard per-speaker masks"),
    ),
    outputs=(
        TensorSpec("waveform", ("speakers", "samples"), "the audio, once per speaker slot"),
        TensorSpec("mask", ("speakers", "frames"), "per-speaker mask without overlapped frames"),
    ),
    build_wrapper=_lazy("wrappers.preprocessor", "build_wrapper"),
    build_reference=_lazy("validation.reference_aux", "preprocessor_reference"),
    example_inputs=_lazy("validation.reference_aux", "preprocessor_inputs"),
    tolerances={
        "fp32": {"waveform": _EXACT, "mask": _EXACT},
        "fp16": {"waveform": Tolerance(max_abs=1e-3), "mask": _EXACT},
    },
    license_note="MIT",
    chains=ONLINE,
)

POST_EMBEDDING = ModelSpec(
    key="post-embedding",
    filename="unified_post_embedding",
    role="auxiliary",
    description="embeddings + speaker database + masks -> cosine distances, activity, validity",
    weights=None,
    inputs=(
        TensorSpec("embedding", ("speakers", "embedding_dim"), "raw speaker embeddings"),
        TensorSpec(
            "speaker_db",
            (1, "embedding_dim"),
            "known speakers' embeddings, one per row (one zero row = empty database)",
            flexible={0: (1, 1024)},
        ),
        TensorSpec("speaker_masks", (1, "frames", "speakers"), "hard per-speaker masks"),
    ),
    outputs=(
        TensorSpec("distances", ("speakers", 1), "1 - cosine similarity to every database row"),
        TensorSpec("activity", ("speakers",), "active frames per speaker"),
        TensorSpec("valid", ("speakers",), "1.0 where activity >= min_activity_frames"),
        TensorSpec(
            "filtered_masks", (1, "frames", "speakers"), "masks with too-short speakers zeroed"
        ),
    ),
    build_wrapper=_lazy("wrappers.post_embedding", "build_wrapper"),
    build_reference=_lazy("validation.reference_aux", "post_embedding_reference"),
    example_inputs=_lazy("validation.reference_aux", "post_embedding_inputs"),
    tolerances={
        "fp32": {
            "distances": Tolerance(max_abs=1e-5),
            "activity": _EXACT,
            "valid": _EXACT,
            "filtered_masks": _EXACT,
        },
        "fp16": {
            "distances": Tolerance(max_abs=5e-3),
            "activity": _EXACT,
            "valid": _EXACT,
            "filtered_masks": _EXACT,
        },
    },
    license_note="MIT",
    chains=ONLINE,
)


def all_specs() -> tuple[ModelSpec, ...]:
    return (SEGMENTATION, POSTPROCESSOR, PREPROCESSOR, EMBEDDING, POST_EMBEDDING)


def registry() -> dict[str, ModelSpec]:
    """All models, by CLI key, in pipeline order."""
    return {spec.key: spec for spec in all_specs()}


def get_spec(key: str) -> ModelSpec:
    specs = registry()
    by_file = {s.filename: s for s in specs.values()}
    if key in specs:
        return specs[key]
    if key in by_file:
        return by_file[key]
    raise DiarizeError(f"unknown model '{key}' (choose from: {', '.join(specs)})")
