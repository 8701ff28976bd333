"""Numbers from JSON must be JSON numbers: a numeric string or a boolean is refused, though
Python's float() and int subclasses would take them."""

from __future__ import annotations

import numpy as np
import pytest

from facelink.enroll import validate
from facelink.errors import InvalidParameterException


@pytest.mark.parametrize("value", ["50", " 50 ", "nan", b"50", bytearray(b"50"), True, False, None, [50], {"v": 50},
                                   float("nan"), float("inf"), -0.5, 100.5])
def test_float_range_refuses_what_is_not_a_number_in_range(value):
    with pytest.raises(InvalidParameterException, match="Threshold"):
        validate.float_range("Threshold", value, 0, 100)


@pytest.mark.parametrize("value", [0, 50, 100, 50.5, np.float32(50.5), np.int64(7)])
def test_float_range_takes_numbers(value):
    assert validate.float_range("Threshold", value, 0, 100) == float(value)


@pytest.mark.parametrize("value", ["5", b"5", True, 5.0, None])
def test_int_range_refuses_what_is_not_an_integer(value):
    with pytest.raises(InvalidParameterException, match="MaxFaces"):
        validate.int_range("MaxFaces", value, 1, 10)
