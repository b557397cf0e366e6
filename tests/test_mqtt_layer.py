"""The MQTT layer's own rules: the codec (round trips, against paho's property encoder),
the one seam to paho's private names, failures that reach the caller, and protocol
violations from a hostile broker that close the connection with one clear line."""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tesaiot_cli.errors import ProtocolError
from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.mqtt import NetworkFailure, Session, codec, paho_compat
from tesaiot_cli.mqtt.loops import Connection
from tesaiot_cli.mqtt.transport import BufferedSocket
from tesaiot_cli.recording import open_reader
from tests.support.broker import HOSTILE, Mosquitto, free_ports, wait_for_port
from tests.support.cli import ROOT, clean_env, run_cli
from tests.support.clients import publish
from tests.support.settings import settings_for

PACKAGE = ROOT / "tesaiot_cli"

# -- codec ----------------------------------------------------------------------------

texts = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
properties_strategy = st.builds(
    PublishProperties,
    payload_format_indicator=st.none() | st.sampled_from([0, 1]),
    message_expiry_interval=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | texts,
    response_topic=st.none() | texts.filter(lambda t: t != "" and "+" not in t and "#" not in t),
    correlation_data=st.none() | st.binary(max_size=40),
    user_properties=st.lists(st.tuples(texts, texts), max_size=3).map(tuple),
)


def collect(parts: list[tuple[str, bytes, int, bool, PublishProperties | None]], keep: bool = True,
            mids: list[int] | None = None) -> codec.Deliver:
    def deliver(topic: str, payload: bytes, qos: int, retain: bool, properties: PublishProperties | None,
                mid: int) -> bool:
        parts.append((topic, payload, qos, retain, properties))
        if mids is not None:
            mids.append(mid)
        return keep

    return deliver


@settings(max_examples=150, deadline=None)
@given(properties=properties_strategy)
def test_properties_round_trip_against_paho(properties: PublishProperties) -> None:
    ours = codec.encode_properties(properties)
    theirs = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    theirs.unpack(ours)  # type: ignore[no-untyped-call]
    expected = None if properties == PublishProperties() else properties
    assert paho_compat.from_paho_properties(theirs) == expected
    packed = paho_compat.to_paho_properties(properties)
    assert packed is not None
    decoded, end = codec.decode_properties(packed.pack(), 0, len(packed.pack()))  # type: ignore[no-untyped-call]
    assert decoded == expected and end == len(packed.pack())  # type: ignore[no-untyped-call]


@settings(max_examples=150, deadline=None)
@given(topic=texts.filter(lambda t: t != "" and "+" not in t and "#" not in t), payload=st.binary(max_size=300),
       qos=st.sampled_from([0, 1]), retain=st.booleans(), mqtt5=st.booleans(),
       properties=st.none() | properties_strategy)
def test_publish_round_trip(topic: str, payload: bytes, qos: int, retain: bool, mqtt5: bool,
                            properties: PublishProperties | None) -> None:
    packet = codec.encode_publish(topic, payload, qos=qos, retain=retain, packet_id=9, mqtt5=mqtt5,
                                  properties=properties)
    parts: list[tuple[str, bytes, int, bool, PublishProperties | None]] = []
    mids: list[int] = []
    acks = bytearray()
    assert codec.take_publishes(packet, 0, mqtt5=mqtt5, topics={}, deliver=collect(parts, mids=mids),
                                acks=acks) == len(packet)
    expected = properties if mqtt5 and properties != PublishProperties() else None
    assert parts == [(topic, payload, qos, retain, expected)]
    assert mids == [9 if qos else 0]  # the packet id (listen -F %m), 0 at QoS 0
    assert acks == (codec.encode_ack(codec.PUBACK, 9) if qos else b"")
    # Cut anywhere: nothing is taken until the packet is whole.
    for cut in range(len(packet)):
        assert codec.take_publishes(packet[:cut], 0, mqtt5=mqtt5, topics={}, deliver=collect([]),
                                    acks=bytearray()) == 0


@given(st.integers(0, codec.MAX_REMAINING_LENGTH))
def test_remaining_length_round_trip(value: int) -> None:
    encoded = codec.encode_remaining_length(value)
    assert codec.decode_remaining_length(encoded, 0) == (value, len(encoded))


def test_a_message_not_kept_is_not_acknowledged() -> None:
    packet = codec.encode_publish("a/b", b"x", qos=1, packet_id=5)
    acks = bytearray()
    assert codec.take_publishes(packet, 0, mqtt5=False, topics={}, deliver=collect([], keep=False), acks=acks)
    assert acks == b""


