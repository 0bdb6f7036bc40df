"""The segmentation model's independent reference: pyannote's own PyanNet forward."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from coreml_diarize import signals


def segmentation_reference(ctx) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    model = ctx.weights.model.eval()

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(np.asarray(inputs["audio"], dtype=np.float32)))
        return {"segments": out.numpy()}

    return run


def segmentation_inputs(ctx) -> dict[str, dict[str, np.ndarray]]:
    """The standard signals, each as one (1, 1, samples) chunk."""
    n = ctx.geometry.samples
    return {name: {"audio": x[None, None, :]} for name, x in signals.standard_signals(n).items()}
