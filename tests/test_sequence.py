"""Sequence numbers in payloads (simulate --sequence): what a broker dropped, repeated or
reordered, counted by record, listen, detect (live), info and score --received.

The end-to-end case is the slow link of bench/faults in small: a mosquitto of the test's own
with a tiny max_queued_messages, and a recorder stopped (SIGSTOP) while the simulator goes
on, so mosquitto really drops messages it had acknowledged to the publisher."""

from __future__ import annotations

import signal
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from tesaiot_cli.analysis.sequence import WINDOW, LiveReport, SequenceCounter, parse_sequence, whole_streams
from tesaiot_cli.cliutil import EXIT_UNDELIVERED
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tesaiot_cli.sim.dps368 import DPS368Device, DPS368Model, encode_payload, json_string
from tests.support.broker import Mosquitto, start_mosquitto
from tests.support.cli import run_cli, start_cli, wait_for_stderr
from tests.support.clients import publish

TOPIC = "device/d1/telemetry"
BOOT = 1_765_100_000_123


def numbered(seq: int, *, boot: int = BOOT, device: str = "d1") -> bytes:
    return encode_payload(timestamp="2026-12-07T10:00:00.000000+00:00", device_json=json_string(device),
                          pressure=1000.5, temperature=21.25, seq=seq, boot=boot)


def count(numbers: list[int], *, boot: int = BOOT, topic: str = TOPIC) -> SequenceCounter:
    counter = SequenceCounter()
    for seq in numbers:
        counter.add(topic, numbered(seq, boot=boot))
    return counter


# -- the counter ---------------------------------------------------------------------------


def test_in_order_counts_nothing() -> None:
    report = count(list(range(1, 101))).report()
    assert (report.messages, report.numbered, report.devices) == (100, 100, 1)
    assert (report.missing, report.repeated, report.reordered, report.restarts) == (0, 0, 0, 0)
    assert not report.lost


def test_gaps_count_the_missing_numbers() -> None:
    report = count([1, 2, 5, 6, 10]).report()
    assert report.missing == 2 + 3
    assert report.lost and report.devices_missing == 1 and report.worst == (("d1", 5),)


def test_a_repeat_is_counted_and_misses_nothing() -> None:
    report = count([1, 2, 3, 3, 2, 4]).report()
    assert (report.missing, report.repeated, report.reordered) == (0, 2, 0)


def test_a_late_message_fills_its_gap() -> None:
    report = count([1, 2, 4, 5, 3, 6]).report()
    assert (report.missing, report.repeated, report.reordered) == (0, 0, 1)
    report = count([1, 4, 2, 2, 6, 3]).report()  # 5 never came; 2 came twice
    assert (report.missing, report.repeated, report.reordered) == (1, 1, 2)


def test_a_restart_is_a_new_boot_counting_from_1() -> None:
    counter = count([1, 2, 3])
    for seq in (1, 2, 3):
        counter.add(TOPIC, numbered(seq, boot=BOOT + 60_000))
    report = counter.report()
    assert (report.missing, report.repeated, report.restarts) == (0, 0, 1)
    counter.add(TOPIC, numbered(4, boot=BOOT + 120_000))  # the new run's 1-3 were lost
    assert (counter.missing, counter.restarts) == (3, 2)
    counter.add(TOPIC, numbered(9, boot=BOOT))  # from an earlier run, arriving late: no restart
    assert (counter.missing, counter.restarts, counter.reordered) == (3, 2, 1)
    counter.add(TOPIC, numbered(2, boot=BOOT + 120_000))  # the new run's 2 after all
    assert (counter.missing, counter.reordered) == (2, 2)


def test_more_than_the_window_behind_keeps_its_gap_counted() -> None:
    last = WINDOW + 10
    report = count([1, last, 2]).report()  # 2 is WINDOW + 8 behind: it cannot be placed
    assert report.missing == last - 2
    assert (report.reordered, report.too_late) == (1, 1)
    assert "their gaps stay counted as missing" in report.summary_line()
    report = count([1, last, last - 5]).report()  # within the window: it fills its gap
    assert (report.missing, report.reordered, report.too_late) == (last - 3, 1, 0)


