"""Weight sources: seeded random (calibrated), a local pyannote checkpoint, or the HF hub cache.

Every converter gets its weights here, and every artifact records where they came from
(`Provenance`: the source, its revision, and the SHA-256 of every file the weights came from).

A source may hold one model or a whole pipeline. A pipeline source, laid out like
`pyannote/speaker-diarization-community-1` (`segmentation/pytorch_model.bin`,
`embedding/pytorch_model.bin`, `plda/xvec_transform.npz`, `plda/plda.npz`), is one source for
every family: each family takes its own subfolder (`<family>/`) when there is one, else the
files at the source's root (a single-model repo such as pyannote/segmentation-3.0, or a plain
checkpoint directory). The PLDA family is pyannote's `PLDA` object, loaded with pyannote's own
`PLDA.from_pretrained` after the npz files are checked (`plda_sources.check_plda_files`).

Checkpoints are loaded by `checkpoints.py` (a safe pre-check, then pyannote's own loader), hub
files fetched by `hub_weights.py`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import plda_sources
from .checkpoints import first_line, load_checkpoint, quiet_pyannote
from .errors import SourceError
from .hub_weights import hub_files
from .mlpackage import file_sha256
from .specs import WeightFamily

DEFAULT_SEED = 0
CHECKPOINT_NAME = "pytorch_model.bin"  # pyannote's AssetFileName.Model

# The architectures exactly as pyannote/segmentation-3.0 and pyannote's WeSpeaker ResNet34 are built.
SEGMENTATION_3_0 = {
    "sincnet": {"stride": 10},
    "lstm": {
        "hidden_size": 128,
        "num_layers": 4,
        "bidirectional": True,
        "monolithic": True,
        "dropout": 0.5,
    },
    "linear": {"hidden_size": 128, "num_layers": 2},
    "sample_rate": 16000,
    "num_channels": 1,
}
SEGMENTATION_SPEAKERS = 3
SEGMENTATION_MAX_PER_FRAME = 2
SEGMENTATION_DURATION_S = 10.0


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `--source` value."""

    kind: str  # "random" | "local" | "hf"
    text: str
    seed: int | None = None
    path: Path | None = None
    repo: str | None = None
    revision: str | None = None


@dataclass(frozen=True)
class Provenance:
    family: str
    kind: str  # random | local | hf
    location: str  # random-init:<seed> | file path | hf repo id
    revision: str | None  # hub commit, when known
    sha256: str | None  # of the weights: `files_digest(files)`
    seed: int | None
    trained: bool
    calibration: str | None = None  # how random weights were calibrated
    trained_on: str | None = None  # what a test-fixture checkpoint says it was trained on
    # path of each file within the source (e.g. "plda/plda.npz") -> its SHA-256
    files: Mapping[str, str] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, str]:
        """Flat string metadata for the mlpackage (Core ML user-defined keys are strings);
        `source.files` is compact JSON (path -> SHA-256), absent for random weights."""
        ref = f"random-init:{self.seed}" if self.kind == "random" else (self.sha256 or "")
        out = {
            "source.kind": self.kind,
            "source.location": self.location,
            "source.revision": self.revision or "",
            "source.sha256": ref,
            "source.trained": "true" if self.trained else "false",
        }
        if self.files:
            out["source.files"] = files_metadata(self.files)
        if self.calibration:
            out["source.calibration"] = self.calibration
        if self.trained_on:
            out["source.trained_on"] = self.trained_on
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def files_metadata(files: Mapping[str, str]) -> str:
    """The `source.files` value: compact JSON, keys sorted (equal files give equal bytes)."""
    return json.dumps(dict(files), sort_keys=True, separators=(",", ":"))


