"""Which messages of a recording a command takes: topic filters, device ids, a time window.

One copy of the rule. The recording readers take a :class:`Selection` and leave out what
it excludes, skipping what their index proves excluded without decoding it (Parquet row
groups by their statistics, dataset files by their time span and partition); ``replay``,
``export`` and ``plot`` pass theirs down. The window is ``--start``/``--end`` as
:class:`TimeBound` values, resolved against the recording's start. A selection is a
filter: a message is in it or not by its own time and topic, wherever it is in the file
(recordings are in receive order, which a clock step can put out of time order).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from typing import NamedTuple

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import DEVICE_ROOTS, UNKNOWN_DEVICE, parse_topic, topic_matches, validate_topic_filter

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class TimeBound(NamedTuple):
    """``--start``/``--end``: an offset from the recording's first message, or a UTC time."""

    text: str
    offset_ns: int | None = None
    at_ns: int | None = None

    def resolve(self, origin_ns: int) -> int:
        """The bound in ns since the epoch, given the first message's time ``origin_ns``."""
        return origin_ns + self.offset_ns if self.offset_ns is not None else int(self.at_ns or 0)


def parse_time_bound(text: str, *, name: str) -> TimeBound:
    """``30`` or ``1.5`` (seconds after the first message) or an ISO 8601 time (UTC when
    no offset is given). Raises :class:`ConfigError`."""
    word = text.strip()
    try:
        seconds = float(word)
    except ValueError:
        seconds = None
    if seconds is not None:
        if not math.isfinite(seconds) or seconds < 0:
            raise ConfigError(f"invalid {name} {text!r}: an offset must be a non-negative number of seconds")
        return TimeBound(text, offset_ns=round(seconds * 1e9))
    try:
        moment = dt.datetime.fromisoformat(word)
    except ValueError:
        raise ConfigError(
            f"invalid {name} {text!r}: give seconds from the first message (30, 1.5) "
            "or an ISO 8601 time (2026-11-22T08:24:56+00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return TimeBound(text, at_ns=(moment - _EPOCH) // dt.timedelta(microseconds=1) * 1000)


FAR_PAST_NS = -(1 << 62)
FAR_FUTURE_NS = 1 << 62


def check_window(start: TimeBound | None, end: TimeBound | None) -> None:
    """Raise :class:`ConfigError` when ``end`` is before ``start`` (both offsets or both times)."""
    if start is not None and end is not None:
        same_kind = (start.offset_ns is None) == (end.offset_ns is None)
        if same_kind and end.resolve(0) < start.resolve(0):
            raise ConfigError(f"--end {end.text!r} is before --start {start.text!r}")


class Selection:
    """Topic filters (MQTT wildcards), device-id globs and a time window: a filter.

    A message is selected when its time is in ``[start, end]`` (both inclusive) and its
    topic passes :meth:`wanted`; file order plays no part, so a reader may leave out
    whatever its index (row-group statistics, file spans, partitions) proves excluded
    (:meth:`excludes_times`, :meth:`may_want_topics`). The window is resolved by
    :meth:`bind` against the recording's start (the earliest message, as ``info`` shows
    it); readers bind it from their metadata, and ``where`` binds it to the first message
    it sees when nobody did. ``excluded`` counts the messages readers left out.
    ``keep_retained``: retained messages from before the window are kept too
    (``replay --restore-retained`` needs them). Raises :class:`ConfigError` for an
    invalid filter, or an ``--end`` before ``--start``.
    """

    def __init__(self, topic_filters: tuple[str, ...] = (), devices: tuple[str, ...] = (),
                 start: TimeBound | None = None, end: TimeBound | None = None, *,
                 keep_retained: bool = False) -> None:
        for topic_filter in topic_filters:
            validate_topic_filter(topic_filter)
        check_window(start, end)
        self.topic_filters = topic_filters
        self.devices = devices
        self.start = start
        self.end = end
        self.keep_retained = keep_retained
        self.start_ns: int | None = None
        self.end_ns: int | None = None
        self.excluded = 0
        self._prefixes = _topic_prefixes(topic_filters, devices)

    @property
    def filters_topics(self) -> bool:
        return bool(self.topic_filters or self.devices)

    @property
    def windowed(self) -> bool:
        return self.start is not None or self.end is not None

    @property
    def active(self) -> bool:
        """Whether anything is left out at all."""
        return self.filters_topics or self.windowed

    def describe(self) -> str:
        """The options as given: ``--topic 'nomatch/#' --start 5`` (for messages)."""
        words = [f"--topic {f!r}" for f in self.topic_filters] + [f"--device {d!r}" for d in self.devices]
        words += [f"--start {self.start.text}"] if self.start is not None else []
        words += [f"--end {self.end.text}"] if self.end is not None else []
        return " ".join(words)

    def wanted(self, topic: str) -> bool:
        """Whether a message on ``topic`` passes the topic filters and device globs."""
        if self.topic_filters and not any(topic_matches(f, topic) for f in self.topic_filters):
            return False
        if self.devices:
            device_id = parse_topic(topic).device_id
            return any(fnmatch.fnmatchcase(device_id, pattern) for pattern in self.devices)
        return True

    def bind(self, origin_ns: int | None) -> None:
        """Resolve the window against the recording's start ``origin_ns`` (once; None: not
        known yet, left to the first message)."""
        if origin_ns is not None:
            self.resolve(origin_ns)

    @property
    def bound(self) -> bool:
        return self.start_ns is not None

    def resolve(self, origin_ns: int) -> tuple[int, int]:
        """Resolve the window against ``origin_ns`` (once); returns (start, end) ns."""
        if self.start_ns is None or self.end_ns is None:
            start_ns = self.start.resolve(origin_ns) if self.start is not None else FAR_PAST_NS
            end_ns = self.end.resolve(origin_ns) if self.end is not None else FAR_FUTURE_NS
            if end_ns < start_ns:
                raise ConfigError(f"--end {self.end.text if self.end else ''!r} is before --start "
                                  f"{self.start.text if self.start else ''!r}")
            self.start_ns, self.end_ns = start_ns, end_ns
        return self.start_ns, self.end_ns

    def where(self, time_ns: int) -> int:
        """-1 before the window, 0 inside, 1 after (binding the window to ``time_ns`` when unbound)."""
        start, end = self.resolve(time_ns)
        return -1 if time_ns < start else (1 if time_ns > end else 0)

    def selects(self, topic: str, time_ns: int, retain: bool = False) -> bool:
        """Whether one message is selected (``retain``: for ``keep_retained``)."""
        where = self.where(time_ns) if self.windowed else 0
        if where > 0 or (where < 0 and not (self.keep_retained and retain)):
            return False
        return self.wanted(topic) if self.filters_topics else True

    # -- what an index can prove ------------------------------------------------------

    def excludes_times(self, low: int, high: int, *, retained: bool = True) -> bool:
        """Whether no message with a time in ``[low, high]`` can be selected (the window must
        be bound). ``retained``: some of them may be retained (for ``keep_retained``)."""
        if not self.windowed:
            return False
        start, end = self.resolve(low)
        if low > end:
            return True
        return high < start and not (self.keep_retained and retained)

    def within_times(self, low: int, high: int) -> bool:
        """Whether every time in ``[low, high]`` is in the window (the window must be bound)."""
        if not self.windowed:
            return True
        start, end = self.resolve(low)
        return start <= low and high <= end

    def cut(self, low: int | None, high: int | None) -> tuple[int | None, int | None]:
        """A recording's span ``[low, high]`` cut by the window (the window bound first)."""
        if low is None or high is None or not self.windowed:
            return low, high
        self.bind(low)
        start, end = self.resolve(low)
        return max(low, start), min(high, end)

    def may_want_topics(self, low: str, high: str) -> bool:
        """Whether a topic from ``low`` to ``high`` (in code-point order, as Parquet orders
        UTF-8) may pass the filters: False only when none can. A filter can only match
        topics starting with its text before the first wildcard; a device glob can only
        match ``device/<glob text before its first wildcard>...`` (or ``devices/``), or any
        topic when the glob matches the id ``unknown``."""
        for group in self._prefixes:
            if not any(_range_has_prefix(low, high, prefix) for prefix in group):
                return False
        return True


def _range_has_prefix(low: str, high: str, prefix: str) -> bool:
    """Whether some string ``s`` with ``low <= s <= high`` starts with ``prefix``."""
    return low.startswith(prefix) or low <= prefix <= high


def _topic_prefixes(topic_filters: tuple[str, ...], devices: tuple[str, ...]) -> list[tuple[str, ...]]:
    """Groups of topic prefixes: a wanted topic starts with one prefix of every group."""
    groups: list[tuple[str, ...]] = []
    if topic_filters:
        prefixes = []
        for topic_filter in topic_filters:
            cut = min((i for i in (topic_filter.find("+"), topic_filter.find("#")) if i >= 0),
                      default=len(topic_filter))
            prefix = topic_filter[:cut]
            if topic_filter[cut:cut + 1] == "#":  # 'a/#' matches 'a' too
                prefix = prefix.removesuffix("/")
            prefixes.append(prefix)
        groups.append(tuple(prefixes))
    if devices and not any(fnmatch.fnmatchcase(UNKNOWN_DEVICE, pattern) for pattern in devices):
        prefixes = []
        for pattern in devices:
            cut = min((i for i in (pattern.find(c) for c in "*?[") if i >= 0), default=len(pattern))
            prefixes += [f"{root}/{pattern[:cut]}" for root in DEVICE_ROOTS]
        groups.append(tuple(prefixes))
    return [group for group in groups if "" not in group]
