"""Recording formats: byte-exact round trips, metadata, crash leftovers, damage (no broker)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import (
    FORMAT_VERSION,
    RecordingMetadata,
    existing_outputs,
    format_for,
    open_reader,
    open_writer,
    recover,
    remove_outputs,
)
from tesaiot_cli.recording.formats import jsonl as jsonl_format
from tesaiot_cli.recording.formats import parquet_write as parquet_format
from tesaiot_cli.recording.meta import METADATA_KEY
from tests.support.recordings import odd_messages

FORMATS = ["parquet", "jsonl"]
T0 = 1_763_800_000_123_456_789


def write_all(path: Path, rows: list[tuple[Message, str | None]], *, fmt: str, crash_safe: bool = True,
              metadata: RecordingMetadata | None = None) -> object:
    writer = open_writer(path, metadata=metadata or RecordingMetadata(tool_version="test"), format=fmt,
                         crash_safe=crash_safe)
    for message, label in rows:
        writer.write(message, label=label)
    return writer.close()


def read_all(path: Path, fmt: str | None = None) -> list[tuple[Message, str | None]]:
    with open_reader(path, format=fmt) as reader:
        return list(reader.iter_labelled())


@pytest.mark.parametrize("crash_safe", [True, False], ids=["live", "convert"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip_is_byte_exact(tmp_path: Path, fmt: str, crash_safe: bool) -> None:
    rows = odd_messages()
    path = tmp_path / f"odd.{fmt}"
    summary = write_all(path, rows, fmt=fmt, crash_safe=crash_safe)
    assert read_all(path) == rows
    with open_reader(path) as reader:
        assert [m for m in reader] == [m for m, _ in rows]
        assert reader.count() == len(rows)
        assert reader.metadata.labels == ("high_temperature", "normal")
    assert summary.messages == len(rows)  # type: ignore[attr-defined]
    assert summary.payload_bytes == sum(len(m.payload) for m, _ in rows)  # type: ignore[attr-defined]
    assert summary.file_bytes == path.stat().st_size  # type: ignore[attr-defined]
    assert summary.topic_counts["bom"] == 1  # type: ignore[attr-defined]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary or partial left


@pytest.mark.parametrize("fmt", FORMATS)
def test_metadata_round_trip_without_credentials(tmp_path: Path, fmt: str) -> None:
    metadata = RecordingMetadata(tool_version="9.9", broker="mqtt://alice:pa55word@127.0.0.1:1883",
                                 topic_filters=("device/+/telemetry/#", "x/#"), source="simulate", seed=42,
                                 labelled=True, extra={"qos": 1, "anomaly_every": 10})
    path = tmp_path / f"meta.{fmt}"
    write_all(path, odd_messages()[:3], fmt=fmt, metadata=metadata)
    with open_reader(path) as reader:
        got = reader.metadata
    assert (got.tool_version, got.broker, got.topic_filters, got.source, got.seed, got.labelled) == (
        "9.9", "mqtt://127.0.0.1:1883", ("device/+/telemetry/#", "x/#"), "simulate", 42, True)
    assert got.extra == {"qos": 1, "anomaly_every": 10}
    assert (got.start_ns, got.end_ns, got.format_version) == (T0, T0 + 2, FORMAT_VERSION)
    assert len(got.recording_id) == 16
    assert b"pa55word" not in path.read_bytes()


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_recording_is_valid(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"empty.{fmt}"
    summary = write_all(path, [], fmt=fmt)
    assert summary.messages == 0  # type: ignore[attr-defined]
    with open_reader(path) as reader:
        assert reader.count() == 0
        assert list(reader) == []
        assert reader.metadata.start_ns is None


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    newer = {"format": "tesaiot-recording", "format_version": FORMAT_VERSION + 1}
    jsonl = tmp_path / "new.jsonl"
    jsonl.write_bytes(orjson.dumps({"tesaiot_recording": newer}) + b"\n")
    parquet = tmp_path / "new.parquet"
    table = pa.table({"time": pa.array([1], pa.int64()), "topic": ["t"], "payload": [b"x"]})
    pq.write_table(table.replace_schema_metadata({METADATA_KEY: orjson.dumps(newer)}), parquet)
    for path in (jsonl, parquet):
        with pytest.raises(RecordingError, match=rf"version {FORMAT_VERSION + 1}.*upgrade tesaiot"):
            open_reader(path)


def test_parquet_from_elsewhere_is_readable(tmp_path: Path) -> None:
    # A file made with pandas/pyarrow: int64 time, plain strings, no tesaiot metadata.
    path = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"time": pa.array([5, 6], pa.int64()), "topic": ["device/a/telemetry", "b"],
                             "payload": [b"1", b"2"]}), path)
    assert read_all(path) == [(Message("device/a/telemetry", b"1", 0, False, 5), None),
                              (Message("b", b"2", 0, False, 6), None)]
    with open_reader(path) as reader:
        assert (reader.metadata.source, reader.metadata.start_ns, reader.metadata.end_ns) == ("unknown", 5, 6)


def test_parquet_schema_is_friendly(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    write_all(path, odd_messages()[:2], fmt="parquet")
    table = pq.read_table(path)
    assert str(table.schema.field("time").type) == "timestamp[ns, tz=UTC]"
    assert table.column_names == ["time", "topic", "payload", "qos", "retain", "device_id", "sensor_type", "label",
                                  "properties"]
    assert table.column("device_id").to_pylist() == ["infineon-sensor-01", "dev"]
    assert table.column("sensor_type").to_pylist() == ["DPS368", "default"]
    assert table.column("time").cast(pa.int64()).to_pylist() == [T0, T0 + 1]
    column = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert column.compression == "ZSTD" and "RLE_DICTIONARY" in column.encodings


def test_unsealed_recording_is_read_and_recovered(tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    writer = parquet_format.ParquetWriter(path, RecordingMetadata(tool_version="t"), row_group_rows=4,
                                          part_rows=10).open()
    rows = [(Message(f"t/{i % 3}", str(i).encode(), 1, False, T0 + i), None if i % 2 else "normal")
            for i in range(27)]
    for message, label in rows:
        writer.write(message, label=label)
        if message.time_ns % 5 == 0:
            writer.flush()
    writer.flush()
    writer.discard()  # what a SIGKILL leaves: closed parts, the open part's journal, no final file
    partial = tmp_path / "crash.parquet.partial"
    assert not path.exists() and (partial / "part-000002.parquet").is_file()
    assert existing_outputs(path) == [partial]
    with open_reader(path) as reader:
        assert reader.sealed is False  # type: ignore[attr-defined]
        assert reader.count() == 27
        assert list(reader.iter_labelled()) == rows
        assert reader.metadata.end_ns == T0 + 26
    with open_writer(path.with_name("other.parquet"), metadata=RecordingMetadata()):
        pass
    with pytest.raises(RecordingError, match="unsealed recording"):
        open_writer(path, metadata=RecordingMetadata(), format="parquet")
    result = recover(path)
    assert (result.action, result.messages, result.output) == ("sealed", 27, path)
    assert not partial.exists()
    assert read_all(path) == rows
    assert recover(path).action == "nothing"


def test_torn_journal_tail_is_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "torn.parquet"
    writer = parquet_format.open_writer(path, metadata=RecordingMetadata())
    for i in range(10):
        writer.write(Message("t", bytes([i]), 0, False, i))
        if i in (4, 9):
            writer.flush()  # two journal batches
    writer.discard()
    journal = next((tmp_path / "torn.parquet.partial").glob("journal-*.arrows"))
    with open(journal, "r+b") as handle:
        handle.truncate(journal.stat().st_size - 40)  # a kill in the middle of writing the second batch
    with open_reader(path) as reader:
        assert [m.payload for m in reader] == [bytes([i]) for i in range(5)]
        assert "cut off by the crash" in reader.warnings[0]  # type: ignore[attr-defined]
    assert recover(path).messages == 5


def test_parts_are_merged_when_sealing(tmp_path: Path) -> None:
    path = tmp_path / "parts.parquet"
    writer = parquet_format.ParquetWriter(path, RecordingMetadata(), flush_interval=0.01, row_group_rows=3,
                                          part_rows=7).open()
    rows = [(Message("p", i.to_bytes(2, "big"), 0, False, i), None) for i in range(40)]
    for message, label in rows:
        writer.write(message, label=label)
        if message.time_ns % 9 == 0:
            writer.flush()
    writer.close()
    assert read_all(path) == rows
    assert pq.ParquetFile(path).metadata.num_row_groups >= 1
    assert not (tmp_path / "parts.parquet.partial").exists()


def test_jsonl_torn_last_line_is_reported_then_cut(tmp_path: Path) -> None:
    path = tmp_path / "torn.jsonl"
    rows = odd_messages()[:4]
    write_all(path, rows, fmt="jsonl")
    with open(path, "ab") as handle:
        handle.write(b'{"time": 1, "topic": "t", "payl')
    with open_reader(path) as reader:
        assert list(reader.iter_labelled()) == rows
        assert "incomplete" in reader.warnings[0]  # type: ignore[attr-defined]
    result = recover(path)
    assert (result.action, result.messages, result.lost) == ("truncated", 4, 31)
    assert path.read_bytes().endswith(b"\n")
    assert recover(path).action == "nothing"


def test_jsonl_damaged_line_is_an_error_and_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    rows = odd_messages()[:4]
    write_all(path, rows, fmt="jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = b'{"time": "yesterday", "topic": "t", "payload": "x"}\n'
    path.write_bytes(b"".join(lines))
    with open_reader(path) as reader, pytest.raises(RecordingError, match="line 3 is damaged"):
        list(reader)
    result = recover(path)
    assert (result.action, result.messages, result.lost) == ("salvaged", 3, 1)
    assert result.output == tmp_path / "bad.recovered.jsonl"
    assert read_all(result.output) == [rows[0], rows[2], rows[3]]


def test_truncated_parquet_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.parquet"
    write_all(path, odd_messages(), fmt="parquet")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordingError, match="not a readable Parquet file"):
        open_reader(path)
    with pytest.raises(RecordingError, match="not a readable Parquet file"):
        recover(path)
    (tmp_path / "garbage.parquet").write_bytes(b"")
    with pytest.raises(RecordingError, match="not a readable Parquet file"):
        open_reader(tmp_path / "garbage.parquet")


def test_damaged_row_group_is_reported_and_the_rest_salvaged(tmp_path: Path) -> None:
    path = tmp_path / "dmg.parquet"
    writer = parquet_format.ParquetWriter(path, RecordingMetadata(), row_group_rows=10, crash_safe=False).open()
    for i in range(30):
        writer.write(Message("d", b"payload %03d " % i * 4, 0, False, i))
        if i % 10 == 9:
            writer.flush()
    writer.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_row_groups == 3
    page = meta.row_group(1).column(2).data_page_offset
    data = bytearray(path.read_bytes())
    for offset in range(page + 20, page + 40):
        data[offset] ^= 0x5A
    path.write_bytes(bytes(data))
    with open_reader(path) as reader, pytest.raises(RecordingError, match="row group 2 of 3 is damaged"):
        list(reader)
    result = recover(path)
    assert (result.action, result.messages, result.lost) == ("salvaged", 20, 1)
    assert [m.time_ns for m, _ in read_all(result.output)] == list(range(10)) + list(range(20, 30))


def test_write_errors_become_recording_errors(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="disk is full"):
        open_writer(Path("/dev/full"), metadata=RecordingMetadata(), format="jsonl")
    with pytest.raises(RecordingError, match="does not exist"):
        open_writer(tmp_path / "missing" / "x.parquet", metadata=RecordingMetadata())
    with pytest.raises(RecordingError, match="recording not found"):
        open_reader(tmp_path / "nothing.parquet")
    with pytest.raises(RecordingError, match="recording not found"):
        open_reader(tmp_path / "nothing.jsonl")


def test_write_after_a_failure_or_close_raises(tmp_path: Path) -> None:
    writer = jsonl_format.open_writer(tmp_path / "w.jsonl", metadata=RecordingMetadata())
    writer.close()
    with pytest.raises(RecordingError, match="after close"):
        writer.write(Message("t", b"x"))


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "threads.parquet"
    writer = parquet_format.ParquetWriter(path, RecordingMetadata(), flush_interval=0.001).open()

    def produce(thread: int) -> None:
        for i in range(5000):
            writer.write(Message(f"t/{thread}", b"x", 0, False, i))

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    summary = writer.close()
    assert summary.messages == 20000
    assert summary.topic_counts == {f"t/{n}": 5000 for n in range(4)}
    with open_reader(path) as reader:
        assert reader.count() == 20000


def test_format_registry_and_outputs(tmp_path: Path) -> None:
    assert format_for(Path("a.PARQUET")) == "parquet"
    assert format_for(Path("a.ndjson")) == "jsonl"
    assert format_for(Path("a.bin"), "jsonl") == "jsonl"
    with pytest.raises(ConfigError, match="suffix"):
        format_for(Path("a.csv"))
    path = tmp_path / "o.parquet"
    assert existing_outputs(path) == []
    path.write_bytes(b"old")
    (tmp_path / "o.parquet.partial").mkdir()
    assert len(existing_outputs(path)) == 2
    remove_outputs(path)
    assert existing_outputs(path) == [] and os.listdir(tmp_path) == []


def test_jsonl_left_by_a_crash_is_unsealed_until_recovered(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    writer = jsonl_format.open_writer(path, metadata=RecordingMetadata(source="simulate"))
    rows = odd_messages()[:3]
    for message, label in rows:
        writer.write(message, label=label)
    writer.flush()
    writer.discard()  # a kill: the metadata line still lacks the time span
    with open_reader(path) as reader:
        assert reader.sealed is False  # type: ignore[attr-defined]
        assert (reader.metadata.start_ns, reader.metadata.end_ns) == (T0, T0 + 2)
        assert list(reader.iter_labelled()) == rows
    result = recover(path)
    assert (result.action, result.messages) == ("sealed", 3)
    with open_reader(path) as reader:
        assert reader.sealed is True  # type: ignore[attr-defined]
        assert reader.metadata.labels == ("high_temperature", "normal")
        assert list(reader.iter_labelled()) == rows
