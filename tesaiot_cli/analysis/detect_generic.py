"""The generic streaming detector: any numeric field of any device, one reading at a time.

Per device, for each reading's value ``x`` (in arrival order):

1. **Raw score**: how unusual the reading is against a robust model of the series' last
   ``WINDOW`` readings, the larger of two robust z-scores (distance from the median over
   1.4826 x the median absolute deviation): of the value itself, and of its change from the
   previous reading. A series that stops moving (the change is exactly 0 for ``STILL`` readings
   in a row while its changes are usually not) scores as a change of ``STILL_SCORE``.
2. **Anomaly likelihood**: the mean raw score of the last ``SHORT`` readings against the
   distribution (mean, standard deviation) of the raw scores of the last ``WINDOW`` readings;
   its Gaussian tail probability is the likelihood of seeing it. An alert when that tail is
   below ``10 ** -THRESHOLD`` (the alert's ``score`` is ``-log10(tail)``).
3. **Warm-up**: no alert in a device's first ``WARMUP`` readings (the model learns).
4. **Suppression**: no alert for ``SUPPRESS`` readings after one (one event, one alert).

Both windows hold the readings as they came, anomalies included: a level that persists
becomes the new normal. The same parameters serve every series. Deterministic: no clock,
no randomness; the same readings give the same alerts. Pure: no I/O.
"""

from __future__ import annotations

import bisect
import collections
import math
from typing import Any, NamedTuple, Protocol

from tesaiot_cli.analysis.detect import Alert, Detector
from tesaiot_cli.analysis.telemetry import ReadingParser, load_object
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, parse_topic

WINDOW = 500  # readings in the robust model of values and changes, and of the raw scores
SHORT = 6  # readings averaged for the likelihood
THRESHOLD = 2.5  # -log10 of the tail probability at which an alert is raised
WARMUP = 150  # readings before the first alert (NAB's probationary period of its shortest series)
SUPPRESS = 120  # readings without an alert after one
STILL = 12  # exactly unchanged readings in a row that make a stillness
STILL_SCORE = 12.0  # the raw score of a stillness
RAW_CAP = 50.0  # raw scores are capped: one absurd value does not blind the model for WINDOW readings
MAD_SCALE = 1.4826


METHODS = ("auto", "generic", "dps368")


class Detection(NamedTuple):
    """One reading found anomalous: ``score`` is ``-log10`` of its likelihood's tail;
    ``kind`` what made the reading unusual: ``level`` (its value), ``change`` (its change
    from the previous reading) or ``flatline`` (a stillness)."""

    score: float
    kind: str


class _Robust:
    """A sliding window of numbers kept sorted: median and median absolute deviation."""

    __slots__ = ("order", "ring")

    def __init__(self) -> None:
        self.order: list[float] = []
        self.ring: collections.deque[float] = collections.deque()

    def add(self, value: float) -> None:
        if len(self.ring) == WINDOW:
            old = self.ring.popleft()
            del self.order[bisect.bisect_left(self.order, old)]
        self.ring.append(value)
        bisect.insort(self.order, value)

    def zscore(self, value: float) -> float:
        order = self.order
        count = len(order)
        if count < 8:
            return 0.0
        middle = count // 2
        median = order[middle] if count % 2 else (order[middle - 1] + order[middle]) / 2
        # The MAD is the median of |v - median|: found by a bisection over the sorted window.
        mad = _mad(order, median)
        if mad <= 0.0:
            # Mostly one value (quantised or idle series): the mean absolute deviation, and
            # at least a millionth of the window's range, so that a repeat of the usual is 0.
            mad = sum(abs(v - median) for v in order) / count / MAD_SCALE
            if mad <= 0.0:
                mad = max(abs(median) * 1e-6, 1e-12)
        return min(abs(value - median) / (MAD_SCALE * mad), RAW_CAP)


