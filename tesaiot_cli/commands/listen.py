"""``tesaiot listen``: subscribe and show telemetry, for people and for pipes."""

from __future__ import annotations

import fnmatch
import queue
import sys
import time
from typing import Annotated, Optional

import typer

from tesaiot_cli.cliutil import (
    EXIT_TIMEOUT,
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StopSignals,
    cli_errors,
    env_topics,
    err,
    exit_if_protocol_broken,
    load_environment,
    print_event,
    resolve_settings,
    use_color,
    warn,
    with_connection_options,
)
from tesaiot_cli.config import check_token_topics
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, parse_topic, sensor_type_of, validate_topic_filter
from tesaiot_cli.textfmt import plural

DEFAULT_TOPIC = "device/+/telemetry/#"

EPILOG = """\b
Examples:
  tesaiot listen                                # localhost:1883, device/+/telemetry/#
  MQTT_API_TOKEN=tesa_mqtt_... tesaiot listen   # the TESAIoT cloud over WSS
  tesaiot listen -b wss://mqtt.tesaiot.com:8085/mqtt -t 'device/my-dev/telemetry/#'
  tesaiot listen --json --count 100 | jq .payload.data.pressure
  tesaiot listen --device 'infineon-*' --sensor DPS368 --timeout 30
  tesaiot listen --payload-only -t 'device/my-dev/telemetry'      # payloads only, as mosquitto_sub
  tesaiot listen -F '{time} {topic} qos={qos} retain={retain} {payload}' --binary base64
  tesaiot listen -F '%I %t %p'                       # mosquitto_sub -F's own codes
  tesaiot listen -R                                  # skip the retained (stale) values sent on subscribe
  tesaiot listen --retained-only -t 'config/#'       # the retained values, then exit
  tesaiot listen --color always | less -R
"""