def test_pubacks_for_our_messages_are_taken_from_the_buffer() -> None:
    """The fast path reads the PUBACKs of the QoS 1 messages it wrote from the buffer (paho
    2.2 would decode each into a ReasonCode and a Properties object): those it claims are
    taken, in order, between PUBLISH packets; the first it does not claim stops the scan
    there, for paho to read."""
    ours = {7, 8}
    taken: list[tuple[int, int]] = []

    def acknowledged(mid: int, reason: int) -> bool:
        if mid in ours:
            taken.append((mid, reason))
            return True
        return False

    publish = codec.encode_publish("device/a/telemetry", b"1", qos=1, packet_id=3)
    stream = codec.encode_ack(codec.PUBACK, 7) + publish + codec.encode_ack(codec.PUBACK, 8)
    stop = len(stream)
    stream += codec.encode_ack(codec.PUBACK, 9) + codec.encode_ack(codec.PUBACK, 7)
    parts: list[tuple[str, bytes, int, bool, PublishProperties | None]] = []
    acks = bytearray()
    assert codec.take_publishes(stream, 0, mqtt5=False, topics={}, deliver=collect(parts), acks=acks,
                                acknowledged=acknowledged) == stop
    assert taken == [(7, 0), (8, 0)] and [p[1] for p in parts] == [b"1"] and acks == codec.encode_ack(codec.PUBACK, 3)
    # Without the callback a PUBACK stops the scan at once (paho reads it).
    assert codec.take_publishes(stream, 0, mqtt5=False, topics={}, deliver=collect([]), acks=bytearray()) == 0


@pytest.mark.parametrize(("packet", "mqtt5", "expected"), [
    (b"\x40\x02\x00\x07", True, (7, 0)),
    (b"\x40\x03\x00\x07\x97", True, (7, 0x97)),  # MQTT 5: refused (quota exceeded)
    (b"\x40\x04\x00\x07\x10\x00", True, (7, 0x10)),  # with an empty property list
    (b"\x40\x09\x00\x07\x87\x05\x1f\x00\x02no", True, (7, 0x87)),  # with a reason string
    (b"\x40\x09\x00\x07\x87\x04\x1f\x00\x02no", True, None),  # property length does not fill it
    (b"\x40\x03\x00\x07\x00", False, None),  # MQTT 3.1.1 allows exactly 2 bytes: paho judges it
    (b"\x40\x01\x07", True, None),  # too short for a packet id
    (b"\x42\x02\x00\x07", True, None),  # reserved flags set
    (b"\x40\x02\x00", False, None),  # not complete yet
])
def test_puback_shapes(packet: bytes, mqtt5: bool, expected: tuple[int, int] | None) -> None:
    """What the scan takes as a PUBACK; anything else it leaves for paho, which reads it
    and reports what is malformed."""
    taken: list[tuple[int, int]] = []
    end = codec.take_publishes(packet, 0, mqtt5=mqtt5, topics={}, deliver=collect([]), acks=bytearray(),
                               acknowledged=lambda mid, reason: taken.append((mid, reason)) is None)
    assert (taken[0] if taken else None) == expected
    assert end == (len(packet) if expected else 0)


VIOLATIONS = {
    "wildcard-topic": (b"\x30\x0a\x00\x08device/+p", "wildcard"),
    "packet-id-zero": (b"\x32\x07\x00\x03a/b\x00\x00", "packet id 0"),
    "bad-utf8-topic": (b"\x30\x05\x00\x02\xff\xfex", "not valid UTF-8"),
    "qos3": (b"\x36\x07\x00\x03a/b\x00\x01", "QoS 3"),
    "bad-remaining-length": (b"\x30\xff\xff\xff\xff\x7f", "remaining length"),
    "bad-remaining-length-other-type": (b"\x90\xff\xff\xff\xff\x7f", "remaining length"),
}


@pytest.mark.parametrize("case", sorted(VIOLATIONS))
@pytest.mark.parametrize("mqtt5", [False, True])
def test_codec_rejects_what_a_broker_must_not_send(case: str, mqtt5: bool) -> None:
    packet, words = VIOLATIONS[case]
    good = codec.encode_publish("device/h/telemetry", b"{}", mqtt5=mqtt5)
    parts: list[tuple[str, bytes, int, bool, PublishProperties | None]] = []
    with pytest.raises(ProtocolError, match=words):
        codec.take_publishes(good + packet, 0, mqtt5=mqtt5, topics={}, deliver=collect(parts), acks=bytearray())
    assert [p[0] for p in parts] == ["device/h/telemetry"]  # what came before is delivered


