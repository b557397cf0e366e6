"""The Numenta Anomaly Benchmark's score of a detector's alerts (``tesaiot score --nab``).

Our implementation of the rules NAB publishes (Lavin & Ahmad 2015, and NAB's README):

- Each series is scored by row index. Its first ``min(floor(0.15 * rows), 750)`` rows are
  the *probationary period* (a detector is learning): detections there count for nothing,
  and a window none of whose rows lies after it is not scored.
- A *window* is a range of rows around a labelled anomaly. Only the earliest detection
  inside a window counts: a true positive worth ``tp_weight * S(p) / S(-1)``, with ``p`` its
  relative position ``-(last - row + 1) / width`` (-1 at the window's first row, near 0 at
  its last) and ``S(p) = 2 / (1 + exp(5 p)) - 1`` the scaled sigmoid (``-1`` for ``p > 3``).
  The other detections in the window count for nothing. A window without a detection costs
  ``fn_weight``.
- A detection outside every window is a false positive costing ``fp_weight * S(q)``: ``q``
  is its distance in rows past the end of the preceding window divided by that window's
  ``width - 1`` (just after a window it costs little, three widths later the full
  ``fp_weight``); with no preceding window (or one of a single row) ``S = -1``.
- A detector's raw score is the sum over every series and window. Normalised as NAB does:
  ``100 * (raw - null) / (perfect - null)``, where ``null`` is the raw score of no detection
  at all (every scored window missed) and ``perfect`` is ``tp_weight`` per window.

The three application profiles weigh these (:data:`PROFILES`, NAB's ``config/profiles.json``).
Row counts (``rows``) are NAB's per-row TP/TN/FP/FN (the columns of its ``*_scores.csv``); the
window counts (``tp``, ``fn``) and ``fp`` (the false-positive detections) are what the score is
made of. Pure: series (or a truth recording's messages and alerts) in, scores out.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tesaiot_cli.analysis.telemetry import iso_to_ns, load_object, payload_timestamp
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message, parse_topic
from tesaiot_cli.recording.model import RecordingMetadata
from tesaiot_cli.recording.truth import TruthWindows, Window, stamp_text

PROBATIONARY_FRACTION = 0.15
PROBATIONARY_MAX_ROWS = 5000  # the fraction applies to at most this many rows (750 at 0.15)


@dataclass(frozen=True)
class Profile:
    """An application profile: what a true positive earns and a false positive or a missed
    window costs."""

    name: str
    tp_weight: float
    fp_weight: float
    fn_weight: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", tp_weight=1.0, fp_weight=0.11, fn_weight=1.0),
    Profile("reward_low_FP_rate", tp_weight=1.0, fp_weight=0.22, fn_weight=1.0),
    Profile("reward_low_FN_rate", tp_weight=1.0, fp_weight=0.11, fn_weight=2.0),
)


def scaled_sigmoid(position: float) -> float:
    """NAB's weight of a detection at relative ``position`` (see the module docstring)."""
    if position > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


_MAX_TP = scaled_sigmoid(-1.0)


def probationary_rows(rows: int) -> int:
    """How many first rows of a series of ``rows`` rows are not scored."""
    return min(math.floor(PROBATIONARY_FRACTION * rows), math.ceil(PROBATIONARY_FRACTION * PROBATIONARY_MAX_ROWS))


@dataclass(frozen=True)
class Series:
    """One series to score: its row count, windows as (first, last) row indices (inclusive,
    in order, not overlapping) and the rows detected as anomalous (sorted, distinct)."""

    name: str
    rows: int
    windows: tuple[tuple[int, int], ...]
    detections: tuple[int, ...]


@dataclass
class RowCounts:
    """NAB's per-row counts over the scored rows (after the probationary period)."""

    tp: int = 0
    tn: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: RowCounts) -> None:
        self.tp += other.tp
        self.tn += other.tn
        self.fp += other.fp
        self.fn += other.fn

    def as_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "tn": self.tn, "fp": self.fp, "fn": self.fn}


@dataclass
class SeriesScore:
    """One series under one profile: its raw score, the windows detected (``tp``) and
    missed (``fn``), the false-positive detections (``fp``), the windows scored and NAB's
    row counts."""

    raw: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    windows: int = 0  # windows scored (not wholly in the probationary period)
    rows: RowCounts = field(default_factory=RowCounts)


