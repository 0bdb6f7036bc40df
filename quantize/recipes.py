"""Quantization recipes: one typed, validated, immutable description of what to do to a package.

A recipe is built from keyword arguments, a mapping (CLI flags, JSON/YAML files) or a file; every
route goes through the same checks, so a bad setting fails before any work, in one line:
unknown keys, out-of-range values and settings that do not apply to the chosen mode (e.g. `nbits`
with `fp16`, `group_size` with `per_tensor`) are all rejected rather than silently ignored.

Fields that do not apply to a mode stay `None`; fields that apply but were not given are filled
with their defaults, so `to_dict()` is the complete, canonical recipe recorded in the artifact.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from coreml_diarize.errors import DiarizeError

MODES = ("fp16", "fp16-selective", "palettize", "linear", "mixed")
GRANULARITIES = ("per_tensor", "per_grouped_channel")
# what coremltools' palettizer accepts (OpPalettizerConfig._VALID_NBITS): 5 and 7 are not formats
PALETTIZE_NBITS = (1, 2, 3, 4, 6, 8)
# iOS16/17's constexpr_lut_to_dense stores 1, 2, 4, 6 or 8-bit indices; 3-bit needs iOS18
IOS18_ONLY_NBITS = (3,)
KMEANS_IMPLS = ("numpy", "coremltools")
# what a compressed program computes in: fp16 (the default: the only precision the Neural
# Engine runs, with fp16 look-up tables) or fp32 (weights decompress to fp32, CPU/GPU only)
COMPUTE_PRECISIONS = ("fp16", "fp32")
DEFAULT_COMPUTE = "fp16"
DEFAULT_NBITS = 8
DEFAULT_GROUP_SIZE = 16
DEFAULT_WEIGHT_THRESHOLD = 2048  # elements; coremltools' own default

# which settings each mode uses (everything else must be left unset)
_APPLIES: dict[str, frozenset[str]] = {
    "fp16": frozenset({"exclude"}),
    "fp16-selective": frozenset({"exclude"}),
    "palettize": frozenset(
        {
            "nbits",
            "granularity",
            "group_size",
            "weight_threshold",
            "seed",
            "kmeans",
            "exclude",
            "compute",
        }
    ),
    "linear": frozenset({"nbits", "granularity", "weight_threshold", "exclude", "compute"}),
    # a width per named weight (issue #24); every weight not named stays fp16, uncompressed,
    # so there is no weight_threshold; `exclude` only keeps the fp32 path of fp16 programs
    "mixed": frozenset(
        {"bits", "granularity", "group_size", "seed", "kmeans", "exclude", "compute"}
    ),
}


def _fail(message: str) -> DiarizeError:
    return DiarizeError(f"quantize: {message}")


def _int(name: str, value: Any, *, low: int) -> int:
    # bool is an int subclass: `nbits: true` in a YAML file is a mistake, not 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise _fail(f"{name} must be >= {low}, got {value}")
    return value


def _width(name: str, value: Any) -> int:
    """A look-up table width: one of the palettizer's formats."""
    width = _int(name, value, low=0)
    if width not in PALETTIZE_NBITS:
        raise _fail(
            f"{name} {width} is not a palettization format (choose from "
            f"{', '.join(map(str, PALETTIZE_NBITS))})"
        )
    return width


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise _fail(f"unknown {name} {value!r} (choose from {', '.join(choices)})")
    return value