def test_buffered_socket_takes_bytearray_from_a_websocket_wrapper() -> None:
    """paho 2.0 and 2.1's websocket wrapper returns bytearray from recv: a slice of it as the
    topic cache key raised TypeError, which the old network thread swallowed (ws:// and
    wss:// received nothing, silently)."""

    class BytearraySocket:
        def __init__(self, data: bytes) -> None:
            self.data = bytearray(data)

        def recv(self, size: int) -> bytearray:
            chunk, self.data = self.data[:size], self.data[size:]
            if not chunk:
                raise BlockingIOError
            return chunk

    stream = codec.encode_publish("device/ws/telemetry", b"1", qos=1, packet_id=3) * 2
    buffered = BufferedSocket(BytearraySocket(stream))
    parts: list[tuple[str, bytes, int, bool, PublishProperties | None]] = []
    buffered.cork()
    buffered.fill()
    assert buffered.take_publishes(mqtt5=False, deliver=collect(parts))
    assert [p[:2] for p in parts] == [("device/ws/telemetry", b"1")] * 2


# -- the one seam -------------------------------------------------------------------------


def paho_private_names() -> set[str]:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    names = set(vars(client))
    wrapper = vars(paho).get("_WebsocketWrapper") or vars(paho).get("WebsocketWrapper")
    for cls in (paho.Client, paho.MQTTMessageInfo, paho.MQTTMessage, wrapper):
        names |= set(dir(cls)) | set(getattr(cls, "__slots__", ()))
    names |= {"_socket", "_last_msg_in", "_last_bytes_received"}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_paho_private_names_only_in_paho_compat() -> None:
    private = paho_private_names()
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py")):
        if path.name == "paho_compat.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            name = None
            if isinstance(node, ast.Attribute) and node.attr in private:
                owner = node.value
                if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                    name = node.attr
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in private:
                name = node.value
            if name is not None:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert offenders == []


def test_probe_accepts_this_paho_and_refuses_an_unknown_one(monkeypatch: pytest.MonkeyPatch) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2)
    assert paho_compat.probe(client) is None
    monkeypatch.setattr(paho_compat, "_paho_version", "3.0.0")
    assert "not a version this tool was tested with" in str(paho_compat.probe(client))


def test_unknown_paho_falls_back_with_one_notice(broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paho_compat, "_paho_version", "3.0.0")
    events: list[tuple[str, str]] = []
    got: list[Message] = []
    with Session(settings_for(broker.tcp_url), on_event=lambda k, t: events.append((k, t)),
                 on_message=got.append, public_path=False) as session:
        assert not session.fast_path
        session.subscribe(["device/fallback/telemetry"], qos=1)
        publish(broker.tcp_port, [("device/fallback/telemetry", b"1")])
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [m.payload for m in got] == [b"1"]
    notices = [t for k, t in events if k == "notice"]
    assert len(notices) == 1 and "paho's public API" in notices[0] and "3.0.0" in notices[0]


# -- failures reach the caller -------------------------------------------------------------


def test_an_error_on_the_network_thread_reaches_the_caller(broker: Mosquitto,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Connection, *args: object) -> bool:
        raise TypeError("unhashable type: 'bytearray'")

    monkeypatch.setattr(Connection, "_deliver", broken)  # the delivery step both paths share
    with Session(settings_for(broker.tcp_url)) as session:
        session.subscribe(["device/broken/telemetry"], qos=1)
        publish(broker.tcp_port, [("device/broken/telemetry", b"1")])
        deadline = time.monotonic() + 10
        with pytest.raises(NetworkFailure, match="TypeError: unhashable"):
            while time.monotonic() < deadline:
                session.check()
                time.sleep(0.02)


