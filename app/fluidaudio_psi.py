"""`plda-parameters.json` as FluidAudio reads it: where it is found and what `tensors.psi` must be.

FluidAudio (v0.15.6, 8a2bf2c; paths under `Sources/FluidAudio/`) reads only
`tensors.psi.data_base64`: base64 (unknown characters skipped), reinterpreted as native
little-endian Float32 whatever the file's `dtype`/`shape` say, used as VBx's Phi. If the count
differs from rho's width, VBx logs a warning and silently uses Phi = 1.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import struct
from pathlib import Path

from .fluidaudio_io import DeclaredModel, Finding

PLDA_PARAMETERS = "plda-parameters.json"  # ModelNames.swift:364
# OfflineDiarizerModels.loadPLDAPsi probes these under the models directory, first hit wins
PSI_PROBES = (
    "plda-parameters.json",
    "speaker-diarization/plda-parameters.json",
    "speaker-diarization-coreml/plda-parameters.json",
    "speaker-diarization-offline/plda-parameters.json",
)
PSI_PROBES_CITE = "Diarizer/Offline/Core/OfflineDiarizerModels.swift:17-27"
RHO_DIMENSION = (
    128  # PLDATransform.rhoDimension (Diarizer/Offline/Extraction/PLDATransform.swift:14)
)
# VBx settings hard-coded in Swift (OfflineDiarizerTypes.swift:155-158): our JSON's are ignored
FLUIDAUDIO_VBX = {"Fa": 0.07, "Fb": 0.8, "ahc_threshold": 0.6}
FLUIDAUDIO_VBX_CITE = "Diarizer/Offline/Core/OfflineDiarizerTypes.swift:155-158"


def check_psi_location(
    path: Path, root: Path, kind: str, rho: DeclaredModel | None
) -> list[Finding]:
    """Find plda-parameters.json as FluidAudio does, then check what it reads from it."""
    if kind == "export":
        hits = [path / probe for probe in PSI_PROBES if (path / probe).is_file()]
        where_meant = root / PLDA_PARAMETERS
    else:
        hits = [root / PLDA_PARAMETERS] if (root / PLDA_PARAMETERS).is_file() else []
        where_meant = root / PLDA_PARAMETERS
    if not hits:
        return [
            Finding(
                "error",
                PLDA_PARAMETERS,
                "missing: the offline set cannot load (PLDA parameters file not found)",
                PSI_PROBES_CITE,
            )
        ]
    out = []
    if hits[0] != where_meant:
        out.append(
            Finding(
                "warning",
                str(hits[0].relative_to(path)),
                f"FluidAudio reads this file, not {where_meant.relative_to(path)} (first hit wins)",
                PSI_PROBES_CITE,
            )
        )
    width = _rho_width(rho)
    return out + check_psi(hits[0], width)


def _rho_width(rho: DeclaredModel | None) -> int:
    shape = (
        (rho.outputs or {}).get("rho").shape
        if rho and rho.outputs and "rho" in rho.outputs
        else None
    )
    return shape[-1] if shape else RHO_DIMENSION


def check_psi(file: Path, rho_width: int = RHO_DIMENSION) -> list[Finding]:
    """`tensors.psi.data_base64`: little-endian float32, exactly rho's width, positive, finite."""
    where = file.name
    load = "Diarizer/Offline/Core/OfflineDiarizerModels.swift:29-51"
    try:
        root = json.loads(file.read_text())
        psi = root["tensors"]["psi"]
        text = psi["data_base64"]
        if not isinstance(text, str):
            raise TypeError
    except (OSError, ValueError, KeyError, TypeError):
        return [
            Finding(
                "error",
                where,
                "no tensors.psi.data_base64 string: the offline set fails to load",
                load,
            )
        ]
    try:
        # Data(base64Encoded:options: .ignoreUnknownCharacters) skips non-alphabet characters
        raw = base64.b64decode(text, validate=False)
    except (binascii.Error, ValueError):
        return [
            Finding(
                "error",
                where,
                "tensors.psi.data_base64 is not base64: the offline set fails to load",
                load,
            )
        ]
    out = []
    if len(raw) % 4:
        out.append(
            Finding("error", where, f"psi holds {len(raw)} bytes, not whole float32 values", load)
        )
    count = len(raw) // 4
    declared = psi.get("dtype")
    if declared is not None and str(declared).lower() not in ("float32", "<f4", "f4"):
        out.append(
            Finding(
                "error",
                where,
                f"psi declared {declared}: FluidAudio ignores dtype and reads the bytes as float32 "
                f"({count} values of garbage)",
                load,
            )
        )
    order = psi.get("byte_order")
    if order is not None and str(order).lower() not in ("little", "little-endian", "<"):
        out.append(
            Finding(
                "error",
                where,
                f"psi byte order {order}: FluidAudio reads little-endian float32",
                load,
            )
        )
    shape = psi.get("shape")
    if (
        isinstance(shape, list)
        and all(isinstance(s, int) for s in shape)
        and math.prod(shape) != count
    ):
        out.append(
            Finding(
                "error", where, f"psi declared shape {shape} but holds {count} float32 values", load
            )
        )
    if count != rho_width:
        out.append(
            Finding(
                "error",
                where,
                f"psi holds {count} float32 values, rho has {rho_width}: FluidAudio's VBx silently "
                "falls back to Phi = 1 (identity) and clusters with the wrong model",
                "Diarizer/Offline/Clustering/VBxClustering.swift:71-76",
            )
        )
    values = struct.unpack(f"<{count}f", raw[: 4 * count]) if count else ()
    bad = [v for v in values if not math.isfinite(v) or v <= 0]
    if bad:
        out.append(
            Finding(
                "error",
                where,
                f"{len(bad)} psi value(s) not positive and finite (e.g. {bad[0]!r}): VBx clamps them "
                "to 1e-12 or propagates NaN",
                "Diarizer/Offline/Clustering/VBxClustering.swift:239-240",
            )
        )
    vbx = root.get("vbx") if isinstance(root, dict) else None
    if isinstance(vbx, dict):
        differ = {k: (vbx[k], v) for k, v in FLUIDAUDIO_VBX.items() if k in vbx and vbx[k] != v}
        if differ:
            text = ", ".join(
                f"{k} {ours} (FluidAudio uses {theirs})" for k, (ours, theirs) in differ.items()
            )
            out.append(
                Finding(
                    "warning",
                    where,
                    f"FluidAudio ignores this file's VBx settings: {text}",
                    FLUIDAUDIO_VBX_CITE,
                )
            )
    return out
