"""Unit tests for topic parsing, topic filters and payload decoding."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import (
    Message,
    decode_payload,
    level_forbidden_char,
    parse_topic,
    sensor_type_of,
    topic_matches,
    topic_name_problem,
    validate_topic_filter,
    validate_topic_name,
)
from tesaiot_cli.output.render import escape_control, human_block, message_record
from tesaiot_cli.textfmt import iso_time


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


def test_utf8_with_control_characters_is_binary_in_both_outputs() -> None:
    """Valid UTF-8 holding NUL or BEL was a hex dump for people but "text" in --json."""
    payload = b"ab\x00\x07cd"
    assert decode_payload(payload) == ("YWIAB2Nk", "base64")
    assert message_record(Message("t", payload, 0, False, 0))["encoding"] == "base64"
    assert "binary, 6 bytes" in human_block(Message("t", payload, 0, False, 0))
    assert decode_payload(b"tab\tnew\nline \x1b[1mbold\x1b[0m")[1] == "text"  # text's own controls


@pytest.mark.parametrize("payload", [b'{"n": 123456789012345678901234567890}', b'{"n": 1.10000000000000000000001}',
                                     b'[123456789.0123456789]', b'{"tiny": 1e-400}', b'{"n": -18446744073709551615}'])
def test_json_that_parsing_would_round_keeps_its_exact_text(payload: bytes) -> None:
    assert decode_payload(payload) == (payload.decode(), "text")


@pytest.mark.parametrize("payload", [b'{"n": 18446744073709551615}', b'{"p": 1013.25, "t": 25.1}', b"[1E2, -0.0]",
                                     b'{"ts": "2026-11-22T08:24:56.055689+00:00", "v": 0.1}'])
def test_json_whose_numbers_survive_parsing_is_json(payload: bytes) -> None:
    import orjson

    assert decode_payload(payload) == (orjson.loads(payload), "json")


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


@pytest.mark.parametrize("bad", ["", "a/+", "a/#", "x\x00", "x" * 65536])
def test_topic_name_problem_is_the_check_validate_topic_name_makes(bad: str) -> None:
    problem = topic_name_problem(bad)
    assert problem is not None
    with pytest.raises(ConfigError, match=re.escape(problem)):
        validate_topic_name(bad)
    assert topic_name_problem("device/a/telemetry") is None


@pytest.mark.parametrize(("text", "bad"), [("a/b", "/"), ("a+", "+"), ("#", "#"), ("a\x00", "\x00"), ("ok", None)])
def test_one_topic_level_check_for_device_ids_and_share_groups(text: str, bad: str | None) -> None:
    from tesaiot_cli.services.workers import check_share_group
    from tesaiot_cli.sim.naming import check_device_id

    assert level_forbidden_char(text) == bad
    for check in (check_device_id, check_share_group):
        if bad is None:
            assert check(text) == text
        else:
            with pytest.raises(ConfigError, match=re.escape(repr(bad))):
                check(text)
