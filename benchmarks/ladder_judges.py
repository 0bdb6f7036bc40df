"""What the quantization ladder measures on held-out material (bench_quantize_ladder.py).

Weights read back from packages, held-out quality through the MIL executor (WeSpeaker cosine
and speaker ID, segmentation decisive agreement and error/spread, the spec's validation
inputs) and chain DER of both pipelines with one model's package swapped.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

DECISIVE_NATS = 1.0  # evaluate_segmentation's decisive margin, the trained tolerance's


def weight_name(op) -> str:
    """The source const's name of a (possibly compressed) weight op: coremltools appends
    `_to_fp16` (fp16 programs) and `_palettized` (look-up tables) to it."""
    return op.outputs[0].name.removesuffix("_palettized").removesuffix("_to_fp16")


def const_values(path: Path, min_elements: int = 2048) -> dict[str, np.ndarray]:
    """Weight name (the fp32 program's) -> dense value of every constant of more than
    `min_elements` elements (look-up tables and fp16 materialised as numpy)."""
    from coreml_diarize.mlpackage import load_program

    out = {}
    for op in load_program(path).functions["main"].operations:
        if op.op_type == "const":
            val = op.outputs[0].val
        elif op.op_type.startswith("constexpr_"):
            val = op.materialized_val_inference()
        else:
            continue
        if isinstance(val, np.ndarray) and val.size > min_elements:
            out[weight_name(op)] = val
    return out


def cosine_rows(ref: np.ndarray, got: np.ndarray) -> np.ndarray:
    from coreml_diarize.validation.metrics import row_cosines

    return row_cosines(ref, got)


def tiled(utterance: np.ndarray, samples: int) -> np.ndarray:
    """The utterance repeated to fill the package's fixed chunk (no padding with silence, whose
    log floor would dominate the chunk's mean normalisation)."""
    return np.resize(utterance.astype(np.float32), samples)


@dataclass
class EmbeddingMaterial:
    """Held-out voices (evaluate_embedding: seed 2014, clean and 20 dB) and their fp32
    PyTorch embeddings as the packages see them (tiled 10 s chunks, full masks)."""

    clean: list[list[np.ndarray]]
    noisy: list[list[np.ndarray]]
    chunks: np.ndarray  # (n, samples): the executor's subset
    labels: list[str]
    reference: np.ndarray  # (n, 256) fp32 PyTorch on `chunks`


def embedding_material(
    model, speakers_: int, cache: Path, utterances: int = 8
) -> EmbeddingMaterial:
    """The held-out voices (synthesised once, cached as .npz) and the executor's subset: the
    first utterance of the first `speakers_` speakers, clean and 20 dB."""
    import pickle

    import torch

    from training.evaluate_embedding import EvalConfig, heldout_utterances, with_noise

    cfg = EvalConfig()
    stored = cache / "material" / f"voices_{cfg.heldout_seed}_{utterances}.pkl"
    if stored.is_file():
        clean, noisy = pickle.loads(stored.read_bytes())
    else:
        clean = heldout_utterances(cfg.heldout_seed, utterances)
        noisy = with_noise(clean, cfg.noisy_snr_db, cfg.heldout_seed + 2)
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_bytes(pickle.dumps((clean, noisy)))
    chunks, labels = [], []
    for condition, speakers in (("clean", clean), ("snr20", noisy)):
        for s, utts in enumerate(speakers[:speakers_]):
            for u in range(1):
                chunks.append(tiled(utts[u], 160000))
                labels.append(f"{condition}/speaker{s}/utt{u}")
    chunks_arr = np.stack(chunks)
    with torch.inference_mode():
        x = torch.from_numpy(chunks_arr)[:, None]
        ref = np.concatenate(
            [
                model(x[i : i + 3], weights=torch.ones(len(x[i : i + 3]), 589)).numpy()
                for i in range(0, len(x), 3)
            ]
        )
    return EmbeddingMaterial(clean, noisy, chunks_arr, labels, ref)


def run_embedding_package(path: Path, chunks: np.ndarray) -> np.ndarray:
    from coreml_diarize.validation.mil import MILExecutor

    executor = MILExecutor.from_path(path)
    out = []
    for i in range(0, len(chunks), 3):
        batch = chunks[i : i + 3]
        pad = 3 - len(batch)
        waveform = np.concatenate([batch, np.zeros((pad, batch.shape[1]), np.float32)])
        mask = np.ones((3, 589), np.float32)
        out.append(
            executor.predict({"waveform": waveform, "mask": mask})["embedding"][: len(batch)]
        )
    return np.concatenate(out)


def torch_with_package_weights(model, package: Path, fp32_package: Path):
    """A copy of the pyannote model whose conv / linear weights are the package's, dequantized
    (look-up tables expanded, fp16 widened). The converter folds each BatchNorm into the conv
    before it (W' = W * gamma / sqrt(var + eps)), so W = W' / that scale; every torch weight is
    matched to its const by value in the fp32 package."""
    import copy

    import torch

    model = copy.deepcopy(model)
    fp32 = const_values(fp32_package)
    stored = const_values(package, min_elements=0)
    resnet = model.resnet
    pairs = [(resnet.conv1, resnet.bn1)]
    for layer in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4):
        for block in layer:
            pairs += [(block.conv1, block.bn1), (block.conv2, block.bn2)]
            if len(block.shortcut):
                pairs.append((block.shortcut[0], block.shortcut[1]))
    linears = [(m, None) for m in (resnet.seg_1,)]
    replaced = 0
    for module, bn in pairs + linears:
        w = module.weight.detach().double()
        scale = torch.ones(w.shape[0], dtype=torch.float64)
        if bn is not None:
            scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
        shape = (-1,) + (1,) * (w.ndim - 1)
        fused = (w * scale.reshape(shape)).numpy()
        for name, value in fp32.items():
            if value.shape == fused.shape and np.allclose(value, fused, rtol=1e-4, atol=1e-7):
                deq = torch.from_numpy(np.asarray(stored[name], dtype=np.float64))
                module.weight.data = (deq / scale.reshape(shape)).float()
                replaced += 1
                break
        else:
            if fused.size > 2048:
                raise RuntimeError(
                    f"no const of {package.name} matches a {tuple(fused.shape)} weight"
                )
    return model, replaced


