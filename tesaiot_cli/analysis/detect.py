"""The reference streaming anomaly detector: a baseline to beat, deterministic, per device.

Every reading goes through four tests, each per device and channel (pressure, temperature):

* **range**: outside the DPS368 datasheet range (pressure 300-1200 hPa, temperature
  -40-85 degC, limits included as anomalous: the simulator's clamped values sit on them)
  -> ``high_pressure`` / ``high_temperature`` / ``both`` (``low_...`` below the range);
* **level**: against the last ``WINDOW`` readings kept (the ones not clearly anomalous). The
  channel's behaviour picks the test: when consecutive values differ about as much as
  values differ from their median (independent values, like the upstream profile), a
  value outside the window's envelope widened by a margin; when consecutive values are
  much closer than that (a slowly moving signal, like the realistic profile), a jump
  from recent values (each the median of three kept values) larger than ``SIGMAS``
  robust step deviations, scaled by the square root of the steps between them (checked
  at lags 1, 3 and 8, so a slow ramp is caught too) -> ``spike`` (first flagged reading) or ``drift`` (the next ones);
* **stuck**: both channels exactly repeat the previous reading (once when the channels
  never repeat otherwise, twice when they sometimes do) -> ``stuck``;
* **gap**: the time since the device's previous reading is more than ``GAP_FACTOR``
  times its median interval -> ``dropout``, reported on the first reading after the gap.

Flagged readings never enter the window, so an anomaly does not teach the detector that
it is normal. Pure: no I/O, no clock; the reading time is the payload's timestamp.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import orjson

from tesaiot_cli.analysis.telemetry import Reading, ReadingParser
from tesaiot_cli.message import Message

PRESSURE_RANGE_HPA = (300.0, 1200.0)
TEMPERATURE_RANGE_C = (-40.0, 85.0)
WINDOW = 128  # readings kept per channel
TRIM = 0.025  # the envelope leaves out this share of the window at each end
MILD = 3.0  # independent values flagged up to this score still widen the envelope
RELEARN_AFTER = 16  # flagged readings in a row after which a channel's history starts again
SETTLED = 3  # flagged readings in a row, quiet among themselves, that become the new references
QUIET_SIGMAS = 3.0
WARMUP = 48  # readings kept before the level and stuck tests
SIGMAS = 6.0  # step deviations for the level test of a slowly moving signal
LAGS = (1, 3, 8)
ENVELOPE_MARGIN = 0.05  # of the window's range, plus 2/n of it (few readings: wider)
# A moving signal: median |step| below this share of the median |value - median| (independent values: 1.2-1.4).
SMOOTH_RATIO = 0.9
GAP_FACTOR = 2.5
GAP_WINDOW = 32
RESOLUTION = {"pressure": 0.001, "temperature": 0.01}  # the smallest step the payloads show
STATS_EVERY = 8  # readings between two recomputations of a window's statistics
DEFAULT_ALERT_TOPIC = "device/{device_id}/alerts"


class Alert(NamedTuple):
    """One alert. ``timestamp`` is the flagged reading's payload timestamp, verbatim;
    ``time_ns`` is when the detector raised it (the flagged reading's time in the input)."""

    device_id: str
    timestamp: str | None
    kind: str
    score: float
    time_ns: int


def alert_payload(alert: Alert) -> bytes:
    """The alert contract's JSON: ``timestamp`` first, then ``device_id``, ``kind``, ``score``."""
    return orjson.dumps({"timestamp": alert.timestamp, "device_id": alert.device_id, "kind": alert.kind,
                         "score": round(alert.score, 3)})


def alert_message(alert: Alert, *, topic: str = DEFAULT_ALERT_TOPIC, qos: int = 1,
                  time_ns: int | None = None) -> Message:
    """The alert as a message on ``topic`` (``{device_id}`` replaced)."""
    return Message(topic.replace("{device_id}", alert.device_id), alert_payload(alert), qos, False,
                   alert.time_ns if time_ns is None else time_ns)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class _Channel:
    """The recent history of one channel of one device, and its level test."""

    __slots__ = ("resolution", "values", "indices", "steps", "repeats", "_until_stats", "smooth", "low", "high",
                 "margin", "step_sigma", "flagged_run", "settling", "settled_at")

    def __init__(self, resolution: float) -> None:
        self.resolution = resolution
        self.values: collections.deque[float] = collections.deque(maxlen=WINDOW)
        self.indices: collections.deque[int] = collections.deque(maxlen=WINDOW)
        self.steps: collections.deque[float] = collections.deque(maxlen=WINDOW)  # |diff| of adjacent readings kept
        self.repeats = 0  # exact repeats among ``steps``
        self._until_stats = 0
        self.smooth = False
        self.low = self.high = self.margin = self.step_sigma = 0.0
        self.flagged_run = 0
        self.settling: collections.deque[tuple[float, int]] = collections.deque(maxlen=SETTLED)
        self.settled_at = 0

    def ready(self) -> bool:
        return len(self.values) >= WARMUP

    def _stats(self) -> None:
        ordered = sorted(self.values)
        count = len(ordered)
        trim = int(TRIM * count)
        self.low, self.high = ordered[trim], ordered[count - 1 - trim]
        # A few resolution steps more: values quantised to 0.01 with a slow wander would
        # otherwise step out of a narrow envelope one count at a time.
        self.margin = (self.high - self.low) * (ENVELOPE_MARGIN + 2.0 / count) + 3 * self.resolution
        steps = list(self.steps)
        if len(steps) >= WARMUP // 2:
            center = _median(ordered)
            deviation = _median([abs(v - center) for v in ordered])
            step = _median(steps)
            self.smooth = step < SMOOTH_RATIO * deviation
            self.step_sigma = max(1.4826 * step, self.resolution)
        else:
            self.smooth = False
        self._until_stats = STATS_EVERY

    def deviation(self, value: float, index: int) -> float:
        """How anomalous ``value`` (reading number ``index``) is: > 1 flags it."""
        if self._until_stats <= 0:
            self._stats()
        if not self.smooth:
            if value < self.low:
                return 1.0 + (self.low - self.margin - value) / self.margin
            if value > self.high:
                return 1.0 + (value - self.high - self.margin) / self.margin
            return 0.0
        # Each reference is the median of three consecutive kept values, so one bad value
        # that slipped into the history (during the warm-up) does not flag what follows it.
        # Right after a flagged reading, a value that fits any reference is back to normal
        # (an early, unflagged part of a drift may have slipped into the short lags).
        recovering = self.flagged_run > 0
        worst = math.inf if recovering else 0.0
        count = len(self.values)
        values, indices = self.values, self.indices
        for lag in LAGS:
            if lag + 2 > count or indices[-lag - 2] < self.settled_at:
                break
            a, b, c = values[-lag], values[-lag - 1], values[-lag - 2]
            reference = max(min(a, b), min(max(a, b), c))
            steps = index - indices[-lag - 1]
            limit = SIGMAS * self.step_sigma * math.sqrt(steps) + 2 * self.resolution
            deviation = abs(value - reference) / limit
            worst = min(worst, deviation) if recovering else max(worst, deviation)
        return 0.0 if worst == math.inf else worst

    def learn(self, value: float, index: int, deviation: float) -> None:
        """Keep ``value`` when it is normal enough to describe the channel.

        Independent values: everything but clear outliers (the envelope is trimmed, so a
        few mild ones do no harm, and a window that started too narrow widens). A moving
        signal: only unflagged values, as the steps are measured from them. After
        ``RELEARN_AFTER`` flagged readings in a row the channel has changed for good (the
        sensor was moved): the history starts again.
        """
        keep = deviation <= (MILD if not self.smooth else 1.0)
        self.flagged_run = self.flagged_run + 1 if deviation > 1.0 else 0
        if self.flagged_run == 0:
            self.settling.clear()
        elif self.smooth:
            # A moving signal flagged several times in a row but quiet again (steps as small as
            # its noise): it came back from an anomaly that slipped into the history, or moved
            # to a new level. Those readings become the references; a ramp never looks quiet.
            self.settling.append((value, index))
            recent = list(self.settling)[-SETTLED:]
            if len(recent) == SETTLED and all(
                    abs(b[0] - a[0]) <= QUIET_SIGMAS * self.step_sigma + self.resolution and b[1] == a[1] + 1
                    for a, b in zip(recent, recent[1:], strict=False)):
                for kept_value, kept_index in recent:
                    self._keep(kept_value, kept_index)
                self.settled_at = recent[0][1]  # older references describe the old level
                self.settling.clear()
                self.flagged_run = 0
                return
        if self.flagged_run >= RELEARN_AFTER:
            self.values.clear()
            self.indices.clear()
            self.steps.clear()
            self.repeats, self.flagged_run, self._until_stats = 0, 0, 0
            keep = True
        if keep:
            self._keep(value, index)

    def _keep(self, value: float, index: int) -> None:
        if self.values and self.indices[-1] == index - 1:
            step = abs(value - self.values[-1])
            if len(self.steps) == self.steps.maxlen and self.steps[0] == 0.0:
                self.repeats -= 1
            self.steps.append(step)
            if step == 0.0:
                self.repeats += 1
        self.values.append(value)
        self.indices.append(index)
        self._until_stats -= 1


class _Device:
    __slots__ = ("channels", "index", "last_time_ns", "gaps", "last_values", "identical", "flagged_before",
                 "gap_until_stats", "gap_median")

    def __init__(self) -> None:
        self.channels = {name: _Channel(resolution) for name, resolution in RESOLUTION.items()}
        self.index = 0
        self.last_time_ns: int | None = None
        self.gaps: collections.deque[int] = collections.deque(maxlen=GAP_WINDOW)
        self.last_values: tuple[float | None, float | None] | None = None
        self.identical = 0  # readings in a row equal to the one before
        self.flagged_before = False
        self.gap_until_stats = 0
        self.gap_median = 0.0


class Detector:
    """Feed it readings in time order (per device); it returns the alerts they raise."""

    def __init__(self) -> None:
        self._devices: dict[str, _Device] = {}
        self.readings = 0
        self.alerts = 0

    @property
    def devices(self) -> int:
        return len(self._devices)

    def feed(self, reading: Reading, *, time_ns: int | None = None) -> list[Alert]:
        """Test one reading; ``time_ns`` (default: the reading's) stamps the alerts raised."""
        device = self._devices.get(reading.device_id)
        if device is None:
            device = self._devices[reading.device_id] = _Device()
        self.readings += 1
        device.index += 1
        index = device.index
        now = reading.time_ns if time_ns is None else time_ns
        alerts: list[Alert] = []
        gap = self._gap(device, reading.time_ns)
        if gap > 1.0:
            alerts.append(Alert(reading.device_id, reading.timestamp, "dropout", gap, now))
        kind, score = self._values(device, reading, index)
        if kind is not None:
            alerts.append(Alert(reading.device_id, reading.timestamp, kind, score, now))
        self.alerts += len(alerts)
        return alerts

    def _gap(self, device: _Device, time_ns: int) -> float:
        last, device.last_time_ns = device.last_time_ns, time_ns
        if last is None or time_ns <= last:
            return 0.0
        gap = time_ns - last
        ratio = 0.0
        if len(device.gaps) >= 4:
            if device.gap_until_stats <= 0:
                device.gap_median = _median([float(g) for g in device.gaps])
                device.gap_until_stats = STATS_EVERY
            if device.gap_median > 0:
                ratio = gap / (GAP_FACTOR * device.gap_median)
        if ratio <= 1.0:
            device.gaps.append(gap)
            device.gap_until_stats -= 1
        return ratio

    def _values(self, device: _Device, reading: Reading, index: int) -> tuple[str | None, float]:
        values = (reading.pressure, reading.temperature)
        previous, device.last_values = device.last_values, values
        device.identical = device.identical + 1 if values == previous else 0
        high_p = _outside(reading.pressure, PRESSURE_RANGE_HPA)
        high_t = _outside(reading.temperature, TEMPERATURE_RANGE_C)
        if high_p or high_t:
            device.flagged_before = True
            kind = "both" if high_p and high_t else ("high_pressure" if high_p else "high_temperature")
            if (high_p and reading.pressure is not None and reading.pressure <= PRESSURE_RANGE_HPA[0]) or (
                    high_t and reading.temperature is not None and reading.temperature <= TEMPERATURE_RANGE_C[0]):
                kind = kind.replace("high_", "low_")
            return kind, 1.0
        channels = device.channels
        if device.identical and all(channel.ready() for channel in channels.values()):
            never_repeats = all(channel.repeats == 0 for channel in channels.values())
            if device.identical >= (1 if never_repeats else 2):
                device.flagged_before = True
                return "stuck", float(device.identical)
        worst = 0.0
        for channel, value in zip(channels.values(), values, strict=True):
            if value is not None:
                deviation = channel.deviation(value, index) if channel.ready() else 0.0
                worst = max(worst, deviation)
                channel.learn(value, index, deviation)
        if worst > 1.0:
            kind = "drift" if device.flagged_before else "spike"
            device.flagged_before = True
            return kind, worst
        device.flagged_before = False
        return None, 0.0


def _outside(value: float | None, limits: tuple[float, float]) -> bool:
    return value is not None and (value >= limits[1] or value <= limits[0])


def detect_messages(messages: Iterable[Message], detector: Detector | None = None) -> Iterator[tuple[Message, Alert]]:
    """Run the detector over messages in order: ``(message, alert)`` for every alert.

    Messages that are not readings (other JSON, binary) are skipped; the caller counts
    them from ``detector.readings``.
    """
    detector = detector or Detector()
    parser = ReadingParser()
    for message in messages:
        reading = parser.parse(message)
        if reading is None:
            continue
        for alert in detector.feed(reading, time_ns=message.time_ns):
            yield message, alert
