"""Small Arrow arrays and scalars built from Python values, from buffers.

``pa.array()`` and ``pa.scalar()`` import pandas, when it is installed, the first time they
convert Python values (to see whether they were handed pandas objects): 0.18 s and 34 MiB
here, a tenth of an export of a million messages. The analysis commands never hold pandas
objects, so the few arrays they build from Python values (a batch's distinct topics, a
fill value) are assembled from buffers with ``pa.Array.from_buffers``, which converts
nothing. tests/test_export.py checks that an export leaves pandas unimported.
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]


def _validity(values: Sequence[object]) -> pa.Buffer | None:
    if all(v is not None for v in values):
        return None
    bits = sum(1 << i for i, v in enumerate(values) if v is not None)
    return pa.py_buffer(bits.to_bytes((len(values) + 7) // 8 or 1, "little"))


def _variable(kind: pa.DataType, values: Sequence[bytes | None]) -> pa.Array:
    chunks = [b"" if v is None else v for v in values]
    offsets = array("i", [0])
    offsets.extend(accumulate(len(c) for c in chunks))
    return pa.Array.from_buffers(kind, len(values),
                                 [_validity(values), pa.py_buffer(offsets.tobytes()), pa.py_buffer(b"".join(chunks))])


def strings(values: Sequence[str | None]) -> pa.Array:
    """A ``string`` array of ``values`` (None: null)."""
    return _variable(pa.string(), [None if v is None else v.encode("utf-8") for v in values])


def binaries(values: Sequence[bytes | None]) -> pa.Array:
    """A ``binary`` array of ``values`` (None: null)."""
    return _variable(pa.binary(), values)


def booleans(values: Sequence[bool]) -> pa.Array:
    """A ``bool`` array of ``values`` (no nulls)."""
    bits = sum(1 << i for i, v in enumerate(values) if v)
    return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits.to_bytes((len(values) + 7) // 8 or 1,
                                                                                            "little"))])


def int64s(values: Sequence[int]) -> pa.Array:
    """An ``int64`` array of ``values`` (no nulls)."""
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(array("q", values).tobytes())])


def string_scalar(value: str) -> Any:
    return strings([value])[0]


def binary_scalar(value: bytes) -> Any:
    return binaries([value])[0]


def bool_scalar(value: bool) -> Any:
    return booleans([value])[0]


def int64_scalar(value: int) -> Any:
    return int64s([value])[0]
