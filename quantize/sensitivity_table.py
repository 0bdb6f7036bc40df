"""The per-layer sensitivity table, `coreml-diarize/sensitivity/1`: one record, one reader, one
writer. `validation/sensitivity.py` measures a table and writes it (`dumps`); the mixed-bit
recipe search (`mixed.py`) reads it (`from_file`).

The file: JSON, sorted keys, 2-space indent, trailing newline (`dumps`); per layer, the loss
at each width with only that layer palettized, above the fp16 program's own (`baseline_loss`),
plus the measurement's other metrics and provenance. The reader checks what the search relies
on (schema, widths, granularity, distinct layers, every width's loss a finite number >= 0) and
turns each problem into one line; a table it reads writes back byte-identical. The sha256 of
the file read is provenance of the read (the recipe records it), never written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coreml_diarize.errors import DiarizeError

from .recipes import GRANULARITIES, PALETTIZE_NBITS

TABLE_SCHEMA = "coreml-diarize/sensitivity/1"
_LAYER_KEYS = frozenset({"name", "elements", "shape", "loss", "metrics"})
_TABLE_KEYS = frozenset(
    {
        "schema",
        "model",
        "package",
        "package_tree_sha256",
        "granularity",
        "group_size",
        "metric",
        "baseline_loss",
        "baseline_metrics",
        "calibration",
        "widths",
        "layers",
        "seconds",
        "versions",
        "skipped",
    }
)


@dataclass(frozen=True)
class LayerSensitivity:
    name: str  # the weight's const name in the source (fp32) package
    elements: int
    shape: tuple[int, ...]
    loss: Mapping[int, float]  # width -> loss with only this layer palettized, above baseline
    # width -> the measurement's metrics (the raw loss among them)
    metrics: Mapping[int, Mapping[str, float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "elements": self.elements,
            "shape": list(self.shape),
            "loss": {str(w): v for w, v in self.loss.items()},
            "metrics": {str(w): dict(m) for w, m in self.metrics.items()},
        }


@dataclass(frozen=True)
class SensitivityTable:
    model: str  # ModelSpec.key
    package: str  # the measured fp32 package's file name
    package_tree_sha256: str
    granularity: str
    group_size: int | None
    metric: str  # the name of the loss
    baseline_loss: float  # the fp16 program's own loss against fp32
    widths: tuple[int, ...]
    layers: tuple[LayerSensitivity, ...]
    calibration: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    versions: Mapping[str, str] = field(default_factory=dict)
    # metrics of the unpalettized fp16 program vs fp32 (what each layer's metrics compare to)
    baseline_metrics: Mapping[str, float] = field(default_factory=dict)
    # weights the granularity cannot palettize (coremltools leaves them uncompressed):
    # name -> why; None: not recorded (tables measured before grouped tables existed)
    skipped: Mapping[str, str] | None = None
    # of the file's bytes, when read from one (the recipe's provenance); never written
    sha256: str = field(default="", compare=False)

    # --- the writer ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        out = {
            "schema": TABLE_SCHEMA,
            "model": self.model,
            "package": self.package,
            "package_tree_sha256": self.package_tree_sha256,
            "granularity": self.granularity,
            "group_size": self.group_size,
            "metric": self.metric,
            "baseline_loss": self.baseline_loss,
            "baseline_metrics": dict(self.baseline_metrics),
            "calibration": dict(self.calibration),
            "widths": list(self.widths),
            "layers": [layer.to_json() for layer in self.layers],
            "seconds": self.seconds,
            "versions": dict(self.versions),
        }
        if self.skipped is not None:
            out["skipped"] = dict(self.skipped)
        return out

    def dumps(self) -> str:
        """The agreed file text: sorted keys, 2-space indent, trailing newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def most_sensitive(self, width: int, n: int = 10) -> list[LayerSensitivity]:
        return sorted(self.layers, key=lambda x: (-x.loss.get(width, 0.0), x.name))[:n]

    def merged(self, other: SensitivityTable) -> SensitivityTable:
        """One table from two measurements of other widths on the same package, granularity
        and calibration (the fp16 baseline is deterministic, so it must agree exactly)."""
        same = ("model", "package_tree_sha256", "granularity", "group_size", "metric")
        differ = [k for k in same if getattr(self, k) != getattr(other, k)]
        if self.calibration != other.calibration or self.baseline_loss != other.baseline_loss:
            differ.append("calibration")
        if differ or [x.name for x in self.layers] != [x.name for x in other.layers]:
            raise DiarizeError(f"cannot merge sensitivity tables: {', '.join(differ) or 'layers'}")
        widths = tuple(sorted(set(self.widths) | set(other.widths), reverse=True))

        def union(a: Mapping[int, Any], b: Mapping[int, Any]) -> dict[int, Any]:
            both = {**a, **b}
            return {w: both[w] for w in widths if w in both}

        layers = tuple(
            dataclasses.replace(a, loss=union(a.loss, b.loss), metrics=union(a.metrics, b.metrics))
            for a, b in zip(self.layers, other.layers, strict=True)
        )
        return dataclasses.replace(
            self,
            widths=widths,
            layers=layers,
            seconds=round(self.seconds + other.seconds, 1),
            sha256="",  # no file holds the merged table yet
        )

    # --- the reader ---------------------------------------------------------------------------

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, origin: str = "sensitivity table", sha256: str = ""
    ) -> SensitivityTable:
        """The table in `data` (a loaded file), checked; each problem is one line naming
        `origin`."""
        if not isinstance(data, Mapping) or data.get("schema") != TABLE_SCHEMA:
            raise DiarizeError(
                f"{origin} is not a sensitivity table (schema must be {TABLE_SCHEMA})"
            )
        try:
            table = cls._parse(data, sha256)
        except KeyError as exc:
            raise DiarizeError(f"{origin} has no {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise DiarizeError(f"{origin}: {str(exc).splitlines()[0]}") from exc
        return table

    @classmethod
    def from_file(cls, path: Path) -> SensitivityTable:
        path = Path(path)
        if not path.is_file():
            raise DiarizeError(f"sensitivity table not found: {path}")
        raw = path.read_bytes()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise DiarizeError(f"cannot parse {path.name}: {str(exc).splitlines()[0]}") from exc
        return cls.from_mapping(data, origin=path.name, sha256=hashlib.sha256(raw).hexdigest())

    @classmethod
    def _parse(cls, data: Mapping[str, Any], sha256: str) -> SensitivityTable:
        unknown = sorted(set(data) - _TABLE_KEYS)
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}")
        granularity = data["granularity"]
        group_size = None if data["group_size"] is None else int(data["group_size"])
        widths = tuple(int(w) for w in data["widths"])
        problem = _settings_problem(widths, granularity, group_size)
        if problem:
            raise ValueError(problem)
        layers = tuple(_layer(entry, widths) for entry in data["layers"])
        names = [layer.name for layer in layers]
        if len(set(names)) != len(names) or not names:
            raise ValueError("layers must be distinct weight names (at least one)")
        skipped = data.get("skipped")
        return cls(
            model=str(data["model"]),
            package=str(data["package"]),
            package_tree_sha256=str(data["package_tree_sha256"]),
            granularity=granularity,
            group_size=group_size,
            metric=str(data["metric"]),
            baseline_loss=_loss(data["baseline_loss"], "baseline_loss"),
            widths=widths,
            layers=layers,
            calibration=dict(data["calibration"]),
            seconds=float(data["seconds"]),
            versions={str(k): str(v) for k, v in data["versions"].items()},
            baseline_metrics={
                str(k): float(v) for k, v in data.get("baseline_metrics", {}).items()
            },
            skipped=None if skipped is None else {str(k): str(v) for k, v in skipped.items()},
            sha256=sha256,
        )


