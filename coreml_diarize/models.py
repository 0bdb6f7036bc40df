"""The models, declared once each (the online five and the offline four). Every stage reads
these declarations (see specs.py).

Each entry names its wrapper (wrappers/), its independent reference (validation/references*),
its deterministic validation inputs and its tolerances per precision / compression recipe.
Heavy modules are imported inside the small adapter functions so listing specs stays cheap.
"""

from __future__ import annotations

from dataclasses import replace

from .errors import DiarizeError
from .sources import EMBEDDING_WEIGHTS, PLDA_WEIGHTS, SEGMENTATION_WEIGHTS
from .specs import ModelSpec, TensorSpec, Tolerance

# what `build` makes of each model with weights, beside its fp32 reference: the fp16 program and
# 8-bit look-up tables inside an fp16 program (both can run on the Neural Engine)
# the 3.1-style chain FluidAudio's online diarizer runs (../shared/contract.md)
ONLINE = ("online",)
# pyannote community-1's set as FluidAudio's OfflineDiarizerModels loads it
# (docs/offline_contract.md): artifact stems are FluidAudio's ModelNames.OfflineDiarizer names
OFFLINE = ("offline",)
DEVICE_VARIANTS = ({"mode": "fp16"}, {"mode": "palettize", "nbits": 8})


def _lazy(module: str, name: str):
    """`coreml_diarize.<module>.<name>`, imported on first call (keeps listing specs cheap)."""

    def call(ctx):
        import importlib

        return getattr(importlib.import_module(f"coreml_diarize.{module}"), name)(ctx)

    return call


# segmentation (online and offline: one model, one set of tables)
SEGMENTATION_TOLERANCES = {
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
    # mixed-bit recipes (quantize/mixed.py), measured on the trained fixture's searched recipes
    # (docs/quantization.md, "Mixed-bit ladder"): the 0.99 MB recipe's worst error/spread is
    # 0.0135 over the 7 validation inputs and 0.0167 over 32 held-out chunks, decisive argmax
    # 1.0 on both. Bound 0.03: 2.2x / 1.8x those worst cases; it still fails the 0.8 MB recipe
    # (0.0405) and uniform 4-bit (0.038) were either presented as the searched recipe.
    "mixed": {
        "segments": Tolerance(
            min_argmax_agreement=0.995,
            argmax_margin=1.0,
            max_relative_to_spread=0.03,
            min_reference_spread=0.05,
        )
    },
}
# Calibrated random weights are far more fragile than trained ones (1e-3 relative input
# noise flips ~1/2 of their argmaxes). Measured over 200 chunks (seeds 0-4, built-ins,
# pyannote's sample, synthetic conversations; docs/validation.md): palettize8 decisive
# (1-nat) argmax agreement worst 0.983, error/spread worst 0.094. Bounds: 0.95 (3x the
# worst disagreement) and 0.1. Counting near-ties (a 1e-3 margin) falsely failed 1 chunk.
SEGMENTATION_UNTRAINED_TOLERANCES = {
    recipe: {
        "segments": Tolerance(
            min_argmax_agreement=0.95,
            argmax_margin=1.0,
            max_relative_to_spread=0.1,
            min_reference_spread=0.05,
        )
    }
    for recipe in ("fp16", "palettize", "linear")
}


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
    tolerances=SEGMENTATION_TOLERANCES,
    untrained_tolerances=SEGMENTATION_UNTRAINED_TOLERANCES,
    license_note="MIT (pyannote/segmentation-3.0)",
    chains=ONLINE,
    uncompressed=("sinc_filters.weight",),
    device_variants=DEVICE_VARIANTS,
)

