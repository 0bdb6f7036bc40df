"""What every artifact says about itself (contract.md: "Metadata every artifact carries")."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

from coreml_diarize import __version__

AUTHOR = "coreml-diarize (converted from pyannote.audio)"
METADATA_PREFIX = "coreml_diarize."


def git_revision() -> str:
    """The toolkit's git commit (+'-dirty' if modified), or 'unknown' outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return rev + ("-dirty" if dirty else "")


def library_versions() -> dict[str, str]:
    import coremltools
    import numpy
    import torch

    try:
        from pyannote.audio import __version__ as pyannote_version
    except ImportError:  # pragma: no cover - pyannote is a hard dependency
        pyannote_version = "missing"
    return {
        "coreml_diarize": __version__,
        "coremltools": coremltools.__version__,
        "torch": torch.__version__,
        "pyannote.audio": pyannote_version,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def artifact_metadata(
    *,
    spec,
    ctx,
    precision: str,
    compression: str = "none",
    recipe: dict | None = None,
) -> dict[str, str]:
    """User-defined metadata keys (all strings, as Core ML requires)."""
    meta = {
        "model": spec.key,
        "role": spec.role,
        "precision": precision,
        "compression": compression,
        "recipe": json.dumps(recipe or {"precision": precision}, sort_keys=True),
        "toolkit.version": __version__,
        "toolkit.git_revision": git_revision(),
        "geometry": json.dumps(_geometry_dict(ctx.geometry), sort_keys=True),
        "thresholds": json.dumps(ctx.options.thresholds(), sort_keys=True),
        "minimum_deployment_target": ctx.options.minimum_deployment_target,
    }
    meta.update({f"versions.{k}": v for k, v in library_versions().items()})
    if ctx.weights is not None:
        meta.update(ctx.weights.provenance.as_metadata())
    else:
        meta.update({"source.kind": "none", "source.trained": "n/a (no weights)"})
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def _geometry_dict(geometry) -> dict:
    from dataclasses import asdict

    return asdict(geometry)


def read_metadata(user_defined: dict[str, str]) -> dict[str, str]:
    """Our keys from an mlpackage's user-defined metadata, without the prefix."""
    return {
        k[len(METADATA_PREFIX) :]: v
        for k, v in user_defined.items()
        if k.startswith(METADATA_PREFIX)
    }
