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
    # mosquitto 2.0.11 prints the local time, "Z", then the local offset, which applies
    assert parse_tst("2026-11-30T12:51:59.649597Z+0700") == 1_796_017_919_649_597_000
    assert parse_tst("2026-11-30T02:21:59.649597Z-0330") == 1_796_017_919_649_597_000
    assert parse_tst("2026-11-30T05:51:59.649597+0000") == 1_796_017_919_649_597_000  # mosquitto 2.0.18
    assert parse_tst("2026-11-30T05:51:59Z+9900") is None
    assert parse_tst("yesterday") is None
    assert parse_seconds("1796017944.1698413") == 1_796_017_944_169_841_300
    assert parse_seconds("1796017944") == 1_796_017_944_000_000_000
    assert parse_seconds("1e9") is None


def test_sniffing() -> None:
    assert sniff(MOSQUITTO) == "mosquitto-json"
    assert sniff(RECORDER) == sniff(RECORDER_B64) == "mqtt-recorder-csv"
    assert sniff(Path(__file__)) is None


def test_sniffing_a_capital_j_capture_that_starts_with_an_empty_line(tmp_path: Path) -> None:
    source = tmp_path / "cap.jsonl"
    source.write_bytes(b"\n\n" + (DATA / "mosquitto_sub-F-J.jsonl").read_bytes())
    assert sniff(source) == "mosquitto-json"


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
        b'{"tst":"2026-11-30T05:52:05.287292Z+0000","topic":"a/b","qos":0,"retain":0,"payloadlen":7,'
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


BANGKOK = DATA / "mosquitto_sub-F-j-Asia-Bangkok.jsonl"
ST_JOHNS = DATA / "mosquitto_sub-F-j-America-St_Johns.jsonl"
CAPITAL_J = DATA / "mosquitto_sub-F-J.jsonl"
V5 = DATA / "mosquitto_sub-V5-F-j.jsonl"
RECORDER_ODD = DATA / "mqtt-recorder-odd.csv"
RECORDER_ODD_B64 = DATA / "mqtt-recorder-odd-b64.csv"


def convert(tmp_path: Path, source: Path, fmt: str = "mosquitto-json", name: str = "out.jsonl",
            ) -> tuple[int, str, Path]:
    out = tmp_path / name
    result = run_cli("convert", "--from", fmt, str(source), str(out))
    return result.returncode, result.stderr, out


@pytest.mark.parametrize("source", [BANGKOK, ST_JOHNS])
def test_an_empty_payload_stays_empty_and_the_zone_offset_applies(tmp_path: Path, source: Path) -> None:
    code, stderr, out = convert(tmp_path, source)
    assert code == 0, stderr
    lines = [json.loads(line) for line in source.read_text("utf-8").splitlines()]
    got = messages(out)
    assert [m.payload for m in got] == [(line["payload"] or "").encode() for line in lines]
    empties = [m for m, line in zip(got, lines, strict=True) if line["payloadlen"] == 0]
    assert empties and all(m.payload == b"" for m in empties)  # not the 4 bytes "null"
    # the captures were made at 11:49:5x UTC, local time 18:49 in Bangkok and 08:19 in St. John's
    import datetime as dt

    for message in got:
        moment = dt.datetime.fromtimestamp(message.time_ns / 1e9, dt.UTC)
        assert (moment.date().isoformat(), moment.hour, moment.minute) == ("2026-12-07", 11, 49)


def test_the_retained_flag_and_a_cleared_retained_topic(tmp_path: Path) -> None:
    code, stderr, out = convert(tmp_path, BANGKOK)
    assert code == 0, stderr
    state = [(m.payload, m.retain, m.qos) for m in messages(out) if m.topic == "j/state"]
    assert state == [(b"on", True, 1), (b"", False, 0)]  # the clearing is an empty payload
    assert [m.topic for m in messages(out)][-1] == "j/\u00fcn\u00ef/\u2603"


def test_capital_j_counts_what_it_cannot_restore(tmp_path: Path) -> None:
    code, stderr, out = convert(tmp_path, CAPITAL_J)
    assert code == 5, stderr
    assert "converted 9 messages" in stderr and "error: 15 messages of" in stderr
    assert "line 2: mosquitto_sub -F %J re-printed this JSON payload in 29 bytes, not its 31" in stderr
    assert "line 13: mosquitto_sub -F %J re-printed this JSON payload and it holds the number 100 " \
           "(it may have been 1e2)" in stderr
    got = {m.topic: m.payload for m in messages(out)}
    assert got == {
        "J/compact": b'{"sensor_type":"DPS368","data":{"pressure":1013.25,"temperature":21.5}}',
        "J/order": b'{"b":2,"a":1}', "J/dupkey": b'{"a":1,"a":2}', "J/int": b"42",
        "J/string": b'"just a string"', "J/true": b"true", "J/null": b"null", "J/empty": b"",
        "J/latin1": b'{"t":"caf\xe9"}'}
    # the byte lengths are mosquitto's own payloadlen: these are the payloads, byte for byte
    lengths = {json.loads(line)["topic"]: json.loads(line)["payloadlen"]
               for line in CAPITAL_J.read_text("utf-8", "surrogateescape").splitlines() if line}
    assert all(len(payload) == lengths[topic] for topic, payload in got.items())