# embedding (online and offline: the same ResNet34, one set of tables)
# The degenerate-weights floor serves both scales of the embedding_output option (the table
# cannot see the option): the mean |difference| between the references of the validation
# inputs measured raw 0.89 (random:0) / 8.8 (trained fixture) and L2-normalised 0.043 / 0.038
# (online; offline 0.068 / 0.061), and for uncalibrated default-init weights raw 0.017 and
# L2-normalised 0.021. 0.03 fails both degenerate cases (1.8x / 1.4x under) and passes every
# correct one (1.27x over at worst). docs/offline_contract.md, "Embedding scale".
EMBEDDING_MIN_SPREAD = 0.03
EMBEDDING_TOLERANCES = {
    "fp32": {"embedding": Tolerance(min_cosine=0.9999, min_reference_spread=EMBEDDING_MIN_SPREAD)},
    "fp16": {"embedding": Tolerance(min_cosine=0.999, min_reference_spread=EMBEDDING_MIN_SPREAD)},
    "palettize": {
        "embedding": Tolerance(min_cosine=0.998, min_reference_spread=EMBEDDING_MIN_SPREAD)
    },
    "linear": {"embedding": Tolerance(min_cosine=0.998, min_reference_spread=EMBEDDING_MIN_SPREAD)},
    # mixed-bit recipes (docs/quantization.md, "A tolerance for mixed recipes"), measured on the
    # trained fixture (factored front end): the 3.95 MB goal recipe's worst validation input is
    # 0.99683 (sine sweep; 1 - cos 3.2e-3), its worst held-out voice 0.99891. Bound 0.9935:
    # 2x the goal recipe's worst loss; it fails the 3.3 MB recipe (0.98925) and the dense 4.0 MB
    # one (0.979), i.e. a package compressed harder than the family it was derived for
    "mixed": {"embedding": Tolerance(min_cosine=0.9935, min_reference_spread=EMBEDDING_MIN_SPREAD)},
}
# 8-bit weights on calibrated random weights: every one of the 36 palettized tensors costs
# 2e-5..3e-4 of cosine on its own (measured one at a time); random weights have no
# structure for the look-up tables to exploit (docs/quantization.md). Measured worst over
# 29 chunks of seeds 0-2: 1 - cosine = 7.0e-3; bound 1.5e-2 (2x). 4-bit: cosine < 0.3.
EMBEDDING_UNTRAINED_TOLERANCES = {
    recipe: {"embedding": Tolerance(min_cosine=0.985, min_reference_spread=EMBEDDING_MIN_SPREAD)}
    for recipe in ("palettize", "linear")
}


# wrappers/fbank_factored.py FactoredFbank's buffers of more than 256 elements
FACTORED_FBANK_CONSTANTS = tuple(
    f"fbank.log_mel.{name}"
    for name in ("mel", "direct_kernel", "framing", "window", "dft1_re", "dft1_im")
    + ("twiddle_re", "twiddle_im", "dft2_re", "dft2_im", "mel_direct")
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
            "embedding",
            ("embedding_batch", "embedding_dim"),
            "embeddings: raw as pyannote's, or L2-normalised if thresholds.embedding_output is l2",
        ),
    ),
    build_wrapper=_lazy("wrappers.embedding", "build_wrapper"),
    build_reference=_lazy("validation.reference_embedding", "embedding_reference"),
    example_inputs=_lazy("validation.reference_embedding", "embedding_inputs"),
    tolerances=EMBEDDING_TOLERANCES,
    untrained_tolerances=EMBEDDING_UNTRAINED_TOLERANCES,
    license_note="CC-BY-4.0 (pyannote/wespeaker-voxceleb-resnet34-LM)",
    chains=ONLINE,
    # the dense front end's DFT kernel and mel matrix, or (fbank_front_end="factored") the
    # factored one's constants: signal processing, not learned (only those present are used)
    uncompressed=(
        "fbank.log_mel.frames.weight",
        "fbank.log_mel.mel_of_squares",
        *FACTORED_FBANK_CONSTANTS,
    ),
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


# --- the offline set (docs/offline_contract.md) ---------------------------------------------

# FluidAudio sends up to 32 windows per Segmentation call and up to 32 embeddings per PldaRho
# call, and every count in 1..32 must be accepted (contract §2, §5)
OFFLINE_BATCH = (1, 32)
# Segmentation runs on the Neural Engine (fp16 variants), where a range-flexible batch runs only
# at its default size: its batch is enumerated instead, every count FluidAudio sends (full
# batches of 32, a last partial batch of any 1..31, a warm-up of 1:
# OfflineSegmentationProcessor.swift), with 32, the size it sends most, as the default
# (docs/ane.md, "Batch shapes"). PldaRho keeps OFFLINE_BATCH as a range: an fp32 program,
# barred from the ANE anyway.
OFFLINE_SEGMENTATION_BATCHES = tuple(range(1, 33))
OFFLINE_SEGMENTATION_DEFAULT_BATCH = 32
FBANK_MEL_BINS = 80  # WeSpeaker's num_mel_bins (the wrappers refuse a checkpoint with others)
RHO_DIMENSION = 128  # FluidAudio's PLDATransform.rhoDimension = pyannote's lda_dimension

