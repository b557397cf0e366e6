"""Scaling out `tesaiot record`: MQTT shared subscriptions on a real mosquitto, one dataset."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from tesaiot_cli.cliutil import EXIT_CONFIG, EXIT_CONNECT
from tesaiot_cli.recording import open_reader
from tests.support.broker import Mosquitto
from tests.support.cli import record, run_cli
from tests.support.clients import publish
from tests.support.recordings import wait_recorded

MESSAGES = 2000
TOPICS = 40


def _messages(run: str) -> list[tuple[str, bytes]]:
    return [(f"device/d{i % TOPICS:02d}/telemetry/{run}", json.dumps({"seq": i}).encode()) for i in range(MESSAGES)]


def _seqs(path: Path) -> list[int]:
    with open_reader(path) as reader:
        return [json.loads(message.payload)["seq"] for message in reader]


def test_two_shared_recorders_hold_every_message_exactly_once(broker: Mosquitto, tmp_path: Path) -> None:
    run, group = uuid.uuid4().hex[:8], f"g{uuid.uuid4().hex[:6]}"
    out = tmp_path / "data"
    common = ("-b", broker.tcp_url, "-t", f"device/+/telemetry/{run}", "--share", group, "--qos", "1")
    first = record(str(out), *common)
    second = record(str(out), *common)
    try:
        publish(broker.tcp_port, _messages(run), qos=1)
        assert wait_recorded(out, MESSAGES, timeout=30) == MESSAGES
    finally:
        codes = [first.stop(signal.SIGINT), second.stop(signal.SIGINT)]
    assert codes == [0, 0], first.stderr + second.stderr
    # Each recorder wrote its own files (part-<recorder id>-<seq>); mosquitto shared the messages.
    per_recorder: dict[str, int] = {}
    for part in out.glob("date=*/part-*.parquet"):
        recorder_id = part.name.split("-")[1]
        per_recorder[recorder_id] = per_recorder.get(recorder_id, 0) + len(_seqs(part))
    assert len(per_recorder) == 2 and all(n > 0 for n in per_recorder.values())
    assert sum(per_recorder.values()) == MESSAGES
    seqs = _seqs(out)
    assert len(seqs) == MESSAGES and set(seqs) == set(range(MESSAGES))  # the union: each exactly once

    # A replay of the merged dataset is in receive-time order.
    dry = run_cli("replay", str(out), "--to", "-", "--speed", "max", "--quiet", timeout=60)
    assert dry.returncode == 0, dry.stderr
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    times = [line["recorded_time_ns"] for line in lines]
    assert len(times) == MESSAGES and times == sorted(times)
    assert {line["payload"]["seq"] for line in lines} == set(range(MESSAGES))

    report = run_cli("info", str(out), "--json")
    assert report.returncode == 0, report.stderr
    info = json.loads(report.stdout)
    assert info["format"] == "parquet-dataset" and info["sealed"] is True
    assert info["messages"] == MESSAGES and len(info["topics"]) == TOPICS
    assert len(info["metadata"]["extra"]["dataset"]["workers"]) == 2
    assert info["metadata"]["extra"]["share_group"] == group
    # pyarrow reads the directory as one table, with the hive partition column added.
    table = ds.dataset(out, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == MESSAGES and "date" in table.column_names


def test_workers_share_the_stream_and_stop_at_the_total_count(broker: Mosquitto, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "workers"
    count = MESSAGES // 2
    recorder = record(str(out), "--workers", "2", "--count", str(count), "-b", broker.tcp_url,
                      "-t", f"device/+/telemetry/{run}", "--partition", "date,device")
    publish(broker.tcp_port, _messages(run), qos=1)
    assert recorder.wait(timeout=60) == 0, recorder.stderr
    assert "stopped by count" in recorder.stderr and "2 workers" in recorder.stderr
    seqs = _seqs(out)
    assert len(seqs) == count == len(set(seqs))  # exactly --count in all, never one twice
    workers = {path.name.split("-")[2] for path in out.glob("date=*/device=*/part-*.parquet")}
    assert workers == {"w1", "w2"}  # both processes recorded part of the stream
    assert len(list(out.glob("date=*/device=*"))) == TOPICS


def test_sigterm_stops_every_worker_and_seals_their_files(broker: Mosquitto, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "stopped"
    recorder = record(str(out), "--workers", "2", "-b", broker.tcp_url, "-t", f"device/+/telemetry/{run}")
    publish(broker.tcp_port, _messages(run)[:300], qos=1)
    assert wait_recorded(out, 300) == 300
    assert recorder.stop(signal.SIGTERM) == 0, recorder.stderr
    assert "recorded 300 messages" in recorder.stderr and "stopped by SIGTERM" in recorder.stderr
    assert sorted(_seqs(out)) == list(range(300))
    assert {p.name.split("-")[2] for p in out.glob("date=*/part-*.parquet")} == {"w1", "w2"}  # both sealed
    assert not list((out / "_tesaiot" / "staging").iterdir())


def test_recover_seals_what_a_killed_recorder_left(broker: Mosquitto, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "crash"
    recorder = record(str(out), "-b", broker.tcp_url, "-t", f"device/+/telemetry/{run}")
    publish(broker.tcp_port, _messages(run)[:200], qos=1)
    assert wait_recorded(out, 200) == 200  # journalled (fsynced) while recording
    recorder.stop(signal.SIGKILL)
    info = run_cli("info", str(out))
    assert info.returncode == 0 and "left unsealed" in info.stderr and "tesaiot recover" in info.stderr
    again = run_cli("record", str(out), "-b", "mqtt://127.0.0.1:1", "--count", "1")  # a new recorder says so too
    assert again.returncode == EXIT_CONNECT and "1 unsealed file(s) left by a crash" in again.stderr
    sealed = run_cli("recover", str(out))
    assert sealed.returncode == 0 and "sealed 200 messages" in sealed.stderr, sealed.stderr
    assert sorted(_seqs(out)) == list(range(200))
    assert not list((out / "_tesaiot" / "staging").iterdir())


@pytest.mark.parametrize(("args", "needle"), [
    (["--workers", "0"], "invalid --workers 0"),
    (["--workers", "65"], "invalid --workers 65"),
    (["--share", "a/b"], "cannot contain '/'"),
    (["--share", ""], "give a group name"),
    (["--partition", "week"], "invalid --partition item 'week'"),
    (["--format", "jsonl"], "written as Parquet"),
    (["--force"], "--force is for single files"),
    (["-t", "$share/g/#", "--share", "g"], "already shared"),
])
def test_bad_scaling_options_are_one_line_errors(tmp_path: Path, args: list[str], needle: str) -> None:
    result = run_cli("record", str(tmp_path / "data"), *args, "-b", "mqtt://127.0.0.1:1", "--count", "1")
    assert result.returncode == EXIT_CONFIG
    assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_workers_need_a_directory_and_leave_nothing_when_the_broker_is_down(tmp_path: Path) -> None:
    single = run_cli("record", str(tmp_path / "out.parquet"), "--workers", "2", "-b", "mqtt://127.0.0.1:1")
    assert single.returncode == EXIT_CONFIG and "dataset directory" in single.stderr
    down = run_cli("record", str(tmp_path / "data"), "--workers", "2", "-b", "mqtt://127.0.0.1:1", "--count", "1")
    assert down.returncode == EXIT_CONNECT, down.stderr
    assert "Traceback" not in down.stderr and not (tmp_path / "data").exists()
    mine = tmp_path / "mine"
    mine.mkdir()  # an empty directory the user made stays, whatever happens
    again = run_cli("record", str(mine), "--workers", "2", "-b", "mqtt://127.0.0.1:1", "--count", "1")
    assert again.returncode == EXIT_CONNECT and mine.is_dir() and not list(mine.iterdir())


def test_kill_9_of_the_workers_parent_leaves_no_leaked_semaphore_warnings(broker: Mosquitto, tmp_path: Path) -> None:
    """A SIGKILL of the `record --workers` parent made Python's resource tracker print
    "There appear to be N leaked semaphore objects" (16.18): it cleans them up, quietly now."""
    run = uuid.uuid4().hex[:8]
    out = tmp_path / "killed"
    recorder = record(str(out), "--workers", "2", "-b", broker.tcp_url, "-t", f"device/+/telemetry/{run}")
    publish(broker.tcp_port, _messages(run)[:100], qos=1)
    assert wait_recorded(out, 100, timeout=30) == 100
    recorder.process.kill()
    recorder.process.wait(timeout=10)
    recorder.wait_for_eof(timeout=35)  # workers and tracker exit: EOF
    assert "leaked semaphore" not in recorder.stderr and "resource_tracker" not in recorder.stderr, recorder.stderr
    assert sorted(_seqs(out)) == list(range(100)) or run_cli("recover", str(out)).returncode == 0
