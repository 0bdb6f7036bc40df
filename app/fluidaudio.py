"""A check of a bundle / Hub download / export against FluidAudio's loader contract (the
contract itself, as data with its Swift file:line citations: `fluidaudio_contract.py`).
Explained in docs/fluidaudio.md.

Errors are what makes FluidAudio fail, or run silently on something other than the bundle's
intent (e.g. psi of the wrong width: VBx falls back to Phi = 1). Warnings are what FluidAudio
ignores or cannot be checked here (an uncompiled bundle, a compiled model's I/O on Linux).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coreml_diarize.errors import ArtifactError

from .fluidaudio_contract import (
    FLUIDAUDIO,
    LOAD_CITE,
    MODEL_SETS,
    OFFLINE_EMBEDDING_SWIFT,
    REPO_FOLDER,
    ModelRule,
    ModelSetRule,
    TensorRule,
)
from .fluidaudio_io import DeclaredModel, DeclaredTensor, Finding, read_compiled, read_package
from .fluidaudio_psi import PLDA_PARAMETERS, check_psi_location

# --- the report ---------------------------------------------------------------------------


@dataclass
class ConformanceReport:
    path: Path
    kind: str  # bundle | export | repo folder
    profiles: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    @property
    def passed(self) -> bool:
        return not self.errors

    def summary(self) -> str:
        sets = " + ".join(self.profiles) or "no model set"
        verdict = "conforms to" if self.passed else "does not conform to"
        return (
            f"{self.path} ({self.kind}, {sets}) {verdict} FluidAudio's loader contract "
            f"({FLUIDAUDIO}): {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        )


class FluidAudioMismatch(ArtifactError):
    """A bundle, Hub download or export that FluidAudio would not load as intended."""


# --- the check ----------------------------------------------------------------------------


def check_fluidaudio(path: Path) -> ConformanceReport:
    """Check PATH against FluidAudio's loader contract.

    PATH: a bundle (directory with manifest.json, or its zip; a Hub download of a published
    bundle is one), an export (a directory holding `speaker-diarization/`: FluidAudio's models
    directory), or a repo folder laid out as FluidAudio reads it (`.../speaker-diarization`)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"not found: {path}")
    if path.is_file():
        from .bundle import safe_extract

        with tempfile.TemporaryDirectory(prefix="coreml-diarize-fluidaudio-") as tmp:
            report = check_fluidaudio(safe_extract(path, Path(tmp)))
            report.path = path
            return report
    if (path / "manifest.json").is_file():
        return _check_root(path, path, kind="bundle", manifest=_manifest(path))
    if (path / REPO_FOLDER).is_dir():
        return _check_root(path, path / REPO_FOLDER, kind="export")
    return _check_root(path, path, kind="repo folder")


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"corrupt manifest.json in {path}") from exc


def _check_root(
    path: Path, root: Path, *, kind: str, manifest: dict | None = None
) -> ConformanceReport:
    report = ConformanceReport(path, kind)
    sets = _sets_present(root, manifest)
    if not sets:
        names = ", ".join(m.compiled for s in MODEL_SETS for m in s.models)
        report.findings.append(
            Finding("error", str(root), f"no FluidAudio model here (looked for {names})", LOAD_CITE)
        )
        return report
    report.profiles = [s.profile for s in sets]
    declared: dict[str, DeclaredModel] = {}
    for model_set in sets:
        for rule in model_set.models:
            model = _locate(root, rule, kind, report.findings)
            if model is not None:
                declared[rule.stem] = model
                report.findings += check_model(rule, model)
        for sidecar in model_set.sidecars:
            if sidecar == PLDA_PARAMETERS:
                rho = declared.get("PldaRho")
                report.findings += check_psi_location(path, root, kind, rho)
    if "FBank" in declared and "Embedding" in declared:
        report.findings += check_fbank_to_embedding(declared["FBank"], declared["Embedding"])
    report.findings += _ignored_files(root, sets, kind)
    return report