# the online segmentation with a batch of 1..32 windows (default 32): the same wrapper,
# reference and tolerances (both run any batch); only the I/O declaration, the inputs and the
# set differ
OFFLINE_SEGMENTATION = replace(
    SEGMENTATION,
    key="offline-segmentation",
    filename="Segmentation",
    description=(
        "pyannote segmentation (PyanNet, powerset): a batch of 10 s windows -> per-frame"
        " powerset log-probabilities"
    ),
    inputs=(
        replace(
            SEGMENTATION.inputs[0],
            shape=(OFFLINE_SEGMENTATION_DEFAULT_BATCH, *SEGMENTATION.inputs[0].shape[1:]),
            description="a batch of 1..32 windows of 10 s, 16 kHz mono audio, float32 in [-1, 1]",
            enumerated={0: OFFLINE_SEGMENTATION_BATCHES},
        ),
    ),
    example_inputs=_lazy("validation.reference_offline", "segmentation_batch_inputs"),
    license_note="CC-BY-4.0 (pyannote/speaker-diarization-community-1 segmentation)",
    chains=OFFLINE,
)

FBANK = ModelSpec(
    key="fbank",
    filename="FBank",
    role="core",
    description=(
        "WeSpeaker front end (pyannote compute_fbank): 10 s audio -> mean-normalised Kaldi"
        " log-mel filterbank, channels-first"
    ),
    # no learned weights, but its Kaldi settings are the WeSpeaker model's hparams
    weights=EMBEDDING_WEIGHTS,
    inputs=(TensorSpec("audio", (1, 1, "samples"), "10 s of 16 kHz mono audio, float32"),),
    outputs=(
        TensorSpec(
            "fbank_features",
            (1, 1, FBANK_MEL_BINS, "fbank_frames"),
            "80-bin Kaldi log-mel of audio x 2^15 (25 ms / 10 ms), minus its mean over frames",
        ),
    ),
    build_wrapper=_lazy("wrappers.fbank", "build_offline_wrapper"),
    build_reference=_lazy("validation.reference_offline", "fbank_reference"),
    example_inputs=_lazy("validation.reference_offline", "fbank_inputs"),
    # fp32 against pyannote's own compute_fbank (torchaudio, fp32): over 28 chunks (the
    # built-ins, pyannote's sample every 2 s from 0 to 28 s, noise at 1e-4..1, a -60 dB sweep;
    # MIL executor) the worst max |error| is 1.49e-3 log-mel units (the sweeps; torchaudio's
    # fp32 is itself ~1e-3 from float64 in low-energy bins, tests/wrappers/test_fbank.py);
    # bound 1e-2 = 6.7x that. A fault of 1% of the DFT kernel's entries x 1.01 moves the
    # output by 0.10 (noise) to 6.8 (sweep): caught 10x over. (Silence is invariant: every bin
    # is on the log floor, and the mean is subtracted.)
    tolerances={
        "fp32": {"fbank_features": Tolerance(max_abs=1e-2, min_reference_spread=0.05)},
    },
    license_note="CC-BY-4.0 (pyannote/speaker-diarization-community-1 embedding)",
    chains=OFFLINE,
    # fp32 only, no device variants: FluidAudio runs it on the CPU, and fp16 underflows the
    # power spectrum (wrappers/fbank.py)
    uncompressed=("fbank.log_mel.frames.weight", "fbank.log_mel.mel_of_squares"),
)

