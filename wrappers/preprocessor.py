"""embedding_preprocessor: audio + hard speaker masks -> per-speaker waveforms and masks.

What pyannote's `SpeakerDiarization.get_embeddings(exclude_overlap=True)` (pyannote.audio 4.0.7)
feeds its embedding model for one chunk, written as tensor math:

    clean      = (sum over speakers of speaker_masks) < 2          frames without overlap
    clean_mask = speaker_masks * clean                              per speaker
    used_mask  = clean_mask   if sum over frames of clean_mask > min_num_frames
                 speaker_mask otherwise                             (pyannote's fallback)
    mask       = used_mask transposed to (S, F);  waveform = audio repeated once per speaker

The fallback keeps a speaker who speaks almost only in overlap from getting an (almost) empty
mask: pyannote then uses the speaker's whole mask, overlap included. `clean_fallback=False`
gives the plain clean-mask product instead.

min_num_frames (pyannote):  ceil(num_frames * min_num_samples / num_samples), where
num_samples = chunk duration * sample rate (our geometry.samples) and min_num_samples is
`PyannoteAudioPretrainedSpeakerEmbedding.min_num_samples`: a binary search, over 2..0.5 s,
for the shortest waveform the embedding model runs on without raising. For WeSpeaker ResNet34
the failure comes from kaldi fbank (snip_edges=True), which asserts at least one analysis
window: window = int(sample_rate * frame_length_ms * 0.001) = int(16000 * 25.0 * 0.001) = 400
samples (399 raises "choose a window size 400 that is [2, 399]", 400 runs). So at 16 kHz
min_num_samples = 400 and min_num_frames = ceil(589 * 400 / 160000) = ceil(1.4725) = 2: a
speaker's clean mask is used when it has at least 3 frames.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from coreml_diarize.specs import BuildContext, Geometry

# WeSpeaker's kaldi fbank: 25 ms analysis window (pyannote's BaseWeSpeakerResNet default).
WESPEAKER_FRAME_LENGTH_MS = 25.0


def embedding_min_num_samples(sample_rate: int) -> int:
    """pyannote's `min_num_samples` for WeSpeaker ResNet34: one fbank window (400 at 16 kHz)."""
    return int(sample_rate * WESPEAKER_FRAME_LENGTH_MS * 0.001)


def min_num_frames(geometry: Geometry) -> int:
    """pyannote's fallback threshold, in segmentation frames (2 for the default geometry)."""
    min_num_samples = embedding_min_num_samples(geometry.sample_rate)
    return math.ceil(geometry.frames * min_num_samples / geometry.samples)


def preprocessor_metadata(ctx: BuildContext) -> dict[str, str]:
    """The constants behind the fallback, so an artifact states the rule it implements."""
    return {
        "clean_fallback": "true" if ctx.options.clean_fallback else "false",
        "embedding_min_num_samples": str(embedding_min_num_samples(ctx.geometry.sample_rate)),
        "clean_min_num_frames": str(min_num_frames(ctx.geometry)),
    }


class EmbeddingPreprocessor(nn.Module):
    """audio (1, 1, N), speaker_masks (1, F, S) -> waveform (S, N), mask (S, F)."""

    def __init__(self, speakers: int, fallback_frames: float | None) -> None:
        super().__init__()
        self.speakers = speakers
        # None: no fallback (plain clean-mask product)
        self.fallback = fallback_frames is not None
        self.register_buffer("min_num_frames", torch.tensor(float(fallback_frames or 0.0)))
        # "< 2 speakers" as a constant tensor: the comparison stays a plain elementwise op
        self.register_buffer("overlap", torch.tensor(2.0))
        self.metadata: dict[str, str] = {}

    def forward(
        self, audio: torch.Tensor, speaker_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        waveform = audio.reshape(1, -1).repeat(self.speakers, 1)  # (S, N)
        masks = speaker_masks[0]  # (F, S)
        clean = (masks.sum(dim=-1, keepdim=True) < self.overlap).float()  # (F, 1)
        clean_masks = masks * clean
        if self.fallback:
            # per speaker: enough clean frames -> clean mask, else the whole mask (pyannote)
            enough = clean_masks.sum(dim=0, keepdim=True) > self.min_num_frames  # (1, S)
            used = torch.where(enough, clean_masks, masks)
        else:
            used = clean_masks
        return waveform, used.transpose(0, 1)  # (S, F)


def build_wrapper(ctx: BuildContext) -> EmbeddingPreprocessor:
    threshold = float(min_num_frames(ctx.geometry)) if ctx.options.clean_fallback else None
    wrapper = EmbeddingPreprocessor(ctx.geometry.speakers, threshold)
    wrapper.metadata = preprocessor_metadata(ctx)
    return wrapper.eval()
