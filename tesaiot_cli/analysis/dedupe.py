"""Duplicate deliveries: finding (``info --duplicates``) and removing (``convert --dedupe``) them.

MQTT QoS 1 is "at least once": after a reconnect the broker re-sends what it had sent
but not seen acknowledged, and a publisher re-sends what it had not seen acknowledged, so
a recording can hold a message twice. The recorder keeps what the broker delivered: it
cannot tell a re-delivery from a device that really sent the same bytes again (MQTT 3.1.1
does not tell the subscriber, and a publisher's re-send reaches it as a new message).

A message counts as a duplicate when its topic and payload are byte for byte those of an
earlier message received at most ``window_s`` seconds before it. DPS368 payloads carry
a timestamp with microseconds, so for them that is exact; payloads that legitimately
repeat (``"on"``, a counter-free reading) are reported too, which is why removing them
is something the user asks for. No pyarrow here.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable, Iterator
from typing import Any

from tesaiot_cli.errors import ConfigError

DEFAULT_WINDOW_S = 60.0


def check_window(window_s: float) -> float:
    """A valid window in seconds, or :class:`ConfigError`."""
    if not math.isfinite(window_s) or window_s <= 0:
        raise ConfigError(f"invalid duplicate window {window_s:g}: give a positive number of seconds")
    return window_s


class DuplicateFinder:
    """Remembers (topic, payload) of the messages of the last ``window_s`` seconds.

    Memory grows with the messages received within one window (at 1,000 msg/s and the
    default 60 s: 60,000 entries, a few MiB for DPS368 payloads).
    """

    def __init__(self, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.window_s = check_window(window_s)
        self._window_ns = int(window_s * 1e9)
        self._last: dict[tuple[str, bytes], int] = {}
        self._order: collections.deque[tuple[int, tuple[str, bytes]]] = collections.deque()
        self.duplicates = 0
        self.by_topic: collections.Counter[str] = collections.Counter()

    def repeated(self, topic: str, payload: bytes, time_ns: int) -> bool:
        """Whether this message repeats one seen within the window; it is remembered either way."""
        horizon = time_ns - self._window_ns
        order, last = self._order, self._last
        while order and order[0][0] < horizon:
            seen_at, old = order.popleft()
            if last.get(old) == seen_at:
                del last[old]
        key = (topic, payload)
        previous = last.get(key)
        last[key] = time_ns
        order.append((time_ns, key))
        if previous is not None and abs(time_ns - previous) <= self._window_ns:
            self.duplicates += 1
            self.by_topic[topic] += 1
            return True
        return False

    def scan_tables(self, tables: Iterable[Any]) -> Iterator[Any]:
        """Pass recording-schema Arrow tables through, counting the duplicates in them."""
        for table in tables:
            for batch in table.to_batches():
                topics = batch.column("topic").to_pylist()
                payloads = batch.column("payload").to_pylist()
                times = batch.column("time").cast("int64").to_pylist()
                for topic, payload, time_ns in zip(topics, payloads, times, strict=True):
                    self.repeated(topic, payload, time_ns)
            yield table

    def report(self) -> dict[str, Any]:
        """The ``duplicates`` object of ``info --json``."""
        ranked = sorted(self.by_topic.items(), key=lambda item: (-item[1], item[0]))
        return {"count": self.duplicates, "window_s": self.window_s, "topics": dict(ranked)}
