"""Fixtures of the MIL reference executor's tests; shared helpers are in mil_cases.py."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

# mil_cases.py holds assertions of the tests (run_op_parity, assert_close, ...): have pytest
# rewrite them as it does the test modules' own. Must run before anything imports it.
pytest.register_assert_rewrite("mil_cases")


@pytest.fixture(scope="module", autouse=True)
def _quiet_coremltools_logging() -> Iterator[None]:
    """coremltools logs at INFO/WARNING while converting: ERROR and up only during these
    tests, restored afterwards (not a process-wide setting made at import)."""
    logger = logging.getLogger("coremltools")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


@pytest.fixture(scope="module")
def small_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    import torch.nn as nn
    from mil_cases import convert_and_save, rng_inputs

    path = tmp_path_factory.mktemp("small") / "small.mlpackage"
    torch.manual_seed(0)
    convert_and_save(nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval(), rng_inputs([(2, 4)]), path)
    return path
