"""The pandas-free array builders equal what pa.array() builds."""

from __future__ import annotations

import pyarrow as pa
import pytest

from tesaiot_cli.analysis import arrays


@pytest.mark.parametrize("values", [[], ["a"], ["a", None, "ünï", "", None], [None] * 9, ["x"] * 17])
def test_strings(values: list[str | None]) -> None:
    built = arrays.strings(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.string()))


@pytest.mark.parametrize("values", [[], [b"\x00\xff"], [b"", None, b"abc"]])
def test_binaries(values: list[bytes | None]) -> None:
    built = arrays.binaries(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.binary()))


@pytest.mark.parametrize("values", [[], [True], [False, True, True, False, True, False, False, True, True]])
def test_booleans(values: list[bool]) -> None:
    built = arrays.booleans(values)
    built.validate(full=True)
    assert built.equals(pa.array(values, pa.bool_()))


def test_int64s_and_scalars() -> None:
    assert arrays.int64s([0, -1, 2**62]).equals(pa.array([0, -1, 2**62], pa.int64()))
    assert arrays.int64s([]).equals(pa.array([], pa.int64()))
    assert arrays.string_scalar("default").equals(pa.scalar("default", pa.string()))
    assert arrays.binary_scalar(b"\n").equals(pa.scalar(b"\n", pa.binary()))
    assert arrays.bool_scalar(False).equals(pa.scalar(False, pa.bool_()))
    assert arrays.int64_scalar(-5).equals(pa.scalar(-5, pa.int64()))
