"""MQTT 5 publish properties in recordings (format version 2): every format keeps them
exactly, messages without them read back as ``None``, and convert, datasets, recovery and
the crash journal carry them."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.recording import FORMAT_VERSION, RecordingMetadata, open_reader, open_writer, recover
from tesaiot_cli.recording.dataset.layout import prepare_dataset
from tesaiot_cli.recording.dataset.writer import DatasetWriter
from tesaiot_cli.recording.formats.jsonl_lines import decode_line, encode_line
from tests.support.cli import run_cli
from tests.support.recordings import write_recording

FORMATS = ["parquet", "jsonl"]
T0 = 1_795_335_896_055_689_123
FULL = PublishProperties(payload_format_indicator=1, message_expiry_interval=2**32 - 1,
                         content_type="application/json; charset=utf-8", response_topic="device/d/reply/\u2603",
                         correlation_data=b"\x00\xff corr", user_properties=(("k", "v1"), ("k", "v2"), ("", "")))


def mixed_rows() -> list[tuple[Message, str | None]]:
    """A batch mixing messages with all, some, empty and no properties, labelled and not."""
    return [
        (Message("device/a/telemetry", b'{"p":1}', 1, False, T0, FULL), "normal"),
        (Message("device/a/telemetry", b"\xff\xfe", 0, True, T0 + 1), None),
        (Message("device/b/telemetry", b"x", 2, False, T0 + 2, PublishProperties()), None),
        (Message("device/b/telemetry", b"", 0, False, T0 + 3, PublishProperties(content_type="text/plain")), "spike"),
        (Message("device/c/telemetry", b"y", 1, False, T0 + 4), None),
    ]


def write(path: Path, rows: list[tuple[Message, str | None]], **kwargs: bool) -> None:
    write_recording(path, rows, metadata=RecordingMetadata(tool_version="t"), **kwargs)


def read(path: Path) -> list[tuple[Message, str | None]]:
    with open_reader(path) as reader:
        return list(reader.iter_labelled())


@pytest.mark.parametrize("fmt", FORMATS)
def test_mixed_batch_round_trips_exactly(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"mixed.{fmt}"
    write(path, mixed_rows())
    assert read(path) == mixed_rows()
    with open_reader(path) as reader:
        assert list(reader) == [message for message, _ in mixed_rows()]
        assert reader.metadata.format_version == FORMAT_VERSION == 2


@pytest.mark.parametrize("fmt", FORMATS)
def test_without_properties_they_read_back_as_none(tmp_path: Path, fmt: str) -> None:
    rows = [(Message("t", b"%d" % i, 1, False, T0 + i), None) for i in range(5)]
    path = tmp_path / f"plain.{fmt}"
    write(path, rows)
    assert read(path) == rows
    assert all(message.properties is None for message, _ in read(path))


def test_parquet_column_is_a_nullable_struct(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    write(path, mixed_rows())
    table = pq.read_table(path)
    column = table.column("properties")
    assert str(column.type) == ("struct<payload_format_indicator: uint8, message_expiry_interval: uint32, "
                                "content_type: string, response_topic: string, correlation_data: binary, "
                                "user_properties: list<element: struct<key: string not null, value: string not null>>>")
    values = column.to_pylist()
    assert values[1] is None and values[4] is None
    assert values[0]["user_properties"] == [{"key": "k", "value": "v1"}, {"key": "k", "value": "v2"},
                                            {"key": "", "value": ""}]
    assert values[2] == {"payload_format_indicator": None, "message_expiry_interval": None, "content_type": None,
                         "response_topic": None, "correlation_data": None, "user_properties": []}


def test_jsonl_line_holds_an_object_with_base64_correlation_data(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    write(path, mixed_rows())
    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()[1:]]
    assert lines[0]["properties"] == {
        "payload_format_indicator": 1, "message_expiry_interval": 2**32 - 1,
        "content_type": "application/json; charset=utf-8", "response_topic": "device/d/reply/\u2603",
        "correlation_data": base64.b64encode(b"\x00\xff corr").decode(), "user_properties": [["k", "v1"], ["k", "v2"],
                                                                                            ["", ""]]}
    assert "properties" not in lines[1]
    assert lines[2]["properties"] == {}
    assert lines[3]["properties"] == {"content_type": "text/plain"}


@pytest.mark.parametrize("bad", [
    {"payload_format_indicator": 256}, {"payload_format_indicator": True}, {"message_expiry_interval": -1},
    {"message_expiry_interval": 2**32}, {"content_type": 5}, {"correlation_data": "not base64!"},
    {"user_properties": [["k"]]}, {"user_properties": {"k": "v"}}, {"user_properties": [["k", 1]]},
    {"topic_alias": 3}, [], "x",
])
def test_a_bad_properties_object_is_a_damaged_line(tmp_path: Path, bad: object) -> None:
    line = orjson.dumps({"time": T0, "topic": "t", "qos": 0, "retain": False, "payload": "x", "properties": bad})
    with pytest.raises(ValueError, match="properties"):
        decode_line(line)
    path = tmp_path / "bad.jsonl"
    write(path, [(Message("t", b"ok", 0, False, T0), None)])
    with open(path, "ab") as handle:
        handle.write(line + b"\n")
    with pytest.raises(RecordingError, match="line 3 is damaged"):
        read(path)


@pytest.mark.parametrize(("source", "target"), [("parquet", "jsonl"), ("jsonl", "parquet")])
def test_convert_keeps_properties_both_ways(tmp_path: Path, source: str, target: str) -> None:
    first = tmp_path / f"in.{source}"
    write(first, mixed_rows())
    middle, back = tmp_path / f"mid.{target}", tmp_path / f"back.{source}"
    for src, dst in ((first, middle), (middle, back)):
        result = run_cli("convert", str(src), str(dst))
        assert result.returncode == 0, result.stderr
    assert read(middle) == mixed_rows() and read(back) == mixed_rows()


def test_convert_of_a_version_1_recording_writes_version_2(tmp_path: Path) -> None:
    golden = Path(__file__).resolve().parent / "golden" / "v1.parquet"
    out = tmp_path / "v1-converted.jsonl"
    assert run_cli("convert", str(golden), str(out)).returncode == 0
    with open_reader(out) as reader:
        assert reader.metadata.format_version == 2
    assert read(out) == read(golden)


def test_dataset_keeps_properties(tmp_path: Path) -> None:
    root = tmp_path / "data"
    spec, _undo = prepare_dataset(root, partition="date,device", tool_version="t")
    with DatasetWriter(root, metadata=RecordingMetadata(), spec=spec, worker_id="w1").open() as writer:
        for message, label in mixed_rows():
            writer.write(message, label=label)
    assert sorted(read(root), key=lambda row: row[0].time_ns) == mixed_rows()


def test_crash_journal_and_recover_keep_properties(tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    writer = open_writer(path, metadata=RecordingMetadata())
    for message, label in mixed_rows():
        writer.write(message, label=label)
    writer.flush()
    assert read(path) == mixed_rows()  # the open part's journal, read while recording
    writer.discard()  # as after a kill: the .partial directory stays
    assert not path.exists()
    assert recover(path).action == "sealed"
    assert read(path) == mixed_rows()


def test_info_reads_a_recording_with_properties(tmp_path: Path) -> None:
    path = tmp_path / "i.parquet"
    write(path, mixed_rows())
    result = run_cli("info", "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["messages"] == 5


# MQTT strings are UTF-8: no surrogates.
texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
properties = st.builds(
    PublishProperties,
    payload_format_indicator=st.none() | st.integers(0, 255),
    message_expiry_interval=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | texts,
    response_topic=st.none() | texts,
    correlation_data=st.none() | st.binary(max_size=16),
    user_properties=st.lists(st.tuples(texts, texts), max_size=4).map(tuple),
)
messages = st.lists(st.tuples(st.none() | properties, st.binary(max_size=8), st.integers(0, 2)),
                    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_any_properties_round_trip_in_every_format(batch: list[tuple[PublishProperties | None, bytes, int]]) -> None:
    rows = [(Message("device/h/telemetry", payload, qos, False, T0 + i, props), None)
            for i, (props, payload, qos) in enumerate(batch)]
    with tempfile.TemporaryDirectory() as directory:
        for fmt in FORMATS:
            path = Path(directory) / f"h.{fmt}"
            write(path, rows, crash_safe=False)
            assert read(path) == rows
    for message, label in rows:
        assert decode_line(encode_line(message, label, {})) == (message, label)


def test_a_format_1_crash_leftover_still_reads_and_recovers(tmp_path: Path) -> None:
    """A ``.partial`` directory left by a tesaiot that wrote format 1: its journal has no
    ``properties`` column."""
    import pyarrow as pa

    from tesaiot_cli.recording import schema
    from tesaiot_cli.recording.meta import metadata_to_dict

    path = tmp_path / "old.parquet"
    partial = tmp_path / "old.parquet.partial"
    partial.mkdir()
    meta = metadata_to_dict(RecordingMetadata(format_version=1, recording_id="0123456789abcdef"))
    (partial / "metadata.json").write_bytes(orjson.dumps(meta))
    v1_journal = pa.schema([field for field in schema.journal_schema() if field.name != "properties"])
    table = pa.table({"time": pa.array([T0, T0 + 1], pa.int64()), "topic": ["t/1", "t/2"], "payload": [b"a", b"b"],
                      "qos": pa.array([1, 0], pa.int8()), "retain": [False, True],
                      "label": pa.array([None, "normal"], pa.string())}, schema=v1_journal)
    with open(partial / "journal-000001.arrows", "wb") as handle, pa.ipc.new_stream(handle, v1_journal) as stream:
        stream.write_table(table)
    expected = [(Message("t/1", b"a", 1, False, T0), None), (Message("t/2", b"b", 0, True, T0 + 1), "normal")]
    with open_reader(path) as reader:
        assert not reader.sealed and reader.metadata.format_version == 1
        assert list(reader.iter_labelled()) == expected
    assert recover(path).action == "sealed"
    assert read(path) == expected
    with open_reader(path) as reader:
        assert reader.metadata.format_version == 2  # sealed now, in the layout this tesaiot writes
