"""Property-based tests (hypothesis): the recording writers and readers round-trip any
bytes and any topic, in both formats, directly and through `tesaiot convert`; topic
parsing, topic filter validation and matching agree with each other and with paho's own
matcher; payload decoding and rendering never raise.

Every test is deterministic (``derandomize``) and bounded (a modest ``max_examples``).
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tesaiot_cli.cli import app
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import (
    Message,
    PublishProperties,
    decode_payload,
    parse_topic,
    topic_matches,
    validate_topic_filter,
    validate_topic_name,
)
from tesaiot_cli.output.render import escape_control, human_block, json_line, message_record
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer

BOUNDED = settings(max_examples=40, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
FEW = settings(BOUNDED, max_examples=12)

# Topics as MQTT delivers them: any Unicode text (no lone surrogates: not valid UTF-8).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
topics = st.one_of(
    text,
    st.lists(st.sampled_from(["device", "dev-1", "telemetry", "DPS368", "", "$SYS", "é", "a b", "\x00", "+x"]),
             min_size=1, max_size=6).map("/".join),
)
payloads = st.one_of(st.binary(max_size=300), text.map(lambda s: s.encode("utf-8")),
                     st.sampled_from([b"", b"\n", b"null", b"{}", b'{"a": [1, 2.5e300]}', b"\xff\xfe", b"\x00"]))
INT64 = (-(2**63), 2**63 - 1)
# MQTT 5 publish properties as the wire can carry them: a byte, a four-byte integer, UTF-8 strings.
mqtt_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=10)
publish_properties = st.builds(
    PublishProperties, st.none() | st.integers(0, 255), st.none() | st.integers(0, 2**32 - 1),
    st.none() | mqtt_text, st.none() | mqtt_text, st.none() | st.binary(max_size=10),
    st.lists(st.tuples(mqtt_text, mqtt_text), max_size=3).map(tuple))
messages = st.builds(Message, topics, payloads, st.integers(0, 2), st.booleans(), st.integers(*INT64),
                     st.none() | publish_properties, mid=st.just(0))  # a packet id is not recorded (one connection's)
labels = st.one_of(st.none(), st.sampled_from(["normal", "spike", "high_temperature"]), text)
rows = st.lists(st.tuples(messages, labels), max_size=25)


def write_then_read(path: Path, batch: list[tuple[Message, str | None]], *, crash_safe: bool
                    ) -> list[tuple[Message, str | None]]:
    with open_writer(path, metadata=RecordingMetadata(extra={"note": "é"}), crash_safe=crash_safe) as writer:
        for message, label in batch:
            writer.write(message, label=label)
    with open_reader(path) as reader:
        assert reader.count() == len(batch)
        assert reader.metadata.extra["note"] == "é"
        return list(reader.iter_labelled())


@pytest.mark.parametrize("crash_safe", [True, False])
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_any_bytes_and_any_topic_round_trip(fmt: str, crash_safe: bool) -> None:
    @BOUNDED
    @given(rows)
    def check(batch: list[tuple[Message, str | None]]) -> None:
        with tempfile.TemporaryDirectory() as directory:
            assert write_then_read(Path(directory) / f"r.{fmt}", batch, crash_safe=crash_safe) == batch

    check()


runner = CliRunner()


@FEW
@given(rows)
def test_convert_round_trip_is_lossless(batch: list[tuple[Message, str | None]]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        first, middle, last = (Path(directory) / name for name in ("a.parquet", "b.jsonl", "c.parquet"))
        with open_writer(first, metadata=RecordingMetadata(), crash_safe=False) as writer:
            for message, label in batch:
                writer.write(message, label=label)
        env = {"ARROW_DEFAULT_MEMORY_POOL": "system"}
        for source, target in ((first, middle), (middle, last)):
            result = runner.invoke(app, ["convert", str(source), str(target)], env=env)
            assert result.exit_code == 0, result.stderr
        for path in (middle, last):
            with open_reader(path) as reader:
                assert list(reader.iter_labelled()) == batch


# -- topics -------------------------------------------------------------------------------------


@BOUNDED
@given(topics)
def test_parse_topic_never_fails_and_follows_the_rule(topic: str) -> None:
    parts = topic.split("/")
    device_id, sensor_type = parse_topic(topic)
    platform = len(parts) > 1 and parts[0] in ("device", "devices")
    assert device_id == (parts[1] if platform and parts[1] else "unknown")
    telemetry = platform and len(parts) > 3 and parts[2] == "telemetry"
    assert sensor_type == ("/".join(parts[3:]) or "default" if telemetry else "default")


@BOUNDED
@given(st.text(st.characters(exclude_categories=("Cs",), exclude_characters="/"), min_size=1),
       st.lists(st.text(st.characters(exclude_categories=("Cs",)), min_size=1), min_size=1, max_size=3))
def test_parse_topic_inverts_the_topic_layout(device: str, sensor: list[str]) -> None:
    sensor_type = "/".join(sensor)
    assert parse_topic(f"device/{device}/telemetry/{sensor_type}") == (device, sensor_type)
    assert parse_topic(f"device/{device}/telemetry") == (device, "default")


filter_levels = st.lists(st.one_of(st.sampled_from(["+", "#", "a", "b", "", "$x", "a+", "#b"]), text),
                         min_size=1, max_size=5)


@BOUNDED
@given(filter_levels.map("/".join), topics)
def test_validation_and_matching_agree_with_paho(topic_filter: str, topic: str) -> None:
    try:
        validate_topic_filter(topic_filter)
    except ConfigError:
        return  # refused cleanly: any other exception would fail the test
    try:
        validate_topic_name(topic)
    except ConfigError:
        return
    assert topic_matches(topic_filter, topic) == paho.topic_matches_sub(topic_filter, topic)


@BOUNDED
@given(topics, st.data())
def test_a_topic_matches_the_filters_made_from_it(topic: str, data: st.DataObject) -> None:
    try:
        validate_topic_name(topic)
    except ConfigError:
        assume(False)  # wildcards, NUL or empty: not a topic name
    levels = topic.split("/")
    assert validate_topic_filter(topic) == topic and topic_matches(topic, topic)
    wild = [data.draw(st.booleans()) for _ in levels]
    pattern = "/".join("+" if w else level for w, level in zip(wild, levels, strict=True))
    cut = data.draw(st.integers(0, len(levels)))
    prefix = "/".join([*levels[:cut], "#"])
    for topic_filter in (pattern, prefix, "#"):
        validate_topic_filter(topic_filter)
        wildcard_first = topic_filter.startswith(("+", "#"))
        assert topic_matches(topic_filter, topic) == (not (topic.startswith("$") and wildcard_first))
    assert not topic_matches(topic + "/x", topic)


@BOUNDED
@given(st.text(max_size=30))
def test_filter_validation_only_ever_raises_config_error(topic_filter: str) -> None:
    try:
        assert validate_topic_filter(topic_filter) == topic_filter
    except ConfigError as exc:
        assert "invalid topic filter" in str(exc)


# -- payloads: decoding and showing ---------------------------------------------------------------


@BOUNDED
@given(payloads)
def test_decode_payload_never_raises_and_keeps_the_bytes(payload: bytes) -> None:
    value, encoding = decode_payload(payload)
    if encoding == "base64":
        assert base64.b64decode(value) == payload
    elif encoding == "text":
        assert value.encode("utf-8") == payload
    else:
        assert encoding == "json" and value == orjson.loads(payload)


@BOUNDED
@given(st.builds(Message, topics, payloads, st.integers(0, 2), st.booleans(),
                 st.integers(-(10**18), 2**63 - 1), properties=st.none()))
def test_rendering_never_raises_and_is_terminal_safe(message: Message) -> None:
    record = message_record(message)
    assert orjson.loads(json_line(message))["topic"] == message.topic
    assert record["time_ns"] == message.time_ns
    for compact in (False, True):
        shown = human_block(message, compact=compact)
        assert not any(ch in shown for ch in "\x1b\x07\x9b\x00\r")  # no terminal control reaches the screen
    assert "\n" not in escape_control(message.topic)

