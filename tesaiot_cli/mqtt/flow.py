"""Flow control and accounting: the in-flight window, the broker's Receive Maximum, the
held batches of the fast publish path, and the counters every command reports.

Pure bookkeeping: no socket, no paho call. Whether paho is done with a message is asked
through a function the caller passes (see :func:`paho_compat.published`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_WINDOW = 1000
# MQTT 3.1.1 has no Receive Maximum. A broker keeps state for each incoming QoS 2 message
# until its PUBREL, and past its quota refuses the rest without saying so (mosquitto answers
# PUBREC 0x97 at MQTT 5, and a plain PUBREC at 3.1.1, dropping the message). 20 is
# mosquitto's default max_inflight_messages, the smallest common default among brokers.
# Incoming QoS 1 is acknowledged at once and is not limited there (tested: 1,000 in flight
# into a default mosquitto deliver every message), so at 3.1.1 only the window bounds it.
DEFAULT_MAX_INFLIGHT_311 = 20
RECEIVE_MAXIMUM_DEFAULT = 65535  # MQTT 5: no Receive Maximum in CONNACK means 65,535


@dataclass
class SessionStats:
    """Counters, updated by the network thread and read by the caller.

    ``published``: publish attempts; ``completed``: acknowledged by the broker
    (QoS 1/2) or written to the socket (QoS 0); ``failed``: refused by the broker
    (reason code >= 0x80 in PUBACK, PUBREC or PUBCOMP); ``dropped``: never delivered (lost
    while disconnected, or no room in the window in time). ``received``: PUBLISH packets
    received; ``not_kept``: of those, the ones the message callback did not keep (left
    unacknowledged at QoS 1, for the broker to deliver again); ``discarded``: QoS 2 ones
    it did not keep (QoS 2 hands a message over before the callback sees it).
    ``protocol_errors``: packets from the broker that broke the protocol (each closed the
    connection; the message in it, if any, was not delivered to the callback).
    """

    received: int = 0
    published: int = 0
    completed: int = 0
    failed: int = 0
    dropped: int = 0
    disconnects: int = 0
    reconnects: int = 0
    not_kept: int = 0
    discarded: int = 0
    sessions_lost: int = 0
    protocol_errors: int = 0
    failed_reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def unacknowledged(self) -> int:
        return self.published - self.completed - self.failed - self.dropped


def inflight_limits(*, mqtt_version: int, receive_maximum: int | None,
                    max_inflight: int | None) -> tuple[int, int]:
    """``(QoS 1 and 2 together, QoS 2 alone)``: how many may be unacknowledged at once.

    MQTT 5: the broker's Receive Maximum (65,535 when it sends none) for both. MQTT 3.1.1:
    no bound of its own for QoS 1 (the window bounds it), ``DEFAULT_MAX_INFLIGHT_311`` for
    QoS 2. ``max_inflight`` lowers both (at 3.1.1 it sets them).
    """
    if mqtt_version == 5:
        both = qos2 = receive_maximum if receive_maximum is not None else RECEIVE_MAXIMUM_DEFAULT
        if max_inflight is not None:
            both = qos2 = min(both, max_inflight)
    elif max_inflight is not None:
        both = qos2 = max_inflight
    else:
        both, qos2 = RECEIVE_MAXIMUM_DEFAULT, DEFAULT_MAX_INFLIGHT_311
    return max(1, both), max(1, qos2)


class InFlight:
    """Messages handed to paho and not yet done, oldest first.

    ``window`` bounds all of them (QoS 0 ones are done when written); ``limit`` the QoS 1/2
    ones (done when acknowledged), ``limit_qos2`` the QoS 2 ones. Completion is taken in
    order from the oldest, so the counts are never below the broker's: a limit the broker
    gave is never exceeded.
    """

    def __init__(self, window: int, limit: int, limit_qos2: int | None = None) -> None:
        self.window = window
        self.limit = limit
        self.limit_qos2 = limit if limit_qos2 is None else limit_qos2
        self._entries: collections.deque[tuple[Any, int]] = collections.deque()
        self._acked_qos = 0  # entries with QoS 1 or 2
        self._qos2 = 0  # entries with QoS 2

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def unacknowledged(self) -> int:
        """QoS 1/2 messages in flight."""
        return self._acked_qos

    def has_room(self, qos: int) -> bool:
        """Whether one more message may be handed to paho now."""
        if len(self._entries) >= self.window:
            return False
        if qos == 2 and self._qos2 >= self.limit_qos2:
            return False
        return qos == 0 or self._acked_qos < self.limit

    def add(self, info: Any, qos: int) -> None:
        self._entries.append((info, qos))
        if qos:
            self._acked_qos += 1
            if qos == 2:
                self._qos2 += 1

    def reap(self, done: Callable[[Any, int], bool]) -> list[tuple[Any, int]]:
        """Remove and return the oldest entries ``done(info, qos)`` says are finished."""
        finished = []
        entries = self._entries
        while entries and done(*entries[0]):
            info, qos = entries.popleft()
            if qos:
                self._acked_qos -= 1
                if qos == 2:
                    self._qos2 -= 1
            finished.append((info, qos))
        return finished

    def clear(self) -> int:
        """Forget every entry; returns how many there were."""
        count = len(self._entries)
        self._entries.clear()
        self._acked_qos = self._qos2 = 0
        return count


class HeldBatches:
    """Batches of QoS 0 PUBLISH packets handed to paho as one packet each, with how many
    messages each holds (completed when paho has written the batch)."""

    def __init__(self) -> None:
        self._batches: collections.deque[tuple[Any, int]] = collections.deque()

    def add(self, info: Any, count: int) -> None:
        self._batches.append((info, count))

    def reap(self, done: Callable[[Any], bool]) -> list[tuple[Any, int]]:
        finished = []
        while self._batches and done(self._batches[0][0]):
            finished.append(self._batches.popleft())
        return finished

    @property
    def messages(self) -> int:
        return sum(count for _, count in self._batches)

    def clear(self) -> int:
        count = self.messages
        self._batches.clear()
        return count
