"""powerset_postprocessor: powerset log-probabilities (1, F, C) -> hard speaker masks (1, F, S).

pyannote's `Powerset.to_multilabel(soft=False)` is `one_hot(argmax(log_probs)) @ mapping`. The
argmax is taken of the log-probabilities themselves (no softmax: it is monotonic, so it could
only add rounding that creates or breaks ties).

Tie rule: on an exact tie pyannote (torch.argmax) picks the FIRST maximal class. Core ML's
`reduce_argmax` documents that "in case of ties, the identity of the return value is not
guaranteed", so the model never uses argmax: it marks every class equal to the row maximum,
then keeps the smallest such class index (a `reduce_min` over indices, which has no tie issue:
min of distinct integers is unique). Every step is exact in fp32 and fp16 (values compared,
small integer indices, 0/1 products).
"""

from __future__ import annotations

from math import comb

import torch
from torch import nn

from coreml_diarize.specs import BuildContext, Geometry


def max_set_size(speakers: int, classes: int) -> int:
    """The k for which Powerset(speakers, k) has `classes` classes: sum_{i<=k} C(speakers, i)."""
    total = 0
    for k in range(speakers + 1):
        total += comb(speakers, k)
        if total == classes:
            return k
    raise ValueError(f"{classes} classes is not a powerset of {speakers} speakers")


def powerset_mapping(geometry: Geometry) -> torch.Tensor:
    """pyannote's own (C, S) class -> speakers mapping (taken from pyannote, not rebuilt here)."""
    from pyannote.audio.utils.powerset import Powerset

    powerset = Powerset(geometry.speakers, max_set_size(geometry.speakers, geometry.classes))
    mapping = powerset.mapping.detach().clone().float()
    if tuple(mapping.shape) != (geometry.classes, geometry.speakers):
        raise ValueError(f"powerset mapping has shape {tuple(mapping.shape)}, expected C x S")
    return mapping


class PowersetPostprocessor(nn.Module):
    """segments (1, F, C) log-probs -> speaker_masks (1, F, S) in {0, 1}."""

    def __init__(self, mapping: torch.Tensor) -> None:
        super().__init__()
        classes = mapping.shape[0]
        self.register_buffer("mapping", mapping.float())  # (C, S)
        # class indices as floats: compared and min-reduced, exact for any realistic C
        self.register_buffer("class_index", torch.arange(classes, dtype=torch.float32))
        self.register_buffer("no_class", torch.tensor(float(classes)))

    def forward(self, segments: torch.Tensor) -> torch.Tensor:
        row_max = segments.amax(dim=-1, keepdim=True)
        # indices of the maximal classes; every other class is pushed past the last index
        candidates = torch.where(segments == row_max, self.class_index, self.no_class)
        first_max = candidates.amin(dim=-1, keepdim=True)  # the first maximal class (pyannote's)
        one_hot = (self.class_index == first_max).float()  # (1, F, C)
        return torch.matmul(one_hot, self.mapping)  # (1, F, S)


def build_wrapper(ctx: BuildContext) -> PowersetPostprocessor:
    return PowersetPostprocessor(powerset_mapping(ctx.geometry)).eval()