def _sets_present(root: Path, manifest: dict | None) -> list[ModelSetRule]:
    profile = (manifest or {}).get("profile")
    if profile in {s.profile for s in MODEL_SETS}:
        return [s for s in MODEL_SETS if s.profile == profile]
    stems = {
        p.name.rsplit(".", 1)[0] for p in root.iterdir() if p.suffix in (".mlmodelc", ".mlpackage")
    }
    return [s for s in MODEL_SETS if stems & {m.stem for m in s.models}]


def _locate(
    root: Path, rule: ModelRule, kind: str, findings: list[Finding]
) -> DeclaredModel | None:
    """The model FluidAudio would open (`<stem>.mlmodelc`), read for its I/O; an uncompiled
    `.mlpackage` is an error where FluidAudio reads the folder, a warning in a bundle."""
    compiled, package = root / rule.compiled, root / f"{rule.stem}.mlpackage"
    if compiled.exists():
        if not compiled.is_dir() or not (compiled / "coremldata.bin").is_file():
            findings.append(
                Finding(
                    "error",
                    rule.compiled,
                    "not a compiled model (a directory with coremldata.bin)",
                    LOAD_CITE,
                )
            )
            return None
        model = read_compiled(compiled)
        if model.unreadable:
            findings.append(Finding("warning", rule.compiled, model.unreadable))
        return model
    if package.is_dir():
        level = "warning" if kind == "bundle" else "error"
        findings.append(
            Finding(
                level,
                package.name,
                f"not compiled: FluidAudio opens only {rule.compiled} (MLModel(contentsOf:) after "
                "validateCompiledModelLayout), never an .mlpackage; compile it on macOS "
                f"(xcrun coremlcompiler compile {package.name} <dir>)",
                LOAD_CITE,
            )
        )
        return read_package(package)
    findings.append(
        Finding(
            "error",
            rule.compiled,
            "missing: FluidAudio downloads FluidInference's published models in its place "
            "(or fails with modelMissing when ModelHub.offlineMode is set)",
            LOAD_CITE,
        )
    )
    return None


def check_model(rule: ModelRule, model: DeclaredModel) -> list[Finding]:
    """Names, dtypes, shapes and batch sizes of one model against its rule."""
    out: list[Finding] = []
    for tensor_rule, role in [(r, "input") for r in rule.inputs] + [
        (r, "output") for r in rule.outputs
    ]:
        tensors = model.inputs if role == "input" else model.outputs
        if tensors is None:
            continue  # I/O not readable (reported once by the reader)
        tensor = next((tensors[n] for n in tensor_rule.names if n in tensors), None)
        where = f"{model.path.name} {role} '{tensor_rule.name}'"
        if tensor is None:
            wanted = " or ".join(f"'{n}'" for n in tensor_rule.names)
            have = ", ".join(sorted(tensors)) or "none"
            out.append(
                Finding(
                    "error",
                    model.path.name,
                    f"no {role} named {wanted} (has: {have})",
                    tensor_rule.cite,
                )
            )
            continue
        out += _tensor_findings(tensor_rule, tensor, where, role)
    return out