def _mad(order: list[float], median: float) -> float:
    """The median absolute deviation of the sorted ``order`` around ``median``."""
    count = len(order)
    want = count // 2  # the number of deviations at most the answer, less one
    low, high = 0.0, max(median - order[0], order[-1] - median)
    for _ in range(40):
        mid = (low + high) / 2
        inside = bisect.bisect_right(order, median + mid) - bisect.bisect_left(order, median - mid)
        if inside > want:
            high = mid
        else:
            low = mid
        if high - low <= 1e-9 * (abs(median) + high):
            break
    return high


class _Series:
    __slots__ = ("values", "changes", "raws", "raw_sum", "raw_sq", "recent", "last", "seen", "quiet", "still",
                 "moving")

    def __init__(self) -> None:
        self.values = _Robust()
        self.changes = _Robust()
        self.raws: collections.deque[float] = collections.deque()
        self.raw_sum = self.raw_sq = 0.0
        self.recent: collections.deque[float] = collections.deque(maxlen=SHORT)
        self.last: float | None = None
        self.seen = 0
        self.quiet = 0  # readings left without an alert
        self.still = 0  # exactly unchanged readings in a row
        self.moving = 0  # readings whose change was not 0, among the last WINDOW (approximately)

    def feed(self, value: float) -> Detection | None:
        self.seen += 1
        raw = self.values.zscore(value)
        kind = "level"
        if self.last is not None:
            change = value - self.last
            by_change = self.changes.zscore(change)
            if by_change > raw:
                raw, kind = by_change, "change"
            self.still = self.still + 1 if change == 0.0 else 0
            self.moving = min(self.moving + 1, WINDOW) if change != 0.0 else max(self.moving - 1, 0)
            if self.still >= STILL and self.moving > WINDOW // 4 and STILL_SCORE > raw:
                raw, kind = STILL_SCORE, "flatline"
            self.changes.add(change)
        self.last = value
        self.values.add(value)
        self.recent.append(raw)
        score = self._likelihood()
        self._remember(raw)
        if self.quiet > 0:
            self.quiet -= 1
            return None
        if score < THRESHOLD or self.seen <= WARMUP:
            return None
        self.quiet = SUPPRESS
        return Detection(score, kind)

    def _likelihood(self) -> float:
        """``-log10`` of the Gaussian tail of the short mean raw score (0 when not above the mean)."""
        count = len(self.raws)
        if count < 16:
            return 0.0
        mean = self.raw_sum / count
        variance = max(self.raw_sq / count - mean * mean, 0.0)
        spread = max(math.sqrt(variance), 1e-3)
        short = sum(self.recent) / len(self.recent)
        z = (short - mean) / spread
        if z <= 0.0:
            return 0.0
        tail = 0.5 * math.erfc(z / math.sqrt(2.0))
        return -math.log10(tail) if tail > 0.0 else 300.0

    def _remember(self, raw: float) -> None:
        if len(self.raws) == WINDOW:
            old = self.raws.popleft()
            self.raw_sum -= old
            self.raw_sq -= old * old
        self.raws.append(raw)
        self.raw_sum += raw
        self.raw_sq += raw * raw


class GenericDetector:
    """Feed it each device's values in order; it returns a :class:`Detection` or None."""

    def __init__(self) -> None:
        self._series: dict[str, _Series] = {}
        self.readings = 0
        self.alerts = 0

    @property
    def devices(self) -> int:
        return len(self._series)

    def feed(self, device_id: str, value: float) -> Detection | None:
        series = self._series.get(device_id)
        if series is None:
            series = self._series[device_id] = _Series()
        self.readings += 1
        detection = series.feed(value)
        if detection is not None:
            self.alerts += 1
        return detection


# -- messages in, alerts out -------------------------------------------------------


def field_value(data: dict[str, Any], field: str) -> float | None:
    """The number at ``field`` of a payload object: a top-level key, else one in ``data``, else a
    dotted path (``data.pressure``); None when absent or not a number (booleans are not)."""
    found: Any = data.get(field, None)
    if found is None and isinstance(data.get("data"), dict):
        found = data["data"].get(field)
    if found is None and "." in field:
        found = data
        for part in field.split("."):
            found = found.get(part) if isinstance(found, dict) else None
    if isinstance(found, bool) or not isinstance(found, (int, float)):
        return None
    return float(found)


