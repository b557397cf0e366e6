"""`tesaiot broker` (amqtt) as a user starts it, carrying real MQTT traffic."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.support.broker import free_ports, wait_for_port
from tests.support.cli import run_cli, start_cli
from tests.support.clients import publish


@pytest.fixture
def embedded() -> Iterator[tuple[int, int]]:
    port, ws_port = free_ports(2)
    process = start_cli("broker", "--port", str(port), "--ws-port", str(ws_port))
    try:
        wait_for_port(port, timeout=30)
        wait_for_port(ws_port, timeout=30)
        yield port, ws_port
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        assert "embedded broker stopped" in err and "Traceback" not in err


@pytest.mark.parametrize("transport", ["tcp", "ws"])
def test_embedded_broker_carries_messages(embedded: tuple[int, int], transport: str) -> None:
    port, ws_port = embedded
    url = f"mqtt://127.0.0.1:{port}" if transport == "tcp" else f"ws://127.0.0.1:{ws_port}/mqtt"
    listener = start_cli("listen", "-b", url, "--json", "--count", "2")
    assert listener.stderr is not None
    deadline = time.monotonic() + 20
    while "listening on" not in listener.stderr.readline() and time.monotonic() < deadline:
        pass
    publish(port, [("device/emb/telemetry", b'{"n": 1}'), ("device/emb/telemetry", b"\xff")])
    out, err = listener.communicate(timeout=20)
    assert listener.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["encoding"] for line in lines] == ["json", "base64"]


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = run_cli("broker", "--port", str(port), "--no-ws", "--duration", "1")
    assert result.returncode == 3
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr


def test_duration_stops_it() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    result = run_cli("broker", "--port", str(port), "--no-ws", "--duration", "0.5", timeout=30)
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 25


def _listen(url: str, *args: str) -> tuple[int, list[dict[str, object]], str]:
    result = run_cli("listen", "-b", url, "--json", *args, timeout=40)
    return result.returncode, [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def test_retained_messages_go_only_to_their_own_subscribers(embedded: tuple[int, int]) -> None:
    """amqtt sent a new client the retained messages of every client's filters (16.14)."""
    port, _ws = embedded
    url = f"mqtt://127.0.0.1:{port}"
    publish(port, [("cfg/a", b"setting")], retain=True)
    holder = start_cli("listen", "-b", url, "-t", "cfg/#", "--timeout", "8")  # holds a cfg/# subscription
    try:
        assert holder.stderr is not None
        deadline = time.monotonic() + 20
        while "listening on" not in holder.stderr.readline() and time.monotonic() < deadline:
            pass
        code, got, err = _listen(url, "-t", "other/#", "--timeout", "1.5")
        assert code == 0, err
        assert got == [], got  # nothing of cfg/#
        code, got, err = _listen(url, "-t", "cfg/#", "--timeout", "1.5")
        assert [(m["topic"], m["retain"]) for m in got] == [("cfg/a", True)], got
    finally:
        holder.kill()
        holder.communicate(timeout=10)


def test_qos_is_the_lower_one_and_a_retained_topic_can_be_cleared(embedded: tuple[int, int]) -> None:
    port, _ws = embedded
    url = f"mqtt://127.0.0.1:{port}"
    listener = start_cli("listen", "-b", url, "-t", "q/#", "--qos", "0", "--json", "--count", "1")
    assert listener.stderr is not None
    deadline = time.monotonic() + 20
    while "listening on" not in listener.stderr.readline() and time.monotonic() < deadline:
        pass
    publish(port, [("q/a", b"x")], qos=1)
    out, err = listener.communicate(timeout=20)
    assert listener.returncode == 0, err
    assert json.loads(out.splitlines()[0])["qos"] == 0
    publish(port, [("gone/a", b"v")], retain=True)
    publish(port, [("gone/a", b"")], retain=True)
    code, got, err = _listen(url, "-t", "gone/#", "--timeout", "1.5")
    assert code == 0 and got == [], (got, err)


def test_ws_without_a_port_is_the_embedded_brokers_port() -> None:
    from tesaiot_cli.config import parse_broker_url

    assert parse_broker_url("ws://127.0.0.1").port == 8083  # `tesaiot broker`'s default --ws-port
    assert parse_broker_url("wss://mqtt.tesaiot.com").port == 8085


def test_flat_out_qos1_is_acknowledged_on_amqtt(embedded: tuple[int, int]) -> None:
    """simulate --interval 0 at QoS 1 writes held packets whose PUBACKs the session reads from
    its buffer (its own QoS 1 store, not paho's): on amqtt too, each one is acknowledged and
    arrives."""
    from tests.support.clients import Collector

    port, _ = embedded
    with Collector(port, "device/emb-q1/#") as collector:
        result = run_cli("simulate", "-b", f"mqtt://127.0.0.1:{port}", "--device-id", "emb-q1", "--count", "3000",
                         "--interval", "0", "--qos", "1", "--anomaly-every", "0")
        assert result.returncode == 0, result.stderr
        assert "3,000 packets published" in result.stderr and "3,000 acknowledged by the broker" in result.stderr
        assert "0 failed, 0 dropped" in result.stderr
        deadline = time.monotonic() + 20
        while len(collector.messages) < 3000 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len({bytes(m.payload) for m in collector.messages}) == 3000


def test_a_failed_shutdown_is_said_as_an_internal_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """amqtt's shutdown failing is a bug, never passed over: one line, exit 70, no traceback,
    and the broker's thread and ports are still released."""
    from amqtt.broker import Broker

    shutdown = Broker.shutdown

    async def failing_shutdown(self: Broker) -> None:
        await shutdown(self)
        raise RuntimeError("the shutdown failed")

    monkeypatch.setattr(Broker, "shutdown", failing_shutdown)
    (port,) = free_ports(1)
    result = run_cli("broker", "--port", str(port), "--no-ws", "--duration", "0.5", process=False)
    assert result.returncode == 70, result.stderr
    assert "internal error: RuntimeError: the shutdown failed" in result.stderr
    assert "Traceback" not in result.stderr and "embedded broker stopped" not in result.stderr
    with socket.socket() as again:  # the port was let go
        again.bind(("127.0.0.1", port))
