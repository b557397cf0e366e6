"""The session layer against a real mosquitto: schemes, auth, TLS, reconnect, flow control."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import AuthError, ConfigError, ConnectError
from tesaiot_cli.message import Message, validate_topic_name
from tesaiot_cli.mqtt.flow import SessionStats
from tesaiot_cli.mqtt.loops import Connection
from tesaiot_cli.mqtt.session import HOLD_QUEUED, Session
from tesaiot_cli.mqtt.transport import BufferedSocket as _BufferedSocket
from tests.support.broker import PASSWORD, TOKEN, USER, Mosquitto
from tests.support.clients import Collector, publish, publish_many
from tests.support.settings import settings_for


def scheme_settings(broker: Mosquitto, scheme: str) -> ConnectionSettings:
    ca = str(broker.pki.ca_cert)
    return {
        "mqtt": lambda: settings_for(broker.tcp_url),
        "mqtt+password": lambda: settings_for(broker.auth_url, username=USER, password=PASSWORD),
        "ws": lambda: settings_for(broker.ws_url),
        "mqtts": lambda: settings_for(broker.tls_url, ca_file=ca),
        "mqtts+client-cert": lambda: settings_for(broker.mtls_url, ca_file=ca, cert_file=str(broker.pki.client_cert),
                                                  key_file=str(broker.pki.client_key)),
        "wss+token": lambda: settings_for(broker.wss_url, ca_file=ca, token=TOKEN),
        "wss+password": lambda: settings_for(broker.wss_url, ca_file=ca, username=USER, password=PASSWORD),
        "mqtt5": lambda: settings_for(broker.tcp_url, mqtt_version="5"),
    }[scheme]()


@pytest.mark.parametrize("scheme", ["mqtt", "mqtt+password", "ws", "mqtts", "mqtts+client-cert", "wss+token", "mqtt5"])
def test_every_scheme_receives(broker: Mosquitto, scheme: str) -> None:
    received: list[Message] = []
    got = threading.Event()

    def sink(message: Message) -> None:
        received.append(message)
        got.set()

    topic = f"device/{scheme.replace('+', '-')}/telemetry/DPS368"
    with Session(scheme_settings(broker, scheme)) as session:
        session.subscribe(["device/+/telemetry/#"], qos=1, on_message=sink)
        publish(broker.auth_port, [(topic, b'{"x": 1}')], username=USER, password=PASSWORD)
        assert got.wait(10)
    assert received[0].topic == topic and received[0].payload == b'{"x": 1}' and received[0].qos == 1
    assert received[0].time_ns > 1_700_000_000 * 10**9


@pytest.mark.parametrize("scheme", ["mqtt", "ws", "mqtts", "mqtt5"])
def test_every_scheme_publishes(broker: Mosquitto, scheme: str) -> None:
    topic = f"device/pub-{scheme}/telemetry"
    with Collector(broker.tcp_port, topic) as collector, Session(scheme_settings(broker, scheme)) as session:
        assert session.publish(Message(topic, b"\x00\x01binary", qos=1))
        assert session.flush(10)
        messages = collector.wait_for(1)
    assert [m.payload for m in messages] == [b"\x00\x01binary"]
    assert session.stats.completed == 1 and session.stats.dropped == 0


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_wrong_password_is_an_auth_error(broker: Mosquitto, version: str) -> None:
    with pytest.raises(AuthError) as info:
        Session(settings_for(broker.auth_url, username=USER, password="wrong", mqtt_version=version)).connect()
    assert info.value.reason_code in (4, 5, 134, 135)
    assert "check the username and password" in str(info.value)


def test_unknown_token_gets_the_token_hint_and_stays_secret(broker: Mosquitto) -> None:
    bad = TOKEN[:-6] + "nope00"
    with pytest.raises(AuthError) as info:
        Session(settings_for(broker.auth_url, token=bad)).connect()
    assert "expired, revoked or wrong" in str(info.value)
    assert bad not in str(info.value) and TOKEN not in str(info.value)


def test_tls_is_verified_by_default(broker: Mosquitto) -> None:
    with pytest.raises(ConnectError, match="certificate verification failed"):
        Session(settings_for(broker.tls_url)).connect()
    with pytest.raises(ConnectError, match="certificate verification failed"):
        Session(settings_for(broker.tls_url, ca_file=str(broker.pki.other_ca_cert))).connect()


def test_tls_hostname_is_checked(broker: Mosquitto) -> None:
    # The server certificate names localhost and 127.0.0.1; 127.0.0.2 is neither.
    url = broker.tls_url.replace("localhost", "127.0.0.2")
    with pytest.raises(ConnectError):
        Session(settings_for(url, ca_file=str(broker.pki.ca_cert))).connect()


def test_insecure_skips_verification(broker: Mosquitto) -> None:
    with Session(settings_for(broker.tls_url, insecure=True)) as session:
        assert session.connected


def test_client_certificate_required(broker: Mosquitto) -> None:
    with pytest.raises(ConnectError):
        # A client without a certificate gets no answer: the CONNACK wait ends it (1 s here).
        Session(settings_for(broker.mtls_url, ca_file=str(broker.pki.ca_cert), connect_timeout=1)).connect()


def test_connection_refused_and_dns() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectError, match="connection refused"):
        Session(settings_for(f"mqtt://127.0.0.1:{port}")).connect()
    with pytest.raises(ConnectError, match="cannot resolve"):
        Session(settings_for("mqtt://no-such-host.invalid")).connect()


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback TCP server that accepts and never answers (a broker that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    yield server.getsockname()[1]
    server.close()


def test_connect_timeout(silent_server: int) -> None:
    started = time.monotonic()
    with pytest.raises(ConnectError, match="no answer"):
        Session(settings_for(f"mqtt://127.0.0.1:{silent_server}", connect_timeout=1)).connect()
    assert time.monotonic() - started < 8  # bounded, not a performance claim


def test_plain_client_on_tls_port_fails_clearly(broker: Mosquitto) -> None:
    with pytest.raises(ConnectError):
        Session(settings_for(f"mqtt://127.0.0.1:{broker.tls_port}", connect_timeout=2)).connect()


def test_tcp_nodelay_is_set(broker: Mosquitto) -> None:
    with Session(settings_for(broker.tcp_url)) as session:
        sock = session._net.client.socket()  # noqa: SLF001 - the option is the point of the test
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_reconnect_resubscribes_after_broker_restart(own_broker: Mosquitto) -> None:
    events: list[tuple[str, str]] = []
    received: list[Message] = []
    with Session(settings_for(own_broker.tcp_url), on_event=lambda k, t: events.append((k, t))) as session:
        session.subscribe(["device/+/telemetry"], qos=1, on_message=received.append)
        own_broker.restart(down_seconds=0.5)
        deadline = time.monotonic() + 20
        while not session.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert session.connected
        time.sleep(0.3)  # let the re-subscription land
        publish(own_broker.tcp_port, [("device/after/telemetry", b"again")])
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
    kinds = [kind for kind, _ in events]
    assert "disconnected" in kinds and "reconnecting" in kinds and "reconnected" in kinds
    assert [m.payload for m in received] == [b"again"]
    assert session.stats.reconnects == 1


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_held_qos1_messages_in_flight_at_a_broker_restart_are_sent_again(own_broker: Mosquitto,
                                                                          version: str) -> None:
    """The fast path keeps the QoS 1 packets it writes until their PUBACK: those in flight
    when the broker goes away are sent again (DUP) after the reconnect, and every one of the
    messages is acknowledged in the end; none is counted twice or lost from the count."""
    total, restarted = 30_000, threading.Event()

    def restart() -> None:
        time.sleep(0.4)
        own_broker.restart(down_seconds=1.0)
        restarted.set()

    events: list[tuple[str, str]] = []
    settings = settings_for(own_broker.tcp_url, mqtt_version=version)
    with Session(settings, window=500, threaded=False, on_event=lambda k, t: events.append((k, t))) as session:
        thread = threading.Thread(target=restart, daemon=True)
        thread.start()
        for i in range(total):
            # Bounded: with a message never acknowledged the window would stay full for ever.
            assert session.publish(Message("device/restart/telemetry", b"%d" % i, qos=1), hold=True, timeout=20), i
            if i % 1000 == 999:
                session.wait(0.01)  # paced a little, so the restart comes in the middle
        thread.join(30)
        assert restarted.is_set()
        assert session.flush(30), session.stats
    stats = session.stats
    assert (stats.published, stats.completed, stats.failed, stats.dropped) == (total, total, 0, 0), stats
    assert stats.reconnects == 1 and "reconnected" in [kind for kind, _ in events]


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "driven"])
def test_flow_control_never_rejects(broker: Mosquitto, threaded: bool) -> None:
    """20k QoS 1 publishes in a tight loop: every one acknowledged, none rejected."""
    total = 20_000
    topic = f"bench/flow-{threaded}"
    with Collector(broker.tcp_port, topic) as collector, \
            Session(settings_for(broker.tcp_url), window=200, threaded=threaded) as session:
        for i in range(total):
            assert session.publish(Message(topic, i.to_bytes(4, "big"), qos=1))
            assert session.in_flight() <= 200
        assert session.flush(30)
        messages = collector.wait_for(total, timeout=30)
    stats = session.stats
    assert (stats.published, stats.completed, stats.failed, stats.dropped) == (total, total, 0, 0)
    assert sorted(int.from_bytes(m.payload, "big") for m in messages) == list(range(total))


def wait_until(session: Session, condition: Callable[[], bool], timeout: float = 20) -> None:
    """Let time pass through the session (a driven session serves its connection meanwhile)."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        session.wait(0.02)
    assert condition()


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "driven"])
def test_publish_while_broker_down_is_queued_then_delivered(own_broker: Mosquitto, threaded: bool) -> None:
    topic = "device/outage/telemetry"
    events: list[str] = []
    collector = Collector(own_broker.tcp_port, topic, client_id="outage-collector", clean_session=False)
    with collector:
        pass  # register the persistent session, then go away
    with Session(settings_for(own_broker.tcp_url), window=100, threaded=threaded,
                 on_event=lambda kind, text: events.append(kind)) as session:
        for i in range(10):
            assert session.publish(Message(topic, b"%d" % i, qos=1))
        own_broker.stop()
        wait_until(session, lambda: not session.connected)
        for i in range(10, 30):
            assert session.publish(Message(topic, b"%d" % i, qos=1), timeout=0.1)
        own_broker.start()
        wait_until(session, lambda: session.connected)
        assert session.flush(30)
    assert session.stats.completed == 30 and session.stats.dropped == 0
    assert {"disconnected", "reconnecting", "reconnected"} <= set(events)
    with Collector(own_broker.tcp_port, topic, client_id="outage-collector", clean_session=False) as again:
        messages = again.wait_for(30)
    assert sorted(set(int(m.payload) for m in messages)) == list(range(30))