def check_settings(
    widths: Sequence[int], granularity: str, group_size: int | None
) -> tuple[int, ...]:
    """A table's measurement settings as the reader accepts them (before measuring one):
    distinct palettization widths, a known granularity, a group size with grouped tables only."""
    widths = tuple(int(w) for w in widths)
    problem = _settings_problem(widths, granularity, group_size)
    if problem:
        raise DiarizeError(problem)
    return widths


def _settings_problem(
    widths: tuple[int, ...], granularity: Any, group_size: int | None
) -> str | None:
    if granularity not in GRANULARITIES:
        return f"unknown granularity {granularity!r} (choose from {', '.join(GRANULARITIES)})"
    if (granularity == "per_grouped_channel") != (group_size is not None):
        return "group_size goes with granularity per_grouped_channel (and only with it)"
    if group_size is not None and group_size < 1:
        return f"group_size must be >= 1, got {group_size}"
    bad = [w for w in widths if w not in PALETTIZE_NBITS]
    if not widths or bad:
        among = ", ".join(map(str, PALETTIZE_NBITS))
        return f"widths must be among {among}, got {', '.join(map(str, bad)) or 'none'}"
    if len(set(widths)) != len(widths):
        return f"widths must be distinct, got {', '.join(map(str, widths))}"
    return None


def _loss(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        # NaN fails the comparison too; losses are clipped at 0, so a negative one is a bad table
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _layer(entry: Mapping[str, Any], widths: tuple[int, ...]) -> LayerSensitivity:
    unknown = sorted(set(entry) - _LAYER_KEYS)
    name = str(entry["name"])
    if unknown:
        raise ValueError(f"layer {name!r} has unknown keys {', '.join(unknown)}")
    losses = {int(k): v for k, v in entry["loss"].items()}
    missing = [w for w in widths if w not in losses]
    if missing:
        raise ValueError(f"layer {name!r} has no loss for widths {missing}")
    metrics = {
        int(w): {str(k): float(v) for k, v in m.items()}
        for w, m in entry.get("metrics", {}).items()
    }
    extra = sorted((set(losses) | set(metrics)) - set(widths))
    if extra:
        raise ValueError(f"layer {name!r} has values for widths {extra} the table does not list")
    shape = tuple(int(d) for d in entry["shape"])
    elements = int(entry["elements"])
    if elements != math.prod(shape):
        raise ValueError(f"layer {name!r}: {elements} elements, but shape {list(shape)}")
    return LayerSensitivity(
        name=name,
        elements=elements,
        shape=shape,
        loss={w: _loss(losses[w], f"loss of {name} at {w} bits") for w in widths},
        metrics=metrics,
    )