def test_big_numbers_and_big_jumps_stay_bounded() -> None:
    """JSON integers do not wrap: 2**62 counts like any number, and a jump of 2**61 costs
    one bounded mask, not 2**61 bits."""
    counter = count([2**61, 2**62, 2**62 + 1])
    assert counter.missing == 2**62 - 2**61 - 1
    counter.add_number(TOPIC, 2**62 + 1, BOOT)
    assert counter.repeated == 1
    stream = counter._by_device["d1"]
    assert stream.holes.bit_length() <= WINDOW + 1


def test_devices_are_counted_apart_and_topics_of_one_device_together() -> None:
    counter = SequenceCounter()
    for seq in (1, 2, 3):
        counter.add("device/a/telemetry/pressure", numbered(seq))
        counter.add("device/b/telemetry", numbered(seq * 2))  # b: 2, 4, 6 -> 2 missing
    counter.add("device/a/telemetry/temperature", numbered(4))  # a's next number on another topic
    counter.add("lab/one", numbered(1))
    counter.add("lab/two", numbered(5))  # not a device topic: a topic is its own stream
    report = counter.report()
    assert report.devices == 4
    assert report.missing == 2 and report.worst == (("b", 2),)
    assert counter.device_counts("a") == {"newest": 4, "missing": 0, "repeated": 0, "reordered": 0, "restarts": 0}


def test_what_carries_no_number_is_not_counted() -> None:
    counter = SequenceCounter()
    payloads = [b"plain text", b'{"data": {"seq": 5, "boot": 1}}', b'{"seq": "5", "boot": 1}',
                b'{"seq": -1, "boot": 1}', b'{"seq": true, "boot": 1}', b'{"seq": 1.5, "boot": 1}',
                b'["seq", 1, "boot", 1]', b'{"seq": 7, "boot": 1', b'{"seq": 7, "boot": -1}',
                b'{"seq": 7, "boot": null}', b""]
    payloads += [b'{"seq": %d}' % seq for seq in (1, 5, 9)]  # a publisher's own counter: "seq" alone is not ours
    payloads += [b'{"a": 1, "seq": %d}' % seq for seq in (1, 5, 9)]
    for payload in payloads:
        counter.add(TOPIC, payload)
    report = counter.report()
    assert (report.messages, report.numbered) == (len(payloads), 0)
    assert report.summary_line().startswith(f"sequence numbers: none of the {len(payloads)} messages carried one")


def test_other_publishers_layouts_are_parsed() -> None:
    assert parse_sequence(b'{"seq":5,"boot":7,"x":1}') == (5, 7)
    assert parse_sequence(b'{"boot": 2, "x": {"seq": 1, "boot": 1}, "seq": 3}') == (3, 2)
    assert parse_sequence(b'{"x": {"y": 1, "seq": 9, "boot": 1}}') is None  # nested: not the payload's number
    assert parse_sequence(b'{"a": 1, "seq": 12, "boot": x}') is None
    assert parse_sequence(numbered(42)) == (42, BOOT)
    assert parse_sequence(b'{"data": {}, "seq": 8}') is None  # bench/pacedpub's payload without -B


def test_memory_stays_bounded_for_a_fleet_of_50000() -> None:
    counter = SequenceCounter()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for seq in (1, 3, WINDOW):  # every device has gaps: its own mask, as large as it gets
            for device in range(50_000):
                counter.add_number(f"device/dev-{device:05d}/telemetry", seq, BOOT)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert counter.report().devices_missing == 50_000
    assert used < 50_000 * 800, used  # topic and device keys, the stream, a 1024-bit mask


def test_live_report_only_after_a_change_and_not_too_often() -> None:
    counter = count([1, 2])
    live = LiveReport(counter, period_s=5)
    assert live.due(100.0) is None  # nothing happened
    counter.add(TOPIC, numbered(5))
    line = live.due(100.0)
    assert line is not None and "2 missing" in line and line.endswith("so far")
    counter.add(TOPIC, numbered(9))
    assert live.due(102.0) is None  # too soon
    assert "5 missing" in (live.due(105.0) or "")
    assert live.due(200.0) is None  # no change since


# -- the simulator's numbers ---------------------------------------------------------------


