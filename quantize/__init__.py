"""Quantize saved .mlpackages into new ones (fp16, palettization, int8) and score the result."""

from .apply import QuantizeResult, fp32_path_of, kmeans_1d, output_path, quantize_package
from .recipes import MODES, QuantizeConfig, load_recipe_file
from .report import QuantizeReport, quantize_report

__all__ = [
    "MODES",
    "QuantizeConfig",
    "QuantizeReport",
    "QuantizeResult",
    "fp32_path_of",
    "kmeans_1d",
    "load_recipe_file",
    "output_path",
    "quantize_package",
    "quantize_report",
]
