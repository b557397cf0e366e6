"""``tesaiot simulate``: one DPS368 device, or a fleet, with anomalies and ground truth.

Wire-compatible with the upstream TESAIoT Edge-AI device simulator by default (payload,
QoS 1, no retain, its environment variable names). Per-packet lines go to stdout (they
are the program's output); the banner, live status, events and summary go to stderr.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tesaiot_cli import __version__
from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StatusLine,
    StopSignals,
    cli_errors,
    err,
    freeze_startup_objects,
    load_environment,
    print_event,
    resolve_settings,
    use_color,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import location
from tesaiot_cli.sim.dps368 import DECIMALS
from tesaiot_cli.sim.fleet import DEFAULT_DEVICE_ID, DEFAULT_TOPIC
from tesaiot_cli.sim.options import (
    DEFAULT_CONNECT_RATE,
    PER_DEVICE_QUEUE_MAX,
    PER_DEVICE_QUEUE_MIN,
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
    from tesaiot_cli.mqtt import Session, SessionStats
    from tesaiot_cli.mqtt.fleet import DeviceFleet
    from tesaiot_cli.recording import RecordingMetadata, RecordingWriter
    from tesaiot_cli.sim.dps368 import Packet
    from tesaiot_cli.sim.schedule import RunStats

# Waiting for room in the queue: flat out, backpressure is the point; on a schedule, at
# most one slot (so an outage never holds the schedule up); while disconnected, not at all.
FLAT_OUT_PUBLISH_TIMEOUT_S = 10.0
SCHEDULED_PUBLISH_TIMEOUT_S = (0.005, 1.0)
DRAIN_TIMEOUT_S = 10.0
DRAIN_TICK_S = 4.0  # how often the closing drain says how many are still unacknowledged
STATUS_TTY_PERIOD_S = 1.0
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
  tesaiot simulate --devices 50000 --quiet               # 50,000 devices at 1 Hz on one connection
  tesaiot simulate --devices 5000 --connections per-device --interval 10 --connect-rate 200
  tesaiot simulate -N 100 --connections per-device --username-template 'dev-{n}' --password-file devices.txt
  tesaiot simulate -N 100 --connections per-device -b mqtts://broker:8883 --ca-file ca.pem --cert-dir certs/
  tesaiot simulate --interval 0 --count 2000 --qos 2 --max-inflight 10   # at most 10 unacknowledged
"""


