"""DPS368 payloads and telemetry messages for the watch tests."""

from __future__ import annotations

from tesaiot_cli.message import Message


def dps368(device: str, pressure: float = 1013.25, temperature: float = 24.5, anomaly: str | None = "absent") -> bytes:
    tail = "" if anomaly == "absent" else (', "anomaly": null' if anomaly is None else f', "anomaly": "{anomaly}"')
    return (f'{{"timestamp": "2026-12-07T10:00:00.000000+00:00", "device_id": "{device}", "sensor_type": "DPS368", '
            f'"data": {{"pressure": {pressure}, "temperature": {temperature}}}{tail}}}').encode()


def telemetry(device: str, **fields: object) -> Message:
    return Message(f"device/{device}/telemetry", dps368(device, **fields), 1)  # type: ignore[arg-type]