@pytest.mark.parametrize("threaded", [True, False], ids=["threaded", "driven"])
def test_full_window_drops_are_counted_not_silent(own_broker: Mosquitto, threaded: bool) -> None:
    with Session(settings_for(own_broker.tcp_url), window=5, threaded=threaded) as session:
        own_broker.stop()
        wait_until(session, lambda: not session.connected)
        results = [session.publish(Message("t/x", b"x", qos=1), timeout=0.01) for _ in range(8)]
        own_broker.start()
        wait_until(session, lambda: session.connected)
        session.flush(30)
    assert results.count(False) == 3
    assert session.stats.dropped == 3 and session.stats.completed == 5


def test_driven_session_keeps_the_connection_alive(broker: Mosquitto) -> None:
    """A driven session that only waits still answers keepalives (2 s keepalive, 4 s idle:
    the broker drops a client silent for 1.5 keepalives; below the 5 s a user may set, so
    set on the settings object)."""
    events: list[str] = []
    with Session(replace(settings_for(broker.tcp_url), keepalive=2), threaded=False,
                 on_event=lambda kind, text: events.append(kind)) as session:
        session.wait(4)
        assert session.connected
        assert session.publish(Message("t/alive", b"still here", qos=1))
        assert session.flush(10)
    assert "disconnected" not in events and session.stats.completed == 1


