"""Statistics of the values in JSON payloads, for ``tesaiot info``: bounded memory.

Per batch, the payloads are parsed by pyarrow's JSON reader and flattened
(:mod:`~tesaiot_cli.analysis.flatten`), one parsed segment at a time; for every numeric field (integers and floats, not
booleans) Arrow aggregates count, min, max and sum, overall and per device. Only running
totals are kept. A message without the field (or not JSON, or with a non-numeric value
there) counts as a null. Devices are kept up to ``max_devices`` (the first seen); the
others are counted in ``devices_not_shown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.analysis.flatten import flatten, parse_payloads

MAX_DEVICES = 100


@dataclass
class Running:
    """count (non-null values), min, max and sum of one field in one scope."""

    count: int = 0
    low: float | None = None
    high: float | None = None
    total: float = 0.0

    def add(self, count: int, low: Any, high: Any, total: Any) -> None:
        if not count:
            return
        self.count += count
        self.low = low if self.low is None else min(self.low, low)
        self.high = high if self.high is None else max(self.high, high)
        self.total += float(total)

    def report(self, messages: int) -> dict[str, Any]:
        return {"count": self.count, "nulls": messages - self.count, "min": self.low,
                "mean": None if not self.count else self.total / self.count, "max": self.high}


@dataclass
class ValueStats:
    """Running statistics of the numeric payload fields (see the module)."""

    max_devices: int = MAX_DEVICES
    messages: int = 0
    not_json: int = 0
    fields: dict[str, Running] = field(default_factory=dict)
    device_messages: dict[str, int] = field(default_factory=dict)
    devices: dict[str, dict[str, Running]] = field(default_factory=dict)
    devices_not_shown: set[str] = field(default_factory=set)

    def add(self, table: pa.Table) -> None:
        """Take in a recording-schema table."""
        n = table.num_rows
        if n == 0:
            return
        self.messages += n
        parsed = parse_payloads(table.column("payload").combine_chunks())
        self.not_json += len(parsed.not_json)
        devices = table.column("device_id").cast(pa.string()).combine_chunks()
        for entry in pc.value_counts(devices).to_pylist():
            device = entry["values"]
            if device not in self.devices and len(self.devices) >= self.max_devices:
                self.devices_not_shown.add(device)
                continue
            self.devices.setdefault(device, {})
            self.device_messages[device] = self.device_messages.get(device, 0) + entry["counts"]
        # Per parsed segment: its types are consistent, so a field that is a number in some
        # messages and text in others still gets the numbers counted (the text counts as null).
        for segment in parsed.segments:
            self._add_segment(flatten(segment.table), devices.take(segment.rows))

    def _add_segment(self, fields: pa.Table, devices: pa.Array) -> None:
        numeric = [name for name, column in zip(fields.column_names, fields.columns, strict=True)
                   if pa.types.is_integer(column.type) or pa.types.is_floating(column.type)]
        if not numeric:
            return
        for name in numeric:
            column = fields.column(name)
            bounds = pc.min_max(column).as_py()
            self.fields.setdefault(name, Running()).add(len(column) - column.null_count, bounds["min"],
                                                        bounds["max"], pc.sum(column).as_py() or 0)
        grouped = pa.Table.from_arrays([devices] + [fields.column(name) for name in numeric],
                                       names=["device_id"] + numeric)
        aggregations = [(name, kind) for name in numeric for kind in ("count", "min", "max", "sum")]
        for row in grouped.group_by("device_id").aggregate(aggregations).to_pylist():
            per_device = self.devices.get(row["device_id"])
            if per_device is None:
                continue
            for name in numeric:
                per_device.setdefault(name, Running()).add(row[f"{name}_count"], row[f"{name}_min"],
                                                           row[f"{name}_max"], row[f"{name}_sum"] or 0)

    def report(self) -> dict[str, Any]:
        """The ``values`` object of ``info --json``."""
        return {
            "messages": self.messages,
            "not_json": self.not_json,
            "fields": {name: running.report(self.messages) for name, running in self.fields.items()},
            "devices": {
                device: {name: running.report(self.device_messages[device]) for name, running in fields.items()}
                for device, fields in self.devices.items()
            },
            "devices_not_shown": len(self.devices_not_shown),
        }
