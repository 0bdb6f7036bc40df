"""The quantization ladder of one trained fixture, judged on held-out material only (issue #24).

Rows: fp32, fp16, uniform palettize 8 / 6 / 4 (`quantize_package`, fp16 programs with fp16
tables, the spec's default exclusions) and every `--recipe FILE` (a mixed recipe, quantize/
mixed_recipes/*.json). Per row:

* size (bytes of the package) and bits per weight over the palettizable weights (the consts of
  more than `weight_threshold` elements that the spec does not keep uncompressed);
* held-out quality, through the MIL executor (validation/mil):
  - WeSpeaker: cosine to fp32 PyTorch (mean, worst) on held-out voices (training/
    evaluate_embedding's set, clean and 20 dB), each utterance tiled to the package's 10 s and
    pooled with a full mask; speaker-ID accuracy with evaluate_embedding's protocol (enrol 3,
    cosine to the mean), computed in PyTorch with the package's own dequantized weights (the
    executor runs one 3 x 10 s call in 2-8 s on this machine: 480 utterances per row would be
    an hour; the cosine rows say how close the executor is to that);
  - segmentation: decisive (top-2 margin >= 1 nat) argmax agreement and mean |error| / spread
    against fp32 PyTorch on evaluate_segmentation's held-out chunks (seed 2014);
* the same metrics on the spec's validation inputs (what `validate` judges), for tolerances;
* chain DER against the fp32 PyTorch pipeline on held-out synthetic meetings
  (training/heldout_recording.py), pipelines 3.1 (online chain) and community-1 (offline chain),
  only the judged model swapped for the row's variant (online and offline package alike);
  the other packages fp32; their calls are memoised across rows (same inputs, same outputs);
* `inspect --ane`'s static prediction: eligible share of ops and of FLOPs, CPU<->ANE switches.

    OMP_NUM_THREADS=1 python benchmarks/bench_quantize_ladder.py --model wespeaker_v2 \
        [--recipe quantize/mixed_recipes/X.json ...] [--front-end factored] \
        --out docs/ladder/wespeaker_v2.json [--plot docs/ladder/wespeaker_v2.png]

`--target iOS18`: the judged model's online and offline fp32 packages converted at that target
(the rest of both chains as at iOS17), so per-grouped-channel recipes (and 3-bit tables) apply;
every row is then a variant of those packages.

Built packages are cached under --cache (default /tmp/ladder); the packages in
ladder_packages.py, the report (Pareto front, plot, markdown) in ladder_report.py, the held-out
judges in ladder_judges.py.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402
from ladder_judges import (  # noqa: E402
    ChainJudge,
    embedding_material,
    embedding_quality,
    meetings,
    segmentation_material,
    segmentation_quality,
    validation_inputs_quality,
)
from ladder_packages import (  # noqa: E402
    DEFAULT_TARGET,
    FIXTURES,
    MODELS,
    REPO,
    UNIFORM,
    ane_figures,
    bits_per_weight,
    build_row,
    fp32_dir,
    mixed_config,
    package_bytes,
    same_weight_names,
)
from ladder_report import (  # noqa: E402
    markdown_table,
    material_note,
    pareto,
    plot,
    stored_torch_der,
)

PIPELINES = ("3.1", "community-1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--recipe", type=Path, action="append", default=[], help="mixed recipe")
    parser.add_argument("--rows", default=",".join(UNIFORM), help="uniform rows to run")
    parser.add_argument("--front-end", choices=("dense", "factored"), default="dense")
    parser.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        help="deployment target of the judged model's packages (iOS18: grouped recipes)",
    )
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ladder"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, default=None)
    parser.add_argument("--meetings", type=int, default=2)
    parser.add_argument("--meeting-seconds", type=float, default=30.0)
    parser.add_argument("--step", type=float, default=2.5, help="window step (s), both sides")
    parser.add_argument("--pipelines", default=",".join(PIPELINES))
    parser.add_argument("--chunks", type=int, default=32, help="held-out segmentation chunks")
    parser.add_argument("--speakers", type=int, default=30, help="executor cosine: speakers")
    parser.add_argument("--no-chain", action="store_true")
    parser.add_argument("--no-speaker-id", action="store_true", help="WeSpeaker: skip speaker ID")
    parser.add_argument("--no-validation-inputs", action="store_true")
    parser.add_argument("--force", action="store_true", help="recompute cached rows")
    parser.add_argument("--cached-only", action="store_true", help="report only finished rows")
    parser.add_argument("--markdown", type=Path, default=None, help="write the docs table here")
    args = parser.parse_args(argv)

    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ["HF_HUB_OFFLINE"] = "1"
    sys.path.insert(0, str(REPO))
    import torch

    from coreml_diarize.models import registry
    from coreml_diarize.sources import load_weights

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    started = time.perf_counter()
    judged = MODELS[args.model]
    spec = registry()[judged.online]
    fp32 = fp32_dir(args.cache, args.front_end, args.target, judged)
    online_fp32 = fp32 / f"{spec.filename}.mlpackage"
    offline_fp32 = fp32 / f"{registry()[judged.offline].filename}.mlpackage"
    settings: dict[str, tuple[Any, Any]] = {}
    for row in filter(None, args.rows.split(",")):
        settings[row] = (UNIFORM[row], UNIFORM[row])
    if args.recipe:
        names = same_weight_names(online_fp32, offline_fp32)
        for path in args.recipe:
            recipe = json.loads(path.read_text())
            settings[f"mixed_{path.stem}"] = (mixed_config(recipe), mixed_config(recipe, names))

    pipelines = tuple(p for p in args.pipelines.split(",") if p)
    lazy: dict[str, Any] = {}  # weights, material, chain: built at the first row not cached

    def judges() -> dict[str, Any]:
        if not lazy:
            lazy["weights"] = load_weights(judged.family, str(FIXTURES[judged.family]))
            model = lazy["weights"].model
            if judged.family == "embedding":
                lazy["material"] = embedding_material(model, args.speakers, args.cache)
            else:
                lazy["material"] = segmentation_material(model, args.chunks)
            lazy["chain"] = None
            if not args.no_chain:
                lazy["chain"] = ChainJudge(fp32, judged, args.step, pipelines, args.cache)
                lazy["meetings"] = meetings(args.cache, args.meetings, args.meeting_seconds)
        return lazy

    rows = []
    for row, (online_setting, offline_setting) in settings.items():
        t0 = time.perf_counter()
        package = build_row(online_fp32, row, online_setting, args.cache)
        offline = build_row(offline_fp32, row, offline_setting, args.cache)
        stored = row_cache(args, package, offline)
        if stored.is_file() and not args.force:
            rows.append(json.loads(stored.read_text()))
            continue
        if args.cached_only:  # the static figures only
            entry = {"row": row, "package": package.name, "bytes": package_bytes(package)}
            entry.update(bits_per_weight(package, online_fp32, spec))
            entry["ane"] = ane_figures(package)
            rows.append(entry)
            continue
        weights, material, chain = (judges()[k] for k in ("weights", "material", "chain"))
        entry: dict[str, Any] = {
            "row": row,
            "package": package.name,
            "bytes": package_bytes(package),
        }
        entry["offline_bytes"] = package_bytes(offline)
        entry.update(bits_per_weight(package, online_fp32, spec))
        entry["ane"] = ane_figures(package)
        if judged.family == "embedding":
            entry["heldout"] = embedding_quality(
                package, online_fp32, weights.model, material, speaker_id=not args.no_speaker_id
            )
        else:
            entry["heldout"] = segmentation_quality(package, material)
        if not args.no_validation_inputs:
            entry["validation_inputs"] = validation_inputs_quality(package, judged.family)
        if chain is not None:
            for name in pipelines:
                is_fp32 = online_setting is None
                chosen = None if is_fp32 else (package if name == "3.1" else offline)
                entry[f"chain_{name}"] = chain.der(name, chosen, lazy["meetings"])
                entry[f"der_{name}"] = entry[f"chain_{name}"]["der_vs_torch"]
                entry[f"chain_{name}"]["torch_der_vs_reference"] = chain.torch_vs_reference(
                    name, lazy["meetings"]
                )
        entry["seconds"] = time.perf_counter() - t0
        entry["load_average"] = list(os.getloadavg())
        stored.parent.mkdir(parents=True, exist_ok=True)
        stored.write_text(json.dumps(entry, sort_keys=True))
        rows.append(entry)
        print(
            f"{row}: {entry['bytes'] / 1e6:.2f} MB, {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )

    result: dict[str, Any] = {
        "model": args.model,
        "front_end": args.front_end,
        "target": args.target,
        "pipelines": list(pipelines),
        "rows": rows,
        "goal_mb": 4.0 if judged.family == "embedding" else 1.0,
        "material": material_note(args.model, args),
        "load_average_start": list(load_start),
        "load_average_end": list(os.getloadavg()),
        "seconds": time.perf_counter() - started,
    }
    if not args.no_chain:
        result["pareto"] = {name: pareto(rows, f"der_{name}") for name in pipelines}
        result["torch_der_vs_reference"] = {
            name: next(
                (
                    r[f"chain_{name}"]["torch_der_vs_reference"]
                    for r in rows
                    if f"chain_{name}" in r and "torch_der_vs_reference" in r[f"chain_{name}"]
                ),
                None,
            )
            or stored_torch_der(args, name)
            for name in pipelines
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    emit(result, args.out)
    if args.plot is not None and not args.no_chain:
        plot(result, args.plot)
    if args.markdown is not None:
        args.markdown.write_text(markdown_table(result) + "\n")
    return 0


def row_cache(args, package: Path, offline: Path) -> Path:
    """Where a row's figures are kept: keyed by both packages' tree hashes and the material."""
    from coreml_diarize.mlpackage import tree_hash

    fields = [tree_hash(package)[0], tree_hash(offline)[0], material_note(args.model, args)]
    fields.append(args.no_chain)
    if args.no_speaker_id or args.no_validation_inputs:  # (keys of full rows stay as they were)
        fields += [args.no_speaker_id, args.no_validation_inputs]
    key = json.dumps(fields)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return args.cache / "results" / args.model / f"{package.stem}_{digest}.json"


if __name__ == "__main__":
    raise SystemExit(main())
