"""`tesaiot replay` end to end: real recordings (written with the recording writers), the
real CLI in a subprocess, a real mosquitto, and a raw MQTT 5 subscriber on the other side."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import uuid
from pathlib import Path

import orjson
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.subscribeoptions import SubscribeOptions

from tesaiot_cli.commands.replay import loop_value_optional
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.replay import parse_loops
from tesaiot_cli.recording import RecordingMetadata, open_writer
from tests.support.broker import Mosquitto
from tests.support.cli import run_cli, start_cli, wait_for_stderr
from tests.support.recordings import write_recording

T0 = 1_790_000_000_000_000_000
S = 1_000_000_000
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00")


class Received:
    """One message as the subscriber got it, with its local receive time."""

    def __init__(self, msg: paho.MQTTMessage) -> None:
        self.topic, self.payload, self.qos, self.retain = msg.topic, bytes(msg.payload), msg.qos, bool(msg.retain)
        self.at = time.monotonic()


class Subscriber:
    """A raw paho MQTT 5 subscriber with retain-as-published, so the retain flag of each
    publish is visible (MQTT 3.1.1 clears it on live delivery)."""

    def __init__(self, port: int, topic_filter: str) -> None:
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._filter = topic_filter
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *args: self._ready.set()
        self.client.on_message = self._on_message
        self.port = port

    def _on_connect(self, client: paho.Client, *args: object) -> None:
        client.subscribe(self._filter, options=SubscribeOptions(qos=2, retainAsPublished=True))

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append(Received(msg))

    def __enter__(self) -> Subscriber:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        assert self._ready.wait(10), "no SUBACK"
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, count: int, timeout: float = 15.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        with self._lock:
            return list(self.received)


def dps368(seconds: float, device: str = "infineon-sensor-01") -> bytes:
    stamp = "2026-11-22T08:24:56.055689+00:00"
    return (f'{{"timestamp": "{stamp}", "device_id": "{device}", "sensor_type": "DPS368", '
            f'"data": {{"pressure": {1000 + seconds:.2f}, "temperature": 25.5}}}}').encode()


def unique_prefix() -> str:
    return f"replaytest-{uuid.uuid4().hex[:8]}"


def mixed_recording(prefix: str, count: int = 24, step_s: float = 0.02) -> list[Message]:
    """DPS368 JSON, text, binary and empty payloads; QoS 0/1/2; some retained."""
    messages = []
    for i in range(count):
        kind = i % 4
        payload = [dps368(i), f"plain text {i}".encode(), bytes([0, 255, i % 256, 10, 13]), b"x" * i][kind]
        topic = f"{prefix}/device/d{i % 3}/telemetry" + ("/DPS368" if kind == 0 else "")
        messages.append(Message(topic, payload, i % 3, i % 5 == 0, T0 + round(i * step_s * S)))
    return messages


def summary_of(stdout: str) -> dict[str, object]:
    result: dict[str, object] = json.loads(stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_replay_is_identical_to_the_recording(broker: Mosquitto, tmp_path: Path, suffix: str) -> None:
    prefix = unique_prefix()
    messages = mixed_recording(prefix)
    path = write_recording(tmp_path / f"rec{suffix}", messages)
    with Subscriber(broker.tcp_port, f"{prefix}/#") as subscriber:
        result = run_cli("replay", str(path), "-b", broker.tcp_url, "--json")
        got = subscriber.wait_for(len(messages))
    assert result.returncode == 0, result.stderr
    as_sent = [(m.topic, m.payload, m.qos, m.retain) for m in messages]
    as_received = [(m.topic, m.payload, m.qos, m.retain) for m in got]
    assert sorted(as_received) == sorted(as_sent)
    # MQTT orders messages per QoS level (a QoS 2 message is forwarded only after its PUBREL,
    # so it may overtake nothing but can be overtaken): the order must be identical within each.
    for qos in (0, 1, 2):
        assert [m for m in as_received if m[2] == qos] == [m for m in as_sent if m[2] == qos]
    report = summary_of(result.stdout)
    assert report["sent"] == report["published"] == report["acknowledged"] == len(messages)
    assert report["failed"] == report["dropped"] == 0
    assert report["expected_s"] == pytest.approx(0.46)
    assert isinstance(report["lateness_ms"], dict) and report["lateness_ms"]["max"] is not None
    assert "Traceback" not in result.stderr


def test_speed_5x_takes_about_a_fifth_of_the_time(broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    messages = [Message(f"{prefix}/device/d1/telemetry", dps368(i / 10), 1, False, T0 + i * S // 10)
                for i in range(21)]  # spans 2.0 s
    path = write_recording(tmp_path / "rec.parquet", messages)
    with Subscriber(broker.tcp_port, f"{prefix}/#") as subscriber:
        result = run_cli("replay", str(path), "-b", broker.tcp_url, "--speed", "5x", "--json")
        got = subscriber.wait_for(len(messages))
    assert result.returncode == 0, result.stderr
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (m.topic, m.payload, m.qos, m.retain) for m in messages]  # one QoS: the exact order
    # A correctness check that the speed factor is applied (2 s / 5 = 0.4 s), not a
    # performance test: the margin is generous on purpose.
    span = got[-1].at - got[0].at
    assert 0.25 < span < 1.5, span
    report = summary_of(result.stdout)
    assert report["speed"] == 5.0 and report["expected_s"] == pytest.approx(0.4)


def test_dry_run_to_stdout_with_window_loop_and_rewrites(tmp_path: Path) -> None:
    messages = [Message(f"device/d{i % 2}/telemetry", dps368(i), 1, i == 0, T0 + i * S // 100) for i in range(10)]
    path = write_recording(tmp_path / "rec.jsonl", messages)
    result = run_cli("replay", str(path), "--to", "-", "--speed", "max", "--start", "0.02", "--end", "0.05",
                     "--topic", "device/d1/#", "--remap", "device/=lab/", "--topic-prefix", "site/",
                     "--qos", "2", "--loop", "2", "--json")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    selected = [m for m in messages
                if m.topic.startswith("device/d1") and 2 * S // 100 <= m.time_ns - T0 <= 5 * S // 100]
    assert [line["recorded_time_ns"] for line in lines] == [m.time_ns for m in selected] * 2
    assert {line["topic"] for line in lines} == {"site/lab/d1/telemetry"}
    assert all(line["qos"] == 2 and line["encoding"] == "json" and ISO_UTC.fullmatch(line["time"])
               for line in lines)
    assert lines[0]["payload"] == orjson.loads(selected[0].payload)
    report = json.loads(result.stderr.strip().splitlines()[-1])  # with --to -, the summary goes to stderr
    assert report["target"] == "-" and report["sent"] == 4 and report["loops"] == 2 and report["speed"] == "max"


def test_dry_run_keeps_the_timing(tmp_path: Path) -> None:
    messages = [Message("device/d1/telemetry", b"%d" % i, 0, False, T0 + i * S // 5) for i in range(4)]
    path = write_recording(tmp_path / "rec.parquet", messages)
    result = run_cli("replay", str(path), "--to", "-", "--speed", "2x")
    assert result.returncode == 0, result.stderr
    sent_ns = [json.loads(line)["time_ns"] for line in result.stdout.splitlines()]
    # The lines come out spread like the recording at 2x (0.6 s / 2): a loose correctness check.
    assert sent_ns == sorted(sent_ns)
    assert 0.2 < (sent_ns[-1] - sent_ns[0]) / 1e9 < 1.0
    assert "replayed 4 messages" in result.stderr and "expected 0.300 s at 2x" in result.stderr
    assert "send lateness p50" in result.stderr


def test_restamp_sets_the_republish_time(broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    messages = [Message(f"{prefix}/device/d1/telemetry", dps368(i), 1, False, T0 + i * S // 50) for i in range(3)]
    messages.append(Message(f"{prefix}/device/d1/raw", b"\x00\x01", 1, False, T0 + 3 * S // 50))
    path = write_recording(tmp_path / "rec.parquet", messages)
    with Subscriber(broker.tcp_port, f"{prefix}/#") as subscriber:
        before = time.time()
        result = run_cli("replay", str(path), "-b", broker.tcp_url, "--restamp", "--json")
        after = time.time()
        got = subscriber.wait_for(len(messages))
    assert result.returncode == 0, result.stderr
    for original, received in zip(messages[:3], got[:3], strict=True):
        data = orjson.loads(received.payload)
        assert list(data) == ["timestamp", "device_id", "sensor_type", "data"]
        assert ISO_UTC.fullmatch(data["timestamp"])
        from datetime import datetime

        assert before <= datetime.fromisoformat(data["timestamp"]).timestamp() <= after
        expected = orjson.loads(original.payload)
        assert {k: v for k, v in data.items() if k != "timestamp"} == {
            k: v for k, v in expected.items() if k != "timestamp"}
    assert got[3].payload == b"\x00\x01"
    report = summary_of(result.stdout)
    assert report["restamped"] == 3 and report["not_restamped"] == 1


def test_restore_retained_publishes_the_state_from_before_the_window(broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    messages = [
        Message(f"{prefix}/device/a/status", b"a-old", 1, True, T0),
        Message(f"{prefix}/device/b/status", b"b-online", 1, True, T0 + S // 10),
        Message(f"{prefix}/device/a/status", b"a-new", 1, True, T0 + 2 * S // 10),
        Message(f"{prefix}/device/a/telemetry", b"early", 1, False, T0 + 3 * S // 10),
        Message(f"{prefix}/device/a/telemetry", b"in window 1", 1, False, T0 + 10 * S // 10),
        Message(f"{prefix}/device/a/telemetry", b"in window 2", 1, False, T0 + 11 * S // 10),
    ]
    path = write_recording(tmp_path / "rec.parquet", messages)
    with Subscriber(broker.tcp_port, f"{prefix}/#") as subscriber:
        result = run_cli("replay", str(path), "-b", broker.tcp_url, "--start", "1", "--restore-retained", "--json")
        got = subscriber.wait_for(4)
    assert result.returncode == 0, result.stderr
    assert [(m.payload, m.retain) for m in got] == [(b"b-online", True), (b"a-new", True),
                                                   (b"in window 1", False), (b"in window 2", False)]
    report = summary_of(result.stdout)
    assert report["restored_retained"] == 2 and report["sent"] == 2 and report["published"] == 4
    # The broker now holds that state: a new subscriber gets it as retained messages.
    with Subscriber(broker.tcp_port, f"{prefix}/+/+/status") as late:
        retained = late.wait_for(2)
    assert sorted(m.payload for m in retained) == [b"a-new", b"b-online"]


def test_sigterm_stops_flushes_reports_and_exits_0(broker: Mosquitto, tmp_path: Path) -> None:
    prefix = unique_prefix()
    messages = [Message(f"{prefix}/device/d1/telemetry", b"%d" % i, 1, False, T0 + i * S // 10) for i in range(100)]
    path = write_recording(tmp_path / "rec.parquet", messages)  # 10 s at 1x
    with Subscriber(broker.tcp_port, f"{prefix}/#") as subscriber:
        process = start_cli("replay", str(path), "-b", broker.tcp_url, "--json")
        subscriber.wait_for(5)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
        got = subscriber.wait_for(len(messages), timeout=0.5)
    assert process.returncode == 0, err
    report = summary_of(out)
    assert report["stopped"] is True and report["stopped_by"] == "SIGTERM"
    assert 5 <= int(report["sent"]) < len(messages)  # type: ignore[call-overload]
    assert report["acknowledged"] == report["sent"] == len(got)
    assert "Traceback" not in err


def test_lost_connection_counts_dropped_messages_and_exits_7(own_broker: Mosquitto, tmp_path: Path) -> None:
    messages = [Message("device/d1/telemetry", b"%d" % i, 0, False, T0 + i * S // 50) for i in range(60)]
    path = write_recording(tmp_path / "rec.parquet", messages)  # 1.2 s at 1x, QoS 0
    with Subscriber(own_broker.tcp_port, "device/#") as subscriber:
        process = start_cli("replay", str(path), "-b", own_broker.tcp_url, "--json")
        assert len(subscriber.wait_for(3)) >= 3  # connected and publishing
        own_broker.stop()
        out, err = process.communicate(timeout=30)
    assert process.returncode == 7, err
    report = summary_of(out)
    assert int(report["dropped"]) > 0  # type: ignore[call-overload]
    assert report["published"] == len(messages)
    assert "Traceback" not in err


@pytest.mark.parametrize("speed", ["0", "0x", "-1", "nan", "inf", "fast", "5xx", ""])
def test_bad_speed_values_exit_1_with_one_line(tmp_path: Path, speed: str) -> None:
    path = write_recording(tmp_path / "rec.jsonl", [Message("t", b"x", 0, False, T0)])
    result = run_cli("replay", str(path), "--to", "-", f"--speed={speed}")
    assert result.returncode == 1
    assert result.stderr.startswith("tesaiot: error: invalid --speed") and result.stderr.count("\n") == 1
    assert result.stdout == ""


@pytest.mark.parametrize(("args", "code", "message"), [
    (["missing.parquet"], 5, "recording not found"),
    (["missing.jsonl"], 5, "recording not found"),
    (["GARBAGE.parquet"], 5, "GARBAGE.parquet"),
    (["GARBAGE.jsonl"], 5, "GARBAGE.jsonl"),
    (["rec.txt"], 1, "cannot tell the recording format"),
    (["REC", "--topic", "device/#/x"], 1, "invalid topic filter"),
    (["REC", "--remap", "device"], 1, "invalid --remap"),
    (["REC", "--remap", "a=b/#"], 1, "invalid --remap"),
    (["REC", "--topic-prefix", "a/+/"], 1, "invalid --topic-prefix"),
    (["REC", "--start", "yesterday"], 1, "invalid --start"),
    (["REC", "--start", "5", "--end", "1"], 1, "is before --start"),
    (["REC", "--loop", "0"], 1, "invalid --loop"),
    (["REC", "--to", "out.txt"], 1, "invalid --to"),
    (["REC", "--restore-retained", "--no-retain"], 1, "contradict"),
    (["REC", "-b", "mqtt://127.0.0.1:1", "--connect-timeout", "3"], 3, "connection refused"),
])
def test_bad_input_gives_a_clear_error_and_exit_code(tmp_path: Path, args: list[str], code: int,
                                                     message: str) -> None:
    rec = write_recording(tmp_path / "rec.parquet", [Message("device/a/telemetry", b"x", 0, False, T0)])
    (tmp_path / "GARBAGE.parquet").write_bytes(b"this is not parquet at all")
    (tmp_path / "GARBAGE.jsonl").write_bytes(b"\x00\x01 not json\n")
    (tmp_path / "rec.txt").write_text("x")
    argv = [str(rec) if arg == "REC" else (str(tmp_path / arg) if arg.endswith((".parquet", ".jsonl", ".txt"))
                                           else arg) for arg in args]
    if "-b" not in argv and "--to" not in argv:
        argv += ["--to", "-"]
    result = run_cli("replay", *argv)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("tesaiot: error: ")
    assert result.stdout == ""


def test_loop_takes_an_optional_count() -> None:
    assert loop_value_optional(["f", "--loop"]) == ["f", "--loop=forever"]
    assert loop_value_optional(["--loop", "f"]) == ["--loop=forever", "f"]
    assert loop_value_optional(["f", "--loop", "3"]) == ["f", "--loop", "3"]
    assert loop_value_optional(["f", "--loop", "--speed", "2"]) == ["f", "--loop=forever", "--speed", "2"]
    assert loop_value_optional(["f", "--", "--loop"]) == ["f", "--", "--loop"]
    assert parse_loops(None) == 1 and parse_loops("forever") is None and parse_loops("3") == 3
    with pytest.raises(ConfigError, match="--loop"):
        parse_loops("many")


def test_bare_loop_replays_until_stopped(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "rec.jsonl", [Message("t/a", b"1", 0, False, T0),
                                                    Message("t/b", b"2", 0, False, T0 + S // 100)])
    process = start_cli("replay", "--loop", str(path), "--to", "-", "--speed", "10x")
    assert process.stdout is not None
    lines = [process.stdout.readline() for _ in range(7)]  # more than one loop's worth
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert [json.loads(line)["topic"] for line in lines] == ["t/a", "t/b"] * 3 + ["t/a"]
    assert "stopped by SIGINT" in err


# -- what a user sees: the start line, progress, pause, labels, unsealed files -----------------


def test_start_line_says_what_how_long_and_at_what_speed(tmp_path: Path) -> None:
    path = write_recording(tmp_path / "rec.jsonl", [Message(f"t/{i}", b"x", 0, False, T0 + i * S // 10)
                                                    for i in range(21)])
    result = run_cli("replay", str(path), "--to", "-", "--speed", "20x")
    assert result.returncode == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first == ("tesaiot: replaying 21 messages (2 s recorded, from 2026-09-21 14:13:20 UTC) to stdout "
                     "at 20x: about 0.1 s"), first
    result = run_cli("replay", str(path), "--to", "-", "--speed", "max", "--loop", "3", "-t", "t/1")
    # the selection's count (issue 21 item 8: it said the whole file's 21)
    assert "replaying a selection of 1 message " in result.stderr and "3 loops" in result.stderr
    assert "  written 3 lines to stdout" in result.stderr  # not "acknowledged": nothing was published
    assert "acknowledged" not in result.stderr


def test_progress_line_with_total_and_percent_and_space_pauses_on_a_tty(tmp_path: Path) -> None:
    from tests.support.tty import TTYProcess

    path = write_recording(tmp_path / "rec.jsonl", [Message(f"t/{i}", b"x", 0, False, T0 + i * S // 20)
                                                    for i in range(60)])  # 3 s at 1x
    process = TTYProcess("replay", str(path), "--to", "-")
    screen = process.read_for(1.2)
    assert "space pauses" in screen
    process.type(b" ")
    paused_at = time.monotonic()
    screen = process.read_for(1.5)
    assert "PAUSED: space resumes, Ctrl+C stops" in screen
    process.type(b" ")
    run = process.finish(timeout=30)
    paused_s = time.monotonic() - paused_at
    assert run.returncode == 0, run.terminal
    progress = [frame for frame in run.frames() if frame.startswith("sent ")]
    assert progress and all(re.match(r"sent \d+ of 60 +\d+% ", frame) for frame in progress), progress
    percents = [int(re.search(r"(\d+)%", frame)[1]) for frame in progress]  # type: ignore[index]
    assert percents == sorted(percents) and 0 < percents[-1] <= 100
    assert re.search(r"paused 1\.\d s", run.terminal), run.terminal
    assert len(run.stdout.splitlines()) == 60
    # The schedule resumed where it was: the run took its 3 s plus the pause, not less.
    stamps = [json.loads(line)["time_ns"] for line in run.stdout.splitlines()]
    assert (stamps[-1] - stamps[0]) / S >= 2.9 + 1.2
    assert paused_s >= 1.5


def test_dry_run_carries_the_ground_truth_label(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    with open_writer(path, metadata=RecordingMetadata(source="simulate", labelled=True)) as writer:
        for i, label in enumerate(["normal", "spike", "normal"]):
            writer.write(Message("device/d/telemetry", b"{}", 1, False, T0 + i * S // 100), label=label)
    result = run_cli("replay", str(path), "--to", "-", "--speed", "max", "--loop", "2")
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()] == ["normal", "spike", "normal"] * 2
    plain = write_recording(tmp_path / "plain.jsonl", [Message("t", b"1", 0, False, T0)])
    assert "label" not in json.loads(run_cli("replay", str(plain), "--to", "-").stdout)


def test_replaying_an_unsealed_recording_says_so(broker: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    process = start_cli("record", str(path), "-b", broker.tcp_url, "-t", f"{unique_prefix()}/#")
    wait_for_stderr(process, "recording")  # started, however slowly (a loaded machine)
    deadline = time.monotonic() + 20
    while not path.with_name(path.name + ".partial").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    process.kill()  # SIGKILL: the recording stays unsealed (crash.parquet.partial/)
    process.communicate(timeout=10)
    for args in (["replay", str(path), "--to", "-"], ["convert", str(path), str(tmp_path / "out.jsonl")]):
        result = run_cli(*args)
        assert result.returncode == 0, result.stderr
        assert "is not sealed (left by a crash?)" in result.stderr, (args, result.stderr)
        assert f"'tesaiot recover {path}' seals it" in result.stderr


def test_a_small_selection_is_read_once_however_often_it_loops(tmp_path: Path) -> None:
    """--loop of a tiny selection at --speed max re-read the whole file every loop; now the
    selection is kept after the first loop (removing the file afterwards changes nothing)."""
    messages = [Message(f"noise/{i}", b"n", 0, False, T0 + i * 1000) for i in range(3000)]
    messages[1500] = Message("only/this", b"picked", 0, False, T0 + 1500 * 1000)
    path = write_recording(tmp_path / "big.jsonl", messages)
    process = start_cli("replay", str(path), "--to", "-", "--speed", "max", "--loop", "-t", "only/this")
    assert process.stdout is not None
    first = [process.stdout.readline() for _ in range(3)]
    path.unlink()
    later = [process.stdout.readline() for _ in range(200)]
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert {json.loads(line)["topic"] for line in first + later} == {"only/this"}