def embedding_quality(
    path: Path, fp32_package: Path, model, material: EmbeddingMaterial, *, speaker_id: bool = True
) -> dict[str, Any]:
    from training.evaluate_embedding import EvalConfig, evaluate_heldout

    got = run_embedding_package(path, material.chunks)
    cos = cosine_rows(material.reference, got)
    clean = np.array([lab.startswith("clean") for lab in material.labels])
    sid, replaced = {}, 0
    if speaker_id:
        variant_model, replaced = torch_with_package_weights(model, path, fp32_package)
        enrol = EvalConfig().enrol
        sid = {
            "clean": evaluate_heldout(variant_model, material.clean, enrol),
            "snr20": evaluate_heldout(variant_model, material.noisy, enrol),
        }
    return {
        "executor_chunks": len(cos),
        "cosine_mean": float(cos.mean()),
        "cosine_worst": float(cos.min()),
        "cosine_worst_clean": float(cos[clean].min()),
        "cosine_worst_snr20": float(cos[~clean].min()),
        "cosines": [round(float(c), 7) for c in cos],
        "speaker_id_weights_replaced": replaced,
        "speaker_id": {k: {m: v[m] for m in ("accuracy", "trials", "eer")} for k, v in sid.items()},
    }


@dataclass
class SegmentationMaterial:
    chunks: np.ndarray  # (n, 1, samples)
    targets: np.ndarray
    reference: np.ndarray  # (n, frames, classes) fp32 PyTorch log-probabilities


def segmentation_material(model, count: int) -> SegmentationMaterial:
    from dataclasses import replace

    from training.evaluate_segmentation import EvalConfig, chunk_targets, heldout_chunks, predict

    cfg = replace(EvalConfig(), heldout_conversations=count)
    x, y = chunk_targets(model, heldout_chunks(cfg))
    return SegmentationMaterial(x, y, predict(model, x))


def segmentation_figures(refs: list[np.ndarray], outs: list[np.ndarray]) -> dict[str, Any]:
    """Per chunk: decisive argmax agreement and mean |error| / the references' spread."""
    from coreml_diarize.validation.metrics import argmax_agreement, mean_abs, spread

    spread_all = spread(refs)
    agree = np.array(
        [argmax_agreement(r, o, min_margin=DECISIVE_NATS) for r, o in zip(refs, outs, strict=True)]
    )
    rel = np.array([mean_abs(r, o) / spread_all for r, o in zip(refs, outs, strict=True)])
    decisive = sum(
        int(((np.sort(r, -1)[..., -1] - np.sort(r, -1)[..., -2]) > DECISIVE_NATS).sum())
        for r in refs
    )
    flips = sum(
        int(
            np.sum(
                (r.argmax(-1) != o.argmax(-1))
                & ((np.sort(r, -1)[..., -1] - np.sort(r, -1)[..., -2]) > DECISIVE_NATS)
            )
        )
        for r, o in zip(refs, outs, strict=True)
    )
    return {
        "chunks": len(refs),
        "decisive_frames": decisive,
        "decisive_agreement_pooled": 1.0 - flips / max(decisive, 1),
        "decisive_agreement_worst": float(agree.min()),
        "rel_mean": float(rel.mean()),
        "rel_worst": float(rel.max()),
        "spread": spread_all,
        "per_chunk_agreement": [round(float(a), 5) for a in agree],
        "per_chunk_rel": [round(float(r), 6) for r in rel],
    }


