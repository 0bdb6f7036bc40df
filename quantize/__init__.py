"""Quantize saved .mlpackages into new ones (fp16, palettization, int8).

Scoring the result is validation's job: `coreml_diarize.validation.quantize_report`."""

from .apply import QuantizeResult, fp32_path_of, output_path, quantize_package
from .kmeans import kmeans_1d
from .mixed import MixedRecipe, search, search_recipe
from .recipes import MODES, QuantizeConfig, load_recipe_file
from .sensitivity_table import LayerSensitivity, SensitivityTable

__all__ = [
    "MODES",
    "MixedRecipe",
    "QuantizeConfig",
    "QuantizeResult",
    "fp32_path_of",
    "kmeans_1d",
    "LayerSensitivity",
    "load_recipe_file",
    "output_path",
    "quantize_package",
    "search",
    "search_recipe",
    "SensitivityTable",
]
