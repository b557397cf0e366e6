"""Never acknowledge what is not kept: record --count N leaves message N+1 onwards to the
broker, and close() without flush() delivers or counts every held message."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.mqtt import Session
from tesaiot_cli.recording import open_reader
from tests.support.broker import Mosquitto
from tests.support.cli import record, run_cli
from tests.support.clients import Collector, publish
from tests.support.settings import settings_for


def payloads(path: Path) -> list[int]:
    with open_reader(path) as reader:
        return [int(m.payload) for m in reader]


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_two_counted_runs_over_a_backlog_hold_consecutive_messages(broker: Mosquitto, tmp_path: Path,
                                                                   version: str) -> None:
    name, topic = f"count-{uuid.uuid4().hex[:8]}", f"device/count-{uuid.uuid4().hex[:6]}/telemetry"
    args = ["-b", broker.tcp_url, "-t", topic, "--qos", "1", "--session", name, "--count", "100",
            "--mqtt-version", version]
    first = run_cli("record", str(tmp_path / "empty.jsonl"), *args[:-4], "--duration", "1",
                    "--mqtt-version", version)  # registers the persistent session
    assert first.returncode == 0, first.stderr
    publish(broker.tcp_port, [(topic, b"%d" % i) for i in range(2000)])
    for run, path in enumerate((tmp_path / "a.jsonl", tmp_path / "b.jsonl")):
        result = run_cli("record", str(path), *args, timeout=60)
        assert result.returncode == 0, result.stderr
        assert payloads(path) == list(range(run * 100, run * 100 + 100))


def test_count_with_workers_is_exact(broker: Mosquitto, tmp_path: Path) -> None:
    topic = f"device/count-w-{uuid.uuid4().hex[:6]}/telemetry"
    out = tmp_path / "w"
    recorder = record(str(out), "-b", broker.tcp_url, "-t", topic, "--qos", "1", "--workers", "2", "--count", "100")
    publish(broker.tcp_port, [(topic, b"%d" % i) for i in range(500)])
    assert recorder.wait(60) == 0, recorder.stderr  # stops by itself at --count
    with open_reader(out) as reader:
        assert len(list(reader)) == 100


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_close_without_flush_delivers_every_held_message(broker: Mosquitto, qos: int, version: str) -> None:
    topic = f"device/close-held-{qos}-{version}/telemetry"
    with Collector(broker.tcp_port, topic) as collector:
        session = Session(settings_for(broker.tcp_url, mqtt_version=version), threaded=False)
        session.connect()
        for i in range(10):
            assert session.publish(Message(topic, b"%d" % i, qos=qos), hold=True)
        session.close()  # no flush()
        messages = collector.wait_for(10)
    assert sorted(int(m.payload) for m in messages) == list(range(10))
    assert (session.stats.completed, session.stats.dropped) == (10, 0)
