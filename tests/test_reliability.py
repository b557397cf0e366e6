"""Faults, end to end: real `tesaiot` processes, a real mosquitto that is stopped and
started again, and real signals (SIGKILL under load). Disk faults: tests/test_disk_faults.py.

The guarantees these tests prove are written down in docs/reliability.md.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tests.support.broker import Mosquitto
from tests.support.cli import Proc, error_lines, run_cli
from tests.support.clients import Collector, publish
from tests.support.fakes import uid
from tests.support.recordings import recorded, wait_recorded

T0 = 1_790_000_000_000_000_000


# -- broker restart in the middle of a stream ---------------------------------------------


def test_broker_restart_mid_stream_every_acknowledged_packet_is_recorded(own_broker: Mosquitto,
                                                                        tmp_path: Path) -> None:
    """simulate (QoS 1) -> mosquitto with persistence, stopped for 2 s -> record --session (QoS 1)."""
    device, name = uid(), f"rel-{uid()}"
    out, truth = tmp_path / "out.parquet", tmp_path / "truth.parquet"
    recorder = Proc("record", str(out), "-b", own_broker.tcp_url, "-t", f"device/{device}/#", "--qos", "1",
                    "--session", name)
    recorder.wait_for_stderr("recording mqtt")
    simulator = Proc("simulate", "-b", own_broker.tcp_url, "--device-id", device, "--interval", "0.02",
                     "--count", "300", "--seed", "7", "--anomaly-every", "0", "--record", str(truth))
    try:
        assert wait_recorded(out, 60) >= 60, recorder.stderr
        own_broker.restart(down_seconds=2.0)
        assert simulator.wait(60) == 0, simulator.stderr
        summary = simulator.stderr
        assert "300 packets published" in summary and "300 acknowledged by the broker" in summary, summary
        assert "0 dropped" in summary
        assert wait_recorded(out, 300) >= 300, recorder.stderr
        time.sleep(0.5)  # let late duplicates, if any, arrive too
    finally:
        code = recorder.stop()
        simulator.stop(signal.SIGKILL)
    assert code == 0, recorder.stderr
    for word in ("disconnected from", "reconnected to"):
        assert word in recorder.stderr and word in simulator.stderr
    published = [m.payload for m in recorded(truth)]
    got = [m.payload for m in recorded(out)]
    assert len(published) == 300 and len(set(published)) == 300
    assert set(got) == set(published)  # every packet is there, and nothing else
    duplicates = len(got) - len(set(got))
    # QoS 1 is "at least once": a packet in flight when the broker stopped may come twice.
    # The recording keeps what the broker delivered; info --duplicates counts, convert --dedupe removes.
    report = json.loads(run_cli("info", str(out), "--json", "--duplicates").stdout)
    assert report["messages"] == len(got) and report["duplicates"]["count"] == duplicates
    clean = tmp_path / "clean.jsonl"
    result = run_cli("convert", str(out), str(clean), "--dedupe")
    assert result.returncode == 0, result.stderr
    assert [m.payload for m in recorded(clean)] == list(dict.fromkeys(got))  # first copies, in order
    # And record said so, because it reconnected.
    assert f"'tesaiot info --duplicates {out}' counts them" in recorder.stderr


def test_a_deliberate_duplicate_is_counted_by_info_and_removed_by_convert(broker: Mosquitto,
                                                                         tmp_path: Path) -> None:
    top = f"dup/{uid()}"
    out = tmp_path / "dups.jsonl"
    recorder = Proc("record", str(out), "-b", broker.tcp_url, "-t", f"{top}/#", "--count", "5")
    recorder.wait_for_stderr("recording mqtt")
    stamp = b'{"timestamp": "2026-11-22T08:24:56.055689+00:00", "data": {"pressure": 1030.3}}'
    # The same packet twice (as a publisher's re-send after a reconnect would), one repeated
    # on another topic (not a duplicate), and one repeated after the window (not one either).
    publish(broker.tcp_port, [(f"{top}/a", stamp), (f"{top}/a", stamp), (f"{top}/b", stamp), (f"{top}/a", b"x")])
    time.sleep(1.2)
    publish(broker.tcp_port, [(f"{top}/a", b"x")])
    assert recorder.wait(30) == 0, recorder.stderr
    assert len(recorded(out)) == 5  # the recording keeps what the broker delivered

    result = run_cli("info", str(out), "--duplicates", "--dedupe-window", "1")
    assert result.returncode == 0, result.stderr
    assert "duplicates  1 (same topic and payload within 1 s)" in result.stdout
    report = json.loads(run_cli("info", str(out), "--json", "--duplicates").stdout)
    assert report["duplicates"] == {"count": 2, "window_s": 60.0, "topics": {f"{top}/a": 2}}
    assert json.loads(run_cli("info", str(out), "--json").stdout)["duplicates"] is None  # opt-in: not scanned

    clean = tmp_path / "clean.parquet"
    result = run_cli("convert", str(out), str(clean), "--dedupe", "--dedupe-window", "1")
    assert result.returncode == 0, result.stderr
    assert "converted 4 messages" in result.stderr and "1 duplicates left out" in result.stderr
    with open_reader(clean) as reader:
        kept = [(m.topic.rsplit("/", 1)[1], m.payload) for m in reader]
        assert reader.metadata.extra["deduplicated"] == {"removed": 1, "window_s": 1.0}
    assert kept == [("a", stamp), ("b", stamp), ("a", b"x"), ("a", b"x")]
    bad = run_cli("convert", str(out), str(tmp_path / "x.jsonl"), "--dedupe", "--dedupe-window", "0")
    assert bad.returncode == 1 and len(error_lines(bad.stderr)) == 1 and "invalid duplicate window" in bad.stderr
    assert not (tmp_path / "x.jsonl").exists()


# -- SIGKILL under load ----------------------------------------------------------------


class Stamped(Collector):
    """A raw subscriber that notes when (monotonic) each sequence number arrived."""

    def __init__(self, port: int, topic: str) -> None:
        super().__init__(port, topic, qos=1)
        self.arrived: dict[int, float] = {}

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self.arrived.setdefault(int(msg.payload.split(b" ", 1)[0]), time.monotonic())


def paced_publisher(port: int, topic: str, *, rate: int, seconds: float, stop: threading.Event) -> threading.Thread:
    """Publish '<seq> <padding>' at ``rate`` msg/s (QoS 1) for at most ``seconds``, in a thread."""

    def run() -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.max_inflight_messages_set(0)
        client.connect("127.0.0.1", port)
        client.loop_start()
        started, seq, padding = time.monotonic(), 0, b" " + b"p" * 100
        try:
            while not stop.is_set() and time.monotonic() - started < seconds:
                due = int((time.monotonic() - started) * rate)
                while seq < due:
                    client.publish(topic, b"%d" % seq + padding, qos=1)
                    seq += 1
                time.sleep(0.005)
        finally:
            client.disconnect()
            client.loop_stop()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


# Everything received more than this long before a SIGKILL is on disk: the writer flushes
# and fsyncs every 0.5 s (docs/reliability.md); the rest is the time to write one batch.
LOSS_BOUND_S = 1.0


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_sigkill_under_load_loses_at_most_the_last_second(broker: Mosquitto, tmp_path: Path, fmt: str) -> None:
    topic = f"load/{uid()}/telemetry"
    path = tmp_path / f"killed.{fmt}"
    stop = threading.Event()
    with Stamped(broker.tcp_port, topic) as witness:
        recorder = Proc("record", str(path), "-b", broker.tcp_url, "-t", topic, "--qos", "1")
        recorder.wait_for_stderr("recording mqtt")
        publisher = paced_publisher(broker.tcp_port, topic, rate=2000, seconds=6, stop=stop)
        try:
            assert wait_recorded(path, 3000, timeout=20) >= 3000, recorder.stderr  # well into the stream
            time.sleep(0.37)  # not right after a flush that the poll above saw
            killed_at = time.monotonic()
            recorder.process.kill()
        finally:
            stop.set()
            publisher.join(10)
        assert recorder.wait(10) == -signal.SIGKILL
    arrived = witness.arrived
    with open_reader(path) as reader:
        assert reader.sealed is False
        seqs = [int(m.payload.split(b" ", 1)[0]) for m in reader]
    assert seqs == list(range(len(seqs)))  # QoS 1 keeps order: what is there is a gap-free prefix
    lost = [seq for seq, at in arrived.items() if at < killed_at and seq >= len(seqs)]
    if lost:
        oldest_lost_age = killed_at - min(arrived[seq] for seq in lost)
        assert oldest_lost_age <= LOSS_BOUND_S, (oldest_lost_age, len(lost), len(seqs))
    print(f"{fmt}: {len(seqs)} recorded, {len(lost)} lost "
          f"({(killed_at - min((arrived[s] for s in lost), default=killed_at)) * 1000:.0f} ms)")

    info = run_cli("info", str(path), "--json")
    assert info.returncode == 0, info.stderr
    report = json.loads(info.stdout)
    assert report["messages"] == len(seqs) and report["sealed"] is False
    assert "tesaiot recover" in info.stderr and "Traceback" not in info.stderr

    result = run_cli("recover", str(path))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    with open_reader(path) as reader:
        assert reader.sealed is True
        assert [int(m.payload.split(b" ", 1)[0]) for m in reader] == seqs
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert json.loads(run_cli("info", str(path), "--json").stdout)["sealed"] is True


# -- network drops: replay across a broker restart ------------------------------------------


def replay_summary(stdout: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return result


def write_recording(path: Path, messages: list[Message]) -> None:
    with open_writer(path, metadata=RecordingMetadata(), crash_safe=False) as writer:
        for message in messages:
            writer.write(message)


def test_replay_across_a_broker_restart_delivers_everything_at_qos_1(own_broker: Mosquitto,
                                                                    tmp_path: Path) -> None:
    top = f"replay/{uid()}"
    t0 = 1_790_000_000_000_000_000
    messages = [Message(f"{top}/device/d1/telemetry", b"%d" % i, 1, False, t0 + i * 20_000_000) for i in range(150)]
    path = tmp_path / "rec.parquet"
    write_recording(path, messages)
    # A persistent subscriber: it also gets what reached the broker while it was itself reconnecting.
    with Collector(own_broker.tcp_port, f"{top}/#", client_id=f"sub-{uid()}", clean_session=False) as sub:
        replay = Proc("replay", str(path), "-b", own_broker.tcp_url, "--json")
        assert len(sub.wait_for(20, timeout=20)) >= 20, replay.stderr
        own_broker.restart(down_seconds=1.5)
        assert replay.wait(60) == 0, replay.stderr
        deadline = time.monotonic() + 15
        while len({m.payload for m in sub.messages}) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = {bytes(m.payload) for m in sub.messages}
    report = replay_summary(replay.stdout)
    assert report["published"] == report["acknowledged"] == 150, report
    assert report["failed"] == report["dropped"] == 0
    assert got == {m.payload for m in messages}
    assert "disconnected from" in replay.stderr and "reconnected to" in replay.stderr
    assert "Traceback" not in replay.stderr


def test_replay_across_a_broker_restart_at_qos_0_counts_what_it_dropped(own_broker: Mosquitto,
                                                                       tmp_path: Path) -> None:
    t0 = 1_790_000_000_000_000_000
    messages = [Message(f"replay/{uid()}/t", b"%d" % i, 0, False, t0 + i * 20_000_000) for i in range(150)]
    path = tmp_path / "rec.jsonl"
    write_recording(path, messages)
    with Collector(own_broker.tcp_port, "replay/#") as sub:
        replay = Proc("replay", str(path), "-b", own_broker.tcp_url, "--json")
        assert len(sub.wait_for(20, timeout=20)) >= 20, replay.stderr
        own_broker.restart(down_seconds=1.5)
        assert replay.wait(60) == 7, replay.stderr  # some messages were not delivered: said, not hidden
    report = replay_summary(replay.stdout)
    assert report["published"] == 150
    assert int(report["dropped"]) > 0  # type: ignore[call-overload]
    assert report["acknowledged"] + report["dropped"] + report["failed"] == 150, report  # type: ignore[operator]
    assert "Traceback" not in replay.stderr