def segmentation_quality(path: Path, material: SegmentationMaterial) -> dict[str, Any]:
    from coreml_diarize.validation.mil import MILExecutor

    executor = MILExecutor.from_path(path)
    outs = [executor.predict({"audio": c[None]})["segments"][0] for c in material.chunks]
    return segmentation_figures(list(material.reference), outs)


def validation_inputs_quality(path: Path, family: str) -> dict[str, Any]:
    """The spec's validation inputs (what `validate` judges) against the fp32 PyTorch reference:
    per input, the embedding cosine (worst slot) or segmentation decisive agreement and rel."""
    from coreml_diarize.validation.report import evaluate_package

    ev = evaluate_package(path, backend="mil")
    cases = sorted(ev.references)
    if family == "embedding":
        per = {}
        for c in cases:
            ref, got = ev.references[c]["embedding"], ev.outputs[c]["embedding"]
            live = np.abs(ev.inputs[c]["mask"]).sum(1) > 0  # empty slots: the bias, trivially equal
            per[c] = float(cosine_rows(ref[live], got[live]).min()) if live.any() else 1.0
        return {"cosine_worst": min(per.values()), "per_input_cosine": per}
    refs = [ev.references[c]["segments"][0] for c in cases]
    outs = [ev.outputs[c]["segments"][0] for c in cases]
    figures = segmentation_figures(refs, outs)
    figures["inputs"] = cases
    return figures


class MemoRunner:
    """A package runner whose results are kept by input bytes: the fp32 packages around the
    judged one see the same inputs in every row, so each distinct call runs once."""

    def __init__(self, runner) -> None:
        self.runner, self.memo = runner, {}
        self.seconds, self.calls = 0.0, 0
        self.backend, self.path = runner.backend, runner.path

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        digest = hashlib.sha256()
        for k in sorted(inputs):
            a = np.ascontiguousarray(inputs[k], dtype=np.float32)
            digest.update(k.encode() + str(a.shape).encode() + a.tobytes())
        key = digest.hexdigest()
        if key not in self.memo:
            self.memo[key] = self.runner(**inputs)
        return self.memo[key]


@dataclass
class Meeting:
    uri: str
    audio: np.ndarray
    reference: Any  # pyannote Annotation


def meetings(cache: Path, count: int, seconds: float) -> list[Meeting]:
    """Held-out synthetic meetings (training/meetings.py's seeds: 2014 + 100 i), speakers 2, 3,
    2, ... (cached as .npy + RTTM)."""
    from coreml_diarize.diarization.rttm import read_rttm
    from training.heldout_recording import DEFAULT_SEED, heldout_recording, write_rttm

    out = []
    folder = cache / "meetings"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        uri = f"meeting{i}_{seconds:g}s"
        wav, rttm = folder / f"{uri}.npy", folder / f"{uri}.rttm"
        if not wav.is_file():
            audio, segments = heldout_recording(seconds, 2 + i % 2, seed=DEFAULT_SEED + 100 * i)
            np.save(wav, audio.astype(np.float32))
            write_rttm(segments, uri, rttm)
        out.append(Meeting(uri, np.load(wav), read_rttm(rttm, uri=uri)))
    return out


