"""``tesaiot simulate``: one DPS368 device, or a fleet, with anomalies and ground truth.

Wire-compatible with the upstream TESAIoT Edge-AI device simulator by default (payload,
QoS 1, no retain, its environment variable names). Per-packet lines go to stdout (they
are the program's output); the banner, live status, events and summary go to stderr.
"""

from __future__ import annotations

import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tesaiot_cli import __version__
from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StopSignals,
    cli_errors,
    err,
    freeze_startup_objects,
    load_environment,
    print_event,
    resolve_settings,
    stderr_is_tty,
    use_color,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.sim.dps368 import DECIMALS
from tesaiot_cli.sim.fleet import DEFAULT_DEVICE_ID, DEFAULT_TOPIC
from tesaiot_cli.sim.options import (
    QUEUE_FLAT_OUT,
    QUEUE_MAX,
    QUEUE_MIN,
    QUEUE_SECONDS,
    SimOptions,
    resolve_options,
    safe_argv,
)

if TYPE_CHECKING:
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.message import Message
    from tesaiot_cli.recording.base import RecordingMetadata, RecordingWriter
    from tesaiot_cli.session import Session
    from tesaiot_cli.sim.dps368 import Packet

# Waiting for room in the queue: flat out, backpressure is the point; on a schedule, at
# most one slot (so an outage never holds the schedule up); while disconnected, not at all.
FLAT_OUT_PUBLISH_TIMEOUT_S = 10.0
SCHEDULED_PUBLISH_TIMEOUT_S = (0.005, 1.0)
DRAIN_TIMEOUT_S = 10.0
STATUS_TTY_PERIOD_S = 0.5
STATUS_PLAIN_PERIOD_S = 5.0

EPILOG = """\b
Examples:
  tesaiot simulate                                  # like upstream: localhost:1883, 1 packet/s, anomaly every 10
  tesaiot simulate --count 100 --anomaly-every 0    # 100 normal packets, then exit
  tesaiot simulate -b mqtt://127.0.0.1:1883 --seed 42 --count 60 --record truth.jsonl
  tesaiot simulate --devices 20 --interval 0.5 --duration 60 --device-id lab-01
  tesaiot simulate --profile realistic --anomaly-kinds spike,stuck,drift,dropout --label
  tesaiot simulate --interval 0 --count 50000 --qos 0 --quiet   # as fast as possible
  tesaiot simulate --devices 1000 --shard 2/4 --seed 7   # devices 251-500 of a 1000-device fleet
  tesaiot simulate --interval 0 --count 2000 --qos 2 --max-inflight 10   # at most 10 unacknowledged
"""