def test_capital_j_empty_lines_are_messages_left_out(tmp_path: Path) -> None:
    source = tmp_path / "blank.jsonl"
    lines = CAPITAL_J.read_bytes().splitlines(keepends=True)
    source.write_bytes(b"\n" + lines[0] + b"\n\n")  # a first payload that is not JSON, then one, then two
    code, stderr, out = convert(tmp_path, source)
    assert code == 5, stderr
    assert "converted 1 message" in stderr and "error: 3 messages of" in stderr
    assert "line 1: an empty line (mosquitto_sub -F %J prints one for a payload that is not JSON" in stderr


@pytest.mark.parametrize(("printed", "doubt"), [
    ('{"a":1,"b":[true,null]}', None), ("1013.25", None), ("42", None), ("0.5", None), ("990", None),
    ("0", None), ("-0", None), ("-12.5", None), ('"caf\u00e9"', None), ('"a\\"b"', None),
    ("100", "it may have been 1e2"), ("0.01", "it may have been 1e-2"), ("12000", "it may have been 1.2e4"),
    ("1e+22", "printed with an exponent"), ("-0.5", "it may have been -.5"),
    ("12345678901234568", "more digits than a double keeps"),
    ('{"t":"x\\ty"}', "control character"), ('"\\u0001"', "control character"),
])
def test_which_capital_j_prints_must_be_the_payload(printed: str, doubt: str | None) -> None:
    from tesaiot_cli.recording.foreign import j_spelling_doubt

    found = j_spelling_doubt(printed)
    assert (found is None) if doubt is None else (found is not None and doubt in found), found


def test_mqtt5_properties_are_carried_over(tmp_path: Path) -> None:
    from tesaiot_cli.message import PublishProperties

    code, stderr, out = convert(tmp_path, V5)
    assert code == 0, stderr
    got = messages(out)
    assert got[0].properties == PublishProperties(
        payload_format_indicator=1, message_expiry_interval=3600, content_type="application/json",
        response_topic="v5/reply", correlation_data=b"abc",
        user_properties=(("k", "v1"), ("k", "v2"), ("z", "\u00e9")))
    assert got[1].properties is None
    assert (got[2].payload, got[2].properties) == (b"", PublishProperties(content_type="text/plain"))


def test_converted_files_name_the_tesaiot_version(tmp_path: Path) -> None:
    from tesaiot_cli import __version__

    for source, fmt in [(BANGKOK, "mosquitto-json"), (RECORDER, "mqtt-recorder-csv")]:
        code, stderr, out = convert(tmp_path, source, fmt, name=f"{fmt}.parquet")
        assert code == 0, stderr
        with open_reader(out) as reader:
            assert reader.metadata.tool_version == __version__ != ""


GOOD = ('{"tst":"2026-12-07T18:49:58.153530Z+0700","topic":"j/text","qos":0,"retain":0,"payloadlen":5,'
        '"payload":"hello"}')


def test_bad_fields_are_refused_with_their_line_numbers(tmp_path: Path) -> None:
    bad = [GOOD.replace('"qos":0', '"qos":7'), GOOD.replace('"qos":0', '"qos":"1"'),
           GOOD.replace('"j/text"', '"x/+"'), GOOD.replace('"j/text"', '""'),
           GOOD.replace('"payloadlen":5', '"payloadlen":1'), GOOD.replace('"retain":0', '"retain":true'),
           GOOD.replace('"qos":0', '"qos":0,"colour":"red"'), GOOD.replace('"payloadlen":5', '"payloadlen":-1'),
           GOOD.replace("2026-12-07T18", "yesterday at 18")]
    source = tmp_path / "cap.jsonl"
    source.write_text("\n".join([GOOD, *bad, GOOD]) + "\n")
    code, stderr, out = convert(tmp_path, source)
    assert code == 5 and not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["cap.jsonl"]
    line = one_line(stderr)
    assert "9 lines refused, nothing written: line 2: qos 7 is not 0, 1 or 2; line 3: qos \"1\" is not 0, 1 or 2; " \
           "line 4: topic 'x/+': wildcards" in line
    assert "line 5: topic '': a topic cannot be empty; line 6: the payload has 5 bytes, more than its " \
           "payloadlen 1; and 4 more" in line
    assert "converted" not in stderr