def score_series(series: Series, profile: Profile) -> SeriesScore:
    """The NAB score of one series under ``profile``."""
    start = probationary_rows(series.rows)
    detections = series.detections
    result = SeriesScore()
    scored_rows = max(0, series.rows - start)
    window_rows = 0
    for first, last in series.windows:
        if last < start:
            continue  # wholly in the probationary period: not scored
        result.windows += 1
        width = last - first + 1
        window_rows += last - max(first, start) + 1
        low = bisect.bisect_left(detections, max(first, start))
        high = bisect.bisect_right(detections, last)
        result.rows.tp += high - low
        if low < high:
            result.tp += 1
            result.raw += profile.tp_weight * scaled_sigmoid(-(last - detections[low] + 1) / width) / _MAX_TP
        else:
            result.fn += 1
            result.raw -= profile.fn_weight
    ends = [last for _first, last in series.windows]
    for row in detections[bisect.bisect_left(detections, start):]:
        index = bisect.bisect_left(ends, row)  # the first window not ended before this row
        if index < len(ends) and series.windows[index][0] <= row:
            continue  # inside a window: counted above
        result.fp += 1
        if index == 0:
            weight = -1.0
        else:
            first, last = series.windows[index - 1]
            span = last - first  # the preceding window's width - 1
            weight = scaled_sigmoid((row - last) / span) if span > 0 else -1.0
        result.raw += profile.fp_weight * weight
    result.rows.fp = result.fp
    result.rows.fn = window_rows - result.rows.tp
    result.rows.tn = scored_rows - window_rows - result.rows.fp
    return result


def normalised(raw: float, *, null: float, perfect: float) -> float | None:
    """NAB's 0-100 score of a raw score: 0 = the null detector's raw, 100 = the perfect one's
    (None when they are equal: nothing to find)."""
    if perfect == null:
        return None
    return 100.0 * (raw - null) / (perfect - null)


@dataclass
class ProfileScore:
    """A whole corpus under one profile: ``score`` is the normalised 0-100 (None when there is
    no window to find), ``raw`` the sum, ``null`` and ``perfect`` the normalisation's ends."""

    profile: Profile
    raw: float = 0.0
    null: float = 0.0
    perfect: float = 0.0
    tp: int = 0
    fp: int = 0
    fn: int = 0
    rows: RowCounts = field(default_factory=RowCounts)

    @property
    def score(self) -> float | None:
        return normalised(self.raw, null=self.null, perfect=self.perfect)

    def as_dict(self) -> dict[str, Any]:
        return {"score": self.score, "raw": self.raw, "tp": self.tp, "fp": self.fp, "fn": self.fn,
                "null": self.null, "perfect": self.perfect, "rows": self.rows.as_dict(),
                "weights": {"tp": self.profile.tp_weight, "fp": self.profile.fp_weight,
                            "fn": self.profile.fn_weight}}


