"""Shared subscriptions that cannot fail unseen: refused at MQTT 5 when the broker says it
has none; a warning at 3.1.1 when the recorders receive nothing (amqtt has none)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import HOSTILE, Mosquitto, free_ports, wait_for_port
from tests.support.cli import record, run_cli, start_cli
from tests.support.clients import publish

SILENCE = "nothing received in 5 s on a shared subscription"


@pytest.fixture
def amqtt_url() -> Iterator[str]:
    port, ws_port = free_ports(2)
    process = start_cli("broker", "--port", str(port), "--ws-port", str(ws_port))
    try:
        wait_for_port(port, timeout=30)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=20)


def test_mqtt5_broker_without_shared_subscriptions_is_refused_clearly(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    broker = subprocess.Popen([sys.executable, str(HOSTILE), "--port", str(port), "--case",
                               "no-shared-subscriptions", "--lifetime", "60"])
    try:
        wait_for_port(port)
        result = run_cli("record", str(tmp_path / "out.jsonl"), "-b", f"mqtt://127.0.0.1:{port}", "-t", "device/#",
                         "--share", "g1", "--mqtt-version", "5", timeout=30)
    finally:
        broker.terminate()
        broker.wait(10)
    assert result.returncode == 1, result.stderr
    assert "has no shared subscriptions" in result.stderr and "$share/g1/device/#" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("args", [["--share", "g2"], ["--workers", "2"]])
def test_amqtt_shared_subscription_silence_is_warned(amqtt_url: str, tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / ("out.jsonl" if "--share" in args else "out")
    recorder = record(str(out), "-b", amqtt_url, "-t", "device/#", *args)
    try:
        publish(int(amqtt_url.rsplit(":", 1)[1]), [("device/s/telemetry", b"1")] * 5)
        deadline = time.monotonic() + 20
        while SILENCE not in recorder.stderr and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        recorder.stop(signal.SIGINT)
    assert SILENCE in recorder.stderr and "amqtt" in recorder.stderr


def test_mosquitto_shared_subscription_is_not_warned(broker: Mosquitto, tmp_path: Path) -> None:
    recorder = record(str(tmp_path / "out.jsonl"), "-b", broker.tcp_url, "-t", "device/shared-ok/#", "--share",
                      "g3")
    try:
        for _ in range(7):
            publish(broker.tcp_port, [("device/shared-ok/telemetry", b"1")])
            time.sleep(1)
    finally:
        recorder.stop(signal.SIGINT)
    assert SILENCE not in recorder.stderr