@dataclass(frozen=True)
class QuantizeConfig:
    """What to do to a saved package.

    mode: fp16 (weights and compute in fp16), fp16-selective (fp16 except numerically sensitive
        ops, see converters.convert.FP32_SENSITIVE_OPS), palettize (k-means look-up tables of
        2**nbits entries), linear (int8 symmetric, one scale per output channel), mixed
        (k-means look-up tables of a width per named weight: `bits`; quantize/mixed.py).
    bits: mixed: weight constant name -> width (1, 2, 4, 6, 8; 3 on iOS18 packages); the
        weights not named stay fp16 and uncompressed. Names are the source (fp32) package's
        const names, the same names `exclude` takes.
    nbits: palettize: 1, 2, 3, 4, 6 or 8 (default 8); linear: 8 only.
    granularity: palettize: per_tensor (default) or per_grouped_channel (one LUT per
        `group_size` output channels; needs an iOS18 package); linear: per_channel only.
    weight_threshold: tensors with at most this many elements are left alone (default 2048).
    seed: k-means++ seed (palettize); same seed, same bytes.
    kmeans: numpy (default: seeded, exact 1-D k-means, thread-free) or coremltools (its
        scikit-learn k-means, whose seed is fixed at 0 by coremltools).
    exclude: names of weight constants to leave uncompressed; in fp16 programs the ops that
        read them, and every op upstream of those, also stay fp32 (SincNet's filterbank and
        the fbank kernel need this: see docs/quantization.md). Unset: the model spec's
        `uncompressed` weights; an empty list compresses everything.
    compute: palettize/linear: the program's compute precision, fp16 (default: the program
        is first made fp16 as mode fp16 does, so the look-up tables are fp16 and it can run on
        the Neural Engine) or fp32 (weights decompress to fp32; CPU/GPU only).
    """

    mode: str
    nbits: int | None = None
    granularity: str | None = None
    group_size: int | None = None
    weight_threshold: int | None = None
    seed: int | None = None
    kmeans: str | None = None
    exclude: tuple[str, ...] | None = None
    compute: str | None = None
    bits: tuple[tuple[str, int], ...] | None = None  # sorted (name, width) pairs: hashable

    def __post_init__(self) -> None:
        mode = _choice("mode", self.mode, MODES)
        applies = _APPLIES[mode]
        for f in fields(self):
            if f.name != "mode" and f.name not in applies and getattr(self, f.name) is not None:
                raise _fail(f"{f.name} does not apply to mode {mode}")
        if mode == "palettize":
            self._fill_palettize()
        elif mode == "linear":
            self._fill_linear()
        elif mode == "mixed":
            self._fill_mixed()
        else:
            self._fill_exclude()

    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)  # frozen: defaults are filled once, here

    def _fill_common(self) -> None:
        self._set(
            "compute", _choice("compute", self.compute or DEFAULT_COMPUTE, COMPUTE_PRECISIONS)
        )
        threshold = (
            DEFAULT_WEIGHT_THRESHOLD if self.weight_threshold is None else self.weight_threshold
        )
        self._set("weight_threshold", _int("weight_threshold", threshold, low=0))
        self._fill_exclude()

    def _fill_exclude(self) -> None:
        # None stays None: "the model's default", resolved against the package's spec by
        # quantize_package (ModelSpec.uncompressed); () explicitly compresses everything
        if self.exclude is None:
            return
        exclude = self.exclude
        if isinstance(exclude, str) or not all(isinstance(n, str) and n for n in exclude):
            raise _fail(f"exclude must be a list of weight names, got {exclude!r}")
        self._set("exclude", tuple(sorted(set(exclude))))

    def _fill_palettize(self) -> None:
        self._set("nbits", _width("nbits", DEFAULT_NBITS if self.nbits is None else self.nbits))
        self._fill_lut_settings()
        self._fill_common()

    def _fill_mixed(self) -> None:
        bits = self.bits
        if isinstance(bits, Mapping):
            bits = tuple(bits.items())
        if not bits:
            raise _fail("mode mixed needs bits: a width per weight name (none given)")
        if isinstance(bits, str) or not all(isinstance(p, tuple) and len(p) == 2 for p in bits):
            raise _fail(f"bits must map weight names to widths, got {self.bits!r}")
        names = [name for name, _ in bits]
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise _fail(f"bits must map distinct weight names to widths, got {names!r}")
        self._set("bits", tuple(sorted((n, _width(f"bits[{n}]", b)) for n, b in bits)))
        self._fill_lut_settings()
        # "applied in fp16 programs with fp16 tables" (issue #24): what the Neural Engine runs
        if self.compute not in (None, "fp16"):
            raise _fail(f"mode mixed computes in fp16 only, got compute {self.compute!r}")
        self._set("compute", "fp16")
        self._fill_exclude()

    def _fill_lut_settings(self) -> None:
        """granularity, group_size, seed and kmeans: what palettize and mixed share."""
        granularity = _choice("granularity", self.granularity or "per_tensor", GRANULARITIES)
        self._set("granularity", granularity)
        if granularity == "per_grouped_channel":
            size = DEFAULT_GROUP_SIZE if self.group_size is None else self.group_size
            self._set("group_size", _int("group_size", size, low=1))
        elif self.group_size is not None:
            raise _fail("group_size applies only to granularity per_grouped_channel")
        self._set("seed", _int("seed", 0 if self.seed is None else self.seed, low=0))
        self._set("kmeans", _choice("kmeans", self.kmeans or "numpy", KMEANS_IMPLS))
        if self.kmeans == "coremltools" and self.seed != 0:
            raise _fail("kmeans coremltools cannot be seeded (coremltools fixes its seed at 0)")

    def _fill_linear(self) -> None:
        if self.nbits not in (None, 8):
            raise _fail(f"linear quantization is int8 only (nbits 8), got nbits {self.nbits!r}")
        self._set("nbits", 8)
        if self.granularity not in (None, "per_channel"):
            raise _fail(f"linear quantization is per_channel only, got {self.granularity!r}")
        self._set("granularity", "per_channel")
        self._fill_common()

    # -- names ------------------------------------------------------------------------
    @property
    def family(self) -> str:
        """The spec's tolerance family: fp16 | palettize | linear | mixed."""
        return "fp16" if self.mode.startswith("fp16") else self.mode

    @property
    def compression(self) -> str:
        """The `coreml_diarize.compression` value; `ModelSpec.tolerance_for` maps it to the
        family by stripping trailing digits, so it must end in nbits (no group suffix)."""
        if self.mode in ("palettize", "linear"):
            return f"{self.mode}{self.nbits}"
        if self.mode == "mixed":
            return "mixed"  # the widths are in the recorded recipe
        return "none"

    @property
    def name(self) -> str:
        """The artifact tag: <stem>_<name>.mlpackage (palettize8, palettize4g16, linear8, fp16,
        mixed; palettize8_fp32 for a compressed program that computes in fp32)."""
        if self.mode == "palettize" and self.granularity == "per_grouped_channel":
            tag = f"palettize{self.nbits}g{self.group_size}"
        else:
            tag = self.compression if self.compression != "none" else self.mode
        return f"{tag}_fp32" if self.compute == "fp32" else tag

    @property
    def computes_in_fp16(self) -> bool:
        return self.family == "fp16" or self.compute == "fp16"

    @property
    def bits_by_name(self) -> dict[str, int]:
        """mixed: weight name -> width ({} for the other modes)."""
        return dict(self.bits or ())

    def needs_ios18(self) -> str | None:
        """Why this recipe needs an iOS18 package, or None."""
        if self.granularity == "per_grouped_channel":
            return "per_grouped_channel palettization"
        if self.mode == "palettize" and self.nbits in IOS18_ONLY_NBITS:
            return f"{self.nbits}-bit palettization"
        for name, width in self.bits or ():
            if width in IOS18_ONLY_NBITS:
                return f"{width}-bit palettization (bits[{name}])"
        return None

    def to_dict(self) -> dict[str, Any]:
        """The complete recipe (only the settings that apply to the mode)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bits" and value is not None:
                out[f.name] = dict(value)
            elif value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> QuantizeConfig:
        """From a dict (config file, CLI flags); unknown keys are an error, not ignored."""
        if not isinstance(data, Mapping):
            raise _fail(f"a recipe must be a mapping of settings, got {type(data).__name__}")
        known = [f.name for f in fields(cls)]
        if data.get("mode") != "mixed":
            # `bits: 4` in a palettize recipe is a misspelt nbits, not a mixed recipe's table
            known.remove("bits")
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key).replace("-", "_"), known, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise _fail(f"unknown setting '{key}' ({hint}known: {', '.join(known)})")
        if "mode" not in data or data["mode"] is None:
            raise _fail(f"no mode given (choose from {', '.join(MODES)})")
        kwargs = dict(data)
        if isinstance(kwargs.get("exclude"), list):
            kwargs["exclude"] = tuple(kwargs["exclude"])
        if "bits" in kwargs and kwargs["bits"] is not None:
            if not isinstance(kwargs["bits"], Mapping):
                raise _fail(f"bits must map weight names to widths, got {kwargs['bits']!r}")
            kwargs["bits"] = tuple(kwargs["bits"].items())
        return cls(**kwargs)

    @classmethod
    def from_file(cls, path: Path) -> QuantizeConfig:
        return cls.from_mapping(load_recipe_file(path))


def load_recipe_file(path: Path) -> dict[str, Any]:
    """A recipe file's settings: JSON (.json) or YAML (.yaml/.yml), a flat mapping."""
    path = Path(path)
    if not path.is_file():
        raise _fail(f"recipe file not found: {path}")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        elif path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            raise _fail(f"recipe file must be .json, .yaml or .yml: {path}")
    except (ValueError, ImportError) as exc:  # json.JSONDecodeError is a ValueError
        raise _fail(f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from exc
    except Exception as exc:  # yaml.YAMLError has no common base we can import cheaply
        if isinstance(exc, DiarizeError):
            raise
        raise _fail(f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from exc
    if data is None:
        raise _fail(f"recipe file {path.name} is empty")
    if not isinstance(data, dict):
        raise _fail(f"recipe file {path.name} must hold a mapping of settings")
    return data
