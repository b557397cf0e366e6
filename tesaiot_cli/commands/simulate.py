"""``tesaiot simulate``: one DPS368 device, or a fleet, with anomalies and ground truth.

Wire-compatible with the upstream TESAIoT Edge-AI device simulator by default (payload,
QoS 1, no retain, its environment variable names). Per-packet lines go to stdout (they
are the program's output); the banner, live status, events and summary go to stderr.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StatusLine,
    StopSignals,
    cli_errors,
    err,
    load_environment,
    print_event,
    resolve_settings,
    use_color,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import location
from tesaiot_cli.services.drain import DRAIN_TIMEOUT_S
from tesaiot_cli.sim.dps368 import DECIMALS
from tesaiot_cli.sim.naming import DEFAULT_DEVICE_ID, DEFAULT_TOPIC
from tesaiot_cli.sim.options import (
    DEFAULT_CONNECT_RATE,
    QUEUE_FLAT_OUT,
    QUEUE_MAX,
    QUEUE_MIN,
    QUEUE_SECONDS,
    SimOptions,
    link_options,
    resolve_options,
    safe_argv,
)

if TYPE_CHECKING:
    from tesaiot_cli.services.simulator import Progress, SimulationResult
    from tesaiot_cli.sim.dps368 import Packet
    from tesaiot_cli.sim.schedule import RunStats

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
    drain_timeout: Annotated[float, typer.Option("--drain-timeout", metavar="SECONDS", min=0, help="After the last packet, wait at most SECONDS for the broker to acknowledge what is still in flight (QoS 1, 2); what is unacknowledged then is counted as dropped (exit 7). 0: do not wait.")] = DRAIN_TIMEOUT_S,  # noqa: E501
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
        links = link_options(opts, settings, env, connections=connections, connect_rate=connect_rate,
                             client_id=conn.client_id, username_template=username_template,
                             password_template=password_template, password_file=password_file, cert_dir=cert_dir)
        if links is not None and max_inflight is not None:
            raise ConfigError("--max-inflight is for one shared connection: with --connections per-device each "
                              "device keeps at most --queue packets unacknowledged")
        from tesaiot_cli.services.simulator import SimulatorOptions, run_simulation

        options = SimulatorOptions(opts, settings, links=links, record=record, force=force,
                                   max_inflight=max_inflight, argv=tuple(safe_argv(sys.argv[1:])),
                                   drain_timeout_s=drain_timeout)
        console = _Console(opts, quiet=quiet, color=use_color(sys.stdout, env))
        with StopSignals() as stop:
            result = run_simulation(options, console, stop)
        if not quiet:
            _print_summary(result, opts, record=record, per_device=links is not None)
        if result.undelivered:
            _warn_undelivered(result, opts, stopped_by=stop.signal_name, drain_timeout_s=drain_timeout)
    if result.undelivered:
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
    """What the user sees of the run (the service's ``SimulatorView``): per-packet lines
    (stdout) or the live status line (stderr), session events, the run's other lines."""

    def __init__(self, opts: SimOptions, *, quiet: bool, color: bool) -> None:
        self.per_packet = not quiet and opts.per_packet_lines
        self.status = StatusLine(tty_period_s=STATUS_TTY_PERIOD_S, plain_period_s=STATUS_PLAIN_PERIOD_S,
                                 enabled=not quiet and not self.per_packet)
        self.color = color
        self.decimals = DECIMALS[opts.profile][0]
        self.quiet = quiet
        self.devices = opts.devices
        self.qos = opts.qos
        self.queue = opts.queue
        self.progress: Progress | None = None
        self.started = time.monotonic()
        self.last_sent = 0
        self.last_time = self.started
        self.sent = 0
        self.onsets = 0

    def attach(self, progress: Progress) -> None:
        self.progress = progress

    def say(self, text: str) -> None:
        if not self.quiet:
            err(text)

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

    def clear(self) -> None:
        self.status.clear()


def _print_summary(result: SimulationResult, opts: SimOptions, *, record: Path | None, per_device: bool) -> None:
    from tesaiot_cli.sim.report import device_lines, summary_lines

    stats, s = result.run, result.delivery
    for line in summary_lines(
        stopped_by=stats.stopped_by, elapsed_s=result.elapsed_s,
        sent=stats.sent, completed=s.completed, failed=s.failed, dropped=s.dropped, qos=opts.qos,
        onsets=stats.onsets, labelled=stats.labelled, disconnects=s.disconnects, reconnects=s.reconnects,
        interval_s=opts.interval_s, last_lateness_s=stats.last_lateness_s, max_lateness_s=stats.max_lateness_s,
    ):
        err(line)
    p99 = stats.lateness.percentile(0.99)
    if p99 is not None and opts.devices > 1:
        err(f"send lateness p50 {_ms(stats.lateness.percentile(0.5))}, p99 {_ms(p99)} ms")
    if per_device and result.devices is not None:
        for line in device_lines(result.devices, result.connect_times, qos=opts.qos):
            err(line)
    if record is not None:
        err(f"ground truth written to {record}")


def _warn_undelivered(result: SimulationResult, opts: SimOptions, *, stopped_by: str | None,
                      drain_timeout_s: float) -> None:
    from tesaiot_cli.sim.report import undelivered_lines

    s = result.delivery
    for line in undelivered_lines(
        dropped=s.dropped, failed=s.failed, failed_reasons=dict(s.failed_reasons), qos=opts.qos,
        queue=opts.queue, dropped_slow=result.drops.slow, dropped_offline=result.drops.offline,
        stopped_by=stopped_by, drained=result.drained, drain_timeout_s=drain_timeout_s,
        acknowledged_rate=s.completed / max(result.elapsed_s, 1e-9),
        scheduled_rate=(opts.devices / opts.interval_s) if opts.interval_s > 0 else None,
    ):
        warn(line)


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f}"
