"""unified_post_embedding: embeddings + speaker database + masks -> distances, activity, validity.

    distances      (S, D) = 1 - cos(embedding_s, speaker_db_d)
    activity       (S)    = sum over frames of speaker_masks            (active frames)
    valid          (S)    = 1.0 where activity >= min_activity_frames, else 0.0
    filtered_masks (1,F,S)= speaker_masks, with every speaker active for less than
                            min_speaker_duration_s seconds (activity * frame_step_s) zeroed

Zero vectors: each vector is divided by max(||x||, eps) before the dot product, so a zero
embedding or a zero database row (an app's "empty database") normalises to the zero vector,
its cosine is exactly 0 and its distance exactly 1.0, never 0/0 = NaN. Normalising first (rather
than dividing the dot product by a product of norms) keeps every intermediate away from
underflow: eps = 1e-4 is a normal fp16 number (fp16's smallest normal is 6.1e-5), so the rule
also holds if the model is converted to fp16; eps**2 would not be.
"""

from __future__ import annotations

import torch
from torch import nn

from coreml_diarize.specs import BuildContext

# Smallest norm a vector is divided by. Real (raw WeSpeaker) embeddings have norms orders of
# magnitude above it; only exact or near-zero vectors are affected.
NORM_EPS = 1e-4


def min_speaker_frames(min_speaker_duration_s: float, frame_step_s: float) -> float:
    """The duration threshold in frames: activity * step >= duration <=> activity >= this.

    Comparing frame counts (small integers, exact in fp16 too) against one constant avoids a
    product whose rounding could flip a speaker sitting on the boundary.
    """
    return min_speaker_duration_s / frame_step_s


class UnifiedPostEmbedding(nn.Module):
    """embedding (S, E), speaker_db (D, E), speaker_masks (1, F, S) -> four outputs."""

    def __init__(self, min_activity_frames: float, min_frames_kept: float) -> None:
        super().__init__()
        self.register_buffer("eps", torch.tensor(NORM_EPS))
        self.register_buffer("min_activity_frames", torch.tensor(float(min_activity_frames)))
        self.register_buffer("min_frames_kept", torch.tensor(float(min_frames_kept)))
        self.metadata: dict[str, str] = {}

    def unit(self, x: torch.Tensor) -> torch.Tensor:
        """x / max(||x||, eps) per row: zero rows stay zero."""
        norm = torch.sqrt((x * x).sum(dim=-1, keepdim=True))
        return x / torch.maximum(norm, self.eps)

    def forward(
        self, embedding: torch.Tensor, speaker_db: torch.Tensor, speaker_masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        cosine = torch.matmul(self.unit(embedding), self.unit(speaker_db).transpose(0, 1))
        distances = 1.0 - cosine  # (S, D)
        activity = speaker_masks.sum(dim=1)[0]  # (S,)
        valid = (activity >= self.min_activity_frames).float()
        keep = (activity >= self.min_frames_kept).float()  # (S,)
        filtered_masks = speaker_masks * keep  # broadcast over (1, F, S)
        return distances, activity, valid, filtered_masks


def build_wrapper(ctx: BuildContext) -> UnifiedPostEmbedding:
    options = ctx.options
    frames_kept = min_speaker_frames(options.min_speaker_duration_s, ctx.geometry.frame_step_s)
    wrapper = UnifiedPostEmbedding(options.min_activity_frames, frames_kept)
    wrapper.metadata = {
        "min_activity_frames": repr(float(options.min_activity_frames)),
        "min_speaker_duration_s": repr(float(options.min_speaker_duration_s)),
        "min_speaker_frames": repr(frames_kept),
        "frame_step_s": repr(float(ctx.geometry.frame_step_s)),
        "norm_eps": repr(NORM_EPS),
    }
    return wrapper.eval()
