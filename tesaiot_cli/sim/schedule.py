"""The drift-free publishing schedule of ``tesaiot simulate`` and the loop that follows it.

Packet k of device d is due at ``start + k * interval + d * interval / devices``: one
slot every ``interval / devices`` seconds, each due time computed from the start, never
from summed sleeps, so a late packet does not delay the ones after it. Clock, sleep,
wall clock and publishing are injected, so the loop runs under a fake clock in tests.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message
from tesaiot_cli.sim.dps368 import DPS368Device, Packet

# Longest single sleep, so a stop request is seen even with a sleep that cannot be woken.
MAX_NAP_S = 0.25

Clock = Callable[[], float]
Sleep = Callable[[float], object]
StopCheck = Callable[[], bool]
Publish = Callable[[Message], bool]
PacketCallback = Callable[[Packet, "Message | None", bool], None]


class StopRun(Exception):
    """Raised by a ``publish`` callback to end the run at once (Ctrl+C while it waited)."""


class Scheduler:
    """Slot ``i`` is due at ``start + i * slot_s`` (seconds on the monotonic ``clock``)."""

    def __init__(self, *, interval_s: float, devices: int = 1, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep) -> None:
        if not math.isfinite(interval_s) or interval_s < 0:
            raise ConfigError(f"invalid interval {interval_s}: use 0 (as fast as possible) or a positive number")
        self.interval_s = interval_s
        self.devices = devices
        self.slot_s = interval_s / devices
        self.clock = clock
        self.sleep = sleep
        self.start_s = 0.0

    def start(self) -> float:
        """Set slot 0 to now; returns the start time."""
        self.start_s = self.clock()
        return self.start_s

    def due(self, slot: int) -> float:
        return self.start_s + slot * self.slot_s

    def wait_for(self, slot: int, stop: StopCheck) -> float | None:
        """Sleep until ``slot`` is due; return how late we are (s, >= 0), or None when stopped."""
        due = self.start_s + slot * self.slot_s
        now = self.clock()
        while now < due:
            if stop():
                return None
            self.sleep(min(due - now, MAX_NAP_S))
            now = self.clock()
        return now - due


@dataclass
class RunStats:
    """What the loop did. ``packets`` counts every packet made (dropouts too); ``sent``
    those handed to MQTT; ``not_sent`` those refused for lack of room in the queue.
    ``onsets`` counts anomalies by kind (one per onset); ``labelled`` counts packets by label.
    Times are on the monotonic clock, lateness in seconds."""

    packets: int = 0
    sent: int = 0
    not_sent: int = 0
    onsets: collections.Counter[str] = field(default_factory=collections.Counter)
    labelled: collections.Counter[str] = field(default_factory=collections.Counter)
    start_s: float = 0.0
    last_due_s: float = 0.0
    last_lateness_s: float = 0.0
    max_lateness_s: float = 0.0
    stopped_by: str = "count"


def run(
    devices: Sequence[DPS368Device],
    topics: Sequence[str],
    scheduler: Scheduler,
    publish: Publish,
    *,
    qos: int = 1,
    count: int | None = None,
    duration_s: float | None = None,
    stop: StopCheck = lambda: False,
    on_packet: PacketCallback | None = None,
    wall_ns: Callable[[], int] = time.time_ns,
) -> RunStats:
    """Publish the devices' packets on the schedule until ``count`` packets per device,
    ``duration_s`` seconds, or ``stop()``. ``publish`` returns False when the packet
    could not be queued, and may raise :class:`StopRun`. ``on_packet(packet, message, sent)`` sees every packet (for a
    dropout ``message`` is None and ``sent`` False)."""
    stats = RunStats()
    fleet = len(devices)
    total = None if count is None else count * fleet
    stats.start_s = start = scheduler.start()
    end = None if duration_s is None else start + duration_s
    flat_out = scheduler.slot_s == 0
    clock = scheduler.clock
    labelled, onsets = stats.labelled, stats.onsets
    packets = sent_count = not_sent = 0
    message: Message | None
    while True:  # the hot loop of a flat-out run: kept lean
        if total is not None and packets >= total:
            break
        if stop():
            stats.stopped_by = "signal"
            break
        if flat_out:
            if end is not None and clock() >= end:
                stats.stopped_by = "duration"
                break
        else:
            if end is not None and scheduler.due(packets) >= end:
                stats.stopped_by = "duration"
                break
            lateness = scheduler.wait_for(packets, stop)
            if lateness is None:
                stats.stopped_by = "signal"
                break
            stats.last_lateness_s = lateness
            if lateness > stats.max_lateness_s:
                stats.max_lateness_s = lateness
        index = packets % fleet
        packet = devices[index].read(wall_ns())
        if packet.payload is None:
            message, sent = None, False
        else:
            message = Message(topics[index], packet.payload, qos, False, packet.time_ns)
            try:
                sent = publish(message)
            except StopRun:
                stats.stopped_by = "signal"
                break
            if sent:
                sent_count += 1
            else:
                not_sent += 1
        packets += 1
        labelled[packet.label] += 1
        if packet.onset:
            onsets[packet.label] += 1
        if on_packet is not None:
            on_packet(packet, message, sent)
    stats.packets, stats.sent, stats.not_sent = packets, sent_count, not_sent
    stats.last_due_s = scheduler.due(max(packets - 1, 0))
    return stats