def test_an_unexpected_error_is_one_line_and_exit_70(broker: Mosquitto) -> None:
    code = (
        "import sys; from tesaiot_cli.mqtt.loops import Connection\n"
        "def boom(self, *args): raise TypeError('unhashable type: bytearray')\n"
        "Connection._deliver = boom\n"
        "from tesaiot_cli.cli import main; sys.argv[0] = 'tesaiot'; main()\n"
    )
    process = subprocess.Popen([sys.executable, "-c", code, "listen", "-b", broker.tcp_url, "-t", "device/boom/#",
                                "--timeout", "20"], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # "listening on ...": subscribed
        publish(broker.tcp_port, [("device/boom/telemetry", b"1")])
        _, rest = process.communicate(timeout=30)
        stderr = first + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 70, stderr
    errors = [line for line in stderr.splitlines() if "internal error" in line]
    assert len(errors) == 1 and "TypeError" in errors[0] and "Traceback" not in stderr


# -- a hostile broker ----------------------------------------------------------------------


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[tuple[int, str]]:
    case = request.param
    port = free_ports(1)[0]
    process = subprocess.Popen([sys.executable, str(HOSTILE), "--port", str(port), "--case", case,
                                "--lifetime", "60"])
    try:
        wait_for_port(port)
        yield port, case
    finally:
        process.terminate()
        process.wait(10)


PHRASES = {"wildcard-topic": "wildcard", "packet-id-zero": "packet id 0", "bad-utf8-topic": "not valid UTF-8",
           "qos3": "QoS 3", "bad-remaining-length": "remaining length"}


@pytest.mark.parametrize("version", ["3.1.1", "5"])
@pytest.mark.parametrize("hostile", sorted(PHRASES), indirect=True)
def test_a_protocol_violation_closes_the_connection_with_one_line(hostile: tuple[int, str], version: str) -> None:
    port, case = hostile
    result = run_cli("listen", "-b", f"mqtt://127.0.0.1:{port}", "-t", "device/#", "--json", "--count", "2",
                     "--timeout", "20", "--mqtt-version", version, timeout=40)
    # The good messages are shown, and the run still ends non-zero with the count: what the
    # broken packets carried was never shown.
    assert result.returncode == 3, result.stderr
    assert re.search(r"tesaiot: the broker at mqtt://127\.0\.0\.1:\d+ broke the MQTT protocol \d+ times?: each time "
                     r"the connection was closed \(the lines above say why\) and what that packet carried was not "
                     r"shown", result.stderr), result.stderr
    shown = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(m["topic"], m["payload"]) for m in shown] == [("device/h/telemetry", {"ok": 1})] * 2
    closed = [line for line in result.stderr.splitlines() if "closed the connection" in line
              or "disconnected from" in line]
    assert closed, result.stderr
    if os.environ.get("TESAIOT_PAHO_PATH") != "public" or case in ("wildcard-topic", "packet-id-zero",
                                                                   "bad-utf8-topic"):
        assert PHRASES[case] in closed[0], result.stderr
    assert "reconnected" in result.stderr


@pytest.mark.parametrize("hostile", ["wildcard-topic"], indirect=True)
def test_record_from_a_broker_that_breaks_the_protocol_keeps_the_good_and_exits_3(hostile: tuple[int, str],
                                                                                    tmp_path: Path) -> None:
    """A broker that breaks the protocol on every connection: record keeps each good message,
    says each violation, and ends with the count and exit 3 (it used to end with exit 0)."""
    port, _ = hostile
    path = tmp_path / "rec.jsonl"
    result = run_cli("record", str(path), "-b", f"mqtt://127.0.0.1:{port}", "-t", "device/#", "--count", "2",
                     timeout=60)
    assert result.returncode == 3, result.stderr
    assert "broke the MQTT protocol" in result.stderr and "was not recorded" in result.stderr
    assert "wildcard" in result.stderr and "Traceback" not in result.stderr
    with open_reader(path) as reader:
        assert [m.topic for m in reader] == ["device/h/telemetry"] * 2


def test_hostile_broker_serves_clients_one_after_another_and_exits_on_sigterm() -> None:
    port = free_ports(1)[0]
    process = subprocess.Popen([sys.executable, str(HOSTILE), "--port", str(port), "--case", "qos3"])
    try:
        wait_for_port(port)
        for _ in range(2):
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00")
                assert sock.recv(4) == b"\x20\x02\x00\x00"
    finally:
        process.terminate()
        assert process.wait(10) == 0


def test_no_broad_except_in_the_mqtt_layer_carries_on() -> None:
    """Every `except Exception` / `except BaseException` in tesaiot_cli/mqtt/ re-raises or
    hands the error to the caller's thread (Connection.fail)."""
    offenders = []
    for path in sorted((PACKAGE / "mqtt").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ExceptHandler) or not isinstance(node.type, ast.Name):
                continue
            if node.type.id not in ("Exception", "BaseException"):
                continue
            body = [n for statement in node.body for n in ast.walk(statement)]
            hands_over = any(isinstance(n, ast.Raise) for n in body) or any(
                isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "fail" for n in body)
            if not hands_over:
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
