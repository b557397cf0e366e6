"""Telemetry readings out of message payloads, shared by ``detect``, ``score`` and ``plot``.

A reading is the DPS368 payload (``{"timestamp": ..., "device_id": ..., "data":
{"pressure": ..., "temperature": ...}}``); flat payloads with ``pressure`` and
``temperature`` at the top level are read too. Pure functions, no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from tesaiot_cli.message import Message, parse_topic

# The numeric channels of a DPS368 reading: (name in the payload, unit).
CHANNELS: tuple[tuple[str, str], ...] = (("pressure", "hPa"), ("temperature", "°C"))

_TIMESTAMP_PREFIX = b'{"timestamp": "'


class Reading(NamedTuple):
    """One telemetry reading.

    ``timestamp`` is the payload's ``timestamp`` text exactly as sent (None when absent);
    ``time_ns`` is the reading's time: the payload timestamp when it parses, else the
    message's receive time (ns since the Unix epoch, UTC). Values are None when missing.
    """

    device_id: str
    timestamp: str | None
    time_ns: int
    pressure: float | None
    temperature: float | None


def payload_timestamp(payload: bytes) -> str | None:
    """The ``timestamp`` field of a JSON payload, as sent (no parsing for the simulator's layout)."""
    if payload.startswith(_TIMESTAMP_PREFIX):
        end = payload.find(b'"', len(_TIMESTAMP_PREFIX))
        if end > 0 and b"\\" not in payload[len(_TIMESTAMP_PREFIX):end]:
            return payload[len(_TIMESTAMP_PREFIX):end].decode("utf-8", "replace")
    data = load_object(payload)
    if data is None:
        return None
    value = data.get("timestamp")
    return value if isinstance(value, str) else None


def load_object(payload: bytes) -> dict[str, Any] | None:
    """The payload as a JSON object, or None when it is not one."""
    try:
        data = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def iso_to_ns(text: str) -> int | None:
    """ISO 8601 text -> ns since the Unix epoch (UTC when no offset is given); None if invalid."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    if parsed.tzinfo is None:

        parsed = parsed.replace(tzinfo=UTC)
    seconds = int(parsed.timestamp())
    return seconds * 1_000_000_000 + parsed.microsecond * 1000


class _Clock:
    """Caches the parse of the date-and-seconds part: consecutive readings share it."""

    def __init__(self) -> None:
        self._prefix = ""
        self._base_ns = 0

    def to_ns(self, text: str) -> int | None:
        # The simulator's layout: YYYY-MM-DDTHH:MM:SS.ffffff+00:00
        if len(text) == 32 and text[19] == "." and text.endswith("+00:00") and text[20:26].isdigit():
            prefix = text[:19]
            if prefix != self._prefix:
                base = iso_to_ns(prefix + "+00:00")
                if base is None:
                    return None
                self._prefix, self._base_ns = prefix, base
            return self._base_ns + int(text[20:26]) * 1000
        return iso_to_ns(text)


class ReadingParser:
    """Turns messages into :class:`Reading` values (None for payloads that are not readings)."""

    def __init__(self) -> None:
        self._clock = _Clock()
        self._devices: dict[str, str] = {}

    def device_of(self, topic: str) -> str:
        device = self._devices.get(topic)
        if device is None:
            device = parse_topic(topic).device_id
            if len(self._devices) < 100_000:
                self._devices[topic] = device
        return device

    def parse(self, message: Message) -> Reading | None:
        data = load_object(message.payload)
        if data is None:
            return None
        values = data.get("data")
        source = values if isinstance(values, dict) else data
        pressure = _number(source.get("pressure"))
        temperature = _number(source.get("temperature"))
        if pressure is None and temperature is None:
            return None
        device = data.get("device_id")
        device_id = device if isinstance(device, str) and device else self.device_of(message.topic)
        stamp = data.get("timestamp")
        timestamp = stamp if isinstance(stamp, str) else None
        time_ns = self._clock.to_ns(timestamp) if timestamp is not None else None
        return Reading(device_id, timestamp, time_ns if time_ns is not None else message.time_ns,
                       pressure, temperature)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)
