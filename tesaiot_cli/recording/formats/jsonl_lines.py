"""The JSONL recording's message lines: one message to a JSON line and back (the format
itself is described in :mod:`tesaiot_cli.recording.formats.jsonl`).

:func:`encode_line` is the reference, :func:`encode_lines` the writer thread's fast path
(byte for byte the same lines), :func:`decode_line` the strict parser the readers and
``recover`` use: what no writer writes is refused, never dropped or coerced.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Optional

import orjson

from tesaiot_cli.message import (
    DEFAULT_SENSOR,
    Message,
    PublishProperties,
    parse_topic,
    payload_sensor_type,
    properties_to_json,
    topic_sensor,
)
from tesaiot_cli.recording.buffered import Columns

LINE_FIELDS = frozenset({"time", "topic", "device_id", "sensor_type", "qos", "retain", "label", "properties",
                         "encoding", "payload"})  # what a message line may hold
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT32_MAX = 2**32 - 1


def properties_from_json(record: Any) -> PublishProperties:
    """Parse a ``properties`` object; raise ValueError (with the reason) when it is not one."""
    if not isinstance(record, dict):
        raise ValueError("'properties' is not a JSON object")
    unknown = set(record) - set(PublishProperties._fields)
    if unknown:
        raise ValueError(f"'properties' has unknown fields {sorted(unknown)}")
    indicator, expiry = record.get("payload_format_indicator"), record.get("message_expiry_interval")
    for name, value, high in (("payload_format_indicator", indicator, 255), ("message_expiry_interval", expiry,
                                                                              UINT32_MAX)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high):
            raise ValueError(f"'properties.{name}' is not an integer from 0 to {high}")
    texts = [record.get("content_type"), record.get("response_topic")]
    if any(text is not None and not isinstance(text, str) for text in texts):
        raise ValueError("'properties.content_type' or 'response_topic' is not a string")
    correlation = record.get("correlation_data")
    data = None
    if correlation is not None:
        try:
            data = base64.b64decode(correlation, validate=True) if isinstance(correlation, str) else None
        except (binascii.Error, ValueError):
            data = None
        if data is None:
            raise ValueError("'properties.correlation_data' is not base64")
    pairs = record.get("user_properties", [])
    if not isinstance(pairs, list) or not all(
            isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
            for pair in pairs):
        raise ValueError("'properties.user_properties' is not a list of [key, value] string pairs")
    return PublishProperties(indicator, expiry, texts[0], texts[1], data, tuple((k, v) for k, v in pairs))


def encode_line(message: Message, label: str | None, parts: dict[str, tuple[str, str | None]]) -> bytes:
    """One message as a JSON line (with the newline). ``parts`` caches parsed topics."""
    topic = message.topic
    derived = _topic_parts(topic, parts)
    record: dict[str, Any] = {"time": message.time_ns, "topic": topic, "device_id": derived[0],
                              "sensor_type": derived[1] or payload_sensor_type(message.payload) or DEFAULT_SENSOR,
                              "qos": message.qos, "retain": message.retain}
    if label is not None:
        record["label"] = label
    if message.properties is not None:
        record["properties"] = properties_to_json(message.properties)
    try:
        record["payload"] = message.payload.decode("utf-8")
    except UnicodeDecodeError:
        record["encoding"] = "base64"
        record["payload"] = base64.b64encode(message.payload).decode("ascii")
    return orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE)


def _topic_parts(topic: str, parts: dict[str, tuple[str, str | None]]) -> tuple[str, str | None]:
    """(device id, the topic's sensor segment or None), cached per topic."""
    derived = parts.get(topic)
    if derived is None:
        if len(parts) > FRAGMENT_CACHE_MAX:
            parts.clear()
        derived = parts[topic] = (parse_topic(topic).device_id, topic_sensor(topic))
    return derived


FRAGMENT_CACHE_MAX = 100_000  # distinct (topic, qos, retain, label, sensor); cleared when exceeded
FragmentKey = tuple[str, int, bool, Optional[str], str]


def encode_lines(columns: Columns, fragments: dict[FragmentKey, bytes],
                 parts: dict[str, tuple[str, str | None]]) -> bytes:
    """Many messages as JSON lines, byte for byte what :func:`encode_line` gives each.

    The writer thread runs this with the GIL held while the network thread waits, so it is
    built for speed: everything but the time and the payload repeats per (topic, qos, retain,
    label, sensor type) and is cached as bytes (``fragments``), leaving one ``orjson.dumps``
    of the payload text per message (about 5 us a message with a dict per line, measured
    here). The payload is parsed for its ``sensor_type`` only when the topic has no sensor
    segment and the bytes contain the key (:func:`~tesaiot_cli.message.payload_sensor_type`).
    """
    if len(fragments) > FRAGMENT_CACHE_MAX:
        fragments.clear()
    dumps = orjson.dumps
    lines: list[bytes] = []
    append = lines.append
    for topic, payload, qos, retain, time_ns, label, properties in zip(*columns, strict=True):
        device_id, sensor = parts.get(topic) or _topic_parts(topic, parts)
        if sensor is None:
            sensor = payload_sensor_type(payload) or DEFAULT_SENSOR
        key = (topic, qos, retain, label, sensor)
        fragment = fragments.get(key)
        if fragment is None:
            record: dict[str, Any] = {"topic": topic, "device_id": device_id,
                                      "sensor_type": sensor, "qos": qos, "retain": retain}
            if label is not None:
                record["label"] = label
            fragment = fragments[key] = b"," + dumps(record)[1:-1]
        if properties is not None:
            fragment = b'%s,"properties":%s' % (fragment, dumps(properties_to_json(properties)))
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            append(b'{"time":%d%s,"encoding":"base64","payload":"%s"}\n'
                   % (time_ns, fragment, base64.b64encode(payload)))
            continue
        append(b'{"time":%d%s,"payload":%s}\n' % (time_ns, fragment, dumps(text)))
    return b"".join(lines)


def decode_line(raw: bytes) -> tuple[Message, str | None]:
    """Parse one message line; raise ValueError (with the reason) when it is not one."""
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ValueError("not valid JSON") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    time, topic, payload = record.get("time"), record.get("topic"), record.get("payload")
    qos, retain = record.get("qos", 0), record.get("retain", False)
    if not isinstance(time, int) or isinstance(time, bool):
        raise ValueError("'time' is not an integer (ns since the epoch)")
    if not INT64_MIN <= time <= INT64_MAX:  # the Parquet time column (and Arrow) hold int64
        raise ValueError("'time' is out of range (ns since the epoch, a 64-bit integer)")
    if not isinstance(topic, str) or not isinstance(payload, str):
        raise ValueError("'topic' or 'payload' is missing or not a string")
    if qos not in (0, 1, 2) or isinstance(qos, bool) or not isinstance(retain, bool):
        raise ValueError("'qos' or 'retain' has an invalid value")
    # What no writer writes is refused, never dropped or coerced: it would not survive a convert.
    # (Any topic is kept, as the Parquet format keeps it: replay is where a topic must be publishable.)
    if not record.keys() <= LINE_FIELDS:
        raise ValueError(f"unknown fields {sorted(set(record) - LINE_FIELDS)}")
    label = record.get("label")
    if label is not None and not isinstance(label, str):
        raise ValueError("'label' is not a string")
    encoding = record.get("encoding")
    if encoding == "base64":
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the base64 payload is invalid") from None
    elif encoding in (None, "utf-8", "utf8", "text"):
        data = payload.encode("utf-8")
    else:
        raise ValueError(f"unknown payload encoding {encoding!r}")
    raw_properties = record.get("properties")
    properties = None if raw_properties is None else properties_from_json(raw_properties)
    return Message(topic, data, qos, retain, time, properties), label
