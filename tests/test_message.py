"""Unit tests for topic parsing, topic filters and payload decoding."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import (
    Message,
    decode_payload,
    parse_topic,
    sensor_type_of,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)
from tesaiot_cli.render import escape_control, human_block, iso_time, message_record


@pytest.mark.parametrize(
    ("topic", "device", "sensor"),
    [
        ("device/infineon-sensor-01/telemetry", "infineon-sensor-01", "default"),
        ("device/d1/telemetry/DPS368", "d1", "DPS368"),
        ("device/d1/telemetry/env/pressure/raw", "d1", "env/pressure/raw"),
        ("device", "unknown", "default"),
        ("device//telemetry/x", "unknown", "x"),
        ("", "unknown", "default"),
        ("a/b/c/", "unknown", "default"),
        ("raw/bin", "unknown", "default"),
        ("$SYS/broker/version", "unknown", "default"),
        ("devices/d2/telemetry/BMP", "d2", "BMP"),
        ("device/d1/status", "d1", "default"),
        ("device/d1/commands/reboot", "d1", "default"),
    ],
)
def test_parse_topic(topic: str, device: str, sensor: str) -> None:
    assert parse_topic(topic) == (device, sensor)


@pytest.mark.parametrize(
    ("topic", "payload", "sensor"),
    [
        ("device/d1/telemetry", b'{"sensor_type": "DPS368", "data": {}}', "DPS368"),
        ("device/d1/telemetry/BMP280", b'{"sensor_type": "DPS368"}', "BMP280"),
        ("device/d1/telemetry", b'{"data": {"sensor_type": "nested"}}', "default"),
        ("device/d1/telemetry", b'{"sensor_type": 7}', "default"),
        ("device/d1/telemetry", b'{"sensor_type": ""}', "default"),
        ("device/d1/telemetry", b'"sensor_type"', "default"),
        ("device/d1/telemetry", b'{"sensor_type": "x"', "default"),
        ("device/d1/telemetry", b"\xff\"sensor_type\"", "default"),
        ("raw/adc", b'{"sensor_type": "ADC"}', "ADC"),
    ],
)
def test_sensor_type_rule(topic: str, payload: bytes, sensor: str) -> None:
    assert sensor_type_of(topic, payload) == sensor
    assert message_record(Message(topic, payload))["sensor_type"] == sensor
    assert f"Sensor: {sensor} " in human_block(Message(topic, payload))


@given(st.text())
def test_parse_topic_never_fails(topic: str) -> None:
    parts = parse_topic(topic)
    assert parts.device_id and parts.sensor_type


@pytest.mark.parametrize("good", ["#", "+", "a/+/c", "device/+/telemetry/#", "a//b", "/", "$SYS/#"])
def test_valid_filters(good: str) -> None:
    assert validate_topic_filter(good) == good


@pytest.mark.parametrize("bad", ["", "a/#/b", "+x", "a/b#", "a/x+/c", "#/a", "a\x00b"])
def test_invalid_filters(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid topic filter"):
        validate_topic_filter(bad)


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "x\x00"])
def test_invalid_topic_names(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_topic_name(bad)


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("device/+/telemetry/#", "device/d1/telemetry", True),
        ("device/+/telemetry/#", "device/d1/telemetry/DPS368", True),
        ("device/+/telemetry/#", "device/d1/status", False),
        ("a/+", "a/b/c", False),
        ("a/+", "a/", True),
        ("#", "$SYS/x", False),
        ("$SYS/#", "$SYS/x", True),
        ("a/b", "a/b", True),
        ("a/b", "a/b/c", False),
    ],
)
def test_topic_matches(pattern: str, topic: str, expected: bool) -> None:
    assert topic_matches(pattern, topic) is expected


def test_decode_payload() -> None:
    assert decode_payload(b'{"a": 1}') == ({"a": 1}, "json")
    assert decode_payload(b"hello") == ("hello", "text")
    assert decode_payload(b"") == ("", "text")
    assert decode_payload(b"\xff\x00") == ("/wA=", "base64")


def test_iso_time_keeps_microseconds() -> None:
    assert iso_time(1_795_335_896_055_689_123) == "2026-11-22T08:24:56.055689+00:00"


def test_json_record_for_binary_payload() -> None:
    record = message_record(Message("device/d/telemetry/raw", b"\x00\xffbin", 1, True, 1_000_000_000))
    assert record["encoding"] == "base64" and record["payload"] == "AP9iaW4="
    assert record["device_id"] == "d" and record["sensor_type"] == "raw" and record["retain"] is True


def test_human_output_is_terminal_safe() -> None:
    text = human_block(Message("device/\x1b[31mevil/telemetry", b"\x1b]0;pwned\x07hi", 0, False, 0))
    assert "\x1b" not in text and "\x07" not in text
    assert escape_control("a\nb", keep_newlines=True) == "a\nb"
    block = human_block(Message("device/d/telemetry", b"\x00" * 100, 0, False, 0))
    assert "binary, 100 bytes" in block and block.endswith("...")
