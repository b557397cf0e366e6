"""`tesaiot record` as a user runs it: a real process, a real mosquitto, real signals."""

from __future__ import annotations

import random
import re
import resource
import signal
import time
import uuid
from pathlib import Path

import pytest

from tesaiot_cli.cliutil import EXIT_CONFIG, EXIT_CONNECT, EXIT_RECORDING
from tesaiot_cli.message import Message
from tesaiot_cli.recording import open_reader
from tests.support.broker import PASSWORD, TOKEN, USER, Mosquitto
from tests.support.cli import Proc, clean_env, record, run_cli
from tests.support.clients import publish
from tests.support.recordings import wait_recorded


def prefix() -> str:
    return f"rec-{uuid.uuid4().hex[:8]}"


ODD = [  # (topic suffix, payload, qos)
    ("device/d1/telemetry/DPS368", b'{"data": {"pressure": 1013.25, "temperature": 25.5}}', 1),
    ("empty", b"", 1),
    ("binary", bytes(range(256)), 0),
    ("latin1/ünï", "héllo".encode("latin-1"), 1),
    ("big", bytes((i * 31) % 251 for i in range(1 << 20)), 1),
]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_sigterm_leaves_a_complete_byte_exact_file(broker: Mosquitto, tmp_path: Path, fmt: str) -> None:
    top = prefix()
    publish(broker.tcp_port, [(f"{top}/retained", b"kept by the broker")], retain=True)
    path = tmp_path / f"rec.{fmt}"
    recorder = record(str(path), "-b", broker.tcp_url, "-t", f"{top}/#")
    try:
        for suffix, payload, qos in ODD:
            publish(broker.tcp_port, [(f"{top}/{suffix}", payload)], qos=qos)
        assert wait_recorded(path, len(ODD) + 1) == len(ODD) + 1
        assert recorder.stop() == 0, recorder.stderr
    finally:
        publish(broker.tcp_port, [(f"{top}/retained", b"")], retain=True)  # clear it for other tests
    assert "recorded 6 messages" in recorder.stderr and "stopped by SIGTERM" in recorder.stderr
    assert f"{top}/big" in recorder.stderr  # per-topic counts in the summary
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # sealed, nothing left over
    with open_reader(path) as reader:
        messages = list(reader)
        assert reader.metadata.topic_filters == (f"{top}/#",)
        assert reader.metadata.broker == broker.tcp_url
        assert reader.metadata.source == "record"
    assert messages[0].topic == f"{top}/retained" and messages[0].retain is True
    got = {m.topic: m for m in messages[1:]}
    for suffix, payload, qos in ODD:
        message = got[f"{top}/{suffix}"]
        assert (message.payload, message.qos, message.retain) == (payload, qos, False)
    now = time.time_ns()
    assert all(now - 60e9 < m.time_ns <= now for m in messages)
    assert [m.time_ns for m in messages] == sorted(m.time_ns for m in messages)


def test_summary_rate_leaves_out_the_wait_for_the_first_message(broker: Mosquitto, tmp_path: Path) -> None:
    top = prefix()
    recorder = record(str(tmp_path / "late.jsonl"), "-b", broker.tcp_url, "-t", f"{top}/#", "--count", "20")
    time.sleep(2.0)  # the recorder waits 2 s for the first message: not part of the rate
    publish(broker.tcp_port, [(f"{top}/n", str(i).encode()) for i in range(20)])
    assert recorder.wait() == 0, recorder.stderr
    match = re.search(r"recorded 20 messages in [^(]+\(([\d,.]+) msg/s from the first message to the last\)",
                      recorder.stderr)
    assert match, recorder.stderr
    assert float(match.group(1).replace(",", "")) > 20  # 20 messages over ~2 s would be < 10 msg/s
    one = run_cli("record", str(tmp_path / "one.jsonl"), "-b", broker.tcp_url, "-t", f"{top}/none",
                  "--duration", "0.3")
    assert "recorded 0 messages in" in one.stderr and "msg/s" not in one.stderr