def test_driven_qos0_lost_in_an_outage_is_counted(own_broker: Mosquitto) -> None:
    with Session(settings_for(own_broker.tcp_url), threaded=False) as session:
        own_broker.stop()
        wait_until(session, lambda: not session.connected)
        for _ in range(5):
            session.publish(Message("t/q0", b"x", qos=0), timeout=0.01)
        own_broker.start()
        wait_until(session, lambda: session.connected)
    assert session.stats.dropped == 5 and session.stats.unacknowledged == 0


def test_settings_repr_has_no_secret(broker: Mosquitto) -> None:
    settings = settings_for(broker.auth_url, username=USER, password=PASSWORD)
    assert PASSWORD not in repr(settings) and PASSWORD not in settings.describe()
    token_settings = replace(settings, token=settings_for(broker.wss_url, token=TOKEN).token)
    assert TOKEN not in repr(token_settings) and TOKEN not in token_settings.describe()


# -- publish(hold=True): QoS 0 packets written in batches ---------------------------------


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("scheme", ["mqtt", "ws", "mqtts", "wss+password", "mqtt5"])
def test_held_packets_arrive_exact_and_in_order(broker: Mosquitto, scheme: str, qos: int) -> None:
    """Many batches' worth of held packets, with payload sizes on both sides of each
    remaining-length boundary (127/128, 16383/16384) and one larger than a whole batch."""
    topic = f"device/held-{scheme.replace('+', '-')}-{qos}/telemetry"
    sizes = [0, 1, 120, 121, 122, 125, 16_370, 16_380, 16_381, 200_000] + [160] * 3000
    payloads = [i.to_bytes(4, "big") + bytes([i % 251]) * max(size - 4, 0) for i, size in enumerate(sizes)]
    with Collector(broker.tcp_port, topic) as collector, \
            Session(scheme_settings(broker, scheme), threaded=False) as session:
        for payload in payloads:
            assert session.publish(Message(topic, payload, qos=qos, retain=False), hold=True)
        # The tail is still held: nothing waits on the caller (paho's public path holds nothing).
        assert session.in_flight() > 0 or not session.fast_path
        assert session.flush(20)
        messages = collector.wait_for(len(payloads), timeout=30)
    assert [m.payload for m in messages] == payloads
    assert all(m.topic == topic and m.qos == qos and not m.retain for m in messages)
    stats = session.stats
    assert (stats.published, stats.completed, stats.dropped, stats.failed) == (len(payloads), len(payloads), 0, 0)


