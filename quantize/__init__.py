"""Quantize saved .mlpackages into new ones (fp16, palettization, int8).

Scoring the result is validation's job: `coreml_diarize.validation.quantize_report`."""

from .apply import QuantizeResult, fp32_path_of, kmeans_1d, output_path, quantize_package
from .recipes import MODES, QuantizeConfig, load_recipe_file

__all__ = [
    "MODES",
    "QuantizeConfig",
    "QuantizeResult",
    "fp32_path_of",
    "kmeans_1d",
    "load_recipe_file",
    "output_path",
    "quantize_package",
]
