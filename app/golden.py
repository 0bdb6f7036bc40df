"""Golden I/O: one fixed real input per package, its PyTorch reference output, and the tolerance
the package was validated with, stored so a Swift app can self-test a bundle without Python.

The files' format and their place in a bundle: `golden_files.py`.

The inputs are real speech: a 10 s chunk of pyannote.audio's bundled sample for the segmentation
and embedding models, and for the auxiliary models what they really receive in the chain on that
chunk (segmentation reference -> powerset postprocessor -> preprocessor -> embedding ->
post-embedding), every step computed by the references of the upstream models from the same
weights. `check_golden` runs a package on its golden input and applies the recorded tolerance
(`validation.judge.judge_output`, the judge validation itself uses).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from coreml_diarize.errors import ArtifactError, DiarizeError
from coreml_diarize.models import get_spec
from coreml_diarize.specs import intended_compute_units

from .golden_files import Arrays, Golden, golden_stem, read_golden, write_golden

if TYPE_CHECKING:
    from coreml_diarize.specs import BuildContext, ModelSpec
    from coreml_diarize.validation.judge import OutputResult

# the golden chunk: 10 s of pyannote's bundled sample from 5 s (both speakers talk in it); the
# speakers of the chunk from 15 s fill post-embedding's speaker database ("known speakers")
GOLDEN_OFFSET_S = 5.0
DATABASE_OFFSET_S = 15.0


# --- checking a package against its golden data ----------------------------------------------


@dataclass
class GoldenReport:
    package: str
    backend: str
    recipe: str
    outputs: list[OutputResult]
    failures: list[str] = field(default_factory=list)
    # where it ran, when that is not what was asked for (e.g. cpu_and_ne on a machine without
    # a Neural Engine: the golden check then proves nothing about the NE)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures and all(o.passed for o in self.outputs)

    def line(self) -> str:
        parts = []
        for o in self.outputs:
            metric = f"max_abs {o.max_abs:.3g}"
            if o.cosine_min is not None:
                metric += f", cos_min {o.cosine_min:.6f}"
            if o.argmax_agreement_confident is not None:
                metric += f", argmax {o.argmax_agreement_confident:.4f}"
            parts.append(f"{o.output}: {metric}")
        verdict = "ok" if self.passed else "FAIL"
        lines = [f"{self.package} [{self.recipe}] golden via {self.backend}: {verdict}"]
        if parts:
            lines.append("  " + "; ".join(parts))
        lines += [f"  FAIL {f}" for f in self.failures]
        lines += [f"  FAIL {f}" for o in self.outputs for f in o.failures]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def check_golden(
    package: Path,
    golden_dir: Path,
    *,
    backend: str = "auto",
    compute_units: str | None = None,
) -> GoldenReport:
    """Run `package` on its golden input and compare every output with the recorded reference
    under the recorded tolerance: cosine for embeddings, argmax agreement on decisive frames for
    segmentation log-probs (and their error in probability space), max abs for the auxiliary
    models, error / recorded spread where set: the rules
    of `validation.judge.judge_output`, the judge validation itself uses.

    `compute_units` (Core ML backend): default, the units the tolerance was recorded for."""
    from coreml_diarize.validation.backends import open_package
    from coreml_diarize.validation.judge import judge_output

    golden = read_golden(golden_dir)
    runner = open_package(
        package, backend=backend, compute_units=compute_units or golden.compute_units
    )
    got = runner(golden.inputs).outputs
    failures = [f"{name}: package has no such output" for name in golden.outputs if name not in got]
    results = [
        judge_output(
            name,
            ref,
            got[name],
            golden.tolerances[name],
            golden.reference_spread.get(name, 0.0),
        )
        for name, ref in golden.outputs.items()
        if name in got
    ]
    notes = runner.compute_devices().notes if runner.backend == "coreml" else []
    return GoldenReport(
        Path(package).name, runner.backend, golden.recipe, results, failures, list(notes)
    )


def check_bundle_golden(bundle: Path, *, backend: str = "auto") -> list[GoldenReport]:
    """`check_golden` for every package of a bundle (directory or zip) that has golden data."""
    from .bundle_files import MANIFEST, manifest_files, read_manifest, safe_extract

    bundle = Path(bundle)
    if bundle.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            return check_bundle_golden(safe_extract(bundle, Path(tmp)), backend=backend)
    manifests = manifest_files(bundle)  # one, or one per profile in a published repo
    if not manifests:
        raise ArtifactError(f"missing or corrupt {MANIFEST} in {bundle}")
    artifacts = [a for path in manifests for a in read_manifest(path)["artifacts"]]
    with_golden = [a for a in artifacts if isinstance(a.get("golden"), dict)]
    if not with_golden:
        raise ArtifactError(f"bundle {bundle} has no golden data (made before golden I/O?)")
    return [
        check_golden(bundle / a["name"], bundle / a["golden"]["dir"], backend=backend)
        for a in with_golden
    ]


# --- computing golden data: the chain on real speech, by the PyTorch references ---------------


class _Chain:
    """The diarization chain on one real-speech chunk, every step by a reference (pyannote /
    PyTorch / numpy), so each model's golden input is what it receives in the chain."""

    def __init__(self, contexts: Mapping[str, BuildContext], reference: Callable) -> None:
        self.contexts = contexts  # spec key -> the context of the chain's model
        self.reference = reference  # (spec, ctx) -> cached reference
        self.cache: dict[tuple[str, float], Arrays] = {}

    def ctx(self, key: str) -> BuildContext:
        if key in self.contexts:
            return self.contexts[key]
        spec = get_spec(key)
        if spec.weights is None:  # auxiliary: geometry + default options, no weights
            from coreml_diarize.context import make_context

            return make_context(spec)
        for other, ctx in self.contexts.items():  # another model of the same weights
            if get_spec(other).weights == spec.weights:
                return ctx
        raise DiarizeError(
            f"golden inputs come from the {key} model's weights: bundle a {spec.filename} "
            "package too (or build with `coreml-diarize build`)"
        )

    def run(self, key: str, inputs: Arrays) -> Arrays:
        spec = get_spec(key)
        return self.reference(spec, self.ctx(key))(inputs)

    def step(self, key: str, offset: float) -> tuple[Arrays, Arrays]:
        """(inputs, reference outputs) of model `key` on the chunk at `offset` seconds."""
        from coreml_diarize import signals

        if (key, offset) in self.cache:
            return self.cache[key, offset]
        if key not in _DESCRIPTIONS:  # outside the chains: its first validation input
            ctx = self.ctx(key)
            cases = get_spec(key).example_inputs(ctx)
            inputs = cases[min(cases)]
            self.cache[key, offset] = inputs, self.run(key, inputs)
            return self.cache[key, offset]
        samples = self.ctx("segmentation").geometry.samples
        audio = signals.real_speech(offset, samples)[None, None, :]
        if key == "segmentation":
            inputs = {"audio": audio}
        elif key == "postprocessor":
            inputs = {"segments": self.step("segmentation", offset)[1]["segments"]}
        elif key == "preprocessor":
            masks = self.step("postprocessor", offset)[1]["speaker_masks"]
            inputs = {"audio": audio, "speaker_masks": masks}
        elif key == "embedding":
            pre = self.step("preprocessor", offset)[1]
            batch = self.ctx("embedding").geometry.embedding_batch
            inputs = {k: _rows(pre[k], batch) for k in ("waveform", "mask")}
        elif key == "post-embedding":
            speakers = self.ctx("post-embedding").geometry.speakers
            inputs = {
                "embedding": _rows(self.step("embedding", offset)[1]["embedding"], speakers),
                # the speakers of another chunk: a database of known speakers
                "speaker_db": self.step("embedding", DATABASE_OFFSET_S)[1]["embedding"],
                "speaker_masks": self.step("postprocessor", offset)[1]["speaker_masks"],
            }
        # the offline set (community-1): the same chunk through FBank -> Embedding -> PldaRho
        elif key in ("offline-segmentation", "fbank"):
            inputs = {"audio": audio}
        elif key == "offline-embedding":
            features = self.step("fbank", offset)[1]["fbank_features"]
            masks = self.step("preprocessor", offset)[1]["mask"]  # overlap-free, per speaker
            inputs = {"fbank_features": features, "weights": masks[:1]}
        elif key == "plda-rho":
            features = self.step("fbank", offset)[1]["fbank_features"]
            masks = self.step("preprocessor", offset)[1]["mask"]
            embeddings = [
                self.run("offline-embedding", {"fbank_features": features, "weights": m[None]})
                for m in masks
            ]
            inputs = {"embeddings": np.concatenate([e["embedding"] for e in embeddings])}
        else:
            raise DiarizeError(f"no golden chain input for model '{key}'")
        inputs = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
        self.cache[key, offset] = inputs, self.run(key, inputs)
        return self.cache[key, offset]


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    """`n` rows of `x`, cycling (speaker slots -> embedding batch)."""
    return x[np.arange(n) % x.shape[0]]


