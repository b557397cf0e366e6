"""MQTT 5 end to end on the session side: publish properties received (fast path and
paho's), shown by listen --json, sent again by publish; Retain-As-Published."""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.mqtt import Session
from tesaiot_cli.recording import open_reader
from tests.support.broker import Mosquitto
from tests.support.cli import Proc, run_cli
from tests.support.settings import settings_for

PROPS = PublishProperties(payload_format_indicator=1, message_expiry_interval=3600, content_type="application/json",
                          response_topic="device/reply/telemetry", correlation_data=b"\x00\x01corr",
                          user_properties=(("site", "lab"), ("site", "roof")))


def v5_publish(port: int, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
               properties: PublishProperties | None = PROPS) -> None:
    from tesaiot_cli.mqtt.paho_compat import to_paho_properties

    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos, retain, properties=to_paho_properties(properties)).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_received_properties_arrive_whole(broker: Mosquitto, qos: int) -> None:
    got: list[Message] = []
    arrived = threading.Event()

    def sink(message: Message) -> None:
        got.append(message)
        arrived.set()

    topic = f"device/props-{qos}/telemetry"
    with Session(settings_for(broker.tcp_url, mqtt_version="5")) as session:
        session.subscribe([topic], qos=qos, on_message=sink)
        v5_publish(broker.tcp_port, topic, b"{}", qos=qos)
        assert arrived.wait(10)
    assert got[0].properties == PROPS


def test_listen_json_shows_properties(broker: Mosquitto) -> None:
    topic = "device/props-listen/telemetry"
    listener = Proc("listen", "-b", broker.tcp_url, "-t", topic, "--json", "--count", "2", "--timeout", "30",
                    "--mqtt-version", "5")
    try:
        listener.wait_for_stderr("listening on")
        v5_publish(broker.tcp_port, topic, b'{"a": 1}')
        v5_publish(broker.tcp_port, topic, b'{"a": 2}', properties=None)
        assert listener.wait(30) == 0, listener.stderr
    finally:
        listener.stop()
    stdout = listener.stdout
    first, second = [json.loads(line) for line in stdout.splitlines()]
    assert first["properties"] == {
        "payload_format_indicator": 1, "message_expiry_interval": first["properties"]["message_expiry_interval"],
        "content_type": "application/json", "response_topic": "device/reply/telemetry",
        "correlation_data": base64.b64encode(b"\x00\x01corr").decode(), "user_properties": [["site", "lab"],
                                                                                             ["site", "roof"]]}
    assert 3590 <= first["properties"]["message_expiry_interval"] <= 3600  # the broker counts it down
    assert "properties" not in second


@pytest.mark.parametrize("hold", [False, True])
def test_published_properties_reach_a_subscriber(broker: Mosquitto, hold: bool) -> None:
    topic = f"device/props-pub-{hold}/telemetry"
    received: list[paho.MQTTMessage] = []
    done = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: (received.append(m), done.set())
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", broker.tcp_port)
    sub.loop_start()
    try:
        sub.subscribe(topic, 1)
        assert subscribed.wait(10)
        with Session(settings_for(broker.tcp_url, mqtt_version="5"), threaded=False) as session:
            assert session.publish(Message(topic, b"{}", 1, False, 0, PROPS), hold=hold)
            assert session.flush(10)
        assert done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    props = received[0].properties
    assert props is not None
    assert props.ContentType == "application/json" and props.CorrelationData == b"\x00\x01corr"
    assert props.UserProperty == [("site", "lab"), ("site", "roof")]


def test_retain_as_published_keeps_a_live_retained_flag(broker: Mosquitto) -> None:
    topic = "device/props-rap/telemetry"
    got: list[Message] = []
    arrived = threading.Event()

    def sink(message: Message) -> None:
        got.append(message)
        arrived.set()

    try:
        with Session(settings_for(broker.tcp_url, mqtt_version="5")) as session:
            session.subscribe([topic], qos=1, on_message=sink)
            v5_publish(broker.tcp_port, topic, b"live", retain=True, properties=None)
            assert arrived.wait(10)
    finally:
        v5_publish(broker.tcp_port, topic, b"", retain=True, properties=None)
    assert got[0].retain is True


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_properties_survive_record_and_replay(broker: Mosquitto, tmp_path: Path, suffix: str) -> None:
    """MQTT 5 end to end: published with properties -> `record` keeps them in the recording
    -> `replay` sends them again -> a subscriber gets them; a message without properties
    stays without."""
    topic = f"device/props-e2e{suffix.replace('.', '-')}/telemetry"
    path = tmp_path / f"props{suffix}"
    recorder = Proc("record", str(path), "-b", broker.tcp_url, "-t", topic, "--count", "2", "--duration", "30",
                    "--mqtt-version", "5")
    try:
        recorder.wait_for_stderr("recording ")
        v5_publish(broker.tcp_port, topic, b'{"n": 1}')
        v5_publish(broker.tcp_port, topic, b'{"n": 2}', properties=None)
        assert recorder.wait(30) == 0, recorder.stderr
    finally:
        recorder.stop()
    with open_reader(path) as reader:
        recorded = list(reader)
    assert [m.payload for m in recorded] == [b'{"n": 1}', b'{"n": 2}']
    first = recorded[0].properties
    assert first is not None and first._replace(message_expiry_interval=None) == PROPS._replace(
        message_expiry_interval=None)
    assert first.message_expiry_interval is not None and 3590 <= first.message_expiry_interval <= 3600
    assert recorded[1].properties is None

    replayed = f"{topic}/again"
    received: list[paho.MQTTMessage] = []
    done = threading.Event()
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: (received.append(m), len(received) == 2 and done.set())
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", broker.tcp_port)
    sub.loop_start()
    try:
        sub.subscribe(replayed, 1)
        assert subscribed.wait(10)
        result = run_cli("replay", str(path), "-b", broker.tcp_url, "--speed", "max", "--mqtt-version", "5",
                         "--remap", f"{topic}={replayed}", "--quiet")
        assert result.returncode == 0, result.stderr
        assert done.wait(10)
    finally:
        sub.disconnect()
        sub.loop_stop()
    again = received[0].properties
    assert again is not None
    assert again.ContentType == "application/json" and again.CorrelationData == b"\x00\x01corr"
    assert again.ResponseTopic == "device/reply/telemetry" and again.PayloadFormatIndicator == 1
    assert again.UserProperty == [("site", "lab"), ("site", "roof")]
    assert not hasattr(received[1].properties, "ContentType")
