"""The simulator run (``tesaiot simulate``): a fleet of DPS368 devices publishing on a
schedule through one shared session or one connection per device, with the ground
truth recorded (``--record``).

:func:`run_simulation` takes :class:`SimulatorOptions` and a :class:`SimulatorView` (what
the user sees: events, per-packet lines, the status line; the CLI implements it), and
returns a :class:`SimulationResult`: what was made, sent, acknowledged, refused and
dropped (and why), the schedule's lateness, how the final wait ended. Nothing here prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tesaiot_cli import __version__
from tesaiot_cli.services.drain import DRAIN_TIMEOUT_S, Drained, StopFlag, drain

if TYPE_CHECKING:
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.message import Message
    from tesaiot_cli.mqtt import Session, SessionStats
    from tesaiot_cli.mqtt.per_device import DeviceCounts, DeviceFleet
    from tesaiot_cli.recording import RecordingMetadata, RecordingWriter
    from tesaiot_cli.sim.dps368 import Packet
    from tesaiot_cli.sim.options import LinkOptions, SimOptions
    from tesaiot_cli.sim.schedule import RunStats

# Waiting for room in the queue: flat out, backpressure is the point; on a schedule, at
# most one slot (so an outage never holds the schedule up); while disconnected, not at all.
FLAT_OUT_PUBLISH_TIMEOUT_S = 10.0
SCHEDULED_PUBLISH_TIMEOUT_S = (0.005, 1.0)

# (acknowledged, queued, dropped, connected, (connected, connecting, failed) links or None)
Progress = Callable[[], "tuple[int, int, int, bool, tuple[int, int, int] | None]"]


class SimulatorView(Protocol):
    """What the user sees of a run (the CLI's console). ``per_packet``: one line per packet."""

    per_packet: bool

    def attach(self, progress: Progress) -> None:
        """The run's live counts, for the status line (called once the connection is made)."""

    def event(self, kind: str, text: str) -> None:
        """A session event (disconnected, reconnecting, warning...)."""

    def say(self, text: str) -> None:
        """A line about the run (banner, connecting, the final wait); nothing when quiet."""

    def packet(self, packet: Packet, sent: bool) -> None:
        """A packet made (``per_packet`` only)."""

    def idle(self, stats: RunStats) -> None:
        """Between batches of packets, with the run's counts."""

    def tick(self) -> None:
        """While the run waits (the schedule, the connects): draw the status line when due."""

    def clear(self) -> None:
        """Take the status line away (before other lines)."""


@dataclass(frozen=True)
class SimulatorOptions:
    """One run: the simulator's options, the broker, the per-device links (None: one
    shared connection), the ground truth file and the command line it records."""

    sim: SimOptions
    settings: ConnectionSettings
    links: LinkOptions | None = None
    record: Path | None = None
    force: bool = False  # --record replaces what is there
    max_inflight: int | None = None
    argv: tuple[str, ...] = ()
    drain_timeout_s: float = DRAIN_TIMEOUT_S  # the final wait for acknowledgements (--drain-timeout)


@dataclass
class Drops:
    """Packets dropped by cause: no room in the queue while connected (the broker or the
    link is slower than the schedule), or lost/refused while disconnected."""

    slow: int = 0
    offline: int = 0

    def count(self, lost: int, *, connected: bool) -> None:
        if connected:
            self.slow += lost
        else:
            self.offline += lost


@dataclass(frozen=True)
class SimulationResult:
    """How a run went. ``run``: the schedule's counts (packets made, sent, onsets, labels,
    lateness; ``stopped_by`` the signal's name when one stopped it); ``delivery``: the
    connection's counts after close (what was still unacknowledged is counted dropped);
    ``drained``: how the final wait ended; ``devices`` and ``connect_times`` per device
    (per-device connections only)."""

    run: RunStats
    delivery: SessionStats
    finished_s: float  # monotonic, when the final wait ended
    drained: Drained
    drops: Drops
    devices: list[DeviceCounts] | None = None
    connect_times: list[float] = field(default_factory=list)

    @property
    def elapsed_s(self) -> float:
        return self.finished_s - self.run.start_s

    @property
    def undelivered(self) -> bool:
        """Some packets were dropped or refused (exit 7)."""
        return bool(self.delivery.dropped or self.delivery.failed)


class _Publisher:
    """What the run needs from one shared session or a fleet of per-device connections."""

    def __init__(self, publish: Callable[[Message], bool], wait: Callable[[float], None], stats: SessionStats,
                 progress: Progress, drain: Callable[[], Drained]) -> None:
        self.publish = publish
        self.wait = wait
        self.stats = stats
        self.progress = progress
        self.drain = drain


def _shared_publisher(session: Session, opts: SimOptions, stop: threading.Event, view: SimulatorView,
                      drops: Drops, *, batched: bool, drain_timeout_s: float) -> _Publisher:
    from tesaiot_cli.errors import Interrupted
    from tesaiot_cli.sim.schedule import StopRun

    flat_out = opts.slot_s == 0
    room_low, room_high = SCHEDULED_PUBLISH_TIMEOUT_S
    room_timeout = min(max(opts.slot_s, room_low), room_high)
    hold = flat_out or batched
    stats = session.stats

    def publish(message: Message) -> bool:
        connected = session.connected
        if flat_out:
            timeout = FLAT_OUT_PUBLISH_TIMEOUT_S
        else:
            timeout = room_timeout if connected else 0.0
        dropped = stats.dropped
        try:
            # Flat out or batched (a big fleet), the packets due together are written in
            # one send (~64 KiB at most) at the next wait.
            return session.publish(message, timeout=timeout, hold=hold)
        except Interrupted:
            raise StopRun from None
        finally:
            lost = stats.dropped - dropped
            if lost:
                drops.count(lost, connected=connected and session.connected)

    def wait(seconds: float) -> None:
        session.wait(seconds)
        view.tick()  # the status line moves while the schedule waits, or while disconnected

    def progress() -> tuple[int, int, int, bool, None]:
        queued = session.in_flight()  # first: it also counts what was acknowledged since the last line
        return stats.completed, queued, stats.dropped, session.connected, None

    return _Publisher(publish, wait, stats, progress,
                      lambda: drain(session, stop, timeout_s=drain_timeout_s, say=view.say))


def _fleet_publisher(fleet: DeviceFleet, stop: threading.Event, view: SimulatorView, drops: Drops,
                     drain_timeout_s: float) -> _Publisher:
    stats = fleet.stats

    def publish(message: Message) -> bool:
        dropped = stats.dropped
        sent = fleet.publish(message)
        lost = stats.dropped - dropped
        if lost:  # no room in that device's queue: its connection is down or too slow
            drops.count(lost, connected=fleet.link_counts()[1:] == (0, 0))
        return sent

    def wait(seconds: float) -> None:
        fleet.wait(seconds)
        view.tick()

    return _Publisher(publish, wait, stats,
                      lambda: (stats.completed, fleet.in_flight(), stats.dropped, True, fleet.link_counts()),
                      lambda: drain(fleet, stop, timeout_s=drain_timeout_s, say=view.say))


def run_simulation(options: SimulatorOptions, view: SimulatorView, stop: StopFlag) -> SimulationResult:
    """Connect, open the ground truth (``--record``), publish on the schedule until the
    count, the duration or ``stop``, wait (bounded) for what is in flight, close.

    Raises :class:`ConfigError` (too few file descriptors for per-device connections),
    :class:`ConnectError` / :class:`AuthError` (before anything is recorded: an existing
    ``--record`` file is left alone), :class:`RecordingError`.
    """
    from tesaiot_cli.playback.pacing import freeze_startup_objects
    from tesaiot_cli.recording import open_writer, remove_outputs
    from tesaiot_cli.sim.dps368 import DPS368Device, DPS368Model, TimestampFormatter
    from tesaiot_cli.sim.naming import device_ids, fleet_topics
    from tesaiot_cli.sim.report import banner_lines
    from tesaiot_cli.sim.schedule import Scheduler, run

    opts, settings, links = options.sim, options.settings, options.links
    if links is not None:
        from tesaiot_cli.process.limits import fd_limit_for

        fd_limit_for(len(links.settings))  # before anything connects
    ids = device_ids(opts.device_id, opts.fleet_size, start=opts.first_index, stop=opts.first_index + opts.devices)
    topics = fleet_topics(opts.topic, ids)
    step_s = opts.interval_s if opts.interval_s > 0 else 1.0
    stamps = TimestampFormatter()
    boot = time.time_ns() // 1_000_000 if opts.sequence else None  # a restarted run numbers from 1 again
    fleet = [
        DPS368Device(device_id, DPS368Model(seed=opts.seed, device_index=index, anomaly_every=opts.anomaly_every,
                                            kinds=opts.kinds, profile=opts.profile, step_s=step_s),
                     device_index=index, label_field=opts.label_field, timestamps=stamps, boot=boot)
        for index, device_id in enumerate(ids, start=opts.first_index)
    ]
    drops = Drops()
    publisher: _Publisher
    devices: DeviceFleet | None = None
    with ExitStack() as resources:
        if links is None:
            from tesaiot_cli.mqtt import Session

            session = resources.enter_context(
                Session(settings, on_event=view.event, interrupt=stop.event, window=opts.queue, threaded=False,
                        max_inflight=options.max_inflight))
            # The session runs its network loop on this thread (threaded=False): waiting for
            # the next packet goes through it, reading acknowledgements and reconnecting meanwhile.
            scheduler = Scheduler(interval_s=opts.interval_s, devices=opts.devices,
                                  sleep=lambda seconds: publisher.wait(seconds))
            publisher = _shared_publisher(session, opts, stop.event, view, drops, batched=scheduler.batched,
                                          drain_timeout_s=options.drain_timeout_s)
            view.attach(publisher.progress)
        else:
            from tesaiot_cli.mqtt.per_device import DeviceFleet

            devices = resources.enter_context(DeviceFleet(
                links.settings, topics, ids, connect_rate=links.connect_rate, queue=links.queue,
                on_event=view.event, interrupt=stop.event))
            publisher = _fleet_publisher(devices, stop.event, view, drops, options.drain_timeout_s)
            view.attach(publisher.progress)
            view.say(f"connecting {len(ids)} devices at up to {links.connect_rate:g} connects/s "
                     f"({links.settings[0].client_id} .. {links.settings[-1].client_id})")
            devices.connect_all(on_progress=view.tick)
            view.clear()
            scheduler = Scheduler(interval_s=opts.interval_s, devices=opts.devices, sleep=publisher.wait)
        for line in banner_lines(opts, settings, ids, topics, per_device=links is not None):
            view.say(line)
        writer: RecordingWriter | None = None
        metadata = simulation_metadata(opts, settings, ids, topics, list(options.argv))
        metadata.extra["sequence"] = None if boot is None else {"boot": boot}
        if options.record is not None:
            if options.force:
                remove_outputs(options.record)
            # Opened after connecting: a broker that cannot be reached leaves an old file alone.
            writer = resources.enter_context(open_writer(options.record, metadata=metadata))

        on_packet: Callable[[Packet, Message | None, bool], None] | None = None
        if writer is not None or view.per_packet:
            def on_packet(packet: Packet, message: Message | None, sent: bool) -> None:
                if sent and writer is not None and message is not None:
                    writer.write(message, label=packet.label)
                if view.per_packet:
                    view.packet(packet, sent)

        freeze_startup_objects()
        stats = run(fleet, topics, scheduler, publisher.publish, qos=opts.qos, count=opts.count,
                    duration_s=opts.duration_s, stop=stop.event.is_set, on_packet=on_packet, on_idle=view.idle)
        view.clear()
        finish_metadata(metadata, stats.packets, len(ids))
        if stop.signal_name:
            stats.stopped_by = stop.signal_name
        drained = publisher.drain()
        finished_s = time.monotonic()
    # Closed: what was still unacknowledged is now counted as dropped.
    return SimulationResult(stats, publisher.stats, finished_s, drained, drops,
                            devices=devices.devices() if devices is not None else None,
                            connect_times=devices.connect_times() if devices is not None else [])


def finish_metadata(metadata: RecordingMetadata, packets: int, devices: int) -> None:
    """What is known only at the end: packets made (all devices, dropouts included); the
    planned dropouts trimmed to the packets made, or computed from them for a run whose
    length was not known in advance. The writers store ``extra`` as it is at close (a JSONL
    header that has no room for a long list keeps ``null``: ``score`` then recomputes them
    from the seed)."""
    from tesaiot_cli.recording.truth import DROPOUTS_KEY, DropoutPlan

    metadata.extra["packets"] = packets
    plan = DropoutPlan.of(metadata)
    if plan.listed is None and metadata.extra.get(DROPOUTS_KEY) is None and metadata.seed is not None:
        # A run whose length was not known at the start (--duration, Ctrl+C): now it is, so the
        # truth lists its dropouts like a --count run's (score reads them from here).
        from tesaiot_cli.sim.dps368 import fleet_dropouts

        metadata.extra[DROPOUTS_KEY] = fleet_dropouts(plan)
        return
    if plan.listed is not None:
        metadata.extra[DROPOUTS_KEY] = plan.trimmed(packets)


def simulation_metadata(opts: SimOptions, settings: ConnectionSettings, ids: Sequence[str], topics: Sequence[str],
                        argv: list[str]) -> RecordingMetadata:
    """The ground truth's metadata as known at the start (:func:`finish_metadata` completes it)."""
    from tesaiot_cli.recording import RecordingMetadata
    from tesaiot_cli.recording.truth import DropoutPlan
    from tesaiot_cli.sim.dps368 import EPISODE_PACKETS, fleet_dropouts

    plan = DropoutPlan(None, seed=opts.seed, device_ids=tuple(ids), first_device_index=opts.first_index,
                       anomaly_every=opts.anomaly_every, kinds=opts.kinds,
                       packets=None if opts.count is None else opts.count * len(ids))
    dropouts: dict[str, list[int]] | None = {}
    if plan.possible:
        if opts.count is None or opts.duration_s is not None:
            dropouts = None  # how many packets there will be is not known in advance
        else:
            dropouts = fleet_dropouts(plan)
    extra: dict[str, Any] = {
        "command": ["tesaiot", *argv],
        "sensor_type": "DPS368",
        "devices": len(ids),
        "device_ids": list(ids),
        "first_device_index": opts.first_index,
        "topic": opts.topic,
        "interval_s": opts.interval_s,
        "anomaly_every": opts.anomaly_every,
        "anomaly_kinds": list(opts.kinds),
        "episode_packets": dict(EPISODE_PACKETS),
        "profile": opts.profile,
        "qos": opts.qos,
        "count": opts.count,
        "duration_s": opts.duration_s,
        "label_field": opts.label_field,
        "dropouts": dropouts,
    }
    if opts.shard is not None:
        extra["shard"] = f"{opts.shard[0]}/{opts.shard[1]}"
        extra["fleet_devices"] = opts.fleet_size
    return RecordingMetadata(
        source="simulate", seed=opts.seed, labelled=True, broker=settings.url.display(),
        topic_filters=tuple(topics) if len(topics) <= 100 else (opts.topic.replace("{device_id}", "+"),),
        tool_version=__version__, extra=extra,
    )


__all__ = ["Drops", "SimulationResult", "SimulatorOptions", "SimulatorView", "finish_metadata", "run_simulation",
           "simulation_metadata"]