OFFLINE_EMBEDDING = ModelSpec(
    key="offline-embedding",
    filename="Embedding",
    role="core",
    description=(
        "WeSpeaker ResNet34 speaker embedding (pyannote) on FBank's features + per-frame"
        " weights -> one raw 256-d embedding"
    ),
    weights=EMBEDDING_WEIGHTS,
    inputs=(
        TensorSpec(
            "fbank_features",
            (1, 1, FBANK_MEL_BINS, "fbank_frames"),
            "FBank's output for one 10 s window",
        ),
        TensorSpec("weights", (1, "frames"), "per-segmentation-frame weights (0/1) of a speaker"),
    ),
    outputs=(
        # raw like pyannote's, not L2-normalised like the published model (contract U2):
        # PldaRho is pyannote's PLDA, whose l2norm(x - mean1) is not scale-invariant
        TensorSpec(
            "embedding",
            (1, "embedding_dim"),
            "embedding: raw as pyannote's, or L2-normalised if thresholds.embedding_output is l2",
        ),
    ),
    build_wrapper=_lazy("wrappers.embedding", "build_offline_wrapper"),
    build_reference=_lazy("validation.reference_offline", "embedding_reference"),
    example_inputs=_lazy("validation.reference_offline", "embedding_inputs"),
    # the online embedding's tables, without its fp32_values: there is no fbank inside, and
    # the centred log-mel it takes (|x| < ~30) is at home in fp16. Measured (random:0, the 7
    # signals of reference_embedding.embedding_signals with 0/1 weights, MIL executor): fp16
    # worst cosine 0.99995 (bound 0.999), palettize8 0.99355 (untrained bound 0.985); fp32
    # 1.00000 (max |error| 2e-5).
    tolerances=EMBEDDING_TOLERANCES,
    untrained_tolerances=EMBEDDING_UNTRAINED_TOLERANCES,
    license_note="CC-BY-4.0 (pyannote/speaker-diarization-community-1 embedding)",
    chains=OFFLINE,
    device_variants=DEVICE_VARIANTS,
)

PLDA_RHO = ModelSpec(
    key="plda-rho",
    filename="PldaRho",
    role="core",
    description=(
        "pyannote PLDA (x-vector transform + PLDA transform) scaled by sqrt(phi): raw speaker"
        " embeddings -> VBx features rho"
    ),
    weights=PLDA_WEIGHTS,
    inputs=(
        TensorSpec(
            "embeddings",
            (1, "embedding_dim"),
            "1..32 raw speaker embeddings, one per row",
            flexible={0: OFFLINE_BATCH},
        ),
    ),
    outputs=(
        TensorSpec(
            "rho",
            (1, RHO_DIMENSION),
            "pyannote PLDA(x) * sqrt(phi), phi descending (plda-parameters.json tensors.psi)",
        ),
    ),
    build_wrapper=_lazy("wrappers.plda", "build_rho_wrapper"),
    build_reference=_lazy("validation.reference_offline", "plda_rho_reference"),
    example_inputs=_lazy("validation.reference_offline", "plda_rho_inputs"),
    # fp32 against pyannote's float64 PLDA x sqrt(phi): random PLDA seeds 0-4, the example
    # inputs plus reference_plda's cases of <= 32 rows (row norms 1e-3..5e7: rho's scale does
    # not depend on them, both L2 norms fix it) and 3 more synthetic speaker sets (MIL executor):
    # worst max |error| 1.14e-5 at |rho| <= 28.5 (4.5e-7 relative: fp32 rounding). Bound 1e-3,
    # 90x that: room for a trained PLDA whose rho is up to ~40x larger at the same relative
    # error. A fault of 1% of the PLDA transform's entries x 1.01 moves rho by 0.027-0.035:
    # caught 27x over. The spread-relative bound (measured worst 2.8e-7) is the scale-free
    # check: 1e-4.
    tolerances={
        "fp32": {
            "rho": Tolerance(max_abs=1e-3, max_relative_to_spread=1e-4, min_reference_spread=0.05)
        },
    },
    license_note="CC-BY-4.0 (pyannote/speaker-diarization-community-1 plda)",
    chains=OFFLINE,
    sidecars={"plda-parameters.json": _lazy("wrappers.plda", "plda_parameters_sidecar")},
)


def all_specs() -> tuple[ModelSpec, ...]:
    return (
        SEGMENTATION,
        POSTPROCESSOR,
        PREPROCESSOR,
        EMBEDDING,
        POST_EMBEDDING,
        OFFLINE_SEGMENTATION,
        FBANK,
        OFFLINE_EMBEDDING,
        PLDA_RHO,
    )


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