def test_held_packets_keep_their_order_with_other_publishes(broker: Mosquitto) -> None:
    """Held QoS 0, plain QoS 0 and QoS 1 interleaved reach a subscriber in publish order."""
    topic = "device/held-mixed/telemetry"
    plan = [(i, 1 if i % 7 == 0 else 0, i % 5 != 0) for i in range(2000)]  # (number, qos, hold)
    with Collector(broker.tcp_port, topic) as collector, \
            Session(settings_for(broker.tcp_url), threaded=False) as session:
        for number, qos, hold in plan:
            assert session.publish(Message(topic, b"%d" % number, qos=qos), hold=hold)
        assert session.flush(20)
        messages = collector.wait_for(len(plan), timeout=20)
    assert [int(m.payload) for m in messages] == [number for number, _, _ in plan]
    assert session.stats.completed == len(plan)


def test_held_retain_flag_is_kept(broker: Mosquitto) -> None:
    topic = "device/held-retained/telemetry"
    with Session(settings_for(broker.tcp_url), threaded=False) as session:
        assert session.publish(Message(topic, b"kept", qos=0, retain=True), hold=True)
        assert session.flush(10)
    with Collector(broker.tcp_port, topic) as collector:
        messages = collector.wait_for(1)
    assert [(m.payload, m.retain) for m in messages] == [(b"kept", True)]
    publish(broker.tcp_port, [(topic, b"")], retain=True)  # clear it for other tests


def test_held_publish_checks_the_topic_like_paho(broker: Mosquitto) -> None:
    with Session(settings_for(broker.tcp_url), threaded=False) as session:
        for bad in ["", "device/+/telemetry", "device/#", "x" * 65536]:
            with pytest.raises(ConfigError, match="cannot publish to"):
                session.publish(Message(bad, b"x", qos=0), hold=True)
    assert session.stats.published == 0


def test_held_publish_refuses_a_nul_in_the_topic_as_the_cli_does(broker: Mosquitto) -> None:
    """The session's own PUBLISH packets and the CLI's topic check agree: MQTT strings must
    not hold U+0000 (a broker closes the connection on one)."""
    with pytest.raises(ConfigError, match="NUL"):
        validate_topic_name("device/a\x00b/telemetry")
    with Session(settings_for(broker.tcp_url), threaded=False) as session:
        with pytest.raises(ConfigError, match="cannot publish to .*NUL"):
            session.publish(Message("device/a\x00b/telemetry", b"x", qos=0), hold=True)
    assert session.stats.published == 0


