"""What both fixture trainers share: the checkpoint they write and the curves they report."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE_KEY = "coreml_diarize_fixture"  # provenance record inside the checkpoint (sources.py)


def save_fixture(model: Any, path: Path, record: dict[str, Any]) -> Path:
    """pyannote's checkpoint format (`checkpoints.save_pyannote_checkpoint`), tensors in fp16, with
    the fixture's own record (`trained_on`, seed, steps, script) beside them.

    fp16 halves the file; pyannote's `load_state_dict` copies the tensors back into the fp32
    model. Only plain data goes in, so the loader's restricted unpickler accepts it.
    """
    import torch

    from coreml_diarize.checkpoints import allowed_globals, save_pyannote_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    save_pyannote_checkpoint(model, path)
    with torch.serialization.safe_globals(allowed_globals()):
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    checkpoint["state_dict"] = {
        k: (v.half() if v.is_floating_point() else v).clone()
        for k, v in checkpoint["state_dict"].items()
    }
    checkpoint["hyper_parameters"] = json.loads(json.dumps(checkpoint["hyper_parameters"]))
    checkpoint[FIXTURE_KEY] = record
    torch.save(checkpoint, path)
    return path


def curve(values: Sequence[float], every: int, digits: int = 3) -> list[float]:
    """The mean of every `every` consecutive values (a training curve for fixture.json)."""
    return [
        round(float(np.mean(values[i : i + every])), digits) for i in range(0, len(values), every)
    ]
