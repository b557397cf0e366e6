"""`tesaiot broker` (amqtt) as a user starts it, carrying real MQTT traffic."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import pytest

from tests.conftest import run_cli, start_cli
from tests.support.broker import free_ports, wait_for_port
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