def test_device_numbers_its_packets_and_dropouts_take_none() -> None:
    plain = DPS368Device("d", DPS368Model(seed=5, anomaly_every=4, kinds=["dropout"]))
    device = DPS368Device("d", DPS368Model(seed=5, anomaly_every=4, kinds=["dropout"]), boot=BOOT)
    seqs = []
    for k in range(20):
        packet, base = device.read(k * 1_000_000), plain.read(k * 1_000_000)
        assert (packet.payload is None) == (base.payload is None)
        if packet.payload is None or base.payload is None:
            continue
        document = orjson.loads(packet.payload)
        assert list(document)[-2:] == ["seq", "boot"] and document["boot"] == BOOT
        assert packet.payload == base.payload[:-1] + f', "seq": {document["seq"]}, "boot": {BOOT}}}'.encode()
        seqs.append(document["seq"])
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) < 20


def _payloads(path: Path) -> dict[str, list[dict[str, object]]]:
    with open_reader(path) as reader:
        by_topic: dict[str, list[dict[str, object]]] = {}
        for message in reader:
            by_topic.setdefault(message.topic, []).append(orjson.loads(message.payload))
        return by_topic


@pytest.mark.parametrize("extra", [[], ["--connections", "per-device"], ["--shard", "2/2", "--label"]])
def test_simulate_sequence_numbers_each_device(broker: Mosquitto, tmp_path: Path, extra: list[str]) -> None:
    truth = tmp_path / "truth.jsonl"
    result = run_cli("simulate", "-b", broker.tcp_url, "--devices", "4", "--device-id", f"seq{len(extra)}-1",
                     "--count", "5", "--interval", "0.05", "--sequence", "--seed", "3", "--record", str(truth),
                     "--quiet", *extra)
    assert result.returncode == 0, result.stderr
    by_topic = _payloads(truth)
    assert len(by_topic) == (2 if "--shard" in extra else 4)
    boots = set()
    for documents in by_topic.values():
        assert [d["seq"] for d in documents] == [1, 2, 3, 4, 5]
        boots |= {d["boot"] for d in documents}
    assert len(boots) == 1
    with open_reader(truth) as reader:
        assert reader.metadata.extra["sequence"] == {"boot": boots.pop()}


