"""The state behind ``tesaiot watch``: one row per device (or per topic), pure, on an injected clock.

Every message goes through :meth:`FleetModel.ingest` (telemetry) or
:meth:`FleetModel.ingest_alert` (a message on an alert topic). Memory is bounded per row: the
rate is kept in one-second buckets over a fixed window, each numeric field's sparkline in a
fixed ring of ``SPARK_WINDOW`` values, at most ``MAX_FIELDS`` fields per row and
``RECENT_MESSAGES`` recent messages (``RECENT_FOCUSED`` for the row being looked at). Rows
past ``max_rows`` are not created: their messages are counted in ``untracked``. Nothing here
prints, reads a clock of its own or touches the terminal. Times are seconds on the injected
clock.
"""

from __future__ import annotations

import collections
import math
import re
from array import array
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import orjson

from tesaiot_cli.message import UNKNOWN_DEVICE, Message, parse_topic
from tesaiot_cli.output.render import escape_control

SPARK_WINDOW = 48  # values kept per field per row: the widest sparkline drawn
RATE_BUCKETS = 10  # one-second buckets: the rate is over the last 10 s
MAX_FIELDS = 4  # numeric fields kept per row (the first ones of the payload)
MAX_FLEET_FIELDS = 32  # field names offered by the field picker
RECENT_MESSAGES = 4  # messages kept per row for the detail view
RECENT_FOCUSED = 50  # ... for the row whose detail view is open
MAX_ROWS = 100_000
MAX_TOPICS = 8  # topics remembered per row
STALE_MIN_S = 5.0
STALE_FACTOR = 3.0  # a row is stale after this many of its usual intervals without a message
MAX_EVENTS = 50

# DPS368 readings by name, in this order, before any other field.
KNOWN_FIELDS = ("pressure", "temperature")
# Numbers that are times or counters, not readings.
SKIPPED_FIELDS = frozenset({"timestamp", "time", "ts", "time_ns", "seq", "sequence", "boot"})

SORTS = ("name", "rate", "last seen", "anomalies")

_DIGITS = re.compile(r"(\d+)")


def natural_key(text: str) -> tuple[Any, ...]:
    """``dev-2`` before ``dev-10``: digit runs compare as numbers."""
    return tuple(int(part) if part.isdigit() else part.lower() for part in _DIGITS.split(text))


class Ring:
    """The last ``SPARK_WINDOW`` values of one field (a fixed array: 8 bytes a value)."""

    __slots__ = ("_values", "_next", "count")

    def __init__(self) -> None:
        self._values = array("d", bytes(8 * SPARK_WINDOW))
        self._next = 0
        self.count = 0

    def add(self, value: float) -> None:
        self._values[self._next] = value
        self._next = (self._next + 1) % SPARK_WINDOW
        if self.count < SPARK_WINDOW:
            self.count += 1

    def last(self, n: int) -> list[float]:
        """The last ``n`` values (fewer when fewer came), oldest first."""
        n = min(n, self.count)
        start = (self._next - n) % SPARK_WINDOW
        return [self._values[(start + i) % SPARK_WINDOW] for i in range(n)]


class Recent(NamedTuple):
    """A message kept for the detail view, with its label and whether it was an alert."""

    message: Message
    label: str | None
    alert: bool


