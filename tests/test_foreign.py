"""Captures of other tools: `convert --from mosquitto-json` / `mqtt-recorder-csv(-b64)` on real
captures (made with mosquitto_sub 2.0.11 -F %j and mqtt-recorder 1.4.0, in tests/data/foreign),
and what every command says when given one as a recording."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tesaiot_cli.recording.foreign import parse_seconds, parse_tst, sniff
from tests.support.cli import run_cli

DATA = Path(__file__).parent / "data" / "foreign"
MOSQUITTO = DATA / "mosquitto_sub-F-j.jsonl"
RECORDER = DATA / "mqtt-recorder.csv"
RECORDER_B64 = DATA / "mqtt-recorder-b64.csv"


def messages(path: Path) -> list[Message]:
    with open_reader(path) as reader:
        return list(reader)


def test_time_parsers() -> None:
    assert parse_tst("2026-11-30T05:51:59.649597Z+0000") == 1_796_017_919_649_597_000
    assert parse_tst("2026-11-30T06:51:59.649597+01:00") == 1_796_017_919_649_597_000
    assert parse_tst("2026-11-30T05:51:59Z") == 1_796_017_919_000_000_000
    assert parse_tst("yesterday") is None
    assert parse_seconds("1796017944.1698413") == 1_796_017_944_169_841_300
    assert parse_seconds("1796017944") == 1_796_017_944_000_000_000
    assert parse_seconds("1e9") is None


def test_sniffing() -> None:
    assert sniff(MOSQUITTO) == "mosquitto-json"
    assert sniff(RECORDER) == sniff(RECORDER_B64) == "mqtt-recorder-csv"
    assert sniff(Path(__file__)) is None


def test_mosquitto_capture_converts_and_reports_what_it_lost(tmp_path: Path) -> None:
    out = tmp_path / "cap.parquet"
    result = run_cli("convert", "--from", "mosquitto-json", str(MOSQUITTO), str(out))
    # line 2 is a binary payload that mosquitto_sub cut at its NUL byte: left out, counted, exit 5
    assert result.returncode == 5, result.stderr
    assert "line 2: payload cut short by mosquitto_sub (1 of 6 bytes" in result.stderr
    assert "1 messages of" in result.stderr and "left out" in result.stderr
    got = messages(out)
    lines = [json.loads(line) for line in MOSQUITTO.read_text("utf-8", "surrogateescape").splitlines()]
    kept = [line for index, line in enumerate(lines) if index != 1]
    assert [m.topic for m in got] == [line["topic"] for line in kept]
    assert [m.payload for m in got] == [line["payload"].encode() for line in kept]
    assert [m.time_ns for m in got] == [parse_tst(line["tst"]) for line in kept]
    assert [(m.qos, m.retain) for m in got] == [(line["qos"], bool(line["retain"])) for line in kept]
    assert got[0].time_ns == 1_796_017_919_649_597_000
    with open_reader(out) as reader:
        assert reader.metadata.extra["converted_from"] == "mosquitto-json"


def test_mosquitto_capital_j_and_a_clean_capture(tmp_path: Path) -> None:
    source = tmp_path / "clean.log"
    source.write_bytes(
        b'{"tst":"2026-11-30T05:52:05.287292Z+0000","topic":"a/b","qos":0,"retain":0,"payloadlen":8,'
        b'"payload":{"x":1}}\n'
        b'{"tst":"2026-11-30T05:52:05.287300Z+0000","topic":"c/d","qos":1,"retain":1,"payloadlen":3,'
        b'"payload":"h\xc3\xa9"}\n')
    out = tmp_path / "clean.jsonl"
    result = run_cli("convert", "--from", "mosquitto-json", str(source), str(out))
    assert result.returncode == 0, result.stderr
    assert [(m.topic, m.payload, m.qos, m.retain) for m in messages(out)] == [
        ("a/b", b'{"x":1}', 0, False), ("c/d", "h\u00e9".encode(), 1, True)]


@pytest.mark.parametrize(("source", "fmt", "count"), [(RECORDER, "mqtt-recorder-csv", 4),
                                                      (RECORDER_B64, "mqtt-recorder-csv-b64", 5)])
def test_mqtt_recorder_csv_converts_losslessly(tmp_path: Path, source: Path, fmt: str, count: int) -> None:
    import csv

    out = tmp_path / "rec.parquet"
    result = run_cli("convert", "--from", fmt, str(source), str(out))
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(source.open(newline="")))
    got = messages(out)
    assert len(got) == len(rows) == count
    decode = (lambda text: base64.b64decode(text)) if fmt.endswith("b64") else (lambda text: text.encode())
    assert [m.payload for m in got] == [decode(row[1]) for row in rows]
    assert [m.time_ns for m in got] == [parse_seconds(row[4]) for row in rows]
    assert [(m.topic, m.qos, m.retain) for m in got] == [(r[0], int(r[2]), r[3] == "True") for r in rows]
    assert b"second line" in got[2].payload  # a payload with a newline survives
    if fmt.endswith("b64"):
        assert got[4].payload == b"\xff\x00\x01bin"


def test_wrong_from_is_one_line(tmp_path: Path) -> None:
    out = tmp_path / "x.parquet"
    result = run_cli("convert", "--from", "mqtt-recorder-csv", str(MOSQUITTO), str(out))
    assert result.returncode == 5 and result.stderr.count("\n") == 1
    assert "line 1 is not an mqtt-recorder CSV row" in result.stderr and "check --from" in result.stderr
    assert not out.exists()
    result = run_cli("convert", "--from", "mqtt-recorder-csv-b64", str(RECORDER), str(out))
    assert result.returncode == 5 and "not base64" in result.stderr and not out.exists()


@pytest.mark.parametrize("command", ["info", "replay", "recover", "export", "convert"])
@pytest.mark.parametrize(("source", "hint"), [(MOSQUITTO, "--from mosquitto-json"),
                                              (RECORDER, "--from mqtt-recorder-csv")])
def test_a_foreign_file_is_not_a_recording_never_damaged(tmp_path: Path, command: str, source: Path,
                                                         hint: str) -> None:
    copy = tmp_path / source.name
    copy.write_bytes(source.read_bytes())
    extra = {"replay": ["--to", "-"], "export": [str(tmp_path / "o.parquet")],
             "convert": [str(tmp_path / "o.parquet")]}.get(command, [])
    result = run_cli(command, str(copy), *extra)
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1 and "is not a tesaiot recording" in result.stderr and hint in result.stderr
    assert "damaged" not in result.stderr and "run 'tesaiot recover" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [source.name]  # nothing written
    assert copy.read_bytes() == source.read_bytes()


def test_a_csv_named_parquet_is_not_a_recording(tmp_path: Path) -> None:
    copy = tmp_path / "rec.parquet"
    copy.write_bytes(RECORDER.read_bytes())
    result = run_cli("info", str(copy))
    assert result.returncode == 5 and "is not a tesaiot recording (not a Parquet file)" in result.stderr


def test_recover_exits_5_when_nothing_can_be_saved(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with open_writer(path, metadata=RecordingMetadata()) as writer:
        writer.write(Message("a/b", b"x", 0, False, 1))
    header = path.read_bytes().splitlines(keepends=True)[0]
    path.write_bytes(header + b"garbage line\n\x00\x01 more garbage\n")
    result = run_cli("recover", str(path))
    assert result.returncode == 5, result.stderr
    assert "nothing could be saved" in result.stderr and result.stderr.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl"]
