"""Which messages of a recording a command takes: topic filters, device ids, a time window.

One copy of the rule, used by ``replay`` (message by message) and ``export`` (a mask per
Arrow batch, computed from the same predicates: once per distinct topic, and the same
window bounds). The window is ``--start``/``--end`` as :class:`TimeBound`
values, resolved against the first message of the recording; reading stops at the first
message after ``--end`` (recordings are in receive order).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import math
from typing import NamedTuple

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import parse_topic, topic_matches, validate_topic_filter

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
    """Topic filters (MQTT wildcards), device-id globs and a time window.

    ``wanted(topic)`` and ``where(time_ns)`` are the per-message tests; the window is
    resolved on the first call to ``where`` (the first message read). Raises
    :class:`ConfigError` for an invalid filter, or an ``--end`` before ``--start``.
    """

    def __init__(self, topic_filters: tuple[str, ...] = (), devices: tuple[str, ...] = (),
                 start: TimeBound | None = None, end: TimeBound | None = None) -> None:
        for topic_filter in topic_filters:
            validate_topic_filter(topic_filter)
        check_window(start, end)
        self.topic_filters = topic_filters
        self.devices = devices
        self.start = start
        self.end = end
        self.start_ns: int | None = None
        self.end_ns: int | None = None

    @property
    def filters_topics(self) -> bool:
        return bool(self.topic_filters or self.devices)

    @property
    def windowed(self) -> bool:
        return self.start is not None or self.end is not None

    def wanted(self, topic: str) -> bool:
        """Whether a message on ``topic`` passes the topic filters and device globs."""
        if self.topic_filters and not any(topic_matches(f, topic) for f in self.topic_filters):
            return False
        if self.devices:
            device_id = parse_topic(topic).device_id
            return any(fnmatch.fnmatchcase(device_id, pattern) for pattern in self.devices)
        return True

    def resolve(self, origin_ns: int) -> tuple[int, int]:
        """Resolve the window against the first message's time (once); returns (start, end) ns."""
        if self.start_ns is None or self.end_ns is None:
            self.start_ns = self.start.resolve(origin_ns) if self.start is not None else FAR_PAST_NS
            self.end_ns = self.end.resolve(origin_ns) if self.end is not None else FAR_FUTURE_NS
            if self.end_ns < self.start_ns:
                raise ConfigError(f"--end {self.end.text if self.end else ''!r} is before --start "
                                  f"{self.start.text if self.start else ''!r}")
        return self.start_ns, self.end_ns

    def where(self, time_ns: int) -> int:
        """-1 before the window, 0 inside, 1 after (resolving the bounds on the first call)."""
        start, end = self.resolve(time_ns)
        return -1 if time_ns < start else (1 if time_ns > end else 0)
