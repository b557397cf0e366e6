"""``tesaiot export`` on real files: the shipped sample, fresh recordings (Parquet, JSONL), a
crash leftover, a dataset, binary payloads mixed in, type changes; the selection against
replay's; MCAP read back with the mcap reader; bad inputs (one line, exit code, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader
from tesaiot_cli.recording.dataset.layout import prepare_dataset
from tesaiot_cli.recording.dataset.writer import DatasetWriter
from tesaiot_cli.recording.formats import parquet_write as parquet_format
from tests.support.broker import Mosquitto
from tests.support.cli import run_cli
from tests.support.recordings import write_recording

SAMPLE = Path(__file__).resolve().parent.parent / "recordings" / "dps368-sample.parquet"
T0 = 1_795_335_896_000_000_000


def dps368(i: int, device: str = "infineon-sensor-01") -> bytes:
    return (f'{{"timestamp": "2026-11-22T08:24:{i % 60:02d}.000001+00:00", "device_id": "{device}", '
            f'"sensor_type": "DPS368", "data": {{"pressure": {1000 + i}.5, "temperature": 25.25}}}}').encode()


MIXED: list[tuple[Message, str | None]] = [
    (Message("device/a/telemetry", dps368(0, "a"), 1, False, T0), "normal"),
    (Message("raw/bin", b"\xff\x00\x01binary", 0, False, T0 + 1), None),
    (Message("device/b/telemetry/BMP280", b'{"data": {"pressure": 990}, "ok": true, "tags": [1, 2]}', 2, True,
             T0 + 2), None),
    (Message("text/t", b"hello", 0, False, T0 + 3), None),
    (Message("device/a/telemetry", b'{"data": {"pressure": "n/a"}, "sensor_type": "DPS368"}', 1, False, T0 + 4),
     "spike"),
    (Message("device/a/telemetry", b"[1, 2, 3]", 1, False, T0 + 5), None),
    (Message("device/c/telemetry", b'{"data":\n  {"temperature": 20.5}}', 0, False, T0 + 6), None),
]


def write(path: Path, rows: list[tuple[Message, str | None]], *, labelled: bool = True) -> Path:
    return write_recording(path, rows, metadata=RecordingMetadata(source="record", labelled=labelled))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_the_shipped_sample_exports_typed_columns(tmp_path: Path) -> None:
    out = tmp_path / "sample.parquet"
    result = run_cli("export", str(SAMPLE), str(out))
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("tesaiot: exported 300 messages") and result.stderr.count("\n") == 1
    table = pq.read_table(out)
    schema = table.schema
    assert schema.field("time").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("timestamp").type == pa.timestamp("ns", tz="UTC")
    assert schema.field("data.pressure").type == pa.float64()
    assert schema.field("data.temperature").type == pa.float64()
    assert schema.names[:7] == ["time", "topic", "device_id", "sensor_type", "qos", "retain", "label"]
    assert "payload" not in schema.names  # every payload is JSON
    assert set(table.column("sensor_type").to_pylist()) == {"DPS368"}
    source = pq.read_table(SAMPLE)
    assert table.column("time").to_pylist() == source.column("time").to_pylist()
    assert table.column("label").to_pylist() == source.column("label").cast(pa.string()).to_pylist()
    first = json.loads(source.column("payload")[0].as_py())
    assert table.column("data.pressure")[0].as_py() == first["data"]["pressure"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_mixed_payloads_are_counted_kept_and_typed(tmp_path: Path, suffix: str) -> None:
    source = write(tmp_path / f"mixed{suffix}", MIXED)
    out = tmp_path / "out.parquet"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    assert "3 of 7 payloads are not a JSON object: kept as bytes in the payload column" in result.stderr
    assert "field data.pressure changes type (double, string): written as text" in result.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 7
    assert [r["payload"] for r in rows] == [None, b"\xff\x00\x01binary", None, b"hello", None, b"[1, 2, 3]", None]
    assert [r["data.pressure"] for r in rows] == ["1000.5", None, "990", None, "n/a", None, None]
    assert [r["data.temperature"] for r in rows] == [25.25, None, None, None, None, None, 20.5]
    assert rows[2]["ok"] is True and rows[2]["tags"] == [1, 2] and rows[2]["retain"] is True
    assert [r["sensor_type"] for r in rows] == ["DPS368", "default", "BMP280", "default", "DPS368", "default",
                                                "default"]
    assert [r["device_id"] for r in rows] == ["a", "unknown", "b", "unknown", "a", "a", "c"]
    assert [r["label"] for r in rows] == ["normal", None, None, None, "spike", None, None]
    assert rows[0]["payload.device_id"] == "a"


def test_csv_export(tmp_path: Path) -> None:
    source = write(tmp_path / "mixed.parquet", MIXED)
    out = tmp_path / "out.csv"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    table = pa_csv.read_csv(out)
    assert table.num_rows == 7
    assert table.column("payload").to_pylist()[1] == "/wABYmluYXJ5"  # base64 of the binary payload
    assert table.column("tags").to_pylist()[2] == "[1,2]"
    assert table.column("data.temperature").to_pylist()[0] == 25.25


def test_a_crash_leftover_and_a_dataset(tmp_path: Path) -> None:
    path = tmp_path / "crash.parquet"
    writer = parquet_format.open_writer(path, metadata=RecordingMetadata())
    for i in range(50):
        writer.write(Message("device/a/telemetry", dps368(i), 1, False, T0 + i))
    writer.flush()
    writer.discard()  # what a kill leaves: crash.parquet.partial/
    out = tmp_path / "crash-out.parquet"
    result = run_cli("export", str(path) + ".partial", str(out))
    assert result.returncode == 0, result.stderr
    assert "is not sealed" in result.stderr
    assert pq.read_table(out).num_rows == 50

    root = tmp_path / "data"
    spec, _ = prepare_dataset(root, partition="date,device", tool_version="test")
    for worker, device in (("w1", "x"), ("w2", "y")):
        dataset_writer = DatasetWriter(root, metadata=RecordingMetadata(), spec=spec,
                                       worker_id=worker).open()
        for i in range(20):
            dataset_writer.write(Message(f"device/{device}/telemetry", dps368(i, device), 0, False, T0 + 2 * i
                                         + (device == "y")))
        dataset_writer.close()
    out = tmp_path / "dataset.parquet"
    result = run_cli("export", str(root), str(out), "--device", "y")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 20 and set(table.column("device_id").to_pylist()) == {"y"}
    assert "20 left out by the selection" in result.stderr
    result = run_cli("export", str(root), str(out), "--force")
    times = pq.read_table(out).column("time").cast(pa.int64()).to_pylist()
    assert times == sorted(times) and len(times) == 40


def test_selection_is_replays(tmp_path: Path) -> None:
    rows = [(Message(f"device/d{i % 3}/telemetry", dps368(i, f"d{i % 3}"), 0, False, T0 + i * 10**8), None)
            for i in range(100)]
    source = write(tmp_path / "fleet.jsonl", rows, labelled=False)
    selection = ["--topic", "device/+/telemetry", "--start", "1.5", "--end", "6"]
    out = tmp_path / "sel.parquet"
    result = run_cli("export", str(source), str(out), *selection, "--device", "d[12]")
    assert result.returncode == 0, result.stderr
    exported = pq.read_table(out)
    assert "label" not in exported.column_names  # not a labelled recording
    replayed = run_cli("replay", str(source), "--to", "-", "--speed", "max", *selection)
    assert replayed.returncode == 0, replayed.stderr
    expected = [json.loads(line)["recorded_time_ns"] for line in replayed.stdout.splitlines()
                if json.loads(line)["device_id"] in ("d1", "d2")]
    assert exported.column("time").cast(pa.int64()).to_pylist() == expected
    assert len(expected) == 30


def test_mcap_round_trip(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    source = write(tmp_path / "mixed.parquet", MIXED)
    out = tmp_path / "out.mcap"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as handle:
        reader = make_reader(handle)
        read = [(channel.topic, channel.message_encoding, message.data, message.log_time, message.publish_time,
                 schema.encoding if schema else None)
                for schema, channel, message in reader.iter_messages(log_time_order=False)]
        summary = reader.get_summary()
    assert summary is not None
    # The labels (the ground truth of a labelled recording) go to one channel of their own.
    labels = [(json.loads(r[2]), r[3]) for r in read if r[0] == "tesaiot/labels"]
    assert labels == [({"topic": m.topic, "device_id": "a", "label": label}, m.time_ns)
                      for m, label in MIXED if label is not None]
    assert "2 labels on channel tesaiot/labels" in result.stderr
    read = [r for r in read if r[0] != "tesaiot/labels"]
    assert len(read) == len(MIXED)
    assert [r[2] for r in read] == [m.payload for m, _ in MIXED]
    assert [r[3] for r in read] == [m.time_ns for m, _ in MIXED]
    assert [r[0] for r in read] == [m.topic for m, _ in MIXED]
    # publish time: the payload's timestamp when it has one, else the receive time
    assert read[0][4] == 1_795_335_840_000_001_000 and read[1][4] == T0 + 1
    assert [r[1] for r in read] == ["json", "application/octet-stream", "json", "application/octet-stream",
                                    "json", "application/octet-stream", "json"]
    schemas = {s.name: json.loads(s.data) for s in summary.schemas.values()}
    assert schemas["device/b/telemetry/BMP280"]["properties"]["data"]["properties"]["pressure"] == {"type": "integer"}
    assert schemas["device/b/telemetry/BMP280"]["properties"]["tags"] == {"type": "array",
                                                                          "items": {"type": "integer"}}


def test_mcap_of_a_recording_without_labels_has_no_labels_channel(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    source = write(tmp_path / "plain.parquet", [(m, None) for m, _ in MIXED], labelled=False)
    out = tmp_path / "out.mcap"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as handle:
        summary = make_reader(handle).get_summary()
    assert summary is not None and "tesaiot/labels" not in {c.topic for c in summary.channels.values()}
    assert "labels" not in result.stderr


def test_mcap_without_the_package_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    import sys

    from typer.testing import CliRunner

    from tesaiot_cli.cli import app

    monkeypatch.setitem(sys.modules, "mcap", None)
    monkeypatch.setitem(sys.modules, "mcap.writer", None)
    out = tmp_path / "x.mcap"
    result = CliRunner().invoke(app, ["export", str(SAMPLE), str(out)])
    assert result.exit_code == 1
    assert result.output.strip() == ("tesaiot: error: writing .mcap needs the mcap package: "
                                     "pip install 'tesaiot-cli[mcap]'")
    assert not out.exists()


@pytest.mark.parametrize(("args", "code", "text"), [
    (["missing.parquet", "out.parquet"], 5, "recording not found"),
    (["{sample}", "out.txt"], 1, "cannot tell the export format"),
    (["{sample}", "out.parquet", "--start", "10", "--end", "5"], 1, "--end '5' is before --start '10'"),
    (["{sample}", "out.parquet", "--topic", "a/#/b"], 1, "invalid topic filter"),
    (["{sample}", "out.parquet", "--start", "yesterday"], 1, "invalid --start"),
    (["{foreign}", "out.parquet"], 5, "not a tesaiot recording"),
    (["{damaged}", "out.parquet"], 5, "damaged"),
    (["{sample}", "nodir/out.parquet"], 5, "does not exist"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path: Path, args: list[str], code: int, text: str) -> None:
    damaged = write(tmp_path / "damaged.jsonl", [(Message("a/b", b"{}", 0, False, T0 + i), None) for i in range(5)])
    lines = damaged.read_bytes().splitlines(keepends=True)
    damaged.write_bytes(b"".join(lines[:3] + [b"\x00garbage\n"] + lines[3:]))
    foreign = Path(__file__).parent / "data" / "foreign" / "mosquitto_sub-F-j.jsonl"
    names = {"sample": str(SAMPLE), "foreign": str(foreign), "damaged": str(damaged)}
    result = run_cli("export", *[a.format(**names) for a in args], cwd=tmp_path)
    assert result.returncode == code, result.stderr
    assert result.stderr.count("\n") == 1 and text in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.parquet").exists() and not (tmp_path / "out.txt").exists()
    assert leftovers(tmp_path) == []


def test_an_existing_output_needs_force(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    out.write_bytes(b"keep me")
    result = run_cli("export", str(SAMPLE), str(out))
    assert result.returncode == 1 and "already exists" in result.stderr
    assert out.read_bytes() == b"keep me"
    assert run_cli("export", str(SAMPLE), str(out), "--force").returncode == 0
    assert pq.read_table(out).num_rows == 300


def test_info_shows_the_values(tmp_path: Path) -> None:
    source = write(tmp_path / "mixed.jsonl", MIXED)
    result = run_cli("info", str(source), "--json")
    assert result.returncode == 0, result.stderr
    values = json.loads(result.stdout)["values"]
    assert values["messages"] == 7 and values["not_json"] == 3
    # data.pressure: a number in 2 messages (1000.5, 990), a string in one: that one counts as a null
    assert values["fields"]["data.pressure"] == {"count": 2, "nulls": 5, "min": 990, "mean": 995.25, "max": 1000.5}
    assert values["fields"]["data.temperature"] == {"count": 2, "nulls": 5, "min": 20.5, "mean": 22.875,
                                                    "max": 25.25}
    assert "ok" not in values["fields"]  # booleans are not numbers here
    assert values["devices"]["a"]["data.pressure"] == {"count": 1, "nulls": 2, "min": 1000.5, "mean": 1000.5,
                                                       "max": 1000.5}
    assert values["devices"]["c"]["data.temperature"]["count"] == 1
    human = run_cli("info", str(source)).stdout
    assert "values      numeric payload fields" in human and "device a" in human
    assert "3 payloads are not a JSON object" in human
    assert json.loads(run_cli("info", str(source), "--json", "--no-values").stdout)["values"] is None


def test_value_stats_cap_the_devices() -> None:
    from tesaiot_cli.analysis.values import ValueStats
    from tesaiot_cli.recording import schema

    stats = ValueStats(max_devices=3)
    rows = [Message(f"device/d{i}/telemetry", b'{"v": %d}' % i, 0, False, i) for i in range(10)]
    topics, payloads, qos, retain, times, _, _ = zip(*rows, strict=True)
    stats.add(schema.full_table(schema.base_table(times, topics, payloads, qos, retain, [None] * 10)))
    report = stats.report()
    assert list(report["devices"]) == ["d0", "d1", "d2"] and report["devices_not_shown"] == 7
    assert report["fields"]["v"] == {"count": 10, "nulls": 0, "min": 0, "mean": 4.5, "max": 9}


def test_a_schema_change_after_the_first_batch_rewrites_from_the_spill(tmp_path: Path) -> None:
    """The first batch (16,384 rows) implies one schema; a new field, a promoted type and a
    binary payload later on change it: the output must still have every row, typed as a whole."""
    rows = [(Message("device/a/telemetry", b'{"v": %d}' % i, 0, False, T0 + i), None) for i in range(40_000)]
    rows[35_000] = (Message("device/a/telemetry", b'{"v": 0.5, "late": "x"}', 0, False, T0 + 35_000), None)
    rows[-1] = (Message("raw/bin", b"\xff", 0, False, T0 + 39_999), None)
    source = write(tmp_path / "big.parquet", rows, labelled=False)
    out = tmp_path / "out.parquet"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 40_000
    assert table.schema.field("v").type == pa.float64() and table.schema.field("late").type == pa.string()
    assert table.column("v")[1].as_py() == 1.0 and table.column("v")[35_000].as_py() == 0.5
    assert table.column("late").null_count == 39_999 and table.column("payload")[39_999].as_py() == b"\xff"
    assert leftovers(tmp_path) == []


def test_line_cut_parsing_keeps_every_row_in_place(tmp_path: Path) -> None:
    """Batches without a line break in any payload are parsed cut at line ends, in blocks on
    the reader's threads; a batch with one (a pretty-printed payload, a CR) is parsed value
    by value. Either way every row keeps its own values, in order, across many blocks."""
    rows = [(Message(f"device/d{i % 7}/telemetry",
                     b'{"seq": %d, "name": "%s", "data": {"pressure": %d.25}}' % (i, b"x" * (i % 50), i), 0, False,
                     T0 + i), None) for i in range(50_000)]
    rows[20_000] = (Message("device/d0/telemetry", b'{"seq": 20000,\n "name": "",\r\n "data": {"pressure": 20000.25}}',
                            0, False, T0 + 20_000), None)
    source = write(tmp_path / "lines.parquet", rows, labelled=False)
    out = tmp_path / "out.parquet"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    table = pq.read_table(out)
    assert table.column("seq").to_pylist() == list(range(50_000))
    assert table.column("data.pressure").to_pylist() == [i + 0.25 for i in range(50_000)]
    assert table.column("name").to_pylist() == ["x" * (i % 50) if i != 20_000 else "" for i in range(50_000)]
    assert table.column("device_id").to_pylist() == [f"d{i % 7}" if i != 20_000 else "d0" for i in range(50_000)]


# MIXED's messages are 1 ns apart: this window (T0+1 ns .. T0+6 ns) selects three of them.
@pytest.mark.parametrize("extra", [[], ["--topic", "device/+/telemetry", "--start", "0.000000001",
                                         "--end", "0.000000006"]])
def test_export_does_not_look_for_pandas(tmp_path: Path, extra: list[str]) -> None:
    """pyarrow imports pandas, when installed, the first time it converts Python values
    (0.18 s, 34 MiB): the command line refuses that import (tesaiot_cli/process/lean.py) before any
    other finder sees it. An import hook in the child records any attempt that got past it."""
    import subprocess
    import sys

    source = write(tmp_path / "mixed.parquet", MIXED)
    code = ("import sys\n"
            "class Watch:\n"
            "    looked = False\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        Watch.looked = Watch.looked or name == 'pandas'\n"
            "sys.meta_path.insert(0, Watch())\n"
            "from tesaiot_cli.cli import main\n"
            f"sys.argv = ['tesaiot', 'export', {str(source)!r}, {str(tmp_path / 'out.csv')!r}] + {extra!r}\n"
            "try:\n    main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
            "print('looked for pandas:', Watch.looked)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.csv").stat().st_size > 0
    assert result.stdout.strip().splitlines()[-1] == "looked for pandas: False", result.stdout


def test_damage_in_a_later_row_group_leaves_nothing_behind(tmp_path: Path) -> None:
    rows = [(Message("device/a/telemetry", dps368(i), 0, False, T0 + i), None) for i in range(80_000)]
    recording = write(tmp_path / "whole.parquet", rows, labelled=False)
    key = b"tesaiot.recording"
    whole = pq.read_table(recording).replace_schema_metadata({key: pq.read_metadata(recording).metadata[key]})
    source = tmp_path / "big.parquet"  # the same recording (metadata and all) in 4 row groups
    pq.write_table(whole, source, row_group_size=20_000, compression="none")
    (tmp_path / "whole.parquet").unlink()
    meta = pq.ParquetFile(source).metadata
    assert meta.num_row_groups >= 2
    column = meta.row_group(meta.num_row_groups - 1).column(2)  # the payload column of the last row group
    data = bytearray(source.read_bytes())
    middle = column.data_page_offset + column.total_compressed_size // 2
    data[middle:middle + 64] = bytes(64)
    source.write_bytes(bytes(data))
    out = tmp_path / "out.parquet"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 5, result.stderr
    assert result.stderr.count("\n") == 1 and "row group 4 of 4 is damaged" in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_fresh_recording_of_the_simulator_has_its_sensor_type(broker: Mosquitto, tmp_path: Path,
                                                               suffix: str) -> None:
    """record (a real broker) -> the sensor_type column says DPS368 for the simulator's own topic
    (no sensor segment: taken from the payload); info and export agree; simulate --record too."""
    from tests.support.cli import start_cli
    from tests.support.fakes import uid

    device = f"sim-{uid()}"
    recording, truth = tmp_path / f"rec{suffix}", tmp_path / f"truth{suffix}"
    recorder = start_cli("record", str(recording), "-b", broker.tcp_url, "-t", f"device/{device}/#",
                         "--count", "5")
    assert recorder.stderr is not None
    seen = ""
    while "recording mqtt" not in seen:
        line = recorder.stderr.readline()
        assert line, seen
        seen += line
    sim = run_cli("simulate", "-b", broker.tcp_url, "--count", "5", "--interval", "0.02", "--device-id", device,
                  "--quiet", "--record", str(truth))
    assert sim.returncode == 0, sim.stderr
    _, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err
    for path in (recording, truth):
        with open_reader(path) as reader:
            tables = list(reader.iter_tables())  # type: ignore[attr-defined]
        assert {v for t in tables for v in t.column("sensor_type").cast(pa.string()).to_pylist()} == {"DPS368"}
        assert {v for t in tables for v in t.column("device_id").cast(pa.string()).to_pylist()} == {device}
        report = json.loads(run_cli("info", str(path), "--json").stdout)
        assert [t["sensor_type"] for t in report["topics"]] == ["DPS368"]
        assert report["values"]["devices"][device]["data.pressure"]["count"] == 5
        out = tmp_path / f"{path.stem}-export.parquet"
        assert run_cli("export", str(path), str(out)).returncode == 0
        table = pq.read_table(out)
        assert set(table.column("sensor_type").to_pylist()) == {"DPS368"} and table.num_rows == 5


# -- column names: unique, by one rule (issue 21) ------------------------------------------

COLLIDING: list[tuple[Message, str | None]] = [
    (Message("device/a/telemetry", b'{"data.pressure": 1.5, "data": {"pressure": 2.5}}', 0, False, T0), None),
    (Message("device/a/telemetry", b'{"data": {"pressure": 3.5}, "data.pressure": 4.5}', 0, False, T0 + 1), None),
    (Message("device/a/telemetry", b'{"device_id": "a", "payload.device_id": "b", "payload": 7}', 0, False,
             T0 + 2), None),
    (Message("raw/bin", b"\xff", 0, False, T0 + 3), None),
]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_column_names_are_unique_by_one_rule(tmp_path: Path, suffix: str) -> None:
    """A key with a dot in it, or a key named like a renamed field, would give two columns
    one name: the deeper path (then the prefixed field) keeps it, the other gets ~2 — the
    same whichever order the keys come in — and stderr names them. pandas, pyarrow and
    duckdb read the result."""
    import duckdb
    import pandas as pd

    source = write(tmp_path / "colliding.parquet", COLLIDING, labelled=False)
    out = tmp_path / f"out{suffix}"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    assert ('2 payload fields would share a column name with another: written as the path ["data.pressure"] as '
            'data.pressure~2, the path ["payload.device_id"] as payload.device_id~2') in result.stderr
    table = pq.read_table(out) if suffix == ".parquet" else pa_csv.read_csv(out)
    names = table.column_names
    assert len(names) == len(set(names))
    assert names == ["time", "topic", "device_id", "sensor_type", "qos", "retain", "data.pressure~2",
                     "data.pressure", "payload.device_id", "payload.device_id~2", "payload.payload", "payload"]
    assert table.column("data.pressure").to_pylist() == [2.5, 3.5, None, None]  # data -> pressure
    assert table.column("data.pressure~2").to_pylist() == [1.5, 4.5, None, None]  # the key "data.pressure"
    assert table.column("payload.device_id").to_pylist()[2] == "a"
    assert table.column("payload.device_id~2").to_pylist()[2] == "b"
    assert table.column("payload.payload").to_pylist()[2] == 7
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(frame.columns) == names
    assert frame["data.pressure~2"].tolist()[:2] == [1.5, 4.5]
    scan = "read_parquet" if suffix == ".parquet" else "read_csv"
    rows = duckdb.sql(f'SELECT "data.pressure", "data.pressure~2", "payload.device_id~2" FROM {scan}(\'{out}\')'
                      ).fetchall()
    assert rows[:3] == [(2.5, 1.5, None), (3.5, 4.5, None), (None, None, "b")]


def test_column_names_collide_in_mcap_too_without_an_error(tmp_path: Path) -> None:
    from mcap.reader import make_reader

    source = write(tmp_path / "colliding.parquet", COLLIDING, labelled=False)
    out = tmp_path / "out.mcap"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    with open(out, "rb") as handle:
        reader = make_reader(handle)
        data = [message.data for _, _, message in reader.iter_messages(log_time_order=False)]
        summary = reader.get_summary()
    assert data == [m.payload for m, _ in COLLIDING]
    assert summary is not None
    schema = {s.name: json.loads(s.data) for s in summary.schemas.values()}["device/a/telemetry"]
    assert schema["properties"]["data.pressure"] == {"type": "number"}
    assert schema["properties"]["data"]["properties"]["pressure"] == {"type": "number"}


def test_info_reads_colliding_names(tmp_path: Path) -> None:
    source = write(tmp_path / "colliding.parquet", COLLIDING[:2], labelled=False)
    result = run_cli("info", str(source), "--json")
    assert result.returncode == 0, result.stderr
    fields = json.loads(result.stdout)["values"]["fields"]
    assert fields["data.pressure"]["max"] == 3.5 and fields["data.pressure~2"]["max"] == 4.5


# -- one type rule for times, exact numbers (issue 21) ------------------------------------


def test_times_are_utc_nanoseconds_whatever_their_form(tmp_path: Path) -> None:
    """With or without fractions, Z or an offset (+07:00, +0700): timestamp[ns, UTC], the
    offset applied. Without an offset the zone is unknown: text as written, counted."""
    import duckdb
    import pandas as pd

    rows = [
        b'{"t": "2026-12-07T10:00:00Z", "u": "2026-12-07T10:00:00.5Z", "w": "2026-12-07T17:00:00+07:00", '
        b'"x": "2026-12-07T17:00:00.25+0700", "v": "2026-12-07T10:00:00", "d": {"t": "2026-12-07T10:00:01Z"}}',
        b'{"t": "2026-12-07T10:00:02.123456789Z", "u": "2026-12-07T10:00:03Z", "w": "2026-12-07T03:00:00-07:00", '
        b'"x": "2026-12-07T10:00:00Z", "v": "2026-12-07 10:00:00.5", "d": {"t": "2026-12-07T10:00:04.5Z"}}',
    ]
    source = write(tmp_path / "times.parquet",
                   [(Message("device/a/telemetry", p, 0, False, T0 + i), None) for i, p in enumerate(rows)],
                   labelled=False)
    out = tmp_path / "out.parquet"
    result = run_cli("export", str(source), str(out))
    assert result.returncode == 0, result.stderr
    assert "field v: 2 times without a zone offset: kept as text, as written" in result.stderr
    table = pq.read_table(out)
    utc = pa.timestamp("ns", tz="UTC")
    for name in ("time", "t", "u", "w", "x", "d.t"):
        assert table.schema.field(name).type == utc, name
    assert table.schema.field("v").type == pa.string()
    assert table.column("v").to_pylist() == ["2026-12-07T10:00:00", "2026-12-07 10:00:00.5"]
    ns = table.column("t").cast(pa.int64()).to_pylist()
    assert ns == [1_796_637_600_000_000_000, 1_796_637_602_123_456_789]
    assert table.column("w").cast(pa.int64()).to_pylist() == [1_796_637_600_000_000_000] * 2
    assert table.column("x").cast(pa.int64()).to_pylist() == [1_796_637_600_250_000_000, 1_796_637_600_000_000_000]
    frame = pd.read_parquet(out)
    assert str(frame["t"].dtype) == str(frame["time"].dtype) == "datetime64[ns, UTC]"
    kinds = {row[1] for row in duckdb.sql(f"DESCRIBE SELECT time, t, u, w FROM '{out}'").fetchall()}
    assert len(kinds) == 1 and ("TZ" in next(iter(kinds)) or "TIME ZONE" in next(iter(kinds))), kinds


def test_integers_float64_cannot_hold_are_kept_exactly_as_text(tmp_path: Path) -> None:
    """A 23-digit integer, or one beyond 2**53 next to fractions (in one batch or across
    batches): the field becomes text with every number's exact digits, counted on stderr.
    An int64 field beyond 2**53 without fractions stays int64, exact."""
    rows = [b'{"big": 12345678901234567890123, "n": 9007199254740993, "id": 9007199254740993, "f": 1.5}',
            b'{"big": 1, "n": 1.5, "id": 2, "f": 2}']
    rows += [b'{"late": 9007199254740995, "id": 3}'] * 16_384 + [b'{"late": 0.5}']  # a later batch: float
    source = write(tmp_path / "numbers.parquet",
                   [(Message("device/a/telemetry", p, 0, False, T0 + i), None) for i, p in enumerate(rows)],
                   labelled=False)
    for suffix in (".parquet", ".csv"):
        out = tmp_path / f"out{suffix}"
        result = run_cli("export", str(source), str(out))
        assert result.returncode == 0, result.stderr
        assert "field big: 1 integer that float64 cannot hold exactly: the field is written as text" in result.stderr
        assert "field n: 1 integer that float64 cannot hold exactly" in result.stderr
        assert "field late: 16,384 integers that float64 cannot hold exactly" in result.stderr
        assert "field id" not in result.stderr and "field f" not in result.stderr
        table = pq.read_table(out) if suffix == ".parquet" else pa_csv.read_csv(
            out, convert_options=pa_csv.ConvertOptions(column_types={"big": pa.string(), "n": pa.string(),
                                                                     "late": pa.string()}))
        assert table.column("big").to_pylist()[:2] == ["12345678901234567890123", "1"]
        assert table.column("n").to_pylist()[:2] == ["9007199254740993", "1.5"]
        assert table.column("late").to_pylist()[2] == "9007199254740995"
        assert table.column("late").to_pylist()[-1] == "0.5"
        assert table.schema.field("id").type == pa.int64()
        assert table.column("id").to_pylist()[:3] == [9007199254740993, 2, 3]
        assert table.column("f").to_pylist()[:2] == [1.5, 2.0]