@with_connection_options
def simulate(
    anomaly_every: Annotated[Optional[int], typer.Option("--anomaly-every", "-a", metavar="N", help="An anomaly starts at packets N, 2N, ... of each device; 0 = no anomalies. Env: ANOMALY_INTERVAL. [default: 10]", show_default=False)] = None,  # noqa: E501
    interval: Annotated[Optional[float], typer.Option("--interval", "-i", metavar="SECONDS", help="Seconds between two packets of a device; 0 = as fast as possible (needs --count or --duration). Env: PUBLISH_INTERVAL. [default: 1.0]", show_default=False)] = None,  # noqa: E501
    device_id: Annotated[Optional[str], typer.Option("--device-id", "-d", metavar="ID", help=f"Device id; a fleet's ids count up from it. Env: DEVICE_ID. [default: {DEFAULT_DEVICE_ID}]", show_default=False)] = None,  # noqa: E501
    topic: Annotated[Optional[str], typer.Option("--topic", "-t", metavar="TOPIC", help=f"Topic; {{device_id}} is replaced by each device's id. Env: MQTT_TOPIC. [default: {DEFAULT_TOPIC}]", show_default=False)] = None,  # noqa: E501
    devices: Annotated[int, typer.Option("--devices", "-N", metavar="N", help="Simulate N devices, spread evenly over the interval.")] = 1,  # noqa: E501
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Stop after N packets per device (dropout packets count too).", show_default=False)] = None,  # noqa: E501
    duration: Annotated[Optional[float], typer.Option("--duration", metavar="SECONDS", help="Stop after SECONDS.", show_default=False)] = None,  # noqa: E501
    seed: Annotated[Optional[int], typer.Option("--seed", "-s", metavar="S", help="Random seed: the same seed gives the same values and anomalies. Default: a random one, shown on stderr.", show_default=False)] = None,  # noqa: E501
    profile: Annotated[str, typer.Option("--profile", metavar="NAME", help="upstream (uniform values, as the upstream simulator) or realistic (slowly varying, with DPS368 noise).")] = "upstream",  # noqa: E501
    anomaly_kinds: Annotated[Optional[str], typer.Option("--anomaly-kinds", "-k", metavar="KINDS", help="Comma-separated: high_temperature, high_pressure, both, spike, stuck, drift, dropout; or upstream (the first three, the default) or all.", show_default=False)] = None,  # noqa: E501
    label: Annotated[bool, typer.Option("--label", help='Add "anomaly": null or "<kind>" to each payload (changes the wire format).')] = False,  # noqa: E501
    record: Annotated[Optional[Path], typer.Option("--record", "-r", metavar="FILE", help="Write every published message with its label (normal or the anomaly kind) and the seed to FILE (.parquet or .jsonl).", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --record FILE if it exists.")] = False,
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", help="Publish QoS (upstream: 1).")] = 1,
    queue: Annotated[Optional[int], typer.Option("--queue", metavar="N", help=f"Keep at most N unacknowledged packets (in flight, or queued while disconnected); more are dropped and counted. Default: {QUEUE_SECONDS:g} s of packets, {QUEUE_MIN} to {QUEUE_MAX}; {QUEUE_FLAT_OUT} with --interval 0.", show_default=False)] = None,  # noqa: E501
    max_inflight: Annotated[Optional[int], typer.Option("--max-inflight", metavar="N", min=1, max=65535, help="At most N QoS 1/2 messages unacknowledged at once. Default: the broker's Receive Maximum at MQTT 5; at MQTT 3.1.1 20 for QoS 2 (mosquitto's default max_inflight_messages: a broker that keeps fewer refuses the rest) and no limit but --queue/the window for QoS 1.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="Nothing on stdout or stderr but warnings and errors.")] = False,  # noqa: E501
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="K/M", help="Simulate only shard K of M (numbered from 1) of the --devices fleet: processes or machines given 1/M .. M/M and the same --seed together publish exactly the whole fleet, with disjoint device ids.", show_default=False)] = None,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Simulate Infineon DPS368 pressure/temperature devices publishing to a broker, with anomalies.

    Exit codes: 0 done (count, duration, Ctrl+C or SIGTERM), 1 bad option, 3 broker
    unreachable, 4 authentication refused, 5 recording error, 7 some packets were not
    delivered (dropped or refused).
    """
    with cli_errors():
        env = load_environment(conn.env_file)
        opts = resolve_options(
            env, device_id=device_id, devices=devices, topic=topic, interval=interval, anomaly_every=anomaly_every,
            anomaly_kinds=anomaly_kinds, profile=profile, seed=seed, count=count, duration=duration, qos=qos,
            label=label, queue=queue, shard=shard,
        )
        if opts.shard is not None and not opts.seed_given:
            warn("--shard without --seed: this shard draws its own seed; give every shard the same --seed so that "
                 "together they are the same fleet as one unsharded run")
        if record is not None:
            _check_record_path(record, force=force)
        settings = resolve_settings(conn, command="simulate", allow_token=False)
        undelivered = _simulate(opts, settings, record=record, force=force, quiet=quiet, max_inflight=max_inflight,
                                color=use_color(sys.stdout, env), argv=safe_argv(sys.argv[1:]))
    if undelivered:
        raise typer.Exit(EXIT_UNDELIVERED)


def _check_record_path(path: Path, *, force: bool) -> None:
    from tesaiot_cli.recording.base import existing_outputs, format_for

    format_for(path)
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"cannot record to {str(path)!r}: the directory {str(parent)!r} does not exist")
    in_the_way = existing_outputs(path)
    if in_the_way and not force:
        raise ConfigError(f"{in_the_way[0]} already exists: choose another file name, or --force to overwrite")


class _Console:
    """Per-packet lines (stdout) or the live status line (stderr), and session events."""

    def __init__(self, opts: SimOptions, *, quiet: bool, color: bool) -> None:
        self.per_packet = not quiet and opts.per_packet_lines
        self.status = not quiet and not self.per_packet
        self.tty = stderr_is_tty()
        self.period = STATUS_TTY_PERIOD_S if self.tty else STATUS_PLAIN_PERIOD_S
        self.color = color
        self.decimals = DECIMALS[opts.profile][0]
        self.devices = opts.devices
        self.session: Session | None = None
        self.started = time.monotonic()
        self.next_status = self.started + self.period
        self.last_sent = 0
        self.last_time = self.started
        self.sent = 0
        self.anomalies = 0
        self.drawn = False

    def event(self, kind: str, text: str) -> None:
        self.clear()
        print_event(kind, text)

    def packet(self, packet: Packet, sent: bool) -> None:
        if sent:
            self.sent += 1
        if packet.onset:
            self.anomalies += 1
        if self.per_packet:
            from tesaiot_cli.sim.report import packet_line

            sys.stdout.write(packet_line(packet, sent=sent, pressure_decimals=self.decimals, color=self.color) + "\n")
            sys.stdout.flush()
        elif self.status:
            now = time.monotonic()
            if now >= self.next_status:
                self.draw(now)

    def draw(self, now: float) -> None:
        from tesaiot_cli.sim.report import status_line

        session = self.session
        if session is None:
            return
        stats = session.stats
        rate = (self.sent - self.last_sent) / max(now - self.last_time, 1e-9)
        self.last_sent, self.last_time = self.sent, now
        self.next_status = now + self.period
        line = status_line(sent=self.sent, acknowledged=stats.completed, anomalies=self.anomalies,
                           dropped=stats.dropped, rate=rate, elapsed_s=now - self.started, devices=self.devices,
                           connected=session.connected)
        if self.tty:
            sys.stderr.write(f"\r{line}\x1b[K")
            self.drawn = True
        else:
            sys.stderr.write(f"tesaiot: {line}\n")
        sys.stderr.flush()

    def clear(self) -> None:
        if self.drawn:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.drawn = False


def _simulate(opts: SimOptions, settings: ConnectionSettings, *, record: Path | None, force: bool, quiet: bool,
              max_inflight: int | None = None,
              color: bool, argv: list[str]) -> bool:
    """Run the simulation; print the summary; return whether some packets were not delivered."""
    from tesaiot_cli.errors import Interrupted
    from tesaiot_cli.recording.base import open_writer, remove_outputs
    from tesaiot_cli.session import Session
    from tesaiot_cli.sim.dps368 import DPS368Device, DPS368Model, TimestampFormatter
    from tesaiot_cli.sim.fleet import device_ids, fleet_topics
    from tesaiot_cli.sim.report import summary_lines
    from tesaiot_cli.sim.schedule import Scheduler, StopRun, run

    ids = device_ids(opts.device_id, opts.fleet_size)[opts.first_index:opts.first_index + opts.devices]
    topics = fleet_topics(opts.topic, ids)
    step_s = opts.interval_s if opts.interval_s > 0 else 1.0
    stamps = TimestampFormatter()
    fleet = [
        DPS368Device(device_id, DPS368Model(seed=opts.seed, device_index=index, anomaly_every=opts.anomaly_every,
                                            kinds=opts.kinds, profile=opts.profile, step_s=step_s),
                     device_index=index, label_field=opts.label_field, timestamps=stamps)
        for index, device_id in enumerate(ids, start=opts.first_index)
    ]
    console = _Console(opts, quiet=quiet, color=color)
    with StopSignals() as stop, ExitStack() as resources:
        session = resources.enter_context(
            Session(settings, on_event=console.event, interrupt=stop.event, window=opts.queue, threaded=False,
                    max_inflight=max_inflight))
        console.session = session
        if not quiet:
            for line in _banner(opts, settings, ids, topics):
                err(line)
        writer: RecordingWriter | None = None
        metadata = _metadata(opts, settings, ids, topics, argv)
        if record is not None:
            if force:
                remove_outputs(record)
            # Opened after connecting: a broker that cannot be reached leaves an old file alone.
            writer = resources.enter_context(open_writer(record, metadata=metadata))
        flat_out = opts.slot_s == 0
        room_low, room_high = SCHEDULED_PUBLISH_TIMEOUT_S
        room_timeout = min(max(opts.slot_s, room_low), room_high)

        def publish(message: Message) -> bool:
            if flat_out:
                timeout = FLAT_OUT_PUBLISH_TIMEOUT_S
            else:
                timeout = room_timeout if session.connected else 0.0
            try:
                # Flat out, QoS 0 packets are written in batches (one send per ~64 KiB).
                return session.publish(message, timeout=timeout, hold=flat_out)
            except Interrupted:
                raise StopRun from None

        def on_packet(packet: Packet, message: Message | None, sent: bool) -> None:
            if sent and writer is not None and message is not None:
                writer.write(message, label=packet.label)
            console.packet(packet, sent)

        # The session runs its network loop on this thread (threaded=False): waiting for the
        # next packet goes through it, reading acknowledgements and reconnecting meanwhile.
        scheduler = Scheduler(interval_s=opts.interval_s, devices=opts.devices, sleep=session.wait)
        freeze_startup_objects()
        stats = run(fleet, topics, scheduler, publish, qos=opts.qos, count=opts.count,
                    duration_s=opts.duration_s, stop=stop.event.is_set, on_packet=on_packet)
        console.clear()
        _finish_metadata(metadata, stats.packets, len(ids))
        if stop.signal_name:
            stats.stopped_by = stop.signal_name
        _drain(session, stop, quiet=quiet)
        finished_s = time.monotonic()
    # Closed: what was still unacknowledged is now counted as dropped.
    s = session.stats
    if not quiet:
        for line in summary_lines(
            stopped_by=stats.stopped_by, elapsed_s=finished_s - stats.start_s,
            sent=stats.sent, completed=s.completed, failed=s.failed, dropped=s.dropped, qos=opts.qos,
            onsets=stats.onsets, labelled=stats.labelled, disconnects=s.disconnects, reconnects=s.reconnects,
            interval_s=opts.interval_s, last_lateness_s=stats.last_lateness_s, max_lateness_s=stats.max_lateness_s,
        ):
            err(line)
        if record is not None:
            err(f"ground truth written to {record}")
    if s.dropped or s.failed:
        reasons = ", ".join(f"{why} {n}" for why, n in s.failed_reasons.items())
        warn(f"{s.dropped + s.failed} packets were not delivered ({s.dropped} dropped, {s.failed} refused"
             + (f": {reasons}" if reasons else "") + ")"
             + (" -- raise --queue to keep more while the broker is unreachable" if s.dropped else ""))
        return True
    return False


def _drain(session: Session, stop: StopSignals, *, quiet: bool) -> None:
    """Wait (bounded) for the packets still unacknowledged; Ctrl+C again stops waiting."""
    from tesaiot_cli.errors import Interrupted

    # The first Ctrl+C ended the loop; clear it so the flush waits, and a second one cuts it short.
    stop.event.clear()
    try:
        if session.flush(0.5):
            return
        if not quiet:
            err(f"waiting up to {DRAIN_TIMEOUT_S:g} s for {session.in_flight()} unacknowledged packets "
                "(Ctrl+C to stop waiting)")
        session.flush(DRAIN_TIMEOUT_S)
    except Interrupted:
        pass


def _finish_metadata(metadata: RecordingMetadata, packets: int, devices: int) -> None:
    """What is known only at the end: packets made (all devices, dropouts included); the
    planned dropouts trimmed to the packets made (Ctrl+C). The writers store ``extra`` as
    it is at close; the values only shrink or stay small, so they fit a JSONL header."""
    metadata.extra["packets"] = packets
    planned = metadata.extra.get("dropouts")
    if isinstance(planned, dict):
        made = {device_id: len(range(index, packets, devices)) for index, device_id in enumerate(planned)}
        metadata.extra["dropouts"] = {device_id: [k for k in numbers if k <= made[device_id]]
                                      for device_id, numbers in planned.items()}


def _banner(opts: SimOptions, settings: ConnectionSettings, ids: list[str], topics: list[str]) -> list[str]:
    who = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}"
    where = topics[0] if len(topics) == 1 else opts.topic
    pace = "as fast as possible" if opts.interval_s == 0 else f"every {opts.interval_s:g} s"
    anomalies = (f"anomaly every {opts.anomaly_every} packets ({', '.join(opts.kinds)})" if opts.anomaly_every
                 else "no anomalies")
    seed = f"seed {opts.seed}" + ("" if opts.seed_given else f" (repeat this run with --seed {opts.seed})")
    shard = "" if opts.shard is None else f", shard {opts.shard[0]}/{opts.shard[1]} of a {opts.fleet_size}-device fleet"
    return [
        f"simulating {len(ids)} DPS368 device{'s' if len(ids) > 1 else ''} ({who}{shard}) on {settings.describe()}",
        f"topic {where}, {pace}, {anomalies}, profile {opts.profile}, QoS {opts.qos}, {seed}",
    ]


def _metadata(opts: SimOptions, settings: ConnectionSettings, ids: list[str], topics: list[str],
              argv: list[str]) -> RecordingMetadata:
    from tesaiot_cli.recording.base import RecordingMetadata
    from tesaiot_cli.sim.dps368 import EPISODE_PACKETS, planned_dropouts

    dropouts: dict[str, list[int]] | None = {}
    if "dropout" in opts.kinds and opts.anomaly_every > 0:
        if opts.count is None or opts.duration_s is not None:
            dropouts = None  # how many packets there will be is not known in advance
        else:
            dropouts = {device_id: planned_dropouts(seed=opts.seed, device_index=index,
                                                    anomaly_every=opts.anomaly_every, kinds=opts.kinds,
                                                    packets=opts.count)
                        for index, device_id in enumerate(ids, start=opts.first_index)}
    extra: dict[str, Any] = {
        "command": ["tesaiot", *argv],
        "sensor_type": "DPS368",
        "devices": len(ids),
        "device_ids": ids,
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