@with_connection_options
def simulate(
    anomaly_every: Annotated[Optional[int], typer.Option("--anomaly-every", "-a", metavar="N", help="An anomaly starts at packets N, 2N, ... of each device; 0 = no anomalies. Env: ANOMALY_INTERVAL. [default: 10]", show_default=False)] = None,  # noqa: E501
    interval: Annotated[Optional[float], typer.Option("--interval", "-i", metavar="SECONDS", help="Seconds between two packets of a device; 0 = as fast as possible (needs --count or --duration). Env: PUBLISH_INTERVAL. [default: 1.0]", show_default=False)] = None,  # noqa: E501
    device_id: Annotated[Optional[str], typer.Option("--device-id", "-D", metavar="ID", help=f"Device id; a fleet's ids count up from it. Env: DEVICE_ID. [default: {DEFAULT_DEVICE_ID}]", show_default=False)] = None,  # noqa: E501
    topic: Annotated[Optional[str], typer.Option("--topic", "-t", metavar="TOPIC", help=f"Topic; {{device_id}} is replaced by each device's id. Env: MQTT_TOPIC. [default: {DEFAULT_TOPIC}]", show_default=False)] = None,  # noqa: E501
    devices: Annotated[int, typer.Option("--devices", "-N", metavar="N", help="Simulate N devices (up to 1,000,000 in a fleet; shards of it with --shard), spread evenly over the interval.")] = 1,  # noqa: E501
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Stop after N packets per device (dropout packets count too).", show_default=False)] = None,  # noqa: E501
    duration: Annotated[Optional[float], typer.Option("--duration", "-d", metavar="SECONDS", help="Stop after SECONDS.", show_default=False)] = None,  # noqa: E501
    seed: Annotated[Optional[int], typer.Option("--seed", "-S", metavar="S", help="Random seed: the same seed gives the same values and anomalies. Default: a random one, shown on stderr.", show_default=False)] = None,  # noqa: E501
    seed_old: Annotated[Optional[int], typer.Option("-s", hidden=True, show_default=False)] = None,  # -s before -S
    profile: Annotated[str, typer.Option("--profile", metavar="NAME", help="upstream (uniform values, as the upstream simulator) or realistic (slowly varying, with DPS368 noise).")] = "upstream",  # noqa: E501
    anomaly_kinds: Annotated[Optional[str], typer.Option("--anomaly-kinds", "-k", metavar="KINDS", help="Comma-separated: high_temperature, high_pressure, both, spike, stuck, drift, dropout; or upstream (the first three, the default) or all.", show_default=False)] = None,  # noqa: E501
    label: Annotated[bool, typer.Option("--label", help='Add "anomaly": null or "<kind>" to each payload (changes the wire format).')] = False,  # noqa: E501
    sequence: Annotated[bool, typer.Option("--sequence", help='Add "seq" (1, 2, 3... per device) and "boot" (this run\'s start, ms since the epoch) to each payload, so that record, listen, detect, info and score count what a broker lost (changes the wire format).')] = False,  # noqa: E501
    record: Annotated[Optional[Path], typer.Option("--record", "-r", parser=location, metavar="FILE", help="Write every published message with its label (normal or the anomaly kind) and the seed to FILE (.parquet or .jsonl).", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --record FILE if it exists.")] = False,
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", help="Publish QoS (upstream: 1).")] = 1,
    queue: Annotated[Optional[int], typer.Option("--queue", metavar="N", help=f"Keep at most N unacknowledged packets (in flight, or queued while disconnected; per device with --connections per-device); more are dropped and counted. Default: {QUEUE_SECONDS:g} s of packets, {QUEUE_MIN} to {QUEUE_MAX}; {QUEUE_FLAT_OUT} with --interval 0.", show_default=False)] = None,  # noqa: E501
    max_inflight: Annotated[Optional[int], typer.Option("--max-inflight", metavar="N", min=1, max=65535, help="At most N QoS 1/2 messages unacknowledged at once. Default: the broker's Receive Maximum at MQTT 5; at MQTT 3.1.1 20 for QoS 2 (mosquitto's default max_inflight_messages: a broker that keeps fewer refuses the rest) and no limit but --queue/the window for QoS 1.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="Nothing on stdout or stderr but warnings and errors.")] = False,  # noqa: E501
    connections: Annotated[str, typer.Option("--connections", metavar="MODE", help="shared: every device on one MQTT connection and client id; per-device: each device its own connection (client id, keepalive, session, credentials), all from this process on one event loop.")] = "shared",  # noqa: E501
    connect_rate: Annotated[Optional[float], typer.Option("--connect-rate", metavar="N", help=f"per-device: at most N connects (and reconnects) per second. [default: {DEFAULT_CONNECT_RATE:g}]", show_default=False)] = None,  # noqa: E501
    username_template: Annotated[Optional[str], typer.Option("--username-template", metavar="TEMPLATE", help="per-device: each device's username, {device_id} and {n} (its number in the fleet, from 1) replaced, e.g. dev-{n}.", show_default=False)] = None,  # noqa: E501
    password_template: Annotated[Optional[str], typer.Option("--password-template", metavar="TEMPLATE", help="per-device: each device's password, {device_id} and {n} replaced. Env: TESAIOT_PASSWORD_TEMPLATE.", show_default=False)] = None,  # noqa: E501
    password_file: Annotated[Optional[Path], typer.Option("--password-file", metavar="FILE", help="per-device: username:password per line (as mosquitto_passwd -U takes); each device's password is its username's.", show_default=False)] = None,  # noqa: E501
    cert_dir: Annotated[Optional[Path], typer.Option("--cert-dir", metavar="DIR", help="per-device: mutual TLS with DIR/<device id>.crt and DIR/<device id>.key for each device.", show_default=False)] = None,  # noqa: E501
    shard: Annotated[Optional[str], typer.Option("--shard", metavar="K/M", help="Simulate only shard K of M (numbered from 1) of the --devices fleet: processes or machines given 1/M .. M/M and the same --seed together publish exactly the whole fleet, with disjoint device ids.", show_default=False)] = None,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Simulate Infineon DPS368 pressure/temperature devices publishing to a broker, with anomalies.

    Exit codes: 0 done (count, duration, Ctrl+C or SIGTERM), 1 bad option (also: too few
    file descriptors for --connections per-device), 3 broker unreachable, 4 authentication
    refused, 5 recording error, 7 some packets were not delivered (dropped or refused).
    """
    with cli_errors():
        if seed_old is not None:
            warn("-s is now -S (--seed): -s is --speed in replay")
            seed = seed if seed is not None else seed_old
        env = load_environment(conn.env_file)
        opts = resolve_options(
            env, device_id=device_id, devices=devices, topic=topic, interval=interval, anomaly_every=anomaly_every,
            anomaly_kinds=anomaly_kinds, profile=profile, seed=seed, count=count, duration=duration, qos=qos,
            label=label, queue=queue, shard=shard, sequence=sequence,
        )
        if opts.shard is not None and not opts.seed_given:
            warn("--shard without --seed: this shard draws its own seed; give every shard the same --seed so that "
                 "together they are the same fleet as one unsharded run")
        if record is not None:
            _check_record_path(record, force=force)
        settings = resolve_settings(conn, command="simulate", allow_token=False, env=env)
        links = _link_options(opts, settings, env, connections=connections, connect_rate=connect_rate,
                              client_id=conn.client_id, username_template=username_template,
                              password_template=password_template, password_file=password_file, cert_dir=cert_dir)
        if links is not None and max_inflight is not None:
            raise ConfigError("--max-inflight is for one shared connection: with --connections per-device each "
                              "device keeps at most --queue packets unacknowledged")
        undelivered = _simulate(opts, settings, record=record, force=force, quiet=quiet, max_inflight=max_inflight,
                                color=use_color(sys.stdout, env), argv=safe_argv(sys.argv[1:]), links=links)
    if undelivered:
        raise typer.Exit(EXIT_UNDELIVERED)


def _check_record_path(path: Path, *, force: bool) -> None:
    from tesaiot_cli.recording import existing_outputs, format_for
    from tesaiot_cli.recording.files import check_output_path

    format_for(path)
    check_output_path(path)
    in_the_way = existing_outputs(path)
    if in_the_way and not force:
        raise ConfigError(f"{in_the_way[0]} already exists: choose another file name, or --force to overwrite")


class _Console:
    """Per-packet lines (stdout) or the live status line (stderr), session events, and
    why packets were dropped (for the closing hint)."""

    def __init__(self, opts: SimOptions, *, quiet: bool, color: bool) -> None:
        self.per_packet = not quiet and opts.per_packet_lines
        self.status = StatusLine(tty_period_s=STATUS_TTY_PERIOD_S, plain_period_s=STATUS_PLAIN_PERIOD_S,
                                 enabled=not quiet and not self.per_packet)
        self.color = color
        self.decimals = DECIMALS[opts.profile][0]
        self.devices = opts.devices
        self.qos = opts.qos
        self.queue = opts.queue
        # (acknowledged, queued, dropped, connected, (connected, connecting, failed) links or None)
        self.progress: Callable[[], tuple[int, int, int, bool, tuple[int, int, int] | None]] | None = None
        self.started = time.monotonic()
        self.last_sent = 0
        self.last_time = self.started
        self.sent = 0
        self.onsets = 0
        # Drops by cause: no room in the queue while connected (the broker or the link is
        # slower than the schedule), or lost/refused while disconnected.
        self.dropped_slow = 0
        self.dropped_offline = 0

    def event(self, kind: str, text: str) -> None:
        self.status.clear()
        print_event(kind, text)
        self.status.redraw()

    def packet(self, packet: Packet, sent: bool) -> None:
        """One upstream-style line per packet (a single slow device only)."""
        from tesaiot_cli.sim.report import packet_line

        sys.stdout.write(packet_line(packet, sent=sent, pressure_decimals=self.decimals, color=self.color) + "\n")
        sys.stdout.flush()

    def idle(self, stats: RunStats) -> None:
        """Between batches of packets: take the run's counts, draw the status line when due."""
        self.sent = stats.sent
        self.onsets = sum(stats.onsets.values())
        self.tick()

    def tick(self) -> None:
        """Draw the status line when one is due (also while waiting between packets, and
        while per-device connections ramp up)."""
        if self.progress is not None:
            self.status.update(self.render)

    def render(self) -> str:
        from tesaiot_cli.sim.report import status_line

        assert self.progress is not None
        acknowledged, queued, dropped, connected, links = self.progress()
        now = time.monotonic()
        rate = (self.sent - self.last_sent) / max(now - self.last_time, 1e-9)
        self.last_sent, self.last_time = self.sent, now
        return status_line(sent=self.sent, acknowledged=acknowledged, queued=queued, onsets=self.onsets,
                           dropped=dropped, rate=rate, elapsed_s=now - self.started, devices=self.devices,
                           connected=connected, qos=self.qos, queue=self.queue, links=links)

    def count_drops(self, lost: int, *, connected: bool) -> None:
        """Drops by cause, for the closing hint: no room while connected (the broker or the
        link is slower than the schedule), or while disconnected."""
        if connected:
            self.dropped_slow += lost
        else:
            self.dropped_offline += lost

    def clear(self) -> None:
        self.status.clear()


@dataclass(frozen=True)
class _LinkOptions:
    """``--connections per-device``: each device's settings, the connect rate, the per-device queue."""

    settings: list[ConnectionSettings]
    connect_rate: float
    queue: int


def _link_options(opts: SimOptions, settings: ConnectionSettings, env: Mapping[str, str], *, connections: str,
                  connect_rate: float | None, client_id: str | None, username_template: str | None,
                  password_template: str | None, password_file: Path | None,
                  cert_dir: Path | None) -> _LinkOptions | None:
    """Check the per-device options; None for one shared connection. Raises ConfigError."""
    mode = connections.strip().lower()
    if mode not in ("shared", "per-device"):
        raise ConfigError(f"invalid --connections {connections!r}: use shared or per-device")
    password_template = password_template or env.get("TESAIOT_PASSWORD_TEMPLATE") or None
    given = [name for name, value in (("--connect-rate", connect_rate), ("--username-template", username_template),
                                      ("--password-template", password_template),
                                      ("--password-file", password_file), ("--cert-dir", cert_dir))
             if value is not None]
    if mode == "shared":
        if given:
            raise ConfigError(f"{given[0]} goes with --connections per-device")
        return None
    if opts.interval_s == 0:
        raise ConfigError("--connections per-device needs a schedule: give --interval SECONDS (not 0)")
    from tesaiot_cli.config import Secret
    from tesaiot_cli.sim.credentials import device_settings
    from tesaiot_cli.sim.fleet import device_ids

    rate = DEFAULT_CONNECT_RATE if connect_rate is None else connect_rate
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"invalid --connect-rate {connect_rate}: it must be a positive number of connects per second")
    ids = device_ids(opts.device_id, opts.fleet_size, start=opts.first_index, stop=opts.first_index + opts.devices)
    per_device = device_settings(
        settings, ids, first_number=opts.first_index + 1, client_id=client_id or env.get("MQTT_CLIENT_ID") or None,
        username_template=username_template,
        password_template=Secret(password_template) if password_template is not None else None,
        password_file=password_file, cert_dir=cert_dir)
    # --queue is per device here; by default about QUEUE_SECONDS of each device's packets.
    queue = opts.queue_given or int(min(PER_DEVICE_QUEUE_MAX, max(PER_DEVICE_QUEUE_MIN,
                                                                  math.ceil(QUEUE_SECONDS / opts.interval_s))))
    return _LinkOptions(per_device, rate, queue)


class _Publisher:
    """What the run needs from one shared session or a fleet of per-device connections."""

    def __init__(self, publish: Callable[[Message], bool], wait: Callable[[float], None], stats: SessionStats,
                 progress: Callable[[], tuple[int, int, int, bool, tuple[int, int, int] | None]],
                 drain: Callable[[], str]) -> None:
        self.publish = publish
        self.wait = wait
        self.stats = stats
        self.progress = progress
        self.drain = drain


def _shared_publisher(session: Session, opts: SimOptions, stop: StopSignals, console: _Console, *, quiet: bool,
                      batched: bool) -> _Publisher:
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
                console.count_drops(lost, connected=connected and session.connected)

    def wait(seconds: float) -> None:
        session.wait(seconds)
        console.tick()  # the status line moves while the schedule waits, or while disconnected

    def progress() -> tuple[int, int, int, bool, None]:
        queued = session.in_flight()  # first: it also counts what was acknowledged since the last line
        return stats.completed, queued, stats.dropped, session.connected, None

    return _Publisher(publish, wait, stats, progress,
                      lambda: _drain(session.flush, session.in_flight, stop, quiet=quiet))


def _fleet_publisher(fleet: DeviceFleet, stop: StopSignals, console: _Console, *, quiet: bool) -> _Publisher:
    stats = fleet.stats

    def publish(message: Message) -> bool:
        dropped = stats.dropped
        sent = fleet.publish(message)
        lost = stats.dropped - dropped
        if lost:  # no room in that device's queue: its connection is down or too slow
            console.count_drops(lost, connected=fleet.link_counts()[1:] == (0, 0))
        return sent

    def wait(seconds: float) -> None:
        fleet.wait(seconds)
        console.tick()

    return _Publisher(publish, wait, stats,
                      lambda: (stats.completed, fleet.in_flight(), stats.dropped, True, fleet.link_counts()),
                      lambda: _drain(fleet.flush, fleet.in_flight, stop, quiet=quiet))


def _simulate(opts: SimOptions, settings: ConnectionSettings, *, record: Path | None, force: bool, quiet: bool,
              max_inflight: int | None = None,
              color: bool, argv: list[str], links: _LinkOptions | None = None) -> bool:
    """Run the simulation; print the summary; return whether some packets were not delivered."""
    from tesaiot_cli.recording import open_writer, remove_outputs
    from tesaiot_cli.sim.dps368 import DPS368Device, DPS368Model, TimestampFormatter
    from tesaiot_cli.sim.fleet import device_ids, fleet_topics
    from tesaiot_cli.sim.report import summary_lines
    from tesaiot_cli.sim.schedule import Scheduler, run

    if links is not None:
        from tesaiot_cli.limits import fd_limit_for

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
    console = _Console(opts, quiet=quiet, color=color)
    publisher: _Publisher
    with StopSignals() as stop, ExitStack() as resources:
        if links is None:
            from tesaiot_cli.mqtt import Session

            session = resources.enter_context(
                Session(settings, on_event=console.event, interrupt=stop.event, window=opts.queue, threaded=False,
                        max_inflight=max_inflight))
            # The session runs its network loop on this thread (threaded=False): waiting for
            # the next packet goes through it, reading acknowledgements and reconnecting meanwhile.
            scheduler = Scheduler(interval_s=opts.interval_s, devices=opts.devices,
                                  sleep=lambda seconds: publisher.wait(seconds))
            publisher = _shared_publisher(session, opts, stop, console, quiet=quiet, batched=scheduler.batched)
            console.progress = publisher.progress
        else:
            from tesaiot_cli.mqtt.fleet import DeviceFleet

            devices = resources.enter_context(DeviceFleet(
                links.settings, topics, ids, connect_rate=links.connect_rate, queue=links.queue,
                on_event=console.event, interrupt=stop.event))
            publisher = _fleet_publisher(devices, stop, console, quiet=quiet)
            console.progress = publisher.progress
            if not quiet:
                err(f"connecting {len(ids)} devices at up to {links.connect_rate:g} connects/s "
                    f"({links.settings[0].client_id} .. {links.settings[-1].client_id})")
            devices.connect_all(on_progress=console.tick)
            console.clear()
            scheduler = Scheduler(interval_s=opts.interval_s, devices=opts.devices, sleep=publisher.wait)
        if not quiet:
            for line in _banner(opts, settings, ids, topics, per_device=links is not None):
                err(line)
        writer: RecordingWriter | None = None
        metadata = _metadata(opts, settings, ids, topics, argv)
        metadata.extra["sequence"] = None if boot is None else {"boot": boot}
        if record is not None:
            if force:
                remove_outputs(record)
            # Opened after connecting: a broker that cannot be reached leaves an old file alone.
            writer = resources.enter_context(open_writer(record, metadata=metadata))

        on_packet: Callable[[Packet, Message | None, bool], None] | None = None
        if writer is not None or console.per_packet:
            def on_packet(packet: Packet, message: Message | None, sent: bool) -> None:
                if sent and writer is not None and message is not None:
                    writer.write(message, label=packet.label)
                if console.per_packet:
                    console.packet(packet, sent)

        freeze_startup_objects()
        stats = run(fleet, topics, scheduler, publisher.publish, qos=opts.qos, count=opts.count,
                    duration_s=opts.duration_s, stop=stop.event.is_set, on_packet=on_packet, on_idle=console.idle)
        console.clear()
        _finish_metadata(metadata, stats.packets, len(ids))
        if stop.signal_name:
            stats.stopped_by = stop.signal_name
        drained = publisher.drain()
        finished_s = time.monotonic()
    # Closed: what was still unacknowledged is now counted as dropped.
    s = publisher.stats
    if not quiet:
        for line in summary_lines(
            stopped_by=stats.stopped_by, elapsed_s=finished_s - stats.start_s,
            sent=stats.sent, completed=s.completed, failed=s.failed, dropped=s.dropped, qos=opts.qos,
            onsets=stats.onsets, labelled=stats.labelled, disconnects=s.disconnects, reconnects=s.reconnects,
            interval_s=opts.interval_s, last_lateness_s=stats.last_lateness_s, max_lateness_s=stats.max_lateness_s,
        ):
            err(line)
        p99 = stats.lateness.percentile(0.99)
        if p99 is not None and opts.devices > 1:
            err(f"send lateness p50 {_ms(stats.lateness.percentile(0.5))}, p99 {_ms(p99)} ms")
        if links is not None:
            for line in _device_lines(devices, qos=opts.qos):
                err(line)
        if record is not None:
            err(f"ground truth written to {record}")
    if s.dropped or s.failed:
        from tesaiot_cli.sim.report import undelivered_lines

        for line in undelivered_lines(
            dropped=s.dropped, failed=s.failed, failed_reasons=dict(s.failed_reasons), qos=opts.qos,
            queue=opts.queue, dropped_slow=console.dropped_slow, dropped_offline=console.dropped_offline,
            stopped_by=stop.signal_name, drained=drained, drain_timeout_s=DRAIN_TIMEOUT_S,
            acknowledged_rate=s.completed / max(finished_s - stats.start_s, 1e-9),
            scheduled_rate=(opts.devices / opts.interval_s) if opts.interval_s > 0 else None,
        ):
            warn(line)
        return True
    return False


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"


def _device_lines(fleet: DeviceFleet, *, qos: int) -> list[str]:
    """Per-device summary: connections, connect times, and the devices that lost packets."""
    counts = fleet.devices()
    times = sorted(fleet.connect_times())
    connected = sum(1 for c in counts if c.connects)
    lines = [f"devices: {connected} of {len(counts)} connected at least once, "
             f"{sum(c.disconnects for c in counts)} connections lost, "
             f"{sum(max(c.connects - 1, 0) for c in counts)} reconnects"]
    if times:
        def at(q: float) -> float:
            return times[min(len(times) - 1, int(q * len(times)))]
        lines.append(f"connect time (attempt to CONNACK) p50 {at(0.5) * 1000:.1f} ms, p99 {at(0.99) * 1000:.1f} ms, "
                     f"max {times[-1] * 1000:.1f} ms")
    lossy = [c for c in counts if c.dropped or c.failed or c.sent != c.acknowledged]
    if lossy:
        lines.append(f"{len(lossy)} device(s) with packets not {'acknowledged' if qos else 'written'} "
                     "(sent / acknowledged / failed / dropped):")
        for c in lossy[:10]:
            why = f" -- {c.last_error}" if c.last_error and not c.connects else ""
            lines.append(f"  {c.device_id} ({c.client_id}): {c.sent} / {c.acknowledged} / {c.failed} / "
                         f"{c.dropped}{why}")
        if len(lossy) > 10:
            lines.append(f"  ... and {len(lossy) - 10} more")
    else:
        lines.append("every device: every packet sent was " + ("acknowledged" if qos else "written (QoS 0)"))
    return lines


def _drain(flush: Callable[[float], bool], in_flight: Callable[[], int], stop: StopSignals, *, quiet: bool) -> str:
    """Wait (bounded) for the packets still unacknowledged; Ctrl+C again stops waiting.

    Returns how it ended: ``all`` (nothing left), ``timeout`` or ``interrupted``."""
    from tesaiot_cli.errors import Interrupted

    # The first Ctrl+C ended the loop; clear it so the flush waits, and a second one cuts it short.
    stop.event.clear()
    try:
        if flush(0.5):
            return "all"
        if not quiet:
            err(f"waiting up to {DRAIN_TIMEOUT_S:g} s for {in_flight():,} unacknowledged packets "
                "(Ctrl+C to stop waiting)")
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while (left := deadline - time.monotonic()) > 0:
            if flush(min(DRAIN_TICK_S, left)):
                return "all"
            left = deadline - time.monotonic()
            if not quiet and left >= 1:  # the drain says how it goes, as the live status did
                err(f"still waiting: {in_flight():,} unacknowledged packets, {left:.0f} s left")
        return "timeout"
    except Interrupted:
        return "interrupted"


def _finish_metadata(metadata: RecordingMetadata, packets: int, devices: int) -> None:
    """What is known only at the end: packets made (all devices, dropouts included); the
    planned dropouts trimmed to the packets made, or computed from them for a run whose
    length was not known in advance. The writers store ``extra`` as it is at close (a JSONL
    header that has no room for a long list keeps ``null``: ``score`` then recomputes them
    from the seed)."""
    metadata.extra["packets"] = packets
    planned = metadata.extra.get("dropouts")
    if planned is None and metadata.seed is not None:
        # A run whose length was not known at the start (--duration, Ctrl+C): now it is, so the
        # truth lists its dropouts like a --count run's (score reads them from here).
        from tesaiot_cli.sim.dps368 import planned_dropouts

        extra = metadata.extra
        first = int(extra.get("first_device_index", 0))
        metadata.extra["dropouts"] = {
            device_id: planned_dropouts(seed=metadata.seed, device_index=first + index,
                                        anomaly_every=int(extra["anomaly_every"]), kinds=extra["anomaly_kinds"],
                                        packets=len(range(index, packets, devices)))
            for index, device_id in enumerate(extra["device_ids"])}
        return
    if isinstance(planned, dict):
        made = {device_id: len(range(index, packets, devices)) for index, device_id in enumerate(planned)}
        metadata.extra["dropouts"] = {device_id: [k for k in numbers if k <= made[device_id]]
                                      for device_id, numbers in planned.items()}


def _banner(opts: SimOptions, settings: ConnectionSettings, ids: list[str], topics: list[str], *,
            per_device: bool = False) -> list[str]:
    who = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}"
    where = topics[0] if len(topics) == 1 else opts.topic
    pace = "as fast as possible" if opts.interval_s == 0 else f"every {opts.interval_s:g} s"
    anomalies = (f"anomaly every {opts.anomaly_every} packets ({', '.join(opts.kinds)})" if opts.anomaly_every
                 else "no anomalies")
    seed = f"seed {opts.seed}" + ("" if opts.seed_given else f" (repeat this run with --seed {opts.seed})")
    shard = "" if opts.shard is None else f", shard {opts.shard[0]}/{opts.shard[1]} of a {opts.fleet_size}-device fleet"
    where_to = (f"{settings.url.display()}, one connection per device" if per_device else settings.describe())
    return [
        f"simulating {len(ids)} DPS368 device{'s' if len(ids) > 1 else ''} ({who}{shard}) on {where_to}",
        f"topic {where}, {pace}, {anomalies}, profile {opts.profile}, QoS {opts.qos}, {seed}",
    ]


def _metadata(opts: SimOptions, settings: ConnectionSettings, ids: list[str], topics: list[str],
              argv: list[str]) -> RecordingMetadata:
    from tesaiot_cli.recording import RecordingMetadata
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