@with_connection_options
def listen(
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Topic filter, repeatable. Env: MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC. Default device/+/telemetry/#.", show_default=False)] = None,  # noqa: E501
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Subscription QoS.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout (NDJSON).")] = False,  # noqa: E501
    compact: Annotated[bool, typer.Option("--compact", help="Human output, one line per message.")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Exit 0 after N messages (after filters).", show_default=False)] = None,  # noqa: E501
    timeout: Annotated[Optional[float], typer.Option("--timeout", "-W", metavar="SECONDS", help=f"Exit after SECONDS: exit code 0, or {EXIT_TIMEOUT} when --count N was given and not reached.", show_default=False)] = None,  # noqa: E501
    device: Annotated[Optional[list[str]], typer.Option("--device", metavar="GLOB", help="Only these device ids (glob patterns), repeatable.", show_default=False)] = None,  # noqa: E501
    sensor: Annotated[Optional[list[str]], typer.Option("--sensor", metavar="GLOB", help="Only these sensor types (glob patterns), repeatable: the topic's sensor segment, else the JSON payload's sensor_type, else default.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="No banner or final stats on stderr.")] = False,
    template: Annotated[Optional[str], typer.Option("--template", "-F", metavar="TEMPLATE", help="One line per message from TEMPLATE: mosquitto_sub -F's own format (%t %p %q %r %l %m %x %X %I %U %j %%, @ strftime codes, \\n \\t \\\\ escapes), or fields {topic} {payload} {payload_hex} {payload_base64} {bytes} {qos} {retain} {time} {time_ns} {device_id} {sensor_type}. See docs/usage.md.", show_default=False)] = None,  # noqa: E501
    payload_only: Annotated[bool, typer.Option("--payload-only", "-P", help="Only the payload, one per line (--template '{payload}'), as mosquitto_sub prints by default.")] = False,  # noqa: E501
    binary: Annotated[str, typer.Option("--binary", metavar="hex|base64", help="How {payload} shows a payload that is not text, with --template or --payload-only.")] = "hex",  # noqa: E501
    skip_retained: Annotated[bool, typer.Option("--skip-retained", "-R", help="Skip retained messages: the stale last values the broker sends on subscribing (mosquitto_sub -R).")] = False,  # noqa: E501
    retained_only: Annotated[bool, typer.Option("--retained-only", help="Only retained messages; stop at the first message that is not retained (mosquitto_sub --retained-only).")] = False,  # noqa: E501
    color: Annotated[str, typer.Option("--color", metavar="auto|always|never", help="Colour in the human output: auto (on a terminal, unless NO_COLOR is set), always or never.")] = "auto",  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Subscribe to telemetry and show it: readable on a terminal, NDJSON with --json."""
    from tesaiot_cli.mqtt import Session

    with cli_errors():
        if color not in ("auto", "always", "never"):
            raise ConfigError(f"invalid --color {color!r}: use auto, always or never")
        if skip_retained and retained_only:
            raise ConfigError("--skip-retained and --retained-only exclude each other")
        if payload_only and template is not None:
            raise ConfigError("--payload-only is --template '{payload}': give one of them")
        if payload_only:
            template = "{payload}"
        if json_out and template is not None:
            raise ConfigError(f"--json and {'--payload-only' if payload_only else '--template'} exclude each other")
        if count is not None and count < 1:
            raise ConfigError(f"invalid --count {count}: it must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"invalid --timeout {timeout}: it must be positive")
        env = load_environment(conn.env_file)
        settings = resolve_settings(conn, command="listen", env=env)
        filters = topic or env_topics(env) or [DEFAULT_TOPIC]
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        check_token_topics(settings, filters)
        from tesaiot_cli.output.render import BINARY_FORMATS, compile_template

        if binary not in BINARY_FORMATS:
            raise ConfigError(f"invalid --binary {binary!r}: use hex or base64")
        render_line = (compile_template(template, binary=binary, terminal=sys.stdout.isatty())
                       if template is not None else None)
        painted = {"always": True, "never": False}.get(color)
        color_on = not json_out and (use_color(sys.stdout, env) if painted is None else painted)
        from tesaiot_cli.analysis.sequence import LiveReport, SequenceCounter, whole_streams

        sequence = SequenceCounter()  # per-device "seq" numbers (simulate --sequence): what the broker lost
        live = LiveReport(sequence)
        counted = whole_streams(filters)  # a member of a shared subscription sees part of each stream
        inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        shown = 0
        started = time.monotonic()
        timed_out = False
        with StopSignals() as stop, Session(settings, on_event=print_event, interrupt=stop.event) as session:
            session.subscribe(filters, qos=qos, on_message=inbox.put)
            if not quiet:
                err(f"listening on {settings.describe()} topics={','.join(filters)} qos={qos}")
            deadline = None if timeout is None else started + timeout
            out = sys.stdout
            while not stop.event.is_set():
                wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
                try:
                    message = inbox.get(timeout=wait)
                except queue.Empty:
                    session.check()
                    if deadline is not None and time.monotonic() >= deadline:
                        timed_out = True
                        break
                    continue
                finally:
                    if not quiet and (line := live.due(time.monotonic())) is not None:
                        err(line)
                if counted:
                    sequence.add(message.topic, message.payload)
                if retained_only and not message.retain:
                    break  # the retained values come first: the first live message ends them
                if (skip_retained and message.retain) or not _wanted(message, device, sensor):
                    continue
                if render_line is not None:
                    out.buffer.write(render_line(message) + b"\n")  # bytes: %p is the payload as it is
                elif json_out:
                    from tesaiot_cli.output.render import json_line

                    out.buffer.write(json_line(message))
                else:
                    from tesaiot_cli.output.render import human_block

                    out.write(human_block(message, color=color_on, compact=compact) + ("\n" if compact else "\n\n"))
                shown += 1
                if inbox.empty():
                    out.flush()
                if count is not None and shown >= count:
                    break
            out.flush()
        if not quiet:
            elapsed = time.monotonic() - started
            why = "timeout" if timed_out else (stop.signal_name or ("count" if count and shown >= count else
                                                                   "end of the retained messages" if retained_only
                                                                   else "end"))
            err(f"stopped ({why}): {plural(shown, 'message')} shown, {session.stats.received:,} received in "
                f"{elapsed:.1f} s")
        if sequence.numbered and (sequence.missing or not quiet):
            (warn if sequence.missing else err)(sequence.report().summary_line())
        exit_if_protocol_broken(session.stats.protocol_errors, settings.url.display(), what="shown")
        if sequence.missing:
            raise typer.Exit(EXIT_UNDELIVERED)
        if timed_out and count is not None:  # a bounded capture without --count did what was asked
            raise typer.Exit(EXIT_TIMEOUT)


def _wanted(message: Message, devices: list[str] | None, sensors: list[str] | None) -> bool:
    if not devices and not sensors:
        return True
    if devices:
        device_id = parse_topic(message.topic).device_id
        if not any(fnmatch.fnmatchcase(device_id, pattern) for pattern in devices):
            return False
    if not sensors:
        return True
    sensor = sensor_type_of(message.topic, message.payload)  # the payload is parsed only without a topic sensor
    return any(fnmatch.fnmatchcase(sensor, pattern) for pattern in sensors)