_FIRST_EXAMPLE = (
    "the first of the model's validation inputs (golden.py defines no chain input for it)"
)
_DESCRIPTIONS = {
    "segmentation": "10 s of pyannote.audio's bundled sample (sample.wav) from {offset:g} s",
    "embedding": "the chain's preprocessor output on 10 s of pyannote.audio's bundled sample "
    "from {offset:g} s: real speech per speaker slot, the chain's overlap-free masks",
    "postprocessor": "the segmentation reference's log-probs on 10 s of pyannote.audio's "
    "bundled sample from {offset:g} s",
    "preprocessor": "10 s of pyannote.audio's bundled sample from {offset:g} s and the "
    "postprocessor reference's speaker masks on it",
    "offline-segmentation": "10 s of pyannote.audio's bundled sample (sample.wav) from "
    "{offset:g} s, batch 1",
    "fbank": "10 s of pyannote.audio's bundled sample (sample.wav) from {offset:g} s",
    "offline-embedding": "the FBank reference's features of 10 s of pyannote.audio's bundled "
    "sample from {offset:g} s, weights: speaker 1's overlap-free mask from the segmentation",
    "plda-rho": "the Embedding reference's embedding of each local speaker of 10 s of "
    "pyannote.audio's bundled sample from {offset:g} s",
    "post-embedding": "the embedding reference's embeddings and the postprocessor reference's "
    "masks on 10 s of pyannote.audio's bundled sample from {offset:g} s; speaker_db: the "
    "embeddings of the chunk from {db:g} s",
}