def test_simulate_without_sequence_is_the_upstream_payload(broker: Mosquitto, tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    result = run_cli("simulate", "-b", broker.tcp_url, "--count", "3", "--interval", "0.05", "--record", str(truth),
                     "--quiet")
    assert result.returncode == 0, result.stderr
    for documents in _payloads(truth).values():
        assert [list(d) for d in documents] == [["timestamp", "device_id", "sensor_type", "data"]] * 3
    with open_reader(truth) as reader:
        assert reader.metadata.extra["sequence"] is None


# -- record, through a broker that really drops --------------------------------------------


@pytest.fixture
def small_queue_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """mosquitto that keeps at most 10 unacknowledged and 40 queued messages per client."""
    instance = start_mosquitto(tmp_path / "mosquitto", raised_limits=False,
                               extra_config="max_inflight_messages 10\nmax_queued_messages 40\n")
    try:
        yield instance
    finally:
        instance.close()


def _read_all(process: subprocess.Popen[str], timeout: float = 60) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_record_reports_what_mosquitto_dropped_and_exits_7(small_queue_broker: Mosquitto, tmp_path: Path) -> None:
    """The recorder stalls (SIGSTOP) while the simulator publishes at 200 msg/s: mosquitto keeps
    10 in flight and 40 queued and drops the rest ("Outgoing messages are being dropped"). The
    simulator's every packet was acknowledged (exit 0); record counts exactly what it missed."""
    broker = small_queue_broker
    out, truth = tmp_path / "rec.parquet", tmp_path / "truth.parquet"
    recorder = start_cli("record", str(out), "-b", broker.tcp_url, "-t", "device/#", "--qos", "1")
    try:
        wait_for_stderr(recorder, "recording mqtt")
        simulator = start_cli("simulate", "-b", broker.tcp_url, "--sequence", "--count", "800", "--interval",
                              "0.005", "--anomaly-every", "0", "--record", str(truth), "--quiet")
        time.sleep(1.0)
        recorder.send_signal(signal.SIGSTOP)
        time.sleep(1.5)  # ~300 messages, room for 50
        recorder.send_signal(signal.SIGCONT)
        _sim_out, sim_err = _read_all(simulator)
        assert simulator.returncode == 0, sim_err  # every packet acknowledged by the broker
        time.sleep(1.0)
        recorder.send_signal(signal.SIGINT)
        _out, err = _read_all(recorder)
    finally:
        if recorder.poll() is None:
            recorder.send_signal(signal.SIGCONT)
            recorder.kill()
            recorder.communicate()
    with open_reader(out) as reader:
        received = [orjson.loads(m.payload)["seq"] for m in reader]
    assert received[-1] == 800, "the last message must arrive for every loss to lie between two seen"
    missing = 800 - len(received)
    assert missing > 0, "mosquitto dropped nothing: the stall did not fill its queue"
    assert "Outgoing messages are being dropped" in broker.log_path.read_text()
    assert recorder.returncode == EXIT_UNDELIVERED, err
    assert (f"warning: sequence numbers: {len(received):,} of {len(received):,} messages carried one, from 1 "
            f"device: {missing:,} missing in 1 device") in err
    # The recording alone says the same; with the truth, score says it twice over.
    info = run_cli("info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    assert orjson.loads(info.stdout)["sequence"]["missing"] == missing
    scored = run_cli("score", str(truth), "--received", str(out), "--json")
    assert scored.returncode == 0, scored.stderr
    report = orjson.loads(scored.stdout)
    assert report["delivery"]["lost"] == report["sequence"]["missing"] == missing


# -- listen, detect (live) -----------------------------------------------------------------


def _gappy(device: str) -> list[tuple[str, bytes]]:
    numbers = [1, 2, 3, 6, 7, 7, 9, 8, 10]  # 4 and 5 lost, 7 twice, 8 after 9
    return [(f"device/{device}/telemetry", numbered(seq, device=device)) for seq in numbers]


def test_listen_counts_and_exits_7(broker: Mosquitto) -> None:
    messages = _gappy("listen-seq") + [("device/listen-seq/telemetry", b"no number")]
    listen = start_cli("listen", "-b", broker.tcp_url, "-t", "device/listen-seq/#", "--count", str(len(messages)),
                       "--json")
    wait_for_stderr(listen, "listening on")
    publish(broker.tcp_port, messages)
    _out, err = _read_all(listen)
    assert listen.returncode == EXIT_UNDELIVERED, err
    assert ("warning: sequence numbers: 9 of 10 messages carried one, from 1 device: 2 missing in 1 device "
            "(listen-seq 2), 1 repeated, 1 reordered") in err


def test_a_shared_subscription_member_does_not_count(broker: Mosquitto) -> None:
    """A member of $share/GROUP gets part of each device's stream: its gaps would be false alarms."""
    listen = start_cli("listen", "-b", broker.tcp_url, "-t", "$share/seq/device/listen-shared/#", "--count", "9")
    wait_for_stderr(listen, "listening on")
    publish(broker.tcp_port, _gappy("listen-shared"))
    _out, err = _read_all(listen)
    assert listen.returncode == 0, err
    assert "sequence" not in err


def test_listen_without_numbers_says_nothing_of_them(broker: Mosquitto) -> None:
    listen = start_cli("listen", "-b", broker.tcp_url, "-t", "device/listen-plain/#", "--count", "2")
    wait_for_stderr(listen, "listening on")
    publish(broker.tcp_port, [("device/listen-plain/telemetry", b"a"), ("device/listen-plain/telemetry", b"b")])
    _out, err = _read_all(listen)
    assert listen.returncode == 0, err
    assert "sequence" not in err


def test_detect_live_counts_and_exits_7(broker: Mosquitto) -> None:
    messages = _gappy("detect-seq")
    detect = start_cli("detect", "-b", broker.tcp_url, "-t", "device/detect-seq/telemetry", "--count",
                       str(len(messages)))
    wait_for_stderr(detect, "detecting on")
    publish(broker.tcp_port, messages)
    _out, err = _read_all(detect)
    assert detect.returncode == EXIT_UNDELIVERED, err
    assert "from 1 device: 2 missing in 1 device (detect-seq 2), 1 repeated, 1 reordered" in err


# -- info and score --received, from a recording alone --------------------------------------


def _write(path: Path, messages: list[tuple[str, bytes]]) -> None:
    with open_writer(path, metadata=RecordingMetadata(source="test")) as writer:
        for index, (topic, payload) in enumerate(messages):
            writer.write(Message(topic, payload, 1, False, 1_765_100_000_000_000_000 + index * 1_000_000))


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_info_reports_the_numbers(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    _write(path, _gappy("a") + _gappy("b")[:3] + [("other/topic", b"x")])
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    assert ("sequence    12 of 13 messages carried one, from 2 devices: 2 missing in 1 device (a 2), "
            "1 repeated, 1 reordered") in result.stdout
    data = orjson.loads(run_cli("info", str(path), "--json").stdout)["sequence"]
    assert (data["numbered"], data["missing"], data["devices"]) == (12, 2, 2)
    plain = tmp_path / f"plain{suffix}"
    _write(plain, [("device/x/telemetry", b"{}")])
    result = run_cli("info", str(plain), "--json")
    assert orjson.loads(result.stdout)["sequence"] is None
    assert "sequence" not in run_cli("info", str(plain)).stdout


def test_score_received_reports_the_numbers(tmp_path: Path) -> None:
    sent = [(TOPIC, numbered(seq)) for seq in range(1, 11)]
    truth, received = tmp_path / "truth.parquet", tmp_path / "received.parquet"
    _write(truth, sent)
    _write(received, [sent[i] for i in (0, 1, 2, 5, 4, 4, 9)])  # 4, 7, 8, 9 never came; 5 after 6, twice
    result = run_cli("score", str(truth), "--received", str(received))
    assert result.returncode == 0, result.stderr
    assert ("received sequence numbers: 7 of 7 messages carried one, from 1 device: 4 missing in 1 device "
            "(d1 4), 1 repeated, 1 reordered") in result.stdout
    report = orjson.loads(run_cli("score", str(truth), "--received", str(received), "--json").stdout)
    assert report["sequence"]["missing"] == report["delivery"]["lost"] == 4


def test_record_status_line_shows_the_counts(broker: Mosquitto, tmp_path: Path) -> None:
    from tests.support.tty import TTYProcess

    recorder = TTYProcess("record", str(tmp_path / "rec.jsonl"), "-b", broker.tcp_url, "-t", "device/rec-tty/#",
                          "--duration", "4")
    deadline = time.monotonic() + 20
    while "recording mqtt" not in recorder.read_for(0.2) and time.monotonic() < deadline:
        pass
    publish(broker.tcp_port, _gappy("rec-tty"))
    run = recorder.finish()
    assert run.returncode == EXIT_UNDELIVERED, run.terminal
    assert any(frame.startswith("recording: 9 messages") and frame.endswith("seq: 2 missing  1 repeated  1 reordered")
               for frame in run.frames()), run.frames()


def test_shared_subscription_filters_are_not_whole_streams() -> None:
    assert whole_streams(["device/+/telemetry", "#"])
    assert not whole_streams(["device/+/telemetry", "$share/g/#"])
    assert not whole_streams(["$queue/device/#"])


def test_a_restarted_simulator_is_a_restart_not_a_gap(broker: Mosquitto, tmp_path: Path) -> None:
    """Two runs of one device into one recording: the second numbers from 1 again with a new
    boot; record counts one restart, nothing missing or repeated, and exits 0."""
    out = tmp_path / "rec.jsonl"
    recorder = start_cli("record", str(out), "-b", broker.tcp_url, "-t", "device/restarted/#", "--count", "10")
    wait_for_stderr(recorder, "recording mqtt")
    for _run in range(2):
        result = run_cli("simulate", "-b", broker.tcp_url, "--device-id", "restarted", "--count", "5", "--interval",
                         "0.02", "--sequence", "--quiet")
        assert result.returncode == 0, result.stderr
    _out, err = _read_all(recorder)
    assert recorder.returncode == 0, err
    assert ("sequence numbers: 10 of 10 messages carried one, from 1 device: 0 missing, 0 repeated, 0 reordered, "
            "1 publisher restart") in err