@pytest.mark.parametrize(("change", "why"), [
    (('"retain":0', '"retain":true'), "retain true is not 0 or 1"),
    (('"qos":0', '"qos":0,"colour":"red"'), "unknown field 'colour'"),
    (('"payloadlen":5', '"payloadlen":-1'), "payloadlen -1 is not a payload length"),
    (('"payloadlen":5', '"payloadlen":5,"payloadlen":5'), "the field 'payloadlen' twice"),
    (("2026-12-07T18", "yesterday at 18"), "tst \"yesterday at 18"),
    (('"payload":"hello"', '"payload":"\\ud800"'), "lone surrogate"),
    (('"j/text"', '"a\\u0000b"'), "NUL character"),
])
def test_each_bad_field_is_refused(tmp_path: Path, change: tuple[str, str], why: str) -> None:
    source = tmp_path / "cap.jsonl"
    source.write_text(f"{GOOD}\n{GOOD.replace(*change)}\n")
    code, stderr, out = convert(tmp_path, source)
    assert code == 5 and not out.exists()
    line = one_line(stderr)
    assert "1 line refused, nothing written: line 2: " in line and why in line


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_a_first_line_of_another_shape_says_check_from(tmp_path: Path) -> None:
    source = tmp_path / "cap.jsonl"
    source.write_text('{"topic":"a","payload":"x"}\n')
    code, stderr, out = convert(tmp_path, source)
    assert code == 5 and not out.exists()
    assert "line 1 is not mosquitto_sub -F %j output (no tst): check --from" in one_line(stderr)


@pytest.mark.parametrize(("source", "fmt", "count"), [(RECORDER_ODD, "mqtt-recorder-csv", 8),
                                                      (RECORDER_ODD_B64, "mqtt-recorder-csv-b64", 9)])
def test_odd_mqtt_recorder_payloads_survive(tmp_path: Path, source: Path, fmt: str, count: int) -> None:
    import csv

    code, stderr, out = convert(tmp_path, source, fmt)
    assert code == 0, stderr
    rows = list(csv.reader(source.open(newline="", encoding="utf-8")))
    got = messages(out)
    decode = (lambda text: base64.b64decode(text)) if fmt.endswith("b64") else (lambda text: text.encode())
    assert len(got) == len(rows) == count
    assert [(m.topic, m.payload, m.qos, m.retain) for m in got] == [
        (r[0], decode(r[1]), int(r[2]), r[3] == "True") for r in rows]
    payloads = {m.topic: m.payload for m in got}
    assert (payloads["rec/empty"], payloads["rec/nul"], payloads["rec/crlf"], payloads["rec/cr"]) == (
        b"", b"a\x00b", b"crlf\r\nend", b"cr\ronly")
    assert payloads["rec/\u00fcn\u00ef/\u2603"] == b" spaced " and payloads["rec/quote"] == b'"q",x'


def write_recorder_csv(path: Path, rows: list[list[object]]) -> None:
    """Rows written exactly as mqtt-recorder 1.4.0 writes them (csv.writer, default dialect)."""
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def test_a_huge_mqtt_recorder_payload_and_every_row_after_it(tmp_path: Path) -> None:
    # csv reads fields of 128 KiB at most by default: the row and all after it were dropped, 1 counted
    source = tmp_path / "rec.csv"
    huge = "x" * 300_000
    write_recorder_csv(source, [["a", "first", 0, False, 1796644220.0737827, 0.04],
                                ["a", huge, 1, False, 1796644221.0737827, 1.0],
                                ["b", "after", 2, True, 1796644222.5, 7.939338684082031e-05]])
    code, stderr, out = convert(tmp_path, source, "mqtt-recorder-csv")
    assert code == 0, stderr
    assert [m.payload for m in messages(out)] == [b"first", huge.encode(), b"after"]
    assert [m.time_ns for m in messages(out)] == [1796644220073782700, 1796644221073782700, 1796644222500000000]


def test_bad_mqtt_recorder_rows_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "rec.csv"
    good = ["a/b", "x", 0, False, 1796644220.5, 0.1]
    write_recorder_csv(source, [good, ["a/b", "x", 7, False, 1796644220.5, 0.1], ["x/#", "x", 0, False, 1.5, 0.1],
                                ["", "x", 0, False, 1.5, 0.1], [*good, "extra"], ["a/b", "x", 0, "yes", 1.5, 0.1],
                                ["a/b", "x", 0, False, 1.5, "soon"], good])
    code, stderr, out = convert(tmp_path, source, "mqtt-recorder-csv")
    assert code == 5 and not out.exists()
    line = one_line(stderr)
    assert "6 lines refused, nothing written: line 2: qos '7' is not 0, 1 or 2; line 3: topic 'x/#': wildcards" in line
    assert "line 4: topic '': a topic cannot be empty; line 5: 7 fields, not topic,payload,qos,retain,time,delta; " \
           "line 6: retain 'yes' is not True or False; and 1 more" in line


def test_an_incomplete_last_mqtt_recorder_row_is_left_out_and_counted(tmp_path: Path) -> None:
    source = tmp_path / "rec.csv"
    source.write_bytes(RECORDER.read_bytes() + b"text/t,cut sho")
    code, stderr, out = convert(tmp_path, source, "mqtt-recorder-csv")
    assert code == 5, stderr
    assert "line 6: an incomplete last row (2 fields" in stderr and "error: 1 messages of" in stderr
    assert len(messages(out)) == 4