def _tensor_findings(
    rule: TensorRule, tensor: DeclaredTensor, where: str, role: str
) -> list[Finding]:
    out = []
    if not tensor.multiarray:
        return [Finding("error", where, "not an MLMultiArray", rule.cite)]
    if tensor.dtype is not None and tensor.dtype != "float32":
        why = (
            "FluidAudio reads the buffer as Float32 (assumingMemoryBound(to: Float.self)): "
            "values would be garbage"
            if role == "output"
            else "FluidAudio sends Float32 MLMultiArrays, and the contract is Float32 at the I/O boundary"
        )
        out.append(
            Finding("error", where, f"declared {tensor.dtype}, must be float32: {why}", rule.cite)
        )
    if rule.dims is None:
        return out
    if rule.resolved:
        resolved = tensor.resolved_shape()
        if resolved is not None and not _fits(resolved, rule.dims):
            out.append(
                Finding(
                    "error",
                    where,
                    f"FluidAudio builds this input from the model's own first/default shape, "
                    f"{_fmt(resolved)}; it must be {_fmt(rule.dims)}",
                    rule.cite,
                )
            )
        return out
    if role == "output":  # an output's batch follows the input: check the other axes
        shape = tensor.shape
        if shape and (len(shape) != len(rule.dims) or not _fits(shape[1:], rule.dims[1:])):
            out.append(
                Finding(
                    "error",
                    where,
                    f"shape {_fmt(shape)}, FluidAudio reads {_fmt(rule.dims)}",
                    rule.cite,
                )
            )
        return out
    sizes = rule.batch or ((rule.dims[0],) if rule.dims[0] is not None else ())
    refused, unknown = [], False
    for size in sizes:
        sent = (
            size,
            *(
                d if d is not None else _any_size(tensor, i + 1)
                for i, d in enumerate(rule.dims[1:])
            ),
        )
        accepted = tensor.accepts(sent)
        if accepted is None:
            unknown = True
        elif not accepted:
            refused.append(sent)
    if refused:
        batches = _ranges(sorted({s[0] for s in refused}))
        out.append(
            Finding(
                "error",
                where,
                f"declared {tensor.describe()}; FluidAudio sends {_fmt(rule.dims, rule.batch)} "
                f"and the model refuses batch {batches}",
                rule.cite,
            )
        )
    elif unknown:
        out.append(
            Finding(
                "warning",
                where,
                f"cannot tell here whether {tensor.describe()} accepts every "
                f"shape FluidAudio sends, {_fmt(rule.dims, rule.batch)}",
                rule.cite,
            )
        )
    return out


def _any_size(tensor: DeclaredTensor, axis: int) -> int:
    """For an axis FluidAudio sizes from the model itself: the model's own size there."""
    shape = tensor.shape or ()
    return shape[axis] if axis < len(shape) else 1


def _fits(shape, dims) -> bool:
    return len(shape) == len(dims) and all(
        d is None or s == d for s, d in zip(shape, dims, strict=True)
    )


def _fmt(dims, batch: tuple[int, ...] = ()) -> str:
    parts = [str(d) if d is not None else "*" for d in dims]
    if batch:
        parts[0] = _ranges(list(batch)) if len(batch) > 1 else str(batch[0])
    return "(" + ", ".join(parts) + ")"


def _ranges(values: list[int]) -> str:
    runs, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            runs.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ",".join(runs)


def check_fbank_to_embedding(fbank: DeclaredModel, embedding: DeclaredModel) -> list[Finding]:
    """FluidAudio hands FBank's `fbank_features` to Embedding as it is."""
    out_t = (fbank.outputs or {}).get("fbank_features")
    in_t = (embedding.inputs or {}).get("fbank_features")
    if out_t is None or in_t is None or not out_t.shape:
        return []
    accepted = in_t.accepts(out_t.shape)
    if accepted is False:
        return [
            Finding(
                "error",
                f"{embedding.path.name} input 'fbank_features'",
                f"declared {in_t.describe()}, refuses FBank's output {_fmt(out_t.shape)}, "
                "which FluidAudio passes to it unchanged",
                f"{OFFLINE_EMBEDDING_SWIFT}:759-805, 872-880",
            )
        ]
    return []


def _ignored_files(root: Path, sets: list[ModelSetRule], kind: str) -> list[Finding]:
    """What FluidAudio's loader never opens in a folder it reads (it only opens plain names)."""
    if kind == "bundle":
        return []
    wanted = {name for s in sets for name in s.required}
    extra = sorted(
        p.name
        for p in root.iterdir()
        if p.suffix in (".mlmodelc", ".mlpackage")
        and p.name not in wanted
        and p.name.rsplit(".", 1)[0] not in {m.stem for s in sets for m in s.models}
    )
    if not extra:
        return []
    return [
        Finding(
            "warning",
            str(root.name),
            "FluidAudio never loads "
            + ", ".join(extra)
            + " (only the plain names): dead weight in the app",
            LOAD_CITE,
        )
    ]


def run_check(path: Path, echo: Callable[[str], None]) -> ConformanceReport:
    """`verify --target fluidaudio`: print every finding and the verdict; raise on errors."""
    report = check_fluidaudio(path)
    for finding in report.findings:
        echo(f"  {finding.line()}")
    if not report.passed:
        raise FluidAudioMismatch(report.summary())
    echo(report.summary())
    return report
