"""Hive partitioning of a recording dataset: which directory each message's row goes to.

A partition spec is a short text, ``--partition`` on the command line and ``partitioning``
in the dataset's ``_tesaiot/dataset.json``:

========================= =========================================================
spec                      directories
========================= =========================================================
``date`` (the default)    ``date=2026-11-22/``
``hour``                  ``date=2026-11-22/hour=08/``
``date,device``           ``date=2026-11-22/device=infineon-sensor-01/``
``date,bucket:16``        ``date=2026-11-22/bucket=07/`` (crc32 of the device id mod 16)
``none``                  the dataset directory itself
========================= =========================================================

Dates and hours are those of the receive time, in UTC. The partition keys are named
``device`` and ``bucket``, not ``device_id``: the part files keep their own ``device_id``
column (the exact string), and a partition column of the same name would clash with it
in pyarrow.dataset and be type-inferred (``0042`` read as 42) by DuckDB, Polars and Spark.
Values are percent-encoded (``urllib.parse.quote``), as pyarrow's and Spark's hive readers
expect. Pure: no files here.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.errors import ConfigError

DEFAULT_SPEC = "date"
MAX_BUCKETS = 4096


@dataclass(frozen=True)
class PartitionSpec:
    """How rows are split into directories (see the module docstring)."""

    date: bool = True
    hour: bool = False
    device: bool = False
    buckets: int = 0  # 0: no bucket level

    @property
    def time_only(self) -> bool:
        """Whether the directory depends on the receive time alone (not on the device)."""
        return not self.device and not self.buckets

    def text(self) -> str:
        """The canonical spec text (what :func:`parse_partition` reads back)."""
        items = []
        if self.hour:
            items.append("hour")
        elif self.date:
            items.append("date")
        if self.device:
            items.append("device")
        if self.buckets:
            items.append(f"bucket:{self.buckets}")
        return ",".join(items) or "none"

    def keys(self) -> list[str]:
        """The partition column names, outermost first."""
        names = (["date"] if self.date else []) + (["hour"] if self.hour else [])
        return names + (["device"] if self.device else []) + (["bucket"] if self.buckets else [])


def parse_partition(text: str) -> PartitionSpec:
    """``date``, ``hour``, ``date,device``, ``date,bucket:16``, ``device``, ``none``...

    Raises :class:`ConfigError` for an unknown item, ``device`` with ``bucket``, or a
    bucket count outside 2..4096.
    """
    words = [w.strip().lower() for w in text.split(",") if w.strip()]
    if not words:
        raise ConfigError("invalid --partition '': use date, hour, date,device, date,bucket:16 or none")
    if words == ["none"]:
        return PartitionSpec(date=False)
    date = hour = device = False
    buckets = 0
    for word in words:
        name, _, value = word.partition(":")
        if name == "date" and not value:
            date = True
        elif name == "hour" and not value:
            date = hour = True
        elif name == "device" and not value:
            device = True
        elif name == "bucket":
            try:
                buckets = int(value)
            except ValueError:
                raise ConfigError(f"invalid --partition item {word!r}: use bucket:N, e.g. bucket:16") from None
            if not 2 <= buckets <= MAX_BUCKETS:
                raise ConfigError(f"invalid --partition item {word!r}: N must be 2 to {MAX_BUCKETS}")
        else:
            raise ConfigError(
                f"invalid --partition item {word!r}: use date, hour, device, bucket:N (comma-separated) or none"
            )
    if device and buckets:
        raise ConfigError("invalid --partition: device and bucket:N exclude each other (bucket groups devices)")
    return PartitionSpec(date=date, hour=hour, device=device, buckets=buckets)


def segment_value(value: str) -> str:
    """A partition value as it appears in a directory name (percent-encoded)."""
    return quote(value, safe="-_.~@+")


def bucket_of(device_id: str, buckets: int) -> int:
    """The bucket of a device: crc32 of its UTF-8 id modulo ``buckets`` (stable everywhere)."""
    return zlib.crc32(device_id.encode("utf-8")) % buckets


def _bucket_text(bucket: int, buckets: int) -> str:
    return f"bucket={bucket:0{len(str(buckets - 1))}d}"


def time_key(time_ns: int, spec: PartitionSpec) -> str:
    """The time part of the directory for one receive time (ns since the epoch, UTC)."""
    if not spec.date:
        return ""
    seconds = time_ns // 1_000_000_000
    moment = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    text = f"date={moment:%Y-%m-%d}"
    return f"{text}/hour={moment:%H}" if spec.hour else text


def partition_keys(table: pa.Table, spec: PartitionSpec) -> pa.ChunkedArray:
    """The relative directory of every row of a recording-schema table ("" for none)."""
    parts: list[pa.ChunkedArray] = []
    if spec.date:
        fmt = "date=%Y-%m-%d/hour=%H" if spec.hour else "date=%Y-%m-%d"
        parts.append(pc.strftime(table.column("time"), format=fmt))
    if spec.device or spec.buckets:
        devices = table.column("device_id").cast(pa.string())
        distinct = pc.unique(devices)
        if spec.device:
            names = [f"device={segment_value(d)}" for d in distinct.to_pylist()]
        else:
            names = [_bucket_text(bucket_of(d, spec.buckets), spec.buckets) for d in distinct.to_pylist()]
        parts.append(pc.take(pa.array(names, pa.string()), pc.index_in(devices, value_set=distinct)))
    if not parts:
        return pa.chunked_array([pa.array([""] * table.num_rows, pa.string())])
    if len(parts) == 1:
        return parts[0]
    joined = pc.binary_join_element_wise(*parts, "/")
    return joined if isinstance(joined, pa.ChunkedArray) else pa.chunked_array([joined])


def split_by_partition(table: pa.Table, spec: PartitionSpec) -> Iterator[tuple[str, pa.Table]]:
    """(relative directory, rows) for each partition in ``table``; rows keep their order."""
    if table.num_rows == 0:
        return
    keys = partition_keys(table, spec)
    if pc.count_distinct(keys).as_py() == 1:
        yield str(keys[0].as_py()), table
        return
    order = pc.sort_indices(keys)  # stable: the rows of one partition keep their order
    keys = keys.take(order).combine_chunks()
    rows = table.take(order)
    change = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    starts = [0] + [i + 1 for i in pc.indices_nonzero(change).to_pylist()] + [len(keys)]
    for begin, end in zip(starts, starts[1:], strict=False):
        yield str(keys[begin].as_py()), rows.slice(begin, end - begin)