def files_digest(files: Mapping[str, str]) -> str:
    """One SHA-256 for the weights of one family, from its files' SHA-256s.

    One file (a checkpoint): that file's own SHA-256. Several (the PLDA's two npz files): the
    SHA-256 of `<file name>:<sha256>\n` lines in file-name order. File names, not paths within
    the source, so the same files give the same digest from a pipeline source (`plda/...`) and
    from a plain directory; it changes when any file changes.
    """
    if len(files) == 1:
        return next(iter(files.values()))
    lines = sorted(f"{Path(path).name}:{sha}\n" for path, sha in files.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


@dataclass
class LoadedWeights:
    family: str
    model: Any  # a pyannote.audio Model in eval mode, or a pyannote PLDA
    provenance: Provenance


def parse_source(text: str) -> SourceSpec:
    """`random[:SEED]`, `hf:OWNER/REPO[@REVISION]`, or a path to a checkpoint file/directory
    (a pipeline directory included)."""
    text = (text or "").strip()
    if not text:
        raise SourceError(
            "empty --source (use random[:SEED], hf:OWNER/REPO[@REV] or a checkpoint path)"
        )
    if text == "random" or text.startswith("random:"):
        seed_text = text.partition(":")[2] or str(DEFAULT_SEED)
        if not re.fullmatch(r"\d+", seed_text):
            raise SourceError(f"random seed must be a non-negative integer, got '{seed_text}'")
        return SourceSpec(kind="random", text=text, seed=int(seed_text))
    if text.startswith("hf:"):
        repo, _, revision = text[3:].partition("@")
        if not re.fullmatch(r"[\w.\-]+/[\w.\-]+", repo):
            raise SourceError(f"hub source must look like hf:OWNER/REPO[@REVISION], got '{text}'")
        return SourceSpec(kind="hf", text=text, repo=repo, revision=revision or None)
    return SourceSpec(kind="local", text=text, path=Path(text).expanduser())


def load_weights(
    family: str,
    source: str | SourceSpec,
    *,
    trust_checkpoint: bool = False,
    cache_dir: Path | None = None,
) -> LoadedWeights:
    """Load `family`'s weights (a WeightFamily or its name) from `source`, in eval mode.

    A local directory or hub repo with a `<family>/` subfolder is a pipeline source: the family
    takes its files from there (see the module docstring)."""
    fam = weight_family(family)
    spec = parse_source(source) if isinstance(source, str) else source
    if spec.kind == "random":
        return _load_random(fam, spec.seed if spec.seed is not None else DEFAULT_SEED)
    if spec.kind == "hf":
        paths, revision = hub_files(spec.repo or "", spec.revision, fam, cache_dir)
        location = spec.repo or ""
    else:
        assert spec.path is not None
        paths, revision = _local_files(spec.path, fam), None
        location = str(spec.path)
    if fam.load_files is not None:
        model, trained_on = fam.load_files(_common_folder(paths.values())), None
    else:
        (path,) = paths.values()
        model, trained_on = load_checkpoint(fam.name, fam.architecture, path, trust_checkpoint)
    files = {rel: file_sha256(path) for rel, path in paths.items()}
    prov = Provenance(
        fam.name,
        spec.kind,
        location,
        revision,
        files_digest(files),
        None,
        True,
        trained_on=trained_on,
        files=files,
    )
    return LoadedWeights(fam.name, model, prov)


def _local_files(path: Path, fam: WeightFamily) -> dict[str, Path]:
    """Path within the source -> local file, for each of the family's files: from
    `<dir>/<family>/` if that folder exists, else from `<dir>/`; a file path stands for itself
    (single-file families only). Other missing files are reported by the loaders."""
    if path.is_dir():
        if (path / fam.name).is_dir():
            return {f"{fam.name}/{name}": path / fam.name / name for name in fam.files}
        if not any((path / name).exists() for name in fam.files):
            first = fam.files[0]
            raise SourceError(f"no {fam.name}/{first} (or {first}) in {path}")
        return {name: path / name for name in fam.files}
    if len(fam.files) == 1:
        return {path.name: path}
    if not path.exists():
        raise SourceError(f"{fam.architecture} source not found: {path}")
    raise SourceError(
        f"{fam.architecture} source must be a directory holding {' and '.join(fam.files)}: {path}"
    )


def _common_folder(paths: Iterable[Path]) -> Path:
    folders = {Path(p).parent for p in paths}
    if len(folders) != 1:  # pragma: no cover - both resolvers keep a family in one folder
        raise SourceError(f"files of one family in different folders: {sorted(map(str, folders))}")
    return folders.pop()


# --- architectures -------------------------------------------------------------------------


def _build_pyannet():
    """segmentation-3.0: PyanNet with the powerset specifications pyannote trains it with."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    model = PyanNet(**SEGMENTATION_3_0)
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=SEGMENTATION_DURATION_S,
        classes=[f"speaker#{i + 1}" for i in range(SEGMENTATION_SPEAKERS)],
        powerset_max_classes=SEGMENTATION_MAX_PER_FRAME,
        permutation_invariant=True,
    )
    model.build()
    return model.eval()


def _build_wespeaker():
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    return WeSpeakerResNet34().eval()


def _calibrate_segmentation(model, audio) -> None:
    from .calibration import calibrate_segmentation

    calibrate_segmentation(model, audio)


def _calibrate_embedding(model, audio) -> None:
    from .calibration import calibrate_embedding

    calibrate_embedding(model, audio)


def _pyannet_geometry(model, embedding_batch: int):
    return segmentation_geometry(model, embedding_batch=embedding_batch)


def load_plda(directory: str | Path):
    """pyannote's PLDA from a folder holding xvec_transform.npz and plda.npz, through
    pyannote's own `PLDA.from_pretrained`, after `plda_sources.check_plda_files`."""
    directory = Path(directory)
    plda_sources.check_plda_files(directory)
    quiet_pyannote()
    from pyannote.audio.core.plda import PLDA

    try:
        plda = PLDA.from_pretrained(str(directory))
    except Exception as exc:  # e.g. a singular `tr`: numpy's LinAlgError inside vbx_setup
        raise SourceError(f"cannot load PLDA from {directory}: {first_line(str(exc))}") from exc
    if plda is None:  # pragma: no cover - from_pretrained returns None only for hub misses
        raise SourceError(f"cannot load PLDA from {directory}")
    return plda


def random_plda(seed: int):
    """(pyannote PLDA, calibration note): seeded random files (plda_sources), deterministic
    for a seed, loaded like any other PLDA folder."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="coreml-diarize-plda-") as tmp:
        plda_sources.random_plda_files(tmp, seed)
        plda = load_plda(tmp)
    return plda, plda_sources.CALIBRATION


# The weight families, declared once; the registry's ModelSpecs point at them.
SEGMENTATION_WEIGHTS = WeightFamily(
    "segmentation",
    "PyanNet",
    _build_pyannet,
    _calibrate_segmentation,
    _pyannet_geometry,
    files=(CHECKPOINT_NAME,),
)
EMBEDDING_WEIGHTS = WeightFamily(
    "embedding",
    "WeSpeakerResNet34",
    _build_wespeaker,
    _calibrate_embedding,
    files=(CHECKPOINT_NAME,),
)
PLDA_WEIGHTS = WeightFamily(
    "plda",
    "PLDA",
    files=(plda_sources.TRANSFORM_FILE, plda_sources.PLDA_FILE),
    load_files=load_plda,
    load_random=random_plda,
)
FAMILIES = {f.name: f for f in (SEGMENTATION_WEIGHTS, EMBEDDING_WEIGHTS, PLDA_WEIGHTS)}


def weight_family(family: str | WeightFamily) -> WeightFamily:
    """A family by name (an unknown name is an error, never a default)."""
    if isinstance(family, WeightFamily):
        return family
    if family not in FAMILIES:
        raise SourceError(f"unknown weight family '{family}' (choose from {', '.join(FAMILIES)})")
    return FAMILIES[family]


def build_architecture(family: str | WeightFamily):
    """The untrained architecture (pyannote's default init from torch's current RNG)."""
    fam = weight_family(family)
    if fam.build is None:
        raise SourceError(f"{fam.name} weights have no architecture to build (use random[:SEED])")
    quiet_pyannote()
    return fam.build()


def _load_random(fam: WeightFamily, seed: int) -> LoadedWeights:
    if fam.load_random is not None:
        model, note = fam.load_random(seed)
    else:
        import torch

        from .calibration import calibrate

        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
            torch.manual_seed(seed)
            model = build_architecture(fam)
        note = calibrate(fam, model)
    prov = Provenance(fam.name, "random", f"random-init:{seed}", None, None, seed, False, note)
    return LoadedWeights(fam.name, model, prov)


# --- geometry ------------------------------------------------------------------------------


def segmentation_geometry(model, *, embedding_dim: int | None = None, embedding_batch: int = 3):
    """Sizes derived from a PyanNet model: frames and classes are the model's, never literals."""
    from .specs import Geometry

    spec = model.specifications
    sample_rate = int(model.hparams.sample_rate)
    samples = int(round(spec.duration * sample_rate))
    step = model.receptive_field_center(frame=1) - model.receptive_field_center(frame=0)
    if embedding_dim is None:
        embedding_dim = int(build_architecture("embedding").dimension)
    return Geometry(
        sample_rate=sample_rate,
        samples=samples,
        frames=int(model.num_frames(samples)),
        classes=int(spec.num_powerset_classes),
        speakers=len(spec.classes),
        embedding_dim=embedding_dim,
        frame_step_s=step / sample_rate,
        embedding_batch=embedding_batch,
    )


def default_geometry(*, embedding_batch: int = 3):
    """Geometry of the segmentation-3.0 architecture (independent of its weights)."""
    return segmentation_geometry(
        build_architecture("segmentation"), embedding_batch=embedding_batch
    )
