"""The .mlpackage loader (validation/mil/loader.py): program I/O, missing packages,
sub-byte unpacking. See mil_cases.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coreml_diarize.errors import ArtifactError
from coreml_diarize.validation.mil import MILExecutor, read_mil_program
from coreml_diarize.validation.mil.loader import unpack_bits

pytestmark = pytest.mark.filterwarnings("ignore")


def test_missing_package_is_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no such mlpackage"):
        MILExecutor.from_path(tmp_path / "nope.mlpackage")


def test_loader_matches_spec_io(small_package: Path) -> None:
    prog = read_mil_program(small_package)
    assert [n for n, _ in prog.inputs] == ["x0"]
    assert prog.opset == "CoreML7"
    assert prog.blob_ranges  # the linear weight lives in weight.bin


def test_unpack_bits_matches_documented_example() -> None:
    # constexpr_lut_to_dense doc: nbits=2, shape=(5,), bytes [i3 i2 i1 i0], [-- -- -- i4].
    packed = np.array([0b01101100, 0b00000011], dtype=np.uint8)
    np.testing.assert_array_equal(unpack_bits(packed, 2, 5), [0, 3, 2, 1, 3])
    np.testing.assert_array_equal(
        unpack_bits(np.array([0xF8], dtype=np.uint8), 4, 2, signed=True), [-8, -1]
    )