def test_held_qos0_lost_in_an_outage_is_counted(own_broker: Mosquitto) -> None:
    """Held packets made while the broker is down are counted dropped, never silently lost,
    and publishing goes on after the reconnect."""
    topic = "device/held-outage/telemetry"
    with Session(settings_for(own_broker.tcp_url), threaded=False) as session:
        for _ in range(100):
            session.publish(Message(topic, b"before", qos=0), hold=True)
        own_broker.stop()
        wait_until(session, lambda: not session.connected)
        for _ in range(50):
            session.publish(Message(topic, b"during", qos=0), hold=True)
        session.wait(0.05)
        own_broker.start()
        wait_until(session, lambda: session.connected)
        with Collector(own_broker.tcp_port, topic) as collector:
            for _ in range(10):
                session.publish(Message(topic, b"after", qos=0), hold=True)
            assert session.flush(10)
            messages = collector.wait_for(10)
    stats = session.stats
    assert [m.payload for m in messages] == [b"after"] * 10
    assert stats.published == 160 and stats.unacknowledged == 0
    # "before" was written before the outage or lost in it; "during" is lost and counted.
    assert stats.completed + stats.dropped == 160 and stats.dropped >= 50 and stats.completed >= 10


def test_held_publishing_waits_for_a_stalled_broker(own_broker: Mosquitto) -> None:
    """With the broker frozen (SIGSTOP), flat-out held publishing blocks once the socket is
    full instead of piling packets up in memory, and resumes when the broker does."""
    assert own_broker.process is not None
    pid = own_broker.process.pid
    total, payload = 30_000, b"x" * 1000  # 30 MB: far more than loopback socket buffers take
    done = threading.Event()
    peak = 0
    with Session(settings_for(own_broker.tcp_url), threaded=False) as session:
        fast = session._net.fast if session._net is not None else None  # noqa: SLF001 - watches paho's queue

        def flat_out() -> None:
            for _ in range(total):
                session.publish(Message("device/stalled/telemetry", payload, qos=0), hold=True)
            done.set()

        os.kill(pid, signal.SIGSTOP)
        try:
            thread = threading.Thread(target=flat_out, daemon=True)
            thread.start()
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                # paho's public path: the window bounds it (and the caller blocks, as asserted below).
                peak = max(peak, fast.unwritten_packets() if fast is not None else 1)
                time.sleep(0.005)
            assert not done.is_set()
        finally:
            os.kill(pid, signal.SIGCONT)
        thread.join(60)
        assert done.is_set()
        assert session.flush(30)
    assert 1 <= peak <= HOLD_QUEUED + 1
    assert session.stats.completed == total and session.stats.dropped == 0


def test_subscribe_waits_while_a_persistent_session_backlog_arrives(broker: Mosquitto) -> None:
    """mosquitto sends a persistent session's queued messages before the SUBACK of a new
    SUBSCRIBE: while they keep arriving the wait for the SUBACK goes on, past the connect
    timeout (here 0.5 s), instead of failing with "no answer"."""
    name, topic, total = f"backlog-{time.monotonic_ns()}", "device/backlog/telemetry", 100_000
    settings = settings_for(broker.tcp_url, session=name, connect_timeout=1.5)
    with Session(settings) as session:
        session.subscribe([topic], qos=1)
    publish_many(broker.tcp_port, topic, (b"%d" % i for i in range(total)))  # queued for the session: all acknowledged
    received: list[bytes] = []
    with Session(settings, on_message=lambda m: received.append(m.payload)) as session:
        time.sleep(0.3)  # the broker is sending the backlog
        session.subscribe(["device/other/telemetry"], qos=1)
        arrived_before_suback = len(received)
        deadline = time.monotonic() + 30
        while len(received) < total and time.monotonic() < deadline:
            time.sleep(0.02)
    assert received == [b"%d" % i for i in range(total)]
    assert arrived_before_suback > 0
    # Every message was acknowledged (PUBACKs batched per read): nothing comes back.
    again: list[bytes] = []
    with Session(settings, on_message=lambda m: again.append(m.payload)) as session:
        session.subscribe([topic], qos=1)
        time.sleep(1.0)
    assert again == []