class ChainJudge:
    """Both pipelines on the meetings: PyTorch once, then the converted chain per variant."""

    def __init__(
        self,
        fp32: Path,
        judged: Any,  # bench_quantize_ladder.Judged
        step_s: float | None,
        pipelines: tuple[str, ...],
        cache: Path,
    ):
        from coreml_diarize.diarization.chain import TimedRunner, find_packages
        from coreml_diarize.diarization.compare import torch_models_for
        from coreml_diarize.diarization.pipelines import make_pipeline, pipeline_recipe

        self.judged, self.step_s, self.pipelines = judged, step_s, pipelines
        self.cache = cache / "torch"  # PyTorch annotations: the same for every row and model
        self.paths, self.runners, self.torch_pipelines = {}, {}, {}
        for name in pipelines:
            recipe = pipeline_recipe(name)
            paths = find_packages(fp32, None, chain=recipe.chain)
            self.paths[name] = paths
            self.runners[name] = {
                k: MemoRunner(TimedRunner(p, "mil")) for k, p in paths.paths.items()
            }
            models = torch_models_for(paths)
            self.torch_pipelines[name] = make_pipeline(
                models.segmentation,
                models.embedding,
                pipeline=recipe,
                plda=models.plda if recipe.uses_plda else None,
                step_s=step_s,
            )
        self.torch_annotations: dict[tuple[str, str], Any] = {}

    def torch_annotation(self, name: str, meeting: Meeting):
        """PyTorch's annotation, computed once per (pipeline, meeting, step) and kept as JSON
        with the floats as computed (an RTTM's millisecond rounding alone moved DER by 0.03 %)."""
        import json

        from pyannote.core import Annotation, Segment

        from coreml_diarize.atomic import atomic_path
        from coreml_diarize.diarization.diarize import audio_file, run_pipeline

        key = (name, meeting.uri)
        stored = self.cache / f"{name}_{meeting.uri}_step{self.step_s}.json"
        if key not in self.torch_annotations and stored.is_file():
            annotation = Annotation(uri=meeting.uri)
            for start, end, track, label in json.loads(stored.read_text()):
                annotation[Segment(start, end), track] = label
            self.torch_annotations[key] = annotation
        if key not in self.torch_annotations:
            file = audio_file(meeting.audio, 16000, meeting.uri)
            annotation, _ = run_pipeline(self.torch_pipelines[name], file)
            annotation.uri = meeting.uri
            self.cache.mkdir(parents=True, exist_ok=True)
            rows = [
                [s.start, s.end, str(t), str(lab)]
                for s, t, lab in annotation.itertracks(yield_label=True)
            ]
            with atomic_path(stored) as tmp:
                Path(tmp).write_text(json.dumps(rows))
            self.torch_annotations[key] = annotation
        return self.torch_annotations[key]

    def der(self, name: str, variant: Path | None, meetings_: list[Meeting]) -> dict[str, Any]:
        """Accumulated DER (pyannote.metrics, collar 0, overlap scored) of the chain with the
        judged model's package replaced by `variant` (None: all fp32), against PyTorch."""
        from pyannote.core import Segment, Timeline
        from pyannote.metrics.diarization import DiarizationErrorRate

        from coreml_diarize.diarization.chain import ChainModels, ChainPaths, TimedRunner
        from coreml_diarize.diarization.diarize import diarize_samples
        from coreml_diarize.diarization.pipelines import converted_pipeline

        key = self.judged.online if self.paths[name].chain == "online" else self.judged.offline
        runners = dict(self.runners[name])
        paths = dict(self.paths[name].paths)
        if variant is not None:
            runners[key] = TimedRunner(variant, "mil")
            paths[key] = variant
        chain = ChainModels(ChainPaths(paths, None, self.paths[name].chain), "mil", runners)
        built = converted_pipeline(chain, pipeline=name, step_s=self.step_s)
        vs_torch = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        vs_ref = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        per_file, start = {}, time.perf_counter()
        for m in meetings_:
            torch_annotation = self.torch_annotation(name, m)
            result = diarize_samples(m.audio, chain, uri=m.uri, pipeline=name, built=built)
            uem = Timeline([Segment(0.0, m.audio.size / 16000)])
            per_file[m.uri] = float(vs_torch(torch_annotation, result.annotation, uem=uem))
            vs_ref(m.reference, result.annotation, uem=uem)
        return {
            "der_vs_torch": float(abs(vs_torch)),
            "der_vs_reference": float(abs(vs_ref)),
            "per_file_der_vs_torch": per_file,
            "seconds": time.perf_counter() - start,
        }

    def torch_vs_reference(self, name: str, meetings_: list[Meeting]) -> float:
        from pyannote.core import Segment, Timeline
        from pyannote.metrics.diarization import DiarizationErrorRate

        metric = DiarizationErrorRate(collar=0.0, skip_overlap=False)
        for m in meetings_:
            uem = Timeline([Segment(0.0, m.audio.size / 16000)])
            metric(m.reference, self.torch_annotation(name, m), uem=uem)
        return float(abs(metric))
