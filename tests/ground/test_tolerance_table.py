"""Issue #21 item 2: every registry model x compute units x trained/untrained x recipe has a
defined tolerance, or a clear DiarizeError (never a bare KeyError), and the rule for an fp32
program on the Neural Engine's units follows Core ML's typed execution (it never runs there)."""

from __future__ import annotations

import pytest

from coreml_diarize.errors import DiarizeError
from coreml_diarize.models import registry
from coreml_diarize.validation.backends import COMPUTE_UNITS

# every variant name a package of ours can carry (record.variant): the precisions convert
# writes and the compressions quantize writes (quantize/recipes.py names them)
RECIPES = ("fp32", "fp16", "palettize8", "palettize6", "palettize4", "palettize2", "linear8")


@pytest.mark.parametrize("key", sorted(registry()))
@pytest.mark.parametrize("units", COMPUTE_UNITS)
@pytest.mark.parametrize("trained", [True, False])
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_combination_is_defined_or_a_clear_error(key, units, trained, recipe):
    spec = registry()[key]
    try:
        tolerances = spec.tolerance_for(recipe, units, trained=trained)
    except DiarizeError as exc:  # a user-facing line naming the model and the recipe
        assert spec.filename in str(exc) and recipe in str(exc)
        assert recipe not in spec.tolerances
        return
    # every output the model declares is judged
    assert set(tolerances) == {t.name for t in spec.outputs}


@pytest.mark.parametrize(
    "key", sorted(k for k, s in registry().items() if set(s.tolerances) == {"fp32"})
)
def test_fp32_only_models_on_the_neural_engine_units_keep_fp32_bounds(key):
    """FBank and PldaRho declare fp32 bounds only (they must stay fp32). On `cpu_and_ne` their
    fp32 program runs on the CPU in fp32 (Core ML never places an fp32-typed program on the
    NE), so the fp32 bounds judge it; this raised KeyError('fp16') before."""
    spec = registry()[key]
    assert spec.tolerance_for("fp32", "cpu_and_ne") == spec.tolerances["fp32"]
    with pytest.raises(DiarizeError, match="meant to stay fp32"):
        spec.tolerance_for("fp16", "cpu_and_ne")


def test_an_fp32_package_is_judged_by_fp32_bounds_on_every_unit():
    for spec in registry().values():
        for units in COMPUTE_UNITS:
            assert spec.tolerance_for("fp32", units) == spec.tolerances["fp32"]