def test_stopping_never_waits_forever_on_a_network_loop_that_did_not_stop(broker: Mosquitto,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A network loop that keeps the I/O lock (stuck inside paho) must not hang the stop
    after it: the connection is closed without a DISCONNECT, and that is said."""
    monkeypatch.setattr("tesaiot_cli.mqtt.loops.STOP_WAIT_S", 0.2)
    events: list[tuple[str, str]] = []
    session = Session(settings_for(broker.tcp_url), on_event=lambda k, t: events.append((k, t)))
    session.connect()
    net = session._net  # noqa: SLF001 - the lock the network loop holds is the point of the test
    assert net is not None and net.client is not None
    sock = net.client.socket()
    net.io.acquire()  # as a network loop stuck inside paho holds it
    try:
        session.close()
    finally:
        net.io.release()
    assert ("warning", "the network loop did not stop within 0.4 s: the connection was closed without a "
                       "DISCONNECT") in events
    assert sock.fileno() == -1


def test_the_network_thread_hands_the_io_lock_to_a_waiting_caller() -> None:
    """A lock is not fair: a network thread that takes it again the moment it lets go (as
    it does while a backlog flows) kept a caller waiting 1.3 s for it on paho's public path,
    and subscribe() then timed out. The network thread stands back for a waiting caller:
    each of 50 takes by the caller waits for at most one turn of the network thread."""
    connection = Connection(settings_for("mqtt://127.0.0.1:1"), SessionStats(), on_event=None,
                            interrupt=threading.Event(), threaded=True, on_message=None,
                            on_publish_done=lambda mid, rc, why: None)
    turns = 0
    stop = threading.Event()

    def network() -> None:  # the shape of _network_main's loop while data flows
        nonlocal turns
        while not stop.is_set():
            connection.handoff.stand_back()
            with connection.io:
                turns += 1
                deadline = time.perf_counter() + 0.0005
                while time.perf_counter() < deadline:  # a turn's work, holding the lock
                    pass

    thread = threading.Thread(target=network, daemon=True)
    thread.start()
    try:
        waited: list[int] = []
        for _ in range(50):
            before = turns
            with connection.handoff.for_caller():
                waited.append(turns - before)
            time.sleep(0.001)
    finally:
        stop.set()
        thread.join(5)
    assert max(waited) <= 1, waited


def test_buffered_socket_keeps_order_when_the_socket_is_full() -> None:
    """Corked writes (the PUBACKs of a batch) go out in one send; what a full socket does
    not take stays buffered, later writes are refused until it has drained, and nothing
    is lost or reordered."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        buffered = _BufferedSocket(ours)
        # ~20 MB; each starts as a PUBACK does (a PUBLISH is never buffered: the next test)
        chunks = [bytes([0x40 | i % 16]) + bytes([i % 256]) * 999 + i.to_bytes(4, "big") for i in range(20_000)]
        buffered.cork()
        for chunk in chunks[:10_000]:
            assert buffered.send(chunk) == len(chunk)
        buffered.uncork()
        assert buffered.has_output()  # the peer reads nothing yet: the socket is full
        with pytest.raises(BlockingIOError):  # refused, as a full socket refuses: paho retries
            buffered.send(chunks[10_000])
        received = bytearray()
        peer.settimeout(5)
        for chunk in chunks[10_000:]:  # the way paho retries a refused packet
            while True:
                try:
                    sent = buffered.send(chunk)
                    break
                except BlockingIOError:
                    received += peer.recv(1 << 20)
            if sent < len(chunk):
                chunk = chunk[sent:]
                while chunk:
                    try:
                        chunk = chunk[buffered.send(chunk):]
                    except BlockingIOError:
                        received += peer.recv(1 << 20)
        expected = b"".join(chunks)
        while len(received) < len(expected):
            received += peer.recv(1 << 20)
            buffered.flush()
        assert received == expected and not buffered.has_output()
    finally:
        ours.close()
        peer.close()


def test_buffered_socket_never_buffers_a_message() -> None:
    """paho counts a QoS 0 message delivered once its write returns: a PUBLISH (or the rest
    of a packet the socket took part of) written while corked is refused, as a full socket
    refuses it, so its bytes are in the kernel when paho counts it, never in a buffer a
    close could drop. Acknowledgements are still collected, and go out with uncork."""
    ours, peer = socket.socketpair()
    ours.setblocking(False)
    try:
        buffered = _BufferedSocket(ours)
        puback, publish_packet = b"\x40\x02\x00\x07", b"\x30\x05\x00\x01tab"
        buffered.cork()
        assert buffered.send(puback) == len(puback)
        with pytest.raises(BlockingIOError):
            buffered.send(publish_packet)
        buffered.uncork()
        assert buffered.send(publish_packet) == len(publish_packet)  # after uncork: to the kernel
        peer.settimeout(5)
        assert peer.recv(100) == puback + publish_packet
        big = b"\x30" + b"x" * (64 << 20)  # more than the socket takes: part of it is sent
        sent = buffered.send(big)
        assert 0 < sent < len(big)
        buffered.cork()
        with pytest.raises(BlockingIOError):  # the rest of it, whatever its first byte
            buffered.send(b"\x40" + big[sent + 1:])
        buffered.uncork()
        seen = bytearray()
        rest = big[sent:]
        while rest:  # as paho writes the rest
            try:
                rest = rest[buffered.send(rest):]
            except BlockingIOError:
                seen += peer.recv(1 << 20)
        buffered.cork()  # the packet is whole in the kernel: acknowledgements are collected again
        assert buffered.send(puback) == len(puback)
        buffered.uncork()
        while len(seen) < len(big) + len(puback):
            seen += peer.recv(1 << 20)
            buffered.flush()
        assert seen == big + puback
    finally:
        ours.close()
        peer.close()


def test_buffered_socket_serves_small_reads_from_one_recv() -> None:
    ours, peer = socket.socketpair()
    try:
        buffered = _BufferedSocket(ours)
        peer.sendall(b"\x30\x05ab" + b"x" * 3)
        assert buffered.recv(1) == b"\x30" and buffered.pending() == 6
        assert buffered.recv(1) == b"\x05" and buffered.recv(100) == b"abxxx" and buffered.pending() == 0
        peer.close()
        assert buffered.recv(1) == b""  # end of stream, as from the socket itself
    finally:
        ours.close()


def mqtt_publish_packet(topic: bytes, payload: bytes, *, qos: int = 0, retain: bool = False, mid: int = 1) -> bytes:
    """An MQTT 3.1.1 PUBLISH packet, built by hand (the test's own encoder)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"") + payload
    length, size = bytearray(), len(body)
    while True:
        size, digit = size >> 7, size & 0x7F
        length.append(digit | (0x80 if size else 0))
        if not size:
            break
    return bytes([0x30 | qos << 1 | int(retain)]) + bytes(length) + body


def test_take_publishes_parses_what_it_can_and_leaves_the_rest() -> None:
    packets = [
        mqtt_publish_packet(b"a/b", b"zero", qos=0),
        mqtt_publish_packet(b"a/c", b"one" * 100, qos=1, mid=258, retain=True),
        mqtt_publish_packet("d/é".encode(), b"x" * 20_000, qos=1, mid=7),  # 3-byte remaining length
        mqtt_publish_packet(b"e", b"", qos=0),
        b"\xd0\x00",  # PINGRESP: paho's
        mqtt_publish_packet(b"after/ping", b"p"),
    ]
    stream = b"".join(packets)
    ours, peer = socket.socketpair()
    try:
        buffered = _BufferedSocket(ours)
        got: list[tuple[str, bytes, int, bool]] = []

        def keep(topic: str, payload: bytes, qos: int, retain: bool, properties: object, mid: int) -> bool:
            got.append((topic, payload, qos, retain))
            return True

        buffered.cork()
        position = 0
        for cut in (5, 300, 9000, len(stream)):  # the stream arrives in pieces, cut mid-packet
            peer.sendall(stream[position:cut])
            position = cut
            buffered.fill()
            buffered.take_publishes(mqtt5=False, deliver=keep)
        assert got == [("a/b", b"zero", 0, False), ("a/c", b"one" * 100, 1, True), ("d/é", b"x" * 20_000, 1, False),
                       ("e", b"", 0, False)]
        assert buffered.recv(1) == b"\xd0" and buffered.recv(1) == b"\x00"  # the PINGRESP is left to paho
        assert buffered.take_publishes(mqtt5=False, deliver=keep) and got[-1][0] == "after/ping"
        buffered.uncork()
        peer.settimeout(5)
        assert peer.recv(100) == b"\x40\x02\x01\x02" + b"\x40\x02\x00\x07"  # the two PUBACKs, in one write
        # QoS 2: left to paho, nothing taken.
        left = mqtt_publish_packet(b"q2", b"x", qos=2)
        peer.sendall(left)
        buffered.fill()
        assert not buffered.take_publishes(mqtt5=False, deliver=keep)
        assert buffered.recv(len(left)) == left
    finally:
        ours.close()
        peer.close()


@pytest.mark.parametrize("scheme", ["mqtt", "ws", "mqtts", "mqtt5"])
def test_every_size_and_qos_arrives_exact_and_in_order(broker: Mosquitto, scheme: str) -> None:
    """Payload sizes around each remaining-length boundary, QoS 0 and 1, from a raw paho
    publisher, received through the session's read path."""
    topic = f"device/sizes-{scheme}/telemetry"
    sizes = [0, 1, 120, 124, 125, 16_370, 16_377, 16_378, 300_000] + [170] * 2000
    plan = [(i.to_bytes(4, "big") + b"s" * max(size - 4, 0), i % 2) for i, size in enumerate(sizes)]
    received: list[Message] = []
    with Session(scheme_settings(broker, scheme), on_message=received.append) as session:
        session.subscribe([topic], qos=1)
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.max_inflight_messages_set(0)  # else paho holds QoS 1 back behind QoS 0: out of order
        client.connect("127.0.0.1", broker.tcp_port)
        client.loop_start()
        try:
            infos = [client.publish(topic, payload, qos) for payload, qos in plan]
            for info in infos:
                info.wait_for_publish(timeout=20)
        finally:
            client.disconnect()
            client.loop_stop()
        deadline = time.monotonic() + 20
        while len(received) < len(plan) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert [m.payload for m in received] == [payload for payload, _ in plan]
    assert [m.qos for m in received] == [qos for _, qos in plan]
    assert not any(m.retain for m in received)
    assert all(m.topic == topic for m in received) and session.stats.received == len(plan)


@pytest.mark.parametrize("scheme", ["mqtt", "mqtt5"])
def test_retained_message_arrives_flagged(broker: Mosquitto, scheme: str) -> None:
    topic = f"device/retained-{scheme}/telemetry"
    publish(broker.tcp_port, [(topic, b"last known")], qos=1, retain=True)
    got = threading.Event()
    received: list[Message] = []

    def sink(message: Message) -> None:
        received.append(message)
        got.set()

    try:
        with Session(scheme_settings(broker, scheme), on_message=sink) as session:
            session.subscribe([topic], qos=1)
            assert got.wait(10)
    finally:
        publish(broker.tcp_port, [(topic, b"")], retain=True)
    assert [(m.payload, m.retain, m.qos) for m in received] == [(b"last known", True, 1)]


def test_held_qos1_survives_an_outage(own_broker: Mosquitto) -> None:
    """Held QoS 1 packets are in paho's store: those the broker had not acknowledged when
    it went down are sent again after the reconnect; none is dropped."""
    topic = "device/held-qos1-outage/telemetry"
    collector = Collector(own_broker.tcp_port, topic, client_id="held-qos1-collector", clean_session=False)
    with collector:
        pass  # register the persistent session, then go away
    with Session(settings_for(own_broker.tcp_url), window=100, max_inflight=100, threaded=False) as session:
        for i in range(60):
            assert session.publish(Message(topic, b"%d" % i, qos=1), hold=True)  # most still held
        own_broker.stop()
        wait_until(session, lambda: not session.connected)
        for i in range(60, 90):
            assert session.publish(Message(topic, b"%d" % i, qos=1), hold=True, timeout=0.1)
        own_broker.start()
        wait_until(session, lambda: session.connected)
        assert session.flush(30)
    assert session.stats.completed == 90 and session.stats.dropped == 0
    with Collector(own_broker.tcp_port, topic, client_id="held-qos1-collector", clean_session=False) as again:
        messages = again.wait_for(90)
    assert set(int(m.payload) for m in messages) == set(range(90))

