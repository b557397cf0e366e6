"""The drift-free publishing schedule of ``tesaiot simulate`` and the loop that follows it.

Packet k of device d is due at ``start + k * interval + d * interval / devices``: one
slot every ``interval / devices`` seconds, each due time computed from the start, never
from summed sleeps, so a late packet does not delay the ones after it. All devices share
one interval, so the slots themselves are the sorted due-time queue: no heap, no timer
per device. A fleet faster than one slot per ``batch_s`` wakes once per ``batch_s`` and
publishes every packet then due in one go (the session writes them in one ``send``):
one wake-up per batch instead of one per packet. Clock, sleep, wall clock and
publishing are injected, so the loop runs under a fake clock in tests.
"""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.pacing import Clock, LatenessHistogram, Sleep, StopCheck, wait_until
from tesaiot_cli.sim.dps368 import DPS368Device, Packet

# Longest single sleep, so a stop request is seen even with a sleep that cannot be woken.
MAX_NAP_S = 0.25
# A fleet with slots closer than this wakes once per BATCH_S and publishes what is due:
# packets are then up to BATCH_S late (measured, docs/benchmarks.md), and a 50,000-device
# fleet at 1 Hz wakes 200 times a second instead of 50,000.
BATCH_S = 0.005
# Flat out, the idle callback (status line) runs every this many packets.
FLAT_OUT_IDLE_EVERY = 1024
LATE_IDLE_EVERY = 64  # behind schedule: on_idle every this many packets (no wait comes to call it)

Publish = Callable[[Message], bool]
PacketCallback = Callable[[Packet, "Message | None", bool], None]


class StopRun(Exception):
    """Raised by a ``publish`` callback to end the run at once (Ctrl+C while it waited)."""


class Scheduler:
    """Slot ``i`` is due at ``start + i * slot_s`` (seconds on the monotonic ``clock``).

    ``batch_s``: when slots are closer than this, the loop wakes at most once per
    ``batch_s`` and publishes every slot then due (0: wake for every slot).
    """

    def __init__(self, *, interval_s: float, devices: int = 1, clock: Clock = time.monotonic,
                 sleep: Sleep = time.sleep, batch_s: float = BATCH_S) -> None:
        if not math.isfinite(interval_s) or interval_s < 0:
            raise ConfigError(f"invalid interval {interval_s}: use 0 (as fast as possible) or a positive number")
        self.interval_s = interval_s
        self.devices = devices
        self.slot_s = interval_s / devices
        self.clock = clock
        self.sleep = sleep
        self.batch_s = batch_s if 0 < self.slot_s < batch_s else 0.0
        self.start_s = 0.0

    @property
    def batched(self) -> bool:
        """Whether packets are published in batches (slots closer than ``batch_s``)."""
        return self.batch_s > 0

    def start(self) -> float:
        """Set slot 0 to now; returns the start time."""
        self.start_s = self.clock()
        return self.start_s

    def due(self, slot: int) -> float:
        return self.start_s + slot * self.slot_s

    def wait_for(self, slot: int, stop: StopCheck) -> float | None:
        """Sleep until ``slot`` is due; return how late we are (s, >= 0), or None when stopped."""
        due = self.start_s + slot * self.slot_s
        if not wait_until(due, clock=self.clock, sleep=self.sleep, should_stop=stop, max_sleep_s=MAX_NAP_S):
            return None
        return self.clock() - due


@dataclass
class RunStats:
    """What the loop did. ``packets`` counts every packet made (dropouts too); ``sent``
    those handed to MQTT; ``not_sent`` those refused for lack of room in the queue.
    ``onsets`` counts anomalies by kind (one per onset); ``labelled`` counts packets by label.
    Times are on the monotonic clock, lateness (each packet's publish time minus its due
    time) in seconds; ``lateness`` holds its distribution."""

    packets: int = 0
    sent: int = 0
    not_sent: int = 0
    onsets: collections.Counter[str] = field(default_factory=collections.Counter)
    labelled: collections.Counter[str] = field(default_factory=collections.Counter)
    start_s: float = 0.0
    last_due_s: float = 0.0
    last_lateness_s: float = 0.0
    max_lateness_s: float = 0.0
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)
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
    on_idle: Callable[[RunStats], object] | None = None,
) -> RunStats:
    """Publish the devices' packets on the schedule until ``count`` packets per device,
    ``duration_s`` seconds, or ``stop()``. ``publish`` returns False when the packet
    could not be queued, and may raise :class:`StopRun`. ``on_packet(packet, message, sent)``
    sees every packet (for a dropout ``message`` is None and ``sent`` False). ``on_idle(stats)``
    runs before each wait (and every ``FLAT_OUT_IDLE_EVERY`` packets flat out), with the
    counters up to date: the place for a status line."""
    stats = RunStats()
    fleet = len(devices)
    total = None if count is None else count * fleet
    stats.start_s = start = scheduler.start()
    end = None if duration_s is None else start + duration_s
    slot_s, batch_s = scheduler.slot_s, scheduler.batch_s
    flat_out = slot_s == 0
    clock, sleep = scheduler.clock, scheduler.sleep
    labelled, onsets = stats.labelled, stats.onsets
    record_lateness = stats.lateness.record
    packets = sent_count = not_sent = 0
    last_lateness = max_lateness = 0.0
    woke = -math.inf
    message: Message | None

    def sync() -> None:
        stats.packets, stats.sent, stats.not_sent = packets, sent_count, not_sent
        stats.last_lateness_s, stats.max_lateness_s = last_lateness, max_lateness

    while True:  # the hot loop: kept lean
        if total is not None and packets >= total:
            break
        if stop():
            stats.stopped_by = "signal"
            break
        if flat_out:
            if end is not None and clock() >= end:
                stats.stopped_by = "duration"
                break
            if on_idle is not None and not packets % FLAT_OUT_IDLE_EVERY:
                sync()
                on_idle(stats)
        else:
            due = start + packets * slot_s
            if end is not None and due >= end:
                stats.stopped_by = "duration"
                break
            now = clock()
            if now < due:
                if on_idle is not None:
                    sync()
                    on_idle(stats)
                # Batched: wake no sooner than batch_s after the last wake-up.
                wake = due if woke + batch_s <= due else woke + batch_s
                if not wait_until(wake, clock=clock, sleep=sleep, should_stop=stop, max_sleep_s=MAX_NAP_S):
                    stats.stopped_by = "signal"
                    break
                now = woke = clock()
            elif on_idle is not None and not packets % LATE_IDLE_EVERY:
                # Running late (a slow link or broker): no wait comes, so the caller's status
                # line would freeze exactly when it matters.
                sync()
                on_idle(stats)
            last_lateness = now - due
            record_lateness(last_lateness)
            if last_lateness > max_lateness:
                max_lateness = last_lateness
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
    sync()
    stats.last_due_s = scheduler.due(max(packets - 1, 0))
    return stats