def golden_for_packages(
    packages: list[Path],
    *,
    contexts: Mapping[str, BuildContext] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Golden]:
    """The golden case of every package. `contexts`: package name -> the BuildContext it was
    built from (what `build_all` has in memory); other packages' contexts are rebuilt from the
    provenance they record (`context.context_for_package`), once per weight source.

    The chain's upstream models use the weights of the bundle's own segmentation / embedding
    packages (the fp32 ones when there are several)."""
    from coreml_diarize.context import context_for_package, options_for
    from coreml_diarize.record import PackageRecord

    contexts = dict(contexts or {})
    rebuilt: dict[tuple, Any] = {}
    references: dict[tuple, Callable] = {}

    def context(package: Path, record: PackageRecord) -> BuildContext:
        if package.name in contexts:
            return contexts[package.name]
        key = (record.model, record.source_text(), options_for(record))
        if key not in rebuilt:
            rebuilt[key] = context_for_package(package)[1]
        return rebuilt[key]

    def reference(spec: ModelSpec, ctx: BuildContext) -> Callable:
        key = (spec.key, id(ctx.weights), ctx.options, ctx.geometry)
        if key not in references:
            references[key] = spec.build_reference(ctx)
        return references[key]

    infos = []
    for package in sorted(map(Path, packages), key=lambda p: p.name):
        record = PackageRecord.from_package(package)
        infos.append((package, get_spec(record.model), record))
    upstream: dict[str, BuildContext] = {}
    # fp32 packages first: the chain runs on the reference weights of the bundle's models
    for package, spec, record in sorted(infos, key=lambda i: (i[2].variant != "fp32", i[0].name)):
        upstream.setdefault(spec.key, context(package, record))
    chain = _Chain(upstream, reference)

    out = []
    for package, spec, record in infos:
        progress(f"golden: {package.name}")
        ctx = context(package, record)
        inputs, _ = chain.step(spec.key, GOLDEN_OFFSET_S)
        _check_shapes(spec, ctx, inputs)
        out.append(_golden_case(package, spec, record, inputs, reference(spec, ctx)(inputs)))
    return out


def _golden_case(package: Path, spec: ModelSpec, record, inputs: Arrays, outputs: Arrays) -> Golden:
    """One package's golden case: the reference outputs and the tolerance the package is judged
    by on the compute units it is meant for."""
    from .bundle_files import report_path

    units = intended_compute_units(record.precision)
    trained = record.trained is not False  # weightless models are judged as trained
    return Golden(
        package=package.name,
        model=spec.key,
        recipe=record.variant,
        compute_units=units,
        trained=trained,
        inputs=inputs,
        outputs={t.name: np.asarray(outputs[t.name], dtype=np.float32) for t in spec.outputs},
        tolerances=dict(spec.tolerance_for(record.variant, units, trained=trained)),
        reference_spread=_recorded_spread(report_path(package)),
        description=_DESCRIPTIONS.get(spec.key, _FIRST_EXAMPLE).format(
            offset=GOLDEN_OFFSET_S, db=DATABASE_OFFSET_S
        ),
    )


def _check_shapes(spec: ModelSpec, ctx: BuildContext, inputs: Arrays) -> None:
    for t in spec.inputs:
        want = ctx.geometry.resolve(t.shape)
        got = inputs[t.name].shape
        if len(got) != len(want) or not all(
            t.accepts(axis, size, default)
            for axis, (size, default) in enumerate(zip(got, want, strict=True))
        ):
            raise DiarizeError(
                f"golden input {t.name} of {spec.key} has shape {got}, the model takes {want}"
            )


def _recorded_spread(report: Path) -> dict[str, float]:
    """The reference spreads the package's validation measured (finite ones only)."""
    try:
        spreads = json.loads(report.read_text()).get("reference_spread") or {}
    except (OSError, ValueError):
        return {}
    return {
        k: float(v)
        for k, v in spreads.items()
        if isinstance(v, (int, float)) and math.isfinite(v) and v > 0
    }


def write_bundle_golden(
    packages: list[Path],
    directory: Path,
    *,
    contexts: Mapping[str, BuildContext] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> Path:
    """Golden folders for `packages` under `directory` (one `<stem>/` each): what
    `make_bundle(..., golden=directory)` copies into the bundle."""
    directory = Path(directory)
    for golden in golden_for_packages(packages, contexts=contexts, progress=progress):
        write_golden(directory / golden_stem(golden.package), golden)
    return directory