class Payload(NamedTuple):
    """What the view reads from a payload: ``parsed`` False when it is not JSON at all;
    ``label`` the ``anomaly`` key's kind (``"normal"`` for null, None when absent)."""

    parsed: bool
    device_id: str | None
    values: list[tuple[str, float]]
    label: str | None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_payload(payload: bytes) -> Payload:
    """The device id, numeric fields and label of a payload. DPS368 ``data.pressure`` and
    ``data.temperature`` come first, by name; then the first numeric fields in payload order
    (one level of nesting, as ``parent.child``; a ``data.`` prefix dropped), at most
    ``MAX_FIELDS``. A bare JSON number is the field ``value``. Numbers stay as the JSON had
    them (an integer is shown as one)."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return Payload(False, None, [], None)
    if not isinstance(data, dict):
        return Payload(True, None, [("value", data)] if _number(data) else [], None)
    device = data.get("device_id")
    label: str | None = None
    if "anomaly" in data:
        kind = data["anomaly"]
        label = "normal" if kind is None else str(kind)
    values: list[tuple[str, float]] = []
    inner = data.get("data")
    if isinstance(inner, dict):
        values = [(name, inner[name]) for name in KNOWN_FIELDS if _number(inner.get(name))]
    seen = {name for name, _ in values}
    for key, value in data.items():
        if len(values) >= MAX_FIELDS:
            break
        items = value.items() if isinstance(value, dict) else ((None, value),)
        for child, item in items:
            leaf = child if child is not None else key
            if not _number(item) or leaf in SKIPPED_FIELDS:
                continue
            name = leaf if child is None or key == "data" else f"{key}.{child}"
            if name not in seen:
                seen.add(name)
                values.append((name, item))
                if len(values) >= MAX_FIELDS:
                    break
    return Payload(True, device if isinstance(device, str) and device else None, values, label)


class Row:
    """One device (or one topic, when neither payload nor topic names a device)."""

    __slots__ = ("key", "name", "sort_name", "by_device", "topics", "messages", "not_parsed", "first_s", "last_s",
                 "_buckets", "_head", "values", "series", "anomalies", "last_label", "last_anomaly",
                 "last_anomaly_s", "alerts", "last_alert", "last_alert_score", "last_alert_s", "recent")

    def __init__(self, key: str, *, by_device: bool) -> None:
        self.key = key
        self.name = escape_control(key)  # a device id is anyone's text: never a terminal escape
        self.sort_name = natural_key(key)
        self.by_device = by_device
        self.topics: list[str] = []
        self.messages = 0
        self.not_parsed = 0
        self.first_s: float | None = None
        self.last_s: float | None = None
        self._buckets = [0] * RATE_BUCKETS
        self._head = 0  # the second of the newest bucket
        self.values: dict[str, float] = {}
        self.series: dict[str, Ring] = {}
        self.anomalies = 0  # messages labelled with an anomaly kind
        self.last_label: str | None = None
        self.last_anomaly: str | None = None
        self.last_anomaly_s: float | None = None
        self.alerts = 0
        self.last_alert: str | None = None
        self.last_alert_score: float | None = None
        self.last_alert_s: float | None = None
        self.recent: collections.deque[Recent] = collections.deque(maxlen=RECENT_MESSAGES)

    def _count(self, now: float) -> None:
        second = int(now)
        if self.first_s is None:
            self._head = second
        elif second > self._head:
            for index in range(self._head + 1, min(second, self._head + RATE_BUCKETS) + 1):
                self._buckets[index % RATE_BUCKETS] = 0
            self._head = second
        self._buckets[second % RATE_BUCKETS] += 1

    def rate(self, now: float) -> float:
        """Messages per second over the last ``RATE_BUCKETS`` seconds (0 before any)."""
        if self.first_s is None:
            return 0.0
        second = int(now)
        low = max(self._head - RATE_BUCKETS + 1, second - RATE_BUCKETS + 1)
        count = sum(self._buckets[index % RATE_BUCKETS] for index in range(low, self._head + 1))
        span = min(now - self.first_s, RATE_BUCKETS - 1 + (now - second))
        return count / max(span, 1.0)

    def interval(self) -> float | None:
        """The mean time between messages (s), None before two."""
        if self.messages < 2 or self.first_s is None or self.last_s is None:
            return None
        return (self.last_s - self.first_s) / (self.messages - 1)

    def age(self, now: float) -> float | None:
        return None if self.last_s is None else max(0.0, now - self.last_s)

    def stale(self, now: float, stale_after: float | None = None) -> bool:
        """No message for ``stale_after`` s, or by default for the longer of ``STALE_MIN_S`` and
        ``STALE_FACTOR`` usual intervals."""
        age = self.age(now)
        if age is None:
            return False
        if stale_after is None:
            interval = self.interval()
            stale_after = max(STALE_MIN_S, STALE_FACTOR * interval) if interval is not None else STALE_MIN_S
        return age > stale_after

    def spark(self, field: str, n: int) -> list[float]:
        ring = self.series.get(field)
        return ring.last(n) if ring is not None else []

    def note_topic(self, topic: str) -> None:
        if topic not in self.topics and len(self.topics) < MAX_TOPICS:
            self.topics.append(topic)


class FleetTotals:
    """The header's counters (``dropped`` is set by whoever drops: the run loop's inbox)."""

    __slots__ = ("messages", "telemetry", "alerts", "anomalies", "not_parsed", "untracked", "dropped")

    def __init__(self) -> None:
        self.messages = 0
        self.telemetry = 0
        self.alerts = 0
        self.anomalies = 0
        self.not_parsed = 0
        self.untracked = 0  # messages of rows past max_rows: counted, not shown
        self.dropped = 0


class FleetModel:
    """Every row, the fleet's totals, connection state and events. ``clock`` gives seconds."""

    def __init__(self, clock: Callable[[], float], *, max_rows: int = MAX_ROWS, stale_after: float | None = None
                 ) -> None:
        self.clock = clock
        self.max_rows = max_rows
        self.stale_after = stale_after
        self.rows: dict[str, Row] = {}
        self.totals = FleetTotals()
        self.fields: list[str] = []  # numeric field names seen, in order (DPS368's first)
        self.started_s = clock()
        self.connection = "connecting"
        self.events: collections.deque[tuple[float, str, str]] = collections.deque(maxlen=MAX_EVENTS)
        self.events_seen = 0
        self.disconnects = 0
        self.focused: str | None = None
        self._total_buckets = Row("", by_device=False)  # the fleet's own rate
        self._topic_rows: dict[str, tuple[str, bool]] = {}
        self._stale_at: float | None = None
        self._by_name: list[Row] = []
        self._stale_rows = 0
        self._stale_count = 0

    # -- messages ----------------------------------------------------------------------

    def _row_for(self, topic: str, device_id: str | None) -> Row | None:
        if device_id is not None:
            key, by_device = device_id, True
        else:
            found = self._topic_rows.get(topic)
            if found is None:
                device = parse_topic(topic).device_id
                found = (device, True) if device != UNKNOWN_DEVICE else (topic, False)
                if len(self._topic_rows) < self.max_rows:
                    self._topic_rows[topic] = found
            key, by_device = found
        row = self.rows.get(key)
        if row is None:
            if len(self.rows) >= self.max_rows:
                return None
            row = self.rows[key] = Row(key, by_device=by_device)
            if key == self.focused:
                row.recent = collections.deque(row.recent, maxlen=RECENT_FOCUSED)
        return row

    def ingest(self, message: Message, label: str | None = None) -> None:
        """A telemetry message. ``label``: its ground truth when the source knows it (a
        recording's label column); otherwise the payload's ``anomaly`` key is the label."""
        now = self.clock()
        totals = self.totals
        totals.messages += 1
        totals.telemetry += 1
        self._total_buckets._count(now)
        if self._total_buckets.first_s is None:
            self._total_buckets.first_s = now
        payload = read_payload(message.payload)
        row = self._row_for(message.topic, payload.device_id)
        if not payload.parsed:
            totals.not_parsed += 1
        if row is None:
            totals.untracked += 1
            return
        row._count(now)
        if row.first_s is None:
            row.first_s = now
        row.last_s = now
        row.messages += 1
        row.note_topic(message.topic)
        if not payload.parsed:
            row.not_parsed += 1
        for name, value in payload.values:
            if name not in row.values and len(row.values) >= MAX_FIELDS:
                continue
            row.values[name] = value
            ring = row.series.get(name)
            if ring is None:
                ring = row.series[name] = Ring()
                self._field(name)
            ring.add(float(value))
        label = label if label is not None else payload.label
        if label is not None:
            row.last_label = label
            if label != "normal":
                row.anomalies += 1
                totals.anomalies += 1
                row.last_anomaly, row.last_anomaly_s = label, now
        row.recent.append(Recent(message, label, False))

    def ingest_alert(self, message: Message) -> None:
        """A message on an alert topic (the alert contract: ``device_id``, ``kind``, ``score``)."""
        now = self.clock()
        self.totals.messages += 1
        self.totals.alerts += 1
        self._total_buckets._count(now)
        if self._total_buckets.first_s is None:
            self._total_buckets.first_s = now
        try:
            data = orjson.loads(message.payload)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            data = {}
            self.totals.not_parsed += 1
        device = data.get("device_id")
        row = self._row_for(message.topic, device if isinstance(device, str) and device else None)
        if row is None:
            self.totals.untracked += 1
            return
        kind = data.get("kind")
        score = data.get("score")
        row.alerts += 1
        row.last_alert = escape_control(kind) if isinstance(kind, str) and kind else "alert"
        row.last_alert_score = float(score) if isinstance(score, (int, float)) and _number(score) else None
        row.last_alert_s = now
        row.recent.append(Recent(message, None, True))

    def _field(self, name: str) -> None:
        if name in self.fields or len(self.fields) >= MAX_FLEET_FIELDS:
            return
        self.fields.append(name)
        self.fields.sort(key=lambda f: (KNOWN_FIELDS.index(f) if f in KNOWN_FIELDS else len(KNOWN_FIELDS)))

    # -- connection ----------------------------------------------------------------------

    def event(self, kind: str, text: str) -> None:
        """A session event (``disconnected``, ``reconnecting``, ``reconnected``, ``warning``,
        ``notice``): the header's connection state and the list of events."""
        if kind == "disconnected":
            self.connection = "disconnected"
            self.disconnects += 1
        elif kind == "reconnecting" and self.connection != "connected":
            self.connection = "reconnecting"
        elif kind == "reconnected":
            self.connection = "connected"
        self.events.append((self.clock(), kind, text))
        self.events_seen += 1

    # -- what the view shows ---------------------------------------------------------------

    def rate(self) -> float:
        """The fleet's messages per second (telemetry and alerts) over the rate window."""
        return self._total_buckets.rate(self.clock())

    def stale_rows(self) -> int:
        """How many rows are stale (counted again at most once a second: 10,000 rows cost
        a few ms, and the header is drawn several times a second)."""
        now = self.clock()
        if self._stale_at is not None and 0 <= now - self._stale_at < 1.0 and len(self.rows) == self._stale_rows:
            return self._stale_count
        stale_after = self.stale_after
        count = 0
        for row in self.rows.values():
            last = row.last_s
            if last is None or now - last <= (stale_after if stale_after is not None else STALE_MIN_S):
                continue  # the usual case: seen within the shortest threshold
            count += row.stale(now, stale_after)
        self._stale_at, self._stale_rows, self._stale_count = now, len(self.rows), count
        return count

    def focus(self, key: str | None) -> None:
        """Keep more recent messages for the row ``key`` (its detail view is open)."""
        if self.focused is not None and self.focused in self.rows:
            row = self.rows[self.focused]
            row.recent = collections.deque(row.recent, maxlen=RECENT_MESSAGES)
        self.focused = key
        if key is not None and key in self.rows:
            row = self.rows[key]
            row.recent = collections.deque(row.recent, maxlen=RECENT_FOCUSED)

    def select(self, text: str = "", sort: str = "name") -> list[Row]:
        """The rows whose name or a topic contains ``text`` (case-insensitive; ``*`` and ``?``
        make it a glob), in ``sort`` order: name; rate (highest first); last seen (the longest
        silent first); anomalies (most anomalies and alerts first)."""
        rows: Iterable[Row] = self.rows.values()
        if text:
            rows = [row for row in rows if matches(row, text)]
        now = self.clock()
        if sort == "rate":
            return sorted(rows, key=lambda r: (-r.rate(now), r.sort_name))
        if sort == "last seen":
            return sorted(rows, key=lambda r: (r.last_s if r.last_s is not None else -math.inf, r.sort_name))
        if sort == "anomalies":
            return sorted(rows, key=lambda r: (-(r.anomalies + r.alerts), r.sort_name))
        if sort != "name":
            raise ValueError(f"unknown sort {sort!r}")
        if text:
            return sorted(rows, key=lambda r: r.sort_name)
        if len(self._by_name) != len(self.rows):  # sorted again only when rows came
            self._by_name = sorted(self.rows.values(), key=lambda r: r.sort_name)
        return list(self._by_name)


def matches(row: Row, text: str) -> bool:
    """Whether ``text`` is in the row's name or one of its topics (a glob with ``*``/``?``)."""
    import fnmatch

    needle = text.lower()
    if "*" in needle or "?" in needle:
        return any(fnmatch.fnmatchcase(value.lower(), needle) for value in (row.key, *row.topics))
    return needle in row.key.lower() or any(needle in topic.lower() for topic in row.topics)
