"""How messages are shown: for people (upstream subscriber style) and as NDJSON for pipes.

Pure functions: they build strings and bytes, the CLI writes them.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, decode_payload, parse_topic, properties_to_json, sensor_type_of
from tesaiot_cli.textfmt import iso_time, paint, utc_text

__all__ = ["escape_control", "human_block", "json_line", "message_record"]

BINARY_PREVIEW_BYTES = 64
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_CONTROL_ALL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def escape_control(text: str, *, keep_newlines: bool = False) -> str:
    """Make text safe for a terminal: control characters (ANSI escapes too) become ``\\xNN``."""
    pattern = _CONTROL if keep_newlines else _CONTROL_ALL
    return pattern.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def message_record(message: Message) -> dict[str, Any]:
    """The NDJSON object for one message (``listen --json``, ``replay --to -``).

    ``encoding`` says how ``payload`` is given: ``json`` (parsed, numbers exact), ``text``
    (exact) or ``base64`` (exact bytes), as :func:`tesaiot_cli.message.decode_payload`.
    ``properties`` (only when the message has MQTT 5 publish properties) holds those it
    carries, by their MQTT names in snake case; ``correlation_data`` is base64.
    """
    value, encoding = decode_payload(message.payload)
    parts = parse_topic(message.topic)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    record = {
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
    if message.properties is not None:
        record["properties"] = properties_to_json(message.properties)
    return record


def json_line(message: Message) -> bytes:
    return orjson.dumps(message_record(message)) + b"\n"


def human_block(message: Message, *, color: bool = False, compact: bool = False) -> str:
    """Upstream-subscriber style: time, device, sensor, then the data (pretty JSON,
    text, or a hex preview for binary). ``compact`` puts each message on one line."""
    parts = parse_topic(message.topic)
    value, encoding = decode_payload(message.payload)
    sensor = sensor_type_of(message.topic, message.payload, value if encoding == "json" else None)
    stamp = utc_text(message.time_ns, decimals=3)
    flags = f"QoS {message.qos}" + (", retained" if message.retain else "")
    head = (
        f"{paint('[' + stamp + ']', 'time', color)} "
        f"Device: {paint(escape_control(parts.device_id), 'device', color)}  "
        f"Sensor: {paint(escape_control(sensor), 'sensor', color)}  "
        f"{paint(escape_control(message.topic) + ' (' + flags + ')', 'dim', color)}"
    )
    if encoding == "json":
        body = orjson.dumps(value, option=0 if compact else orjson.OPT_INDENT_2).decode("utf-8")
        if isinstance(value, dict) and ("anomaly" in value or "label" in value) and color:
            body = paint(body, "anomaly", color) if value.get("anomaly") not in (None, False, "normal") else body
        data = f"Data: {escape_control(body, keep_newlines=not compact)}"
    elif encoding == "text":
        text = value if not compact else value.replace("\n", "\\n")
        data = f"Data: {escape_control(text, keep_newlines=not compact)}" if text else "Data: (empty)"
    else:
        size = len(message.payload)
        preview = message.payload[:BINARY_PREVIEW_BYTES].hex(" ")
        more = " ..." if size > BINARY_PREVIEW_BYTES else ""
        data = f"Data (binary, {size} bytes): {preview}{more}"
    return f"{head}  {data}" if compact else f"{head}\n{data}"


# -- templates (listen --template, as mosquitto_sub -F) ------------------------------------

TEMPLATE_FIELDS = {
    "topic": "the topic",
    "payload": "the payload: its text when it is text (or JSON), else hex or base64 (--binary)",
    "payload_hex": "the payload as hex",
    "payload_base64": "the payload as base64",
    "bytes": "the payload's size in bytes",
    "qos": "0, 1 or 2",
    "retain": "1 for a retained message, else 0",
    "time": "receive time, ISO 8601 UTC with microseconds",
    "time_ns": "receive time, ns since the epoch",
    "device_id": "the device id from the topic",
    "sensor_type": "the sensor type: the topic's sensor part, else the JSON payload's sensor_type",
}
BINARY_FORMATS = ("hex", "base64")


def compile_template(template: str, *, binary: str = "hex", terminal: bool = False) -> Any:
    """A function ``Message -> str`` for a template such as ``'{time} {topic} {payload}'``
    (fields: :data:`TEMPLATE_FIELDS`; ``\\t`` and ``\\n`` are a tab and a newline).

    ``binary``: how ``{payload}`` shows a payload that is not text (``hex`` or ``base64``).
    ``terminal``: escape control characters (output to a terminal; pipes get the text as
    it is). Raises :class:`ConfigError` for an unknown field or a malformed template.
    """
    import base64
    import string

    if binary not in BINARY_FORMATS:
        raise ConfigError(f"invalid --binary {binary!r}: use hex or base64")
    text = template.replace("\\t", "\t").replace("\\n", "\n")
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(text) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"invalid --template {template!r}: {exc}") from None
    unknown = sorted(name for name in fields if name not in TEMPLATE_FIELDS)
    if unknown or "" in fields:
        raise ConfigError(f"invalid --template {template!r}: unknown field {{{(unknown or [''])[0]}}}; "
                          f"fields: {', '.join('{' + name + '}' for name in TEMPLATE_FIELDS)}")
    clean = (lambda value: escape_control(value)) if terminal else (lambda value: value)

    def render(message: Message) -> str:
        values: dict[str, Any] = {}
        if "topic" in fields:
            values["topic"] = clean(message.topic)
        if "payload" in fields:
            value, encoding = decode_payload(message.payload)
            if encoding == "base64":
                value = message.payload.hex() if binary == "hex" else value
            else:
                value = clean(message.payload.decode("utf-8"))
            values["payload"] = value
        if "payload_hex" in fields:
            values["payload_hex"] = message.payload.hex()
        if "payload_base64" in fields:
            values["payload_base64"] = base64.b64encode(message.payload).decode("ascii")
        if "device_id" in fields or "sensor_type" in fields:
            parts = parse_topic(message.topic)
            values["device_id"] = clean(parts.device_id)
            values["sensor_type"] = clean(sensor_type_of(message.topic, message.payload))
        values.update(bytes=len(message.payload), qos=message.qos, retain=int(message.retain),
                      time_ns=message.time_ns)
        if "time" in fields:
            values["time"] = iso_time(message.time_ns)
        try:
            return text.format_map(values)
        except (ValueError, IndexError, KeyError, AttributeError, TypeError) as exc:
            raise ConfigError(f"invalid --template {template!r}: {exc}") from None

    render(Message("device/d/telemetry", b"\x00", 0, False, 0))  # a bad format spec fails now, not mid-run
    return render
