"""Statistics of a recording for ``tesaiot info``: computed with Arrow, one batch at a time.

Memory stays bounded whatever the file size: per batch, Arrow sorts by (topic, time) and
finds each topic's longest silence; across batches only per-topic running values are kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.message import parse_topic
from tesaiot_cli.recording.model import NORMAL_LABEL

MAX_SENSOR_TYPES = 8  # per topic, kept for display


@dataclass
class TopicStats:
    """One topic: message count, first and last time (ns), and its longest silence: the
    largest gap (ns) between two consecutive messages, starting at ``longest_gap_start_ns``."""

    topic: str
    messages: int = 0
    first_ns: int = 0
    last_ns: int = 0
    longest_gap_ns: int | None = None
    longest_gap_start_ns: int | None = None
    sensor_types: set[str] = field(default_factory=set)  # from the recording's sensor_type column

    @property
    def device_id(self) -> str:
        return parse_topic(self.topic).device_id

    @property
    def sensor_type(self) -> str:
        """The topic's sensor type(s) as recorded (joined with ',' when payloads differ)."""
        return ",".join(sorted(self.sensor_types)) or parse_topic(self.topic).sensor_type

    def note_gap(self, gap: int, start: int) -> None:
        if self.longest_gap_ns is None or gap > self.longest_gap_ns:
            self.longest_gap_ns = gap
            self.longest_gap_start_ns = start


@dataclass
class RecordingStats:
    """What ``info`` reports. Times in ns since the epoch (UTC), sizes in bytes."""

    messages: int = 0
    start_ns: int | None = None
    end_ns: int | None = None
    payload_min: int | None = None
    payload_max: int | None = None
    payload_total: int = 0
    topics: dict[str, TopicStats] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    unlabelled: int = 0

    @property
    def duration_s(self) -> float:
        if self.start_ns is None or self.end_ns is None:
            return 0.0
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def rate(self) -> float | None:
        """Messages per second over the time span (None for fewer than two messages)."""
        return self.messages / self.duration_s if self.duration_s > 0 else None

    @property
    def payload_mean(self) -> float | None:
        return self.payload_total / self.messages if self.messages else None

    @property
    def anomalies(self) -> int | None:
        """Messages labelled with something other than ``normal`` (None when unlabelled)."""
        if not self.labels:
            return None
        return sum(count for label, count in self.labels.items() if label != NORMAL_LABEL)

    def topic_rate(self, topic: TopicStats) -> float | None:
        return topic.messages / self.duration_s if self.duration_s > 0 else None


def compute_stats(tables: Iterable[pa.Table]) -> RecordingStats:
    """Statistics over recording-schema tables (from a reader's ``iter_tables``)."""
    stats = RecordingStats()
    for table in tables:
        if table.num_rows:
            _add(stats, table)
    return stats


def _add(stats: RecordingStats, table: pa.Table) -> None:
    n = table.num_rows
    stats.messages += n
    times = table.column("time").cast(pa.int64())
    bounds = pc.min_max(times).as_py()
    stats.start_ns = bounds["min"] if stats.start_ns is None else min(stats.start_ns, bounds["min"])
    stats.end_ns = bounds["max"] if stats.end_ns is None else max(stats.end_ns, bounds["max"])
    sizes = pc.binary_length(table.column("payload"))
    size_bounds = pc.min_max(sizes).as_py()
    stats.payload_min = _lower(stats.payload_min, size_bounds["min"])
    stats.payload_max = _upper(stats.payload_max, size_bounds["max"])
    stats.payload_total += int(pc.sum(sizes).as_py() or 0)
    for entry in pc.value_counts(table.column("label").cast(pa.string())).to_pylist():
        if entry["values"] is None:
            stats.unlabelled += entry["counts"]
        else:
            stats.labels[entry["values"]] = stats.labels.get(entry["values"], 0) + entry["counts"]
    topics = table.column("topic").cast(pa.string())
    _add_topics(stats, pa.table({"topic": topics, "time": times}))
    pairs = pa.table({"topic": topics, "sensor": table.column("sensor_type").cast(pa.string())})
    for row in pairs.group_by(["topic", "sensor"]).aggregate([]).to_pylist():
        if len(stats.topics[row["topic"]].sensor_types) < MAX_SENSOR_TYPES:
            stats.topics[row["topic"]].sensor_types.add(row["sensor"])


def _add_topics(stats: RecordingStats, table: pa.Table) -> None:
    ordered = table.sort_by([("topic", "ascending"), ("time", "ascending")])
    summary = ordered.group_by("topic").aggregate([("time", "min"), ("time", "max"), ("time", "count")])
    gaps = _gaps_within(ordered)
    for row in summary.to_pylist():
        topic = stats.topics.get(row["topic"])
        if topic is None:
            topic = stats.topics[row["topic"]] = TopicStats(row["topic"], first_ns=row["time_min"])
        elif row["time_min"] > topic.last_ns:
            topic.note_gap(row["time_min"] - topic.last_ns, topic.last_ns)  # across batches
        topic.messages += row["time_count"]
        topic.first_ns = min(topic.first_ns, row["time_min"])
        topic.last_ns = max(topic.last_ns, row["time_max"])
        if row["topic"] in gaps:
            topic.note_gap(*gaps[row["topic"]])


def _gaps_within(ordered: pa.Table) -> dict[str, tuple[int, int]]:
    """topic -> (longest gap, its start) between consecutive messages of one batch."""
    n = ordered.num_rows
    if n < 2:
        return {}
    topics = ordered.column("topic").combine_chunks()
    times = ordered.column("time").combine_chunks()
    same = pc.equal(topics.slice(1), topics.slice(0, n - 1))
    gap = pc.if_else(same, pc.subtract(times.slice(1), times.slice(0, n - 1)), pa.scalar(None, pa.int64()))
    rows = pa.table({"topic": topics.slice(1), "gap": gap, "start": times.slice(0, n - 1)})
    rows = rows.filter(pc.is_valid(rows.column("gap")))
    if rows.num_rows == 0:
        return {}
    longest = rows.group_by("topic").aggregate([("gap", "max")])
    joined = rows.join(longest, keys="topic")
    joined = joined.filter(pc.equal(joined.column("gap"), joined.column("gap_max")))
    first = joined.group_by("topic").aggregate([("gap", "max"), ("start", "min")])
    return {row["topic"]: (row["gap_max"], row["start_min"]) for row in first.to_pylist()}


def _lower(current: int | None, value: Any) -> int | None:
    if value is None:
        return current
    return int(value) if current is None else min(current, int(value))


def _upper(current: int | None, value: Any) -> int | None:
    if value is None:
        return current
    return int(value) if current is None else max(current, int(value))
