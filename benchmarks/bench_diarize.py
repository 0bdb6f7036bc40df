"""Real-time factor of the converted chain vs pyannote's pipeline in PyTorch, same run.

Both pipelines diarize the same audio in the same process, with the same torch thread count
and the same weights (rebuilt from the packages' provenance, or the seeded random:0 weights
converted here when no --models is given). Writes one JSON object:

    python benchmarks/bench_diarize.py --out bench.json [--models DIR] [--audio FILE]
        [--seconds 30] [--backend mil] [--variant palettize8] [--threads 1]
        [--pipeline 3.1|community-1]

`rtf_ratio_converted_over_torch` = converted wall time / PyTorch wall time (> 1: slower).
Loading packages and weights is not timed; each pipeline's `apply` is.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402


def build_models(out: Path, source: str, chain: str) -> None:
    """The fp32 packages of one chain (the registry's models whose `chains` name it)."""
    from coreml_diarize.context import make_context
    from coreml_diarize.converters.convert import convert_model
    from coreml_diarize.models import registry

    for spec in registry().values():
        if chain in spec.chains:
            convert_model(spec, make_context(spec, source=source), out)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--models", type=Path, default=None, help="the five packages")
    parser.add_argument("--source", default="random:0", help="weights when --models is absent")
    parser.add_argument("--audio", type=Path, default=None, help="default: pyannote's sample")
    parser.add_argument("--seconds", type=float, default=None, help="crop the audio")
    parser.add_argument("--backend", default="mil", choices=("auto", "mil", "coreml"))
    parser.add_argument("--variant", default=None)
    parser.add_argument("--pipeline", default="3.1", help="3.1 | community-1")
    parser.add_argument("--step", type=float, default=None, help="window step (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both sides)")
    return parser.parse_args(argv)


def _audio(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """(path, samples (cropped), sample rate, reference RTTM or None)."""
    from coreml_diarize.audio import bundled_sample_path, read_audio
    from coreml_diarize.diarization.rttm import read_rttm

    audio_path = args.audio or bundled_sample_path()
    loaded = read_audio(audio_path)
    samples = loaded.samples
    if args.seconds:
        samples = samples[: int(args.seconds * loaded.sample_rate)]
    rttm = audio_path.with_suffix(".rttm")
    reference = read_rttm(rttm, uri=audio_path.stem) if rttm.is_file() else None
    return audio_path, samples, loaded.sample_rate, reference


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    import torch

    from coreml_diarize.diarization.chain import ChainModels, find_packages
    from coreml_diarize.diarization.compare import compare_samples, torch_models_for
    from coreml_diarize.diarization.pipelines import pipeline_recipe
    from coreml_diarize.mlpackage import quiet_coremltools

    if args.threads:
        torch.set_num_threads(args.threads)
    audio_path, samples, sample_rate, reference = _audio(args)
    recipe = pipeline_recipe(args.pipeline)

    with tempfile.TemporaryDirectory() as tmp:
        models_dir = args.models
        build_seconds = None
        if models_dir is None:
            models_dir = Path(tmp)
            start = time.perf_counter()
            with quiet_coremltools():
                build_models(models_dir, args.source, recipe.chain)
            build_seconds = time.perf_counter() - start
        paths = find_packages(models_dir, args.variant, chain=recipe.chain)
        torch_models = torch_models_for(paths)
        chain = ChainModels.load(paths, args.backend)
        result = compare_samples(
            samples,
            chain,
            torch_models,
            sample_rate=sample_rate,
            uri=audio_path.stem,
            pipeline=recipe,
            step_s=args.step,
            reference=reference,
            progress=lambda line: print(line, file=sys.stderr),
        )
    payload = {
        "audio": str(audio_path),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs",
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "build_seconds": build_seconds,
        **result.to_dict(),
    }
    emit(payload, args.out)
    print(result.table(), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
