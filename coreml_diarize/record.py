"""The package record: what every artifact says about itself, in one typed place.

Core ML keeps user-defined metadata as a flat map of strings. Every key this toolkit writes
(contract.md: "Metadata every artifact carries") lives under the `coreml_diarize.` prefix, and
every writer (the converter, the quantizer) and every reader (validation, bundle, compare,
publish) goes through `PackageRecord`: `to_metadata()` writes it, `from_metadata()` /
`from_package()` read it back. Nothing else parses those keys.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ArtifactError

METADATA_PREFIX = "coreml_diarize."
# coremltools stamps each conversion with its date: dropped, or equal inputs differ in bytes
CONVERSION_DATE_KEY = "com.github.apple.coremltools.conversion_date"


def _git(*args: str) -> str:
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def git_revision() -> str:
    """The toolkit's git commit (+'-dirty' if modified), or 'unknown' outside a checkout."""
    try:
        rev = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
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


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def _quantization_keys(
    precision: str, compression: str, recipe: Mapping[str, Any]
) -> dict[str, str]:
    return {
        "precision": precision,
        "compression": compression,
        "recipe": json.dumps(dict(recipe), sort_keys=True),
    }


def quantization_metadata(
    *, precision: str, compression: str, recipe: Mapping[str, Any]
) -> dict[str, str]:
    """The keys a quantization rewrites. For packages with a record this equals the same keys
    of `record.quantized(...).to_metadata()`; packages built elsewhere get only these."""
    return {
        METADATA_PREFIX + k: v
        for k, v in _quantization_keys(precision, compression, recipe).items()
    }


def _section(meta: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in meta.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class PackageRecord:
    """Model, recipe, precision, geometry, provenance, thresholds and versions of one package."""

    model: str  # registry key
    role: str  # core | auxiliary
    precision: str  # fp32 | fp16 | fp16-selective (what the program computes in)
    compression: str  # none | palettize<n> | linear8
    recipe: Mapping[str, Any]
    geometry: Mapping[str, Any]
    thresholds: Mapping[str, Any]
    minimum_deployment_target: str
    # provenance of the weights (sources.Provenance.as_metadata keys without "source.")
    source: Mapping[str, str]
    toolkit_version: str = __version__
    git_revision: str = "unknown"
    versions: Mapping[str, str] = field(default_factory=dict)
    # constants a wrapper derived and states about itself (e.g. a fallback frame count)
    wrapper: Mapping[str, str] = field(default_factory=dict)

    # -- what readers ask -------------------------------------------------------------------
    @property
    def variant(self) -> str:
        """The tolerance/recipe name: the compression if any, else the precision
        (fp32, fp16, palettize8, linear8...)."""
        return self.precision if self.compression in ("", "none") else self.compression

    @property
    def trained(self) -> bool | None:
        """True/False for weights, None for weightless models."""
        value = self.source.get("trained")
        return {"true": True, "false": False}.get(value) if value is not None else None

    @property
    def embedding_output(self) -> str:
        """What an embedding model emits: "raw" (pyannote's vector, what PldaRho expects) or
        "l2" (unit-norm), the `embedding_output` conversion option. Packages that predate the
        option were raw."""
        return str(self.thresholds.get("embedding_output", "raw"))

    @property
    def source_files(self) -> dict[str, str]:
        """Path of each weights file within the source -> its SHA-256 (the `source.files`
        JSON); empty for random weights, weightless models and packages that predate it."""
        files = _json(self.source.get("files"), {})
        return {str(k): str(v) for k, v in files.items()} if isinstance(files, dict) else {}

    def source_text(self) -> str | None:
        """The `--source` string that rebuilds these weights, from the provenance. For a
        pipeline source (a repo or directory with one subfolder per family) that is the whole
        source: the family picks its own subfolder again."""
        kind = self.source.get("kind")
        location = self.source.get("location", "")
        if kind == "random":
            return location.replace("random-init", "random")
        if kind == "local":
            return location
        if kind == "hf":
            revision = self.source.get("revision")
            return f"hf:{location}" + (f"@{revision}" if revision else "")
        return None

    def quantized(
        self, *, precision: str, compression: str, recipe: Mapping[str, Any]
    ) -> PackageRecord:
        """The record of a package made from this one by a quantization recipe."""
        return dataclasses.replace(
            self, precision=precision, compression=compression, recipe=recipe
        )

    # -- writing and reading ----------------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        """Prefixed string keys for the package's user-defined metadata (an insertion order
        that never changes, so equal records give equal bytes)."""
        meta = {
            "model": self.model,
            "role": self.role,
            **_quantization_keys(self.precision, self.compression, self.recipe),
            "toolkit.version": self.toolkit_version,
            "toolkit.git_revision": self.git_revision,
            "geometry": json.dumps(dict(self.geometry), sort_keys=True),
            "thresholds": json.dumps(dict(self.thresholds), sort_keys=True),
            "minimum_deployment_target": self.minimum_deployment_target,
        }
        meta.update({f"versions.{k}": v for k, v in self.versions.items()})
        meta.update({f"source.{k}": v for k, v in self.source.items()})
        meta.update({f"wrapper.{k}": v for k, v in self.wrapper.items()})
        return {METADATA_PREFIX + k: v for k, v in meta.items()}

    @classmethod
    def from_metadata(cls, user_defined: Mapping[str, str], *, name: str = "package"):
        """The record in a package's user-defined metadata; one clear error for a package
        this toolkit did not build."""
        meta = _section(user_defined, METADATA_PREFIX)
        if "model" not in meta:
            raise ArtifactError(
                f"{name} was not built by coreml-diarize (no {METADATA_PREFIX}model metadata)"
            )
        return cls(
            model=meta["model"],
            role=meta.get("role", ""),
            precision=meta.get("precision", "fp32"),
            compression=meta.get("compression", "none"),
            recipe=_json(meta.get("recipe"), {}),
            geometry=_json(meta.get("geometry"), {}),
            thresholds=_json(meta.get("thresholds"), {}),
            minimum_deployment_target=meta.get("minimum_deployment_target", "iOS17"),
            source=_section(meta, "source."),
            toolkit_version=meta.get("toolkit.version", ""),
            git_revision=meta.get("toolkit.git_revision", ""),
            versions=_section(meta, "versions."),
            wrapper=_section(meta, "wrapper."),
        )

    @classmethod
    def from_package(cls, path: Path) -> PackageRecord:
        from .mlpackage import load_mlmodel

        path = Path(path)
        return cls.from_metadata(dict(load_mlmodel(path).user_defined_metadata), name=str(path))