def test_a_name_without_suffix_is_said_to_become_a_dataset(broker: Mosquitto, tmp_path: Path) -> None:
    result = run_cli("record", str(tmp_path / "run1"), "-b", broker.tcp_url, "-t", f"{prefix()}/none",
                     "--duration", "0.3")
    assert result.returncode == 0, result.stderr
    assert "(a dataset directory, as the name has no suffix: Parquet files partitioned by date; name it " \
           f"{tmp_path / 'run1'}.parquet or" in result.stderr
    result = run_cli("record", str(tmp_path / "run2.jsonl"), "-b", broker.tcp_url, "-t", f"{prefix()}/none",
                     "--duration", "0.3")
    assert "dataset" not in result.stderr


def test_count_and_duration_stop_by_themselves(broker: Mosquitto, tmp_path: Path) -> None:
    top = prefix()
    path = tmp_path / "count.parquet"
    recorder = record(str(path), "-b", broker.tcp_url, "-t", f"{top}/#", "--count", "3")
    publish(broker.tcp_port, [(f"{top}/n", str(i).encode()) for i in range(5)])
    assert recorder.wait() == 0, recorder.stderr
    assert "stopped by count" in recorder.stderr
    with open_reader(path) as reader:
        assert [m.payload for m in reader] == [b"0", b"1", b"2"]
    started = time.monotonic()
    result = run_cli("record", str(tmp_path / "quiet.jsonl"), "-b", broker.tcp_url, "-t", f"{top}/none",
                     "--duration", "0.5")
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - started < 20
    assert "recorded 0 messages" in result.stderr and "stopped by duration" in result.stderr
    with open_reader(tmp_path / "quiet.jsonl") as reader:
        assert reader.count() == 0


def test_sigkill_loses_at_most_the_last_second_and_recover_seals(broker: Mosquitto, tmp_path: Path) -> None:
    top = prefix()
    path = tmp_path / "killed.parquet"
    recorder = record(str(path), "-b", broker.tcp_url, "-t", f"{top}/#", "--qos", "1")
    publish(broker.tcp_port, [(f"{top}/a", b"%d" % i) for i in range(50)])
    assert wait_recorded(path, 50) == 50
    publish(broker.tcp_port, [(f"{top}/b", b"%d" % i) for i in range(30)])
    time.sleep(1.5)  # more than the ~1 s the recorder may lose
    assert recorder.stop(signal.SIGKILL) == -signal.SIGKILL
    partial = tmp_path / "killed.parquet.partial"
    assert not path.exists() and partial.is_dir()

    info = run_cli("info", str(path))
    assert info.returncode == 0, info.stderr
    assert "messages    80" in info.stdout and "NOT SEALED" in info.stdout
    assert f"tesaiot recover {path}" in info.stderr and "Traceback" not in info.stderr

    recovered = run_cli("recover", str(path))
    assert recovered.returncode == 0, recovered.stderr
    assert "sealed 80 messages" in recovered.stderr
    assert path.is_file() and not partial.exists()
    with open_reader(path) as reader:
        payloads = [(m.topic[-1], m.payload) for m in reader]
    assert payloads == [("a", b"%d" % i) for i in range(50)] + [("b", b"%d" % i) for i in range(30)]


def test_refuses_to_overwrite_without_force(broker: Mosquitto, tmp_path: Path) -> None:
    path = tmp_path / "exists.parquet"
    path.write_bytes(b"precious")
    result = run_cli("record", str(path), "-b", broker.tcp_url, "--duration", "0.2")
    assert result.returncode == EXIT_CONFIG
    assert "already exists" in result.stderr and "--force" in result.stderr
    assert path.read_bytes() == b"precious"
    (tmp_path / "left.parquet.partial").mkdir()
    result = run_cli("record", str(tmp_path / "left.parquet"), "-b", broker.tcp_url, "--duration", "0.2")
    assert result.returncode == EXIT_CONFIG and "left.parquet.partial" in result.stderr
    result = run_cli("record", str(path), "-b", broker.tcp_url, "-t", f"{prefix()}/#", "--duration", "0.2",
                     "--force")
    assert result.returncode == 0, result.stderr
    with open_reader(path) as reader:
        assert reader.count() == 0


def test_unreachable_broker_creates_no_file(tmp_path: Path) -> None:
    path = tmp_path / "never.parquet"
    result = run_cli("record", str(path), "-b", "mqtt://127.0.0.1:1", "--connect-timeout", "2")
    assert result.returncode == EXIT_CONNECT
    assert list(tmp_path.iterdir()) == []
    assert "Traceback" not in result.stderr