@dataclass
class NabScore:
    """NAB's scores of a detector over a corpus, per profile, and how its alerts were placed.

    ``alerts``: alerts read; ``detections``: distinct rows they marked; ``unplaced``: alerts
    that name no reading of the truth (no device or timestamp of it: not scored, reported);
    ``invalid``: alerts that are not JSON objects.
    """

    profiles: dict[str, ProfileScore]
    windows: int
    series: int
    rows: int
    probationary_rows: int
    alerts: int = 0
    detections: int = 0
    unplaced: int = 0
    invalid: int = 0
    per_series: dict[str, dict[str, SeriesScore]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {name: score.as_dict() for name, score in self.profiles.items()}
        result.update({"windows": self.windows, "series": self.series, "rows": self.rows,
                       "probationary_rows": self.probationary_rows, "alerts": self.alerts,
                       "detections": self.detections, "unplaced_alerts": self.unplaced,
                       "invalid_alerts": self.invalid,
                       "by_series": {name: {profile: {"raw": part.raw, "tp": part.tp, "fp": part.fp, "fn": part.fn,
                                                      "rows": part.rows.as_dict()}
                                            for profile, part in parts.items()}
                                     for name, parts in self.per_series.items()}})
        return result


def score_corpus(series: Iterable[Series], profiles: Sequence[Profile] = PROFILES) -> NabScore:
    """NAB's score of every series together, per profile (see the module docstring)."""
    items = list(series)
    totals = {profile.name: ProfileScore(profile) for profile in profiles}
    per_series: dict[str, dict[str, SeriesScore]] = {}
    for one in items:
        per_series[one.name] = {}
        for profile in profiles:
            part = score_series(one, profile)
            per_series[one.name][profile.name] = part
            total = totals[profile.name]
            total.raw += part.raw
            total.null -= profile.fn_weight * part.windows
            total.perfect += profile.tp_weight * len(one.windows)
            total.tp += part.tp
            total.fp += part.fp
            total.fn += part.fn
            total.rows.add(part.rows)
    return NabScore(totals, windows=sum(len(s.windows) for s in items), series=len(items),
                    rows=sum(s.rows for s in items),
                    probationary_rows=sum(probationary_rows(s.rows) for s in items),
                    detections=sum(len(s.detections) for s in items), per_series=per_series)


# -- from recordings -----------------------------------------------------------------


def _alert_key(stamp: str) -> str:
    """An alert's timestamp in the truth's text form: NAB's text as is, any other ISO 8601
    form of the same instant (``2014-04-10T07:15:00Z``, an offset) turned into it."""
    if len(stamp) == 19 and stamp[10] == " ":
        return stamp
    time_ns = iso_to_ns(stamp)
    return stamp if time_ns is None else stamp_text(time_ns)


def score_recordings(truth: Iterable[tuple[Message, str | None]], metadata: RecordingMetadata,
                     alerts: Iterable[Message], profiles: Sequence[Profile] = PROFILES) -> NabScore:
    """NAB's score of ``alerts`` against a truth with windows (``convert --from nab``).

    An alert is a detection at the reading of its device (``device_id``, else the topic's
    second level) whose ``timestamp`` it carries; several alerts with one timestamp mark the
    readings with that timestamp in order (NAB repeats a few), more copies than readings are
    one detection. Alerts that name no reading are counted as unplaced, alerts that are not
    JSON objects as invalid.
    Raises :class:`ConfigError` when the truth has no windows, :class:`RecordingError` when a
    device of the truth has none listed or a window's ends are not readings of its device.
    """
    windows = TruthWindows.of(metadata)
    if windows is None:
        raise ConfigError("the truth has no anomaly windows: --nab scores a recording made by "
                          "'tesaiot convert --from nab'")
    pending: dict[tuple[str, str], int] = {}
    read = invalid = unplaced = 0
    for message in alerts:
        read += 1
        data = load_object(message.payload)
        if data is None:
            invalid += 1
            continue
        device = data.get("device_id")
        device_id = device if isinstance(device, str) and device else parse_topic(message.topic).device_id
        stamp = data.get("timestamp")
        if not isinstance(stamp, str):
            unplaced += 1
            continue
        key = (device_id, _alert_key(stamp))
        pending[key] = pending.get(key, 0) + 1
    states: dict[str, _SeriesState] = {}
    topics: dict[str, _SeriesState] = {}
    matched: set[tuple[str, str]] = set()
    for message, _label in truth:
        state = topics.get(message.topic)
        if state is None:
            data = load_object(message.payload) or {}
            device = data.get("device_id")
            device_id = device if isinstance(device, str) and device else parse_topic(message.topic).device_id
            if device_id not in windows.by_device:
                raise RecordingError(f"device {device_id!r} of the truth has no windows in its metadata")
            state = topics[message.topic] = states.setdefault(device_id, _SeriesState(device_id,
                                                                                       windows.by_device[device_id]))
        stamp = payload_timestamp(message.payload)
        if stamp is None:
            raise RecordingError(f"a reading of {state.device_id!r} has no timestamp: not a NAB truth")
        state.add(stamp, pending, matched)
    # Left over: alerts of no reading, and extra copies on readings already marked (not unplaced).
    unplaced += sum(count for key, count in pending.items() if key not in matched)
    series = []
    for device_id, device_windows in windows.by_device.items():
        state = states.get(device_id)
        if state is None:
            if device_windows:
                raise RecordingError(f"device {device_id!r} has windows but no readings in the truth")
            continue
        series.append(state.finish())
    result = score_corpus(series, profiles)
    result.alerts, result.invalid, result.unplaced = read, invalid, unplaced
    return result


class _SeriesState:
    """One device's readings as they stream by: row count, window rows, detections."""

    __slots__ = ("device_id", "windows", "rows", "window", "start", "ranges", "detections")

    def __init__(self, device_id: str, windows: tuple[Window, ...]) -> None:
        self.device_id = device_id
        self.windows = windows
        self.rows = 0
        self.window = 0  # the next window not yet left
        self.start = -1  # the row the current window began at (-1: outside)
        self.ranges: list[tuple[int, int]] = []
        self.detections: list[int] = []

    def add(self, stamp: str, pending: dict[tuple[str, str], int], matched: set[tuple[str, str]]) -> None:
        row = self.rows
        self.rows += 1
        # As NAB reads a window: from the first row at its start to the next row at its end.
        if self.window < len(self.windows):
            window = self.windows[self.window]
            if self.start < 0 and stamp == window.first:
                self.start = row
            if self.start >= 0 and stamp == window.last:
                self.ranges.append((self.start, row))
                self.start, self.window = -1, self.window + 1
        if pending:
            key = (self.device_id, stamp)
            count = pending.get(key)
            if count:
                if count == 1:
                    del pending[key]
                else:
                    pending[key] = count - 1
                matched.add(key)
                self.detections.append(row)

    def finish(self) -> Series:
        if self.window < len(self.windows):
            window = self.windows[self.window]
            raise RecordingError(f"the window [{window.first}, {window.last}] of {self.device_id!r}: its ends are "
                                 "not readings of the truth")
        return Series(self.device_id, self.rows, tuple(self.ranges), tuple(self.detections))
