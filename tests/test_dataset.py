"""Hive-partitioned recording datasets: partitioning, the dataset writer, the time-merged
reader, crash leftovers and recovery (no broker needed: messages are written directly)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from tesaiot_cli.cliutil import EXIT_RECORDING
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, recover, schema
from tesaiot_cli.recording.dataset.layout import info_path, part_file_name, prepare_dataset, staged_path
from tesaiot_cli.recording.dataset.partition import parse_partition, split_by_partition
from tesaiot_cli.recording.dataset.reader import merged_tables
from tesaiot_cli.recording.dataset.seal import recover_dataset
from tesaiot_cli.recording.dataset.writer import DatasetWriter
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter
from tests.support.cli import run_cli

# 2026-11-22 23:59:00 UTC: a minute before midnight, so recordings span two dates.
BEFORE_MIDNIGHT_NS = int(dt.datetime(2026, 11, 22, 23, 59, tzinfo=dt.UTC).timestamp()) * 10**9
META = RecordingMetadata(tool_version="test", topic_filters=("device/+/telemetry",), extra={"qos": 1})


def _message(i: int, *, device: str | None = None, step_ns: int = 100_000_000) -> Message:
    device = device if device is not None else f"dev-{i % 3}"
    return Message(f"device/{device}/telemetry", json.dumps({"seq": i}).encode(), 1, False,
                   BEFORE_MIDNIGHT_NS + i * step_ns)


def _writer(root: Path, worker: str, partition: str = "date", **limits: object) -> DatasetWriter:
    spec, _ = prepare_dataset(root, partition=partition, tool_version="test")
    return DatasetWriter(root, metadata=META, spec=spec, worker_id=worker, **limits).open()  # type: ignore[arg-type]


def _seqs(root: Path) -> list[int]:
    with open_reader(root) as reader:
        return [json.loads(m.payload)["seq"] for m in reader]


@pytest.mark.parametrize(("text", "canonical", "keys"), [
    ("date", "date", ["date"]),
    ("hour", "hour", ["date", "hour"]),
    ("date,device", "date,device", ["date", "device"]),
    (" Date , bucket:16 ", "date,bucket:16", ["date", "bucket"]),
    ("none", "none", []),
])
def test_partition_specs(text: str, canonical: str, keys: list[str]) -> None:
    spec = parse_partition(text)
    assert spec.text() == canonical and spec.keys() == keys
    assert parse_partition(spec.text()) == spec


@pytest.mark.parametrize("text", ["", "week", "bucket:1", "bucket:x", "device,bucket:4", "date:3"])
def test_bad_partition_specs(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_partition(text)


def test_split_keeps_the_order_of_each_partition() -> None:
    messages = [_message(i, step_ns=20 * 10**9) for i in range(12)]  # 4 minutes: two dates
    table = schema.full_table(schema.base_table(
        [m.time_ns for m in messages], [m.topic for m in messages], [m.payload for m in messages],
        [1] * 12, [False] * 12, [None] * 12))
    parts = dict(split_by_partition(table, parse_partition("date,bucket:4")))
    assert sum(t.num_rows for t in parts.values()) == 12
    assert {key.split("/")[0] for key in parts} == {"date=2026-11-22", "date=2026-11-23"}
    for key, rows in parts.items():
        times = rows.column("time").cast(pa.int64()).to_pylist()
        assert times == sorted(times)
        assert all(str(t.as_py().date()) == key[5:15] for t in rows.column("time"))


def test_two_writers_make_one_time_ordered_dataset(tmp_path: Path) -> None:
    root = tmp_path / "data"
    first, second = _writer(root, "aa-w1"), _writer(root, "aa-w2")
    for i in range(1200):  # 2 minutes at 10 Hz, across midnight
        if i == 300:
            first.roll()  # sealed before midnight: moved into date=2026-11-22 as it is
        (first if i % 2 else second).write(_message(i))
    summaries = [first.close(), second.close()]
    assert sorted(p.parent.name for p in root.glob("*/part-aa-w1-*.parquet")) == [
        "date=2026-11-22", "date=2026-11-22", "date=2026-11-23"]  # the second file was split
    assert sum(s.messages for s in summaries) == 1200
    dates = sorted(p.name for p in root.glob("date=*"))
    assert dates == ["date=2026-11-22", "date=2026-11-23"]  # the writer split at midnight
    assert _seqs(root) == list(range(1200))  # merged by time: exactly the publishing order
    for part in root.glob("date=*/part-*.parquet"):  # each part is an ordinary recording of one date
        with open_reader(part) as reader:
            assert reader.metadata.source == "record" and reader.metadata.extra["qos"] == 1
            day = dt.datetime.fromtimestamp(reader.metadata.start_ns / 1e9, dt.UTC).date()
            assert part.parent.name == f"date={day}"
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == 1200 and set(table.column("date").to_pylist()) == {"2026-11-22", "2026-11-23"}
    report = run_cli("info", str(root), "--json")
    assert report.returncode == 0, report.stderr
    info = json.loads(report.stdout)
    assert info["format"] == "parquet-dataset" and info["messages"] == 1200 and info["sealed"]
    assert info["metadata"]["extra"]["dataset"]["workers"] == ["aa-w1", "aa-w2"]


def test_the_writer_rolls_over_by_itself(tmp_path: Path) -> None:
    root = tmp_path / "roll"
    writer = _writer(root, "ee", roll_rows=10, check_every_s=0.01)
    for i in range(10):
        writer.write(_message(i))
    deadline = time.monotonic() + 10
    while not writer.files and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(writer.files) == 1 and writer.files[0].exists()  # sealed into the dataset while recording
    writer.write(_message(10))
    assert writer.close().messages == 11 and len(writer.files) == 2
    assert _seqs(root) == list(range(11))


def test_device_partitions_encode_odd_ids(tmp_path: Path) -> None:
    root = tmp_path / "devices"
    writer = _writer(root, "bb", partition="date,device")
    for i, device in enumerate(["0042", "a b%c", "x=y", "0042"]):
        writer.write(_message(i, device=device))
    writer.close()
    assert sorted(p.name for p in root.glob("date=*/device=*")) == ["device=0042", "device=a%20b%25c",
                                                                     "device=x%3Dy"]
    table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
    pairs = set(zip(table.column("device_id").to_pylist(), table.column("device").to_pylist(), strict=True))
    assert pairs == {("0042", "0042"), ("a b%c", "a b%c"), ("x=y", "x=y")}


def test_live_file_then_crash_leftover_then_recover(tmp_path: Path) -> None:
    root = tmp_path / "live"
    writer = _writer(root, "cc")
    for i in range(50):
        writer.write(_message(i))
    writer.flush()
    with open_reader(root) as reader:  # while recording: read from the journal, said to be live
        assert reader.count() == 50 and not reader.sealed and reader.live == 1
        assert any("being recorded right now" in w for w in reader.warnings)
    assert recover_dataset(root).action == "nothing"  # a live file is left alone
    writer.discard()  # as a kill would leave it: journal in staging, lock released
    with open_reader(root) as reader:
        assert reader.count() == 50 and reader.leftovers == 1
    result = recover(root)
    assert result.action == "sealed" and result.messages == 50
    assert _seqs(root) == list(range(50))
    assert not list((root / "_tesaiot" / "staging").iterdir())


def test_a_half_done_split_counts_once(tmp_path: Path) -> None:
    """A crash while splitting: the staged file is complete, one partition's part is there
    too. Readers use the staged file only; recover redoes the split."""
    root = tmp_path / "split"
    prepare_dataset(root, partition="date", tool_version="test")
    staged = staged_path(root, "dd-000001")
    with ParquetWriter(staged, META).open() as staged_writer:
        for i in range(1200):
            staged_writer.write(_message(i))
    early = root / "date=2026-11-22"
    early.mkdir()
    shutil.copy(staged, early / part_file_name("dd-000001"))  # a stale output of the same name
    assert sorted(_seqs(root)) == list(range(1200))
    assert recover(root).action == "sealed"
    assert sorted(_seqs(root)) == list(range(1200)) and not staged.exists()
    assert len(list(root.glob("date=*/part-dd-000001.parquet"))) == 2


def test_merge_survives_out_of_order_sources() -> None:
    def source(times: list[int]) -> pa.Table:
        n = len(times)
        return schema.full_table(schema.base_table(times, ["t"] * n, [b"x"] * n, [0] * n, [False] * n, [None] * n))

    tables = [source([5, 1, 9]), source([2, 3, 4]), source([7])]
    merged = list(merged_tables([(None, lambda t=t: iter([t])) for t in tables]))
    batches = [table.column("time").cast(pa.int64()).to_pylist() for table in merged]
    assert sorted(t for batch in batches for t in batch) == [1, 2, 3, 4, 5, 7, 9]  # every row, once
    assert all(batch == sorted(batch) for batch in batches)


def test_dataset_directory_checks(tmp_path: Path) -> None:
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not a tesaiot dataset"):
        prepare_dataset(stranger, partition=None, tool_version="test")
    root = tmp_path / "data"
    prepare_dataset(root, partition="hour", tool_version="test")
    with pytest.raises(ConfigError, match="partitioned by hour"):
        prepare_dataset(root, partition="date", tool_version="test")
    info_path(root).write_text(json.dumps({"format": "tesaiot-dataset", "format_version": 99}))
    with pytest.raises(RecordingError, match="upgrade tesaiot"):
        prepare_dataset(root, partition=None, tool_version="test")
    empty = run_cli("info", str(stranger))
    assert empty.returncode == EXIT_RECORDING and "is a directory but not a tesaiot dataset" in empty.stderr