def test_metadata_never_holds_a_secret(broker: Mosquitto, tmp_path: Path) -> None:
    top = f"device/{prefix()}/telemetry"
    runs = {
        "password.parquet": (["-b", broker.auth_url, "-u", USER, "--password", PASSWORD, "-t", f"{top}/#"], {}),
        "inline.jsonl": (["-b", f"mqtt://{USER}:{PASSWORD}@127.0.0.1:{broker.auth_port}", "-t", f"{top}/#"], {}),
        "token.parquet": (["-b", broker.auth_url], {"MQTT_API_TOKEN": TOKEN}),  # default device/+/telemetry/#
    }
    for name, (args, extra_env) in runs.items():
        recorder = record(str(tmp_path / name), *args, env=clean_env(**extra_env))
        publish(broker.auth_port, [(f"{top}/s", b"secret-free")], username=USER, password=PASSWORD)
        assert wait_recorded(tmp_path / name, 1) >= 1, name
        assert recorder.stop() == 0, recorder.stderr
        data = (tmp_path / name).read_bytes()
        assert PASSWORD.encode() not in data and TOKEN.encode() not in data, name
        assert TOKEN[12:40].encode() not in data and PASSWORD not in recorder.stderr
    with open_reader(tmp_path / "token.parquet") as reader:
        assert reader.metadata.topic_filters == ("device/+/telemetry/#",)
        assert reader.metadata.broker == broker.auth_url


def test_persistent_session_gets_what_was_published_while_away(broker: Mosquitto, tmp_path: Path) -> None:
    top = prefix()
    name = f"tesaiot-test-{uuid.uuid4().hex[:6]}"
    first = record(str(tmp_path / "1.parquet"), "-b", broker.tcp_url, "-t", f"{top}/#", "--session", name)
    assert first.stop() == 0, first.stderr
    publish(broker.tcp_port, [(f"{top}/away", b"%d" % i) for i in range(5)], qos=1)
    second = record(str(tmp_path / "2.parquet"), "-b", broker.tcp_url, "-t", f"{top}/#", "--session", name)
    assert wait_recorded(tmp_path / "2.parquet", 5) == 5
    assert second.stop() == 0, second.stderr
    with open_reader(tmp_path / "2.parquet") as reader:
        assert [m.payload for m in reader] == [b"%d" % i for i in range(5)]
        assert reader.metadata.extra == {"qos": 1, "session": name}
    # Clean the persistent session away.
    run_cli("record", str(tmp_path / "3.parquet"), "-b", broker.tcp_url, "-t", f"{top}/#", "--client-id", name,
            "--duration", "0.1")


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_write_error_stops_with_exit_recording_and_keeps_what_was_written(
        broker: Mosquitto, tmp_path: Path, fmt: str) -> None:
    top = prefix()
    path = tmp_path / f"full.{fmt}"
    recorder = Proc("record", str(path), "-b", broker.tcp_url, "-t", f"{top}/#", env=clean_env(),
                    preexec_fn=_limit_file_size)
    recorder.wait_for_stderr("recording mqtt")
    process = recorder.process
    rng = random.Random(7)
    for _ in range(40):
        if process.poll() is not None:
            break
        publish(broker.tcp_port, [(f"{top}/n", rng.randbytes(20_000))])  # incompressible: fills 256 KiB
        time.sleep(0.05)
    assert recorder.wait() == EXIT_RECORDING, recorder.stderr
    assert "file size limit" in recorder.stderr and "Traceback" not in recorder.stderr
    if fmt == "parquet":
        assert "tesaiot recover" in recorder.stderr
        assert run_cli("recover", str(path)).returncode == 0
    with open_reader(path) as reader:
        kept = [m for m in reader]
    assert kept and all(isinstance(m, Message) and len(m.payload) == 20_000 for m in kept)



def test_invalid_topic_filter_is_refused_before_connecting(tmp_path: Path) -> None:
    result = run_cli("record", str(tmp_path / "x.parquet"), "-b", "mqtt://127.0.0.1:1", "-t", "a/#/b")
    assert result.returncode == EXIT_CONFIG
    assert "'#' must be a whole level and the last one" in one_line(result.stderr)
    assert list(tmp_path.iterdir()) == []


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]
