"""How messages are shown: for people (upstream subscriber style) and as NDJSON for pipes.

Pure functions: they build strings and bytes, the CLI writes them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from tesaiot_cli.message import Message, PublishProperties, decode_payload, parse_topic

BINARY_PREVIEW_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BINARY_LOOKING = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f]")  # C0 controls that text rarely holds
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

_RESET = "\x1b[0m"
_STYLES = {"time": "\x1b[2m", "device": "\x1b[1;36m", "sensor": "\x1b[35m", "anomaly": "\x1b[1;31m",
           "dim": "\x1b[2m", "key": "\x1b[33m"}


def iso_time(time_ns: int) -> str:
    """ISO 8601 UTC with microseconds, like the DPS368 payload: ``2026-11-22T08:24:56.055689+00:00``."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.timezone.utc).replace(microsecond=rest // 1000)
    return moment.isoformat(timespec="microseconds")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """Make text safe for a terminal: control characters (ANSI escapes too) become ``\\xNN``."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ALL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def message_record(message: Message) -> dict[str, Any]:
    """The NDJSON object for one message (``listen --json``, ``replay --to -``).

    ``encoding`` says how ``payload`` is given: ``json`` (parsed), ``text`` or ``base64``.
    ``properties`` (only when the message has MQTT 5 publish properties) holds those it
    carries, by their MQTT names in snake case; ``correlation_data`` is base64.
    """
    value, encoding = decode_payload(message.payload)
    parts = parse_topic(message.topic)
    record = {
        "time": iso_time(message.time_ns),
        "time_ns": message.time_ns,
        "topic": message.topic,
        "device_id": parts.device_id,
        "sensor_type": parts.sensor_type,
        "qos": message.qos,
        "retain": message.retain,
        "encoding": encoding,
        "payload": value,
    }
    if message.properties is not None:
        record["properties"] = properties_record(message.properties)
    return record


def properties_record(properties: PublishProperties) -> dict[str, Any]:
    """MQTT 5 publish properties as a JSON object: only those present; correlation data in
    base64; user properties as ``[key, value]`` pairs (order and repeated keys kept)."""
    import base64

    record: dict[str, Any] = {}
    if properties.payload_format_indicator is not None:
        record["payload_format_indicator"] = properties.payload_format_indicator
    if properties.message_expiry_interval is not None:
        record["message_expiry_interval"] = properties.message_expiry_interval
    if properties.content_type is not None:
        record["content_type"] = properties.content_type
    if properties.response_topic is not None:
        record["response_topic"] = properties.response_topic
    if properties.correlation_data is not None:
        record["correlation_data"] = base64.b64encode(properties.correlation_data).decode("ascii")
    if properties.user_properties:
        record["user_properties"] = [list(pair) for pair in properties.user_properties]
    return record


def json_line(message: Message) -> bytes:
    return orjson.dumps(message_record(message)) + b"\n"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_STYLES[style]}{text}{_RESET}" if color else text


def human_block(message: Message, *, color: bool = False, compact: bool = False) -> str:
    """Upstream-subscriber style: time, device, sensor, then the data (pretty JSON,
    text, or a hex preview for binary). ``compact`` puts each message on one line."""
    parts = parse_topic(message.topic)
    stamp = iso_time(message.time_ns).replace("T", " ")[:23]
    flags = f"QoS {message.qos}" + (", retained" if message.retain else "")
    head = (
        f"{_paint('[' + stamp + ']', 'time', color)} "
        f"Device: {_paint(escape_control(parts.device_id), 'device', color)}  "
        f"Sensor: {_paint(escape_control(parts.sensor_type), 'sensor', color)}  "
        f"{_paint(escape_control(message.topic) + ' (' + flags + ')', 'dim', color)}"
    )
    value, encoding = decode_payload(message.payload)
    if encoding == "json":
        body = orjson.dumps(value, option=0 if compact else orjson.OPT_INDENT_2).decode("utf-8")
        if isinstance(value, dict) and ("anomaly" in value or "label" in value) and color:
            body = _paint(body, "anomaly", color) if value.get("anomaly") not in (None, False, "normal") else body
        data = f"Data: {escape_control(body, keep_newlines=not compact)}"
    elif encoding == "text" and not _BINARY_LOOKING.search(value):
        text = value if not compact else value.replace("\n", "\\n")
        data = f"Data: {escape_control(text, keep_newlines=not compact)}" if text else "Data: (empty)"
    else:
        size = len(message.payload)
        preview = message.payload[:BINARY_PREVIEW_BYTES].hex(" ")
        more = " ..." if size > BINARY_PREVIEW_BYTES else ""
        data = f"Data (binary, {size} bytes): {preview}{more}"
    return f"{head}  {data}" if compact else f"{head}\n{data}"
