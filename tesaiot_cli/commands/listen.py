"""``tesaiot listen``: subscribe and show telemetry, for people and for pipes."""

from __future__ import annotations

import fnmatch
import os
import queue
import sys
import time
from typing import Annotated, Optional

import typer

from tesaiot_cli.cliutil import (
    EXIT_TIMEOUT,
    ConnectionFlags,
    StopSignals,
    cli_errors,
    err,
    print_event,
    resolve_settings,
    use_color,
    with_connection_options,
)
from tesaiot_cli.config import check_token_topics
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, parse_topic, sensor_type_of, validate_topic_filter

DEFAULT_TOPIC = "device/+/telemetry/#"

EPILOG = """\b
Examples:
  tesaiot listen                                # localhost:1883, device/+/telemetry/#
  MQTT_API_TOKEN=tesa_mqtt_... tesaiot listen   # the TESAIoT cloud over WSS
  tesaiot listen -b wss://mqtt.tesaiot.com:8085/mqtt -t 'device/my-dev/telemetry/#'
  tesaiot listen --json --count 100 | jq .payload.data.pressure
  tesaiot listen --device 'infineon-*' --sensor DPS368 --timeout 30
"""


@with_connection_options
def listen(
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Topic filter, repeatable. Env: MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC. Default device/+/telemetry/#.", show_default=False)] = None,  # noqa: E501
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Subscription QoS.")] = 1,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per line on stdout (NDJSON).")] = False,  # noqa: E501
    compact: Annotated[bool, typer.Option("--compact", help="Human output, one line per message.")] = False,
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Exit 0 after N messages (after filters).", show_default=False)] = None,  # noqa: E501
    timeout: Annotated[Optional[float], typer.Option("--timeout", "-W", metavar="SECONDS", help=f"Exit after SECONDS; exit code {EXIT_TIMEOUT} when --count was not reached.", show_default=False)] = None,  # noqa: E501
    device: Annotated[Optional[list[str]], typer.Option("--device", metavar="GLOB", help="Only these device ids (glob patterns), repeatable.", show_default=False)] = None,  # noqa: E501
    sensor: Annotated[Optional[list[str]], typer.Option("--sensor", metavar="GLOB", help="Only these sensor types (glob patterns), repeatable: the topic's sensor segment, else the JSON payload's sensor_type, else default.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="No banner or final stats on stderr.")] = False,
    *,
    conn: ConnectionFlags,
) -> None:
    """Subscribe to telemetry and show it: readable on a terminal, NDJSON with --json."""
    from tesaiot_cli.session import Session

    with cli_errors():
        if count is not None and count < 1:
            raise ConfigError(f"invalid --count {count}: it must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"invalid --timeout {timeout}: it must be positive")
        settings = resolve_settings(conn, command="listen")
        env = os.environ
        filters = topic or _env_topics(conn) or [DEFAULT_TOPIC]
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        check_token_topics(settings, filters)
        color = not json_out and use_color(sys.stdout, env)
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
                if not _wanted(message, device, sensor):
                    continue
                if json_out:
                    from tesaiot_cli.render import json_line

                    out.buffer.write(json_line(message))
                else:
                    from tesaiot_cli.render import human_block

                    out.write(human_block(message, color=color, compact=compact) + ("\n" if compact else "\n\n"))
                shown += 1
                if inbox.empty():
                    out.flush()
                if count is not None and shown >= count:
                    break
            out.flush()
        if not quiet:
            elapsed = time.monotonic() - started
            why = "timeout" if timed_out else (stop.signal_name or ("count" if count and shown >= count else "end"))
            err(f"stopped ({why}): {shown} messages shown, {session.stats.received} received in {elapsed:.1f} s")
        if timed_out:
            raise typer.Exit(EXIT_TIMEOUT)


def _env_topics(conn: ConnectionFlags) -> list[str]:
    from tesaiot_cli.cliutil import load_environment

    env = load_environment(conn.env_file)
    value = env.get("MQTT_SUBSCRIBE_TOPIC") or env.get("MQTT_TOPIC")
    return [value] if value else []


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
