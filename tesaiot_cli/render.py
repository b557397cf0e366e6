"""How messages are shown: for people (upstream subscriber style) and as NDJSON for pipes.

Pure functions: they build strings and bytes, the CLI writes them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from tesaiot_cli.message import Message, decode_payload, parse_topic, sensor_type_of

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
    """
    value, encoding = decode_payload(message.payload)
    parts = parse_topic(message.topic)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    return {
        "time": iso_time(message.time_ns),
        "time_ns": message.time_ns,
        "topic": message.topic,
        "device_id": parts.device_id,
        "sensor_type": sensor,
        "qos": message.qos,
        "retain": message.retain,
        "encoding": encoding,
        "payload": value,
    }


def json_line(message: Message) -> bytes:
    return orjson.dumps(message_record(message)) + b"\n"


def _paint(text: str, style: str, color: bool) -> str:
    return f"{_STYLES[style]}{text}{_RESET}" if color else text


def human_block(message: Message, *, color: bool = False, compact: bool = False) -> str:
    """Upstream-subscriber style: time, device, sensor, then the data (pretty JSON,
    text, or a hex preview for binary). ``compact`` puts each message on one line."""
    parts = parse_topic(message.topic)
    value, encoding = decode_payload(message.payload)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    stamp = iso_time(message.time_ns).replace("T", " ")[:23]
    flags = f"QoS {message.qos}" + (", retained" if message.retain else "")
    head = (
        f"{_paint('[' + stamp + ']', 'time', color)} "
        f"Device: {_paint(escape_control(parts.device_id), 'device', color)}  "
        f"Sensor: {_paint(escape_control(sensor), 'sensor', color)}  "
        f"{_paint(escape_control(message.topic) + ' (' + flags + ')', 'dim', color)}"
    )
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
