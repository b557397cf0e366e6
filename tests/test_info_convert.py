"""`tesaiot info`, `convert` and `recover` as a user runs them (real processes, no broker needed)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import orjson
import pytest

from tesaiot_cli.cliutil import EXIT_CONFIG, EXIT_RECORDING
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tesaiot_cli.recording.formats import parquet_write as parquet_format
from tests.support.cli import run_cli
from tests.support.recordings import write_recording

S = 1_000_000_000
T0 = 1_763_800_000 * S
FORMATS = ["parquet", "jsonl"]


def labelled_rows() -> list[tuple[Message, str | None]]:
    a, b = "device/a/telemetry", "device/b/telemetry/DPS368"
    return [
        (Message(a, b"0123456789", 1, False, T0), "normal"),
        (Message(b, b"\x00\x01", 1, False, T0 + S // 2), "normal"),
        (Message(a, b"x" * 30, 1, False, T0 + 1 * S), "high_temperature"),
        (Message(b, b"", 0, True, T0 + 3 * S // 2), "normal"),
        (Message(a, b"y" * 20, 1, False, T0 + 2 * S), "high_pressure"),
        (Message(a, b"z" * 20, 1, False, T0 + 5 * S), "normal"),
    ]


def make(path: Path, rows: list[tuple[Message, str | None]], **metadata: object) -> None:
    meta = RecordingMetadata(tool_version="0.1.0", source="simulate", seed=42, labelled=True,
                             broker="mqtt://127.0.0.1:1883", topic_filters=("device/+/telemetry/#",))
    if metadata:
        meta = RecordingMetadata(**metadata)  # type: ignore[arg-type]
    write_recording(path, rows, metadata=meta)


def one_clear_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_info_json_fields(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"sim.{fmt}"
    make(path, labelled_rows())
    result = run_cli("info", str(path), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert (report["format"], report["sealed"], report["messages"]) == (fmt, True, 6)
    assert (report["start_ns"], report["end_ns"], report["duration_s"]) == (T0, T0 + 5 * S, 5.0)
    assert report["start"] == "2025-11-22T08:26:40.000000+00:00"
    assert report["rate_per_s"] == 1.2
    assert report["payload_bytes"] == {"min": 0, "mean": 13.667, "max": 30, "total": 82}
    assert report["file_bytes"] == path.stat().st_size
    assert report["labels"] == {"high_pressure": 1, "high_temperature": 1, "normal": 4}
    assert report["anomalies"] == 2 and report["unlabelled"] == 0
    first, second = report["topics"]
    assert (first["topic"], first["device_id"], first["sensor_type"], first["messages"]) == (
        "device/a/telemetry", "a", "default", 4)
    assert (first["rate_per_s"], first["longest_silence_s"]) == (0.8, 3.0)
    assert first["longest_silence_start"] == "2025-11-22T08:26:42.000000+00:00"
    assert (second["sensor_type"], second["messages"], second["longest_silence_s"]) == ("DPS368", 2, 1.0)
    meta = report["metadata"]
    assert (meta["source"], meta["seed"], meta["labels"]) == ("simulate", 42, ["high_pressure", "high_temperature",
                                                                               "normal"])
    assert report["warnings"] == []


def test_info_human_output(tmp_path: Path) -> None:
    path = tmp_path / "sim.parquet"
    make(path, labelled_rows())
    result = run_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "messages    6" in out and "(parquet," in out and "sealed)" in out
    assert "time span   2025-11-22T08:26:40.000000+00:00 -> 2025-11-22T08:26:45.000000+00:00 (5 s" in out
    assert "source      simulate from mqtt://127.0.0.1:1883, topics device/+/telemetry/#, seed 42" in out
    assert "payload     min 0 B, mean 13.7 B, max 30 B" in out
    assert "labels      high_pressure 1, high_temperature 1, normal 4; anomalous messages 2" in out
    assert "device/a/telemetry" in out and "3 s from 2025-11-22T08:26:42" in out
    assert result.stderr == ""


def test_info_without_labels(tmp_path: Path) -> None:
    path = tmp_path / "plain.jsonl"
    make(path, [(m, None) for m, _ in labelled_rows()], source="record")
    report = json.loads(run_cli("info", str(path), "--json").stdout)
    assert (report["labels"], report["anomalies"], report["unlabelled"]) == (None, None, None)
    assert report["metadata"]["source"] == "record"


def test_info_on_a_crash_leftover(tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    writer = parquet_format.open_writer(path, metadata=RecordingMetadata())
    for message, label in labelled_rows():
        writer.write(message, label=label)
    writer.flush()
    writer.discard()
    for name in (path, tmp_path / "crash.parquet.partial"):
        result = run_cli("info", str(name), "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert (report["sealed"], report["messages"], report["anomalies"]) == (False, 6, 2)
        assert f"'tesaiot recover {path}' seals it" in result.stderr


def test_info_errors_are_one_clear_line(tmp_path: Path) -> None:
    cut = tmp_path / "cut.parquet"
    make(cut, labelled_rows())
    cut.write_bytes(cut.read_bytes()[:-100])
    damaged = tmp_path / "damaged.jsonl"
    make(damaged, labelled_rows())
    lines = damaged.read_bytes().splitlines(keepends=True)
    damaged.write_bytes(b"".join(lines[:3] + [b"\x00\x00garbage\n"] + lines[3:]))
    newer = tmp_path / "newer.jsonl"
    newer.write_bytes(orjson.dumps({"tesaiot_recording": {"format_version": 99}}) + b"\n")
    cases = {
        tmp_path / "missing.parquet": "recording not found",
        cut: "not a readable Parquet file",
        damaged: "line 4 is damaged",
        newer: "version 99",
        tmp_path / "x.csv": "cannot tell the recording format",
    }
    for path, expected in cases.items():
        result = run_cli("info", str(path))
        line = one_clear_line(result.stderr)
        assert expected in line and line.startswith("tesaiot: error: ")
        assert result.returncode == (EXIT_CONFIG if path.suffix == ".csv" else EXIT_RECORDING)


def test_convert_round_trip_is_lossless(tmp_path: Path) -> None:
    from tests.support.recordings import odd_messages

    source = tmp_path / "a.parquet"
    rows = odd_messages()
    meta = RecordingMetadata(tool_version="0.1.0", source="simulate", seed=7, labelled=True,
                             broker="mqtt://127.0.0.1:1883", topic_filters=("#",), extra={"anomaly_every": 10})
    writer = open_writer(source, metadata=meta)
    for message, label in rows:
        writer.write(message, label=label)
    writer.close()
    middle, back = tmp_path / "b.jsonl", tmp_path / "c.parquet"
    for src, dst in ((source, middle), (middle, back)):
        result = run_cli("convert", str(src), str(dst))
        assert result.returncode == 0, result.stderr
        assert f"converted {len(rows)} messages" in result.stderr
    with open_reader(source) as a, open_reader(middle) as b, open_reader(back) as c:
        assert list(a.iter_labelled()) == list(b.iter_labelled()) == list(c.iter_labelled()) == rows
        assert a.metadata == b.metadata == c.metadata
    objects = [json.loads(line) for line in middle.read_text().splitlines()]
    assert objects[0]["tesaiot_recording"]["seed"] == 7
    binary = next(o for o in objects[1:] if o["topic"] == "bin/all-bytes")
    assert binary["encoding"] == "base64" and base64.b64decode(binary["payload"]) == bytes(range(256))
    text = next(o for o in objects[1:] if o["topic"].startswith("device/"))
    assert "encoding" not in text and text["payload"] == '{"data": {"pressure": 1000.5}}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.parquet", "b.jsonl", "c.parquet"]


def test_convert_refuses_overwrite_and_never_leaves_half_a_file(tmp_path: Path) -> None:
    source, target = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    make(source, labelled_rows())
    target.write_bytes(b"keep me")
    result = run_cli("convert", str(source), str(target))
    assert result.returncode == EXIT_CONFIG and "already exists" in one_clear_line(result.stderr)
    assert target.read_bytes() == b"keep me"
    assert run_cli("convert", str(source), str(source)).returncode == EXIT_CONFIG
    assert run_cli("convert", str(source), str(target), "--force").returncode == 0
    with open_reader(target) as reader:
        assert reader.count() == 6
    lines = source.read_bytes().splitlines(keepends=True)
    source.write_bytes(b"".join(lines[:4] + [b"{not json\n"] + lines[4:]))
    result = run_cli("convert", str(source), str(tmp_path / "new.parquet"))
    assert result.returncode == EXIT_RECORDING and "line 5 is damaged" in one_clear_line(result.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.parquet"]


def test_recover_command(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    make(path, labelled_rows())
    result = run_cli("recover", str(path))
    assert result.returncode == 0 and "nothing to recover: 6 messages" in result.stderr
    with open(path, "ab") as handle:
        handle.write(b'{"time": 12, "to')
    result = run_cli("recover", str(path))
    assert result.returncode == 0 and "removed the incomplete last line (16 bytes)" in result.stderr
    result = run_cli("recover", str(tmp_path / "none.parquet"))
    assert result.returncode == EXIT_RECORDING and "not found" in one_clear_line(result.stderr)


def test_a_jsonl_recording_whose_labels_outgrow_the_metadata_line_is_still_sealed(tmp_path: Path) -> None:
    # The metadata line keeps room for the time span and the labels; more labels than that
    # room used to leave the file unsealed, without its labels, and convert called it a crash.
    path = tmp_path / "many.jsonl"
    rows = [(Message("a/b", b"x", 0, False, T0 + i), f"label-{i:03d}-" + "y" * 20) for i in range(80)]
    make(path, rows)
    with open_reader(path) as reader:
        assert reader.sealed
        assert list(reader.metadata.labels) == sorted(label for _message, label in rows)
        assert (reader.metadata.start_ns, reader.metadata.end_ns) == (T0, T0 + 79)
        assert list(reader.iter_labelled()) == rows
    out = tmp_path / "many.parquet"
    result = run_cli("convert", str(path), str(out))
    assert result.returncode == 0 and "not sealed" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many.jsonl", "many.parquet"]  # no temporary left


@pytest.mark.parametrize(("line", "why"), [
    ('{"time":6,"topic":"a","qos":0,"retain":false,"payload":"x","label":5}', "'label' is not a string"),
    ('{"time":6,"topic":"a","qos":0,"retain":false,"payload":"x","colour":"red"}', "unknown fields ['colour']"),
])
def test_convert_refuses_a_jsonl_line_it_would_alter(tmp_path: Path, line: str, why: str) -> None:
    # these used to be converted with exit 0, the label or the field dropped
    path = tmp_path / "hand.jsonl"
    make(path, labelled_rows()[:1])
    path.write_bytes(path.read_bytes() + line.encode() + b"\n" + path.read_bytes().splitlines(keepends=True)[1])
    out = tmp_path / "out.parquet"
    result = run_cli("convert", str(path), str(out))
    assert result.returncode == EXIT_RECORDING and not out.exists()
    text = one_clear_line(result.stderr)
    assert "line 3 is damaged" in text and why in text, text


@pytest.mark.parametrize(("columns", "why"), [
    ({"time": [1, 2], "qos": [7, -1]}, "column qos has 2 values that are not 0, 1 or 2"),
    ({"time": [1796644220.0, 1796644221.0]}, "column time holds floats"),
])
def test_convert_refuses_a_parquet_made_elsewhere_it_would_alter(tmp_path: Path, columns: dict[str, list[object]],
                                                                 why: str) -> None:
    # was: qos 7 converted to a JSONL that no reader takes back; float seconds read as ns (1e9 times off)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "pandas.parquet"
    pq.write_table(pa.table({"topic": ["a", "b"], "payload": [b"x", b"y"], **columns}), path)
    out = tmp_path / "out.jsonl"
    result = run_cli("convert", str(path), str(out))
    assert result.returncode == EXIT_RECORDING and not out.exists()
    assert why in one_clear_line(result.stderr)