def default_field(data: dict[str, Any]) -> str | None:
    """The field the generic detector watches when none is given: ``value`` when it is a number,
    else the only numeric field of the payload (top level, else in ``data``); None otherwise."""
    if field_value(data, "value") is not None:
        return "value"
    for source, prefix in ((data, ""), (data.get("data"), "data.")):
        if isinstance(source, dict):
            numeric = [key for key, item in source.items()
                       if key not in ("timestamp", "seq") and not isinstance(item, bool)
                       and isinstance(item, (int, float))]
            if len(numeric) == 1:
                return prefix + numeric[0]
            if numeric:
                return None
    return None


class MessageDetector(Protocol):
    """What ``detect`` runs: messages in, alerts out (None: the message is not a reading)."""

    @property
    def readings(self) -> int: ...

    @property
    def devices(self) -> int: ...

    def feed_message(self, message: Message) -> list[Alert] | None: ...


class ReferenceOnMessages:
    """The DPS368 reference detector (:mod:`tesaiot_cli.analysis.detect`) on messages."""

    def __init__(self) -> None:
        self.detector = Detector()
        self.parser = ReadingParser()
        self.readings = 0

    @property
    def devices(self) -> int:
        return self.detector.devices

    def feed_message(self, message: Message) -> list[Alert] | None:
        reading = self.parser.parse(message)
        if reading is None:
            return None
        self.readings += 1
        return self.detector.feed(reading, time_ns=message.time_ns)


class GenericOnMessages:
    """The generic detector on one numeric field of JSON payloads (``field`` None: per device,
    :func:`default_field` of its first payload that has one)."""

    def __init__(self, field: str | None = None) -> None:
        self.field = field
        self.detector = GenericDetector()
        self.fields: dict[str, str] = {}  # per device, the field watched
        self.readings = 0

    @property
    def devices(self) -> int:
        return self.detector.devices

    def feed_message(self, message: Message) -> list[Alert] | None:
        data = load_object(message.payload)
        if data is None:
            return None
        device = data.get("device_id")
        device_id = device if isinstance(device, str) and device else parse_topic(message.topic).device_id
        field = self.field or self.fields.get(device_id) or default_field(data)
        if field is None:
            return None
        value = field_value(data, field)
        if value is None or not math.isfinite(value):
            return None
        self.fields.setdefault(device_id, field)
        self.readings += 1
        detection = self.detector.feed(device_id, value)
        if detection is None:
            return []
        stamp = data.get("timestamp")
        return [Alert(device_id, stamp if isinstance(stamp, str) else None, detection.kind, detection.score,
                      message.time_ns)]


class AutoOnMessages:
    """Without ``--method`` or ``--field``: DPS368 readings go to the reference detector, any
    other payload with a numeric field (:func:`default_field`) to the generic one."""

    def __init__(self) -> None:
        self.reference = ReferenceOnMessages()
        self.generic = GenericOnMessages()

    @property
    def readings(self) -> int:
        return self.reference.readings + self.generic.readings

    @property
    def devices(self) -> int:
        return self.reference.devices + self.generic.devices

    def feed_message(self, message: Message) -> list[Alert] | None:
        alerts = self.reference.feed_message(message)
        return self.generic.feed_message(message) if alerts is None else alerts


def make_detector(method: str = "auto", field: str | None = None) -> MessageDetector:
    """The detector ``detect --method METHOD --field FIELD`` runs (``--field`` implies generic);
    :class:`ConfigError` for an unknown method or a field that cannot be."""
    if method not in METHODS:
        raise ConfigError(f"invalid --method {method!r}: choose one of {', '.join(METHODS)}")
    if field is not None and (not field.strip() or method == "dps368"):
        raise ConfigError("--field names the numeric field of the generic detector: not empty, "
                          "not with --method dps368")
    if field is not None or method == "generic":
        return GenericOnMessages(field)
    if method == "dps368":
        return ReferenceOnMessages()
    return AutoOnMessages()
