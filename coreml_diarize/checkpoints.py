"""pyannote checkpoints: the safe pre-check, loading through pyannote, and writing one.

Loading a real checkpoint goes through pyannote's own `Model.from_pretrained`, after a safe
pre-check: pyannote unpickles with `weights_only=False`, which can execute code, so a checkpoint
must first load with torch's restricted unpickler (plus an allow-list of pyannote's plain data
classes) unless the user explicitly trusts it.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

from .errors import SourceError


def quiet_pyannote() -> None:
    """pyannote sends usage telemetry unless told not to; a converter must never phone home."""
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")


def allowed_globals() -> list:
    """pyannote's plain data classes that a genuine checkpoint pickles beside its tensors."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications

    return [Specifications, Problem, Resolution]


def load_checkpoint(family: str, expected: str, path: Path, trust: bool):
    """(model in eval mode, its fixture's `trained_on` note or None) from a pyannote checkpoint
    that must hold the `expected` architecture class (family: the weight family's name)."""
    import torch

    quiet_pyannote()
    if not path.exists():
        raise SourceError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise SourceError(f"checkpoint is not a file: {path}")
    if path.stat().st_size == 0:
        raise SourceError(f"checkpoint is empty: {path}")
    data = path.read_bytes()
    if not zipfile.is_zipfile(io.BytesIO(data)) and not trust:
        # torch.save has written zip archives since 1.6; anything else is a legacy pickle
        raise SourceError(f"not a PyTorch checkpoint (not a torch.save archive): {path}")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not trust:
            unsafe = first_line(str(exc))
            raise SourceError(
                f"checkpoint {path} needs full unpickling, which can run arbitrary code "
                f"({unsafe}); pass --trust-checkpoint only if you trust its origin"
            ) from exc
        checkpoint = None
    except Exception as exc:
        raise SourceError(
            f"corrupt or truncated checkpoint {path}: {first_line(str(exc))}"
        ) from exc

    trained_on = None
    if checkpoint is not None:
        _check_architecture(family, expected, path, checkpoint)
        trained_on = _fixture_note(checkpoint)
    from pyannote.audio import Model

    try:
        model = Model.from_pretrained(io.BytesIO(data), strict=True)
    except Exception as exc:
        raise SourceError(f"cannot load checkpoint {path}: {first_line(str(exc))}") from exc
    if model is None or type(model).__name__ != expected:
        got = type(model).__name__ if model is not None else "nothing"
        raise SourceError(f"checkpoint {path} holds {got}, expected {expected}")
    return model.eval(), trained_on


def _check_architecture(family: str, expected: str, path: Path, checkpoint: Any) -> None:
    if (
        not isinstance(checkpoint, dict)
        or "pyannote.audio" not in checkpoint
        or "state_dict" not in checkpoint
    ):
        raise SourceError(
            f"not a pyannote.audio checkpoint (no pyannote.audio/state_dict entries): {path}"
        )
    try:
        cls = checkpoint["pyannote.audio"]["architecture"]["class"]
    except (KeyError, TypeError) as exc:
        raise SourceError(f"pyannote checkpoint without architecture record: {path}") from exc
    if cls != expected:
        raise SourceError(f"checkpoint {path} holds {cls}, expected {expected} for {family}")


def _fixture_note(checkpoint: dict) -> str | None:
    """A test fixture's own record of its training data (training/train_segmentation.py)."""
    note = checkpoint.get("coreml_diarize_fixture")
    text = note.get("trained_on") if isinstance(note, dict) else None
    return text if isinstance(text, str) and text else None


def first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return line[:200]


def save_pyannote_checkpoint(model, path: Path) -> Path:
    """Write `model` in pyannote's own checkpoint format (what `Model.from_pretrained` reads).

    This is what Lightning + pyannote's `on_save_checkpoint` put in a `pytorch_model.bin`, minus
    trainer state: used to build local checkpoints and a fake hub cache in tests.
    """
    import pytorch_lightning as pl
    import torch

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": pl.__version__,
    }
    try:
        model.on_save_checkpoint(checkpoint)
    except Exception:  # models without a task (WeSpeaker) have no specifications to record
        from pyannote.audio import __version__
        from pyannote.audio.core.task import Problem, Resolution, Specifications

        checkpoint["pyannote.audio"] = {
            "versions": {"pyannote.audio": __version__},
            "architecture": {"module": type(model).__module__, "class": type(model).__name__},
            # what pyannote's own wespeaker/convert.py records (its duration: "whatever"):
            # Model.from_pretrained refuses a checkpoint without specifications
            "specifications": Specifications(
                problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0
            ),
        }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path
