"""tesaiot plot: the expected series and markers (checked on the figure), valid image files,
bounded drawing of long recordings, and the one-line error without matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tesaiot_cli.analysis.detect import alert_message, detect_messages
from tesaiot_cli.analysis.plot import collect, render
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer
from tests.support.cli import run_cli
from tests.support.truth import write_truth

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def scatter_labels(figure: Any) -> dict[str, int]:
    """label -> number of points, over every axes of the figure."""
    counts: dict[str, int] = {}
    for ax in figure.axes:
        for collection in ax.collections:
            label = collection.get_label()
            if not label.startswith(("_", "span:", "missed-span:")):
                counts[label] = counts.get(label, 0) + len(collection.get_offsets())
    return counts


def test_sample_with_alerts(tmp_path: Path) -> None:
    sample = Path("recordings/dps368-sample.parquet")
    with open_reader(sample) as reader:
        alerts = [alert_message(a) for _m, a in detect_messages(iter(reader))]
    data = collect(lambda: open_reader(sample), alerts=alerts)
    figure = render(data, tmp_path / "sample.png")
    assert (tmp_path / "sample.png").read_bytes()[:8] == PNG_MAGIC
    assert len(figure.axes) == 2  # one device: pressure and temperature
    labels = scatter_labels(figure)
    # 17 both, 8 high_pressure, 5 high_temperature: one marker per event on each channel's axes.
    assert labels == {"event:both": 34, "event:high_pressure": 16, "event:high_temperature": 10, "alert": 60}
    lines = [line for ax in figure.axes for line in ax.get_lines()]
    assert len(lines) == 2 and all(len(line.get_xdata()) == 300 for line in lines)  # every reading drawn


def test_missed_and_false_alarms_are_distinguishable(tmp_path: Path) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=3, count=200, seed=2, profile="realistic")
    with open_reader(truth) as reader:
        rows = list(reader.iter_labelled())
    first = next(m for m, label in rows if label == "spike" and m.topic.startswith("device/infineon-sensor-01/"))
    normal = next(m for m, label in rows[60:] if label == "normal" and "sensor-01/" in m.topic)
    import json

    def alert(reading: Message) -> Message:
        stamp = json.loads(reading.payload)["timestamp"]
        return Message("device/infineon-sensor-01/alerts", json.dumps({"timestamp": stamp}).encode(), 1, False,
                       reading.time_ns)

    data = collect(lambda: open_reader(truth), alerts=[alert(first), alert(normal)], devices=["*-01"])
    assert data.devices == ["infineon-sensor-01"] and data.devices_seen == 3
    figure = render(data, tmp_path / "one.svg")
    text = (tmp_path / "one.svg").read_text()
    assert text.startswith("<?xml") and "<svg" in text[:400]
    labels = scatter_labels(figure)
    assert labels["alert"] == 2 and labels["false alarm"] == 2  # on both channels' axes
    assert labels["event:spike"] == 2 and any(label.startswith("missed:") for label in labels)
    # runs (stuck, drift, dropout) are shaded spans, one collection per kind; missed ones hatched
    spans = {c.get_label(): c for c in figure.axes[0].collections if "span:" in c.get_label()}
    assert {"span:stuck", "span:drift", "span:dropout"} <= set(spans)
    assert any(label.startswith("missed-span:") and c.get_hatch() for label, c in spans.items())
    events = data.events["infineon-sensor-01"]
    runs = [e for e in events if e.kind in ("stuck", "drift", "dropout")]
    drawn = sum(len(c.get_paths()) for label, c in spans.items() if label.startswith("span:"))
    assert drawn == len(runs)  # every run drawn, none merged or dropped
    legend = {t.get_text() for t in figure.legends[0].get_texts()}
    assert {"false alarm", "missed (hollow / hatched)", "spike", "stuck", "drift", "dropout"} <= legend


def test_device_cap_and_choice(tmp_path: Path) -> None:
    truth = tmp_path / "fleet.parquet"
    write_truth(truth, devices=9, count=50, seed=1)
    data = collect(lambda: open_reader(truth))
    assert len(data.devices) == 6 and data.devices_seen == 9
    assert collect(lambda: open_reader(truth), max_devices=2).devices == ["infineon-sensor-01", "infineon-sensor-02"]
    figure = render(data, tmp_path / "fleet.png")
    assert len(figure.axes) == 12
    assert "(6 of 9 devices" in figure.legends[0].get_title().get_text()


def test_long_recording_is_downsampled_but_keeps_every_marker(tmp_path: Path) -> None:
    truth = tmp_path / "long.parquet"
    write_truth(truth, devices=1, count=20_000, seed=3, profile="realistic")
    with open_reader(truth) as reader:
        labels = [label for _m, label in reader.iter_labelled()]
    data = collect(lambda: open_reader(truth), buckets=500)
    events = data.events["infineon-sensor-01"]
    point_events = [e for e in events if e.kind not in ("stuck", "drift", "dropout")]
    assert len(point_events) == sum(1 for label in labels if label in ("spike", "both", "high_pressure",
                                                                        "high_temperature"))
    figure = render(data, tmp_path / "long.png")
    for line in (line for ax in figure.axes for line in ax.get_lines()):
        assert len(line.get_xdata()) <= 2 * 500  # two points per bucket at most
        # the extremes survive the reduction
    pressures = [float(m.payload.split(b'"pressure": ')[1].split(b",")[0]) for m in open_reader(truth)]
    drawn = figure.axes[0].get_lines()[0].get_ydata()
    assert max(drawn) == max(pressures) and min(drawn) == min(pressures)


def test_plain_recording_without_labels(tmp_path: Path) -> None:
    sample = Path("recordings/dps368-sample.parquet")
    plain = tmp_path / "plain.jsonl"
    with open_reader(sample) as reader, open_writer(plain, metadata=RecordingMetadata(), crash_safe=False) as out:
        for message in reader:
            out.write(message)
    data = collect(lambda: open_reader(plain))
    assert not data.labelled and data.events == {}
    figure = render(data, tmp_path / "plain.png")
    assert scatter_labels(figure) == {}


def test_cli_writes_the_image(tmp_path: Path) -> None:
    out = tmp_path / "s.png"
    result = run_cli("plot", "recordings/dps368-sample.parquet", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert f"written to {out}" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]  # no temporary file left


@pytest.mark.parametrize("args, code, text", [
    (["-o", "{dir}/x.jpg"], 1, "use .png or .svg"),
    (["-o", "{dir}/exists.png"], 1, "already exists"),
    (["-o", "{dir}/nodir/x.png"], 5, "does not exist"),
    (["-o", "{dir}/x.png", "--device", "nobody"], 9, "nothing to plot: no message"),  # an empty selection
    (["-o", "{dir}/x.png", "--max-devices", "0"], 1, "--max-devices"),
])
def test_cli_bad_input(tmp_path: Path, args: list[str], code: int, text: str) -> None:
    (tmp_path / "exists.png").write_bytes(b"keep")
    result = run_cli("plot", "recordings/dps368-sample.parquet", *[a.format(dir=tmp_path) for a in args])
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.png"]
    assert (tmp_path / "exists.png").read_bytes() == b"keep"


def test_cli_missing_recording(tmp_path: Path) -> None:
    result = run_cli("plot", str(tmp_path / "nope.parquet"), "-o", str(tmp_path / "x.png"))
    assert result.returncode == 5 and "not found" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_without_matplotlib(tmp_path: Path) -> None:
    """A Python where matplotlib cannot be found: one line naming the install command."""
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'matplotlib' or name.startswith('matplotlib.'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, Block())\n")
    from tests.support.cli import clean_env

    env = clean_env(PYTHONPATH=str(blocker))
    result = run_cli("plot", "recordings/dps368-sample.parquet", "-o", str(tmp_path / "x.png"), env=env)
    assert result.returncode == 1
    assert result.stderr.strip() == "tesaiot: error: plot needs matplotlib: pip install 'tesaiot-cli[plot]'"
    assert not (tmp_path / "x.png").exists()


# -- any numeric field, NAB's windows, what is left out (issue 21 item 11) ---------------------

NAB = Path(__file__).parent / "data" / "nab"


@pytest.fixture(scope="module")
def nab_truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shipped NAB series (speed_7578: 4 windows, exchange-2_cpc_results: 1) as a truth."""
    import shutil

    root = tmp_path_factory.mktemp("nab")
    for name in ("realTraffic/speed_7578.csv", "realAdExchange/exchange-2_cpc_results.csv"):
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / name, root / "data" / name)
    truth = root / "nab.parquet"
    result = run_cli("convert", "--from", "nab", str(root / "data"), str(truth),
                     "--labels", str(NAB / "labels" / "combined_windows.json"))
    assert result.returncode == 0, result.stderr
    return truth


def nab_alert(device: str, stamp: str, time_ns: int = 0) -> Message:
    import json

    return Message(f"device/{device}/alerts", json.dumps({"timestamp": stamp, "device_id": device}).encode(), 1,
                   False, time_ns)


def test_a_nab_series_with_its_windows_and_alerts(nab_truth: Path, tmp_path: Path) -> None:
    import json

    with open_reader(nab_truth) as reader:
        windows = reader.metadata.extra["windows"]["speed_7578"]
        stamps = [json.loads(m.payload)["timestamp"] for m in reader if m.topic == "nab/speed_7578"]
    assert len(windows) == 4
    inside, outside = windows[0][0], stamps[10]  # the first row of a window; a row before every window
    data = collect(lambda: open_reader(nab_truth), devices=["speed_7578"],
                   alerts=[nab_alert("speed_7578", inside, 1), nab_alert("speed_7578", outside, 2)])
    assert data.devices == ["speed_7578"] and data.devices_seen == 2 and data.channels == [("value", "")]
    assert data.readings == len(stamps)  # the device's own span: every reading in a bucket
    events = data.events["speed_7578"]
    assert [e.kind for e in events] == ["window"] * 4 and [e.detected for e in events] == [True, False, False, False]
    # placed at the reading they name (not at their own time, 1 and 2 ns since the epoch)
    assert sorted(a.matched for a in data.alerts["speed_7578"]) == [False, True]
    figure = render(data, tmp_path / "nab.png")
    assert len(figure.axes) == 1 and figure.axes[0].get_ylabel() == "value"
    spans: dict[str, int] = {}
    for collection in figure.axes[0].collections:
        if "span:" in collection.get_label():
            spans[collection.get_label()] = spans.get(collection.get_label(), 0) + len(collection.get_paths())
    assert spans == {"span:window": 4, "missed-span:window": 3}  # every window shaded, the missed ones hatched
    assert scatter_labels(figure) == {"alert": 1, "false alarm": 1}
    assert "anomaly window" in {t.get_text() for t in figure.legends[0].get_texts()}
    assert "(1 of 2 devices; --device chooses)" in figure.legends[0].get_title().get_text()


def test_any_numeric_field_and_the_default(nab_truth: Path, tmp_path: Path) -> None:
    plain = tmp_path / "machine.jsonl"
    with open_writer(plain, metadata=RecordingMetadata(), crash_safe=False) as out:
        for i in range(50):
            payload = b'{"timestamp": "t", "device_id": "m1", "rpm": %d, "load": %d, "ok": true}' % (i, 2 * i)
            out.write(Message("machines/m1", payload, 0, False, 1_000_000_000 * i))
    data = collect(lambda: open_reader(plain))
    assert data.devices == ["m1"] and data.channels == [("rpm", ""), ("load", "")]  # no 'value': the first two
    assert collect(lambda: open_reader(plain), fields=["load"]).channels == [("load", "")]
    figure = render(collect(lambda: open_reader(plain), fields=["load"]), tmp_path / "m.png")
    assert max(figure.axes[0].get_lines()[0].get_ydata()) == 98
    assert collect(lambda: open_reader(Path("recordings/dps368-sample.parquet"))).channels == [
        ("pressure", "hPa"), ("temperature", "°C")]


def test_alerts_it_cannot_draw_are_counted_on_the_picture_and_on_stderr(tmp_path: Path) -> None:
    """Issue 21 item 11: an alert of another device, one outside the time span and one that is not
    JSON are not drawn: the title and a warning say so (score counts them as false alarms)."""
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=2, count=100, seed=2)
    with open_reader(truth) as reader:
        first = next(iter(reader))
    stamp = first.payload.split(b'"timestamp": "')[1].split(b'"')[0].decode()
    late = first.time_ns + 10**15  # eleven days after the recording
    alerts = [nab_alert("infineon-sensor-01", stamp, first.time_ns),
              nab_alert("infineon-sensor-02", "2001-01-01T00:00:00+00:00", late),
              nab_alert("infineon-sensor-02", "2001-01-01T00:00:00+00:00", late),
              Message("device/infineon-sensor-01/alerts", b"not json", 1, False, first.time_ns)]
    data = collect(lambda: open_reader(truth), alerts=alerts, devices=["*-01"])
    assert data.left_out_text() == "alerts not drawn: 2 of other devices, 1 not JSON objects"
    data = collect(lambda: open_reader(truth), alerts=alerts)
    assert data.left_out_text() == "alerts not drawn: 1 not JSON objects, 2 outside the recording's time span"
    figure = render(data, tmp_path / "t.png")
    assert "(2 of 2 devices)\nalerts not drawn: 1 not JSON objects" in figure.legends[0].get_title().get_text()
    with open_writer(tmp_path / "alerts.jsonl", metadata=RecordingMetadata(), crash_safe=False) as out:
        for alert in alerts:
            out.write(alert)
    result = run_cli("plot", str(truth), "--alerts", str(tmp_path / "alerts.jsonl"), "-o", str(tmp_path / "c.png"))
    assert result.returncode == 0, result.stderr
    assert "plot: 2 of 2 devices, " in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "tesaiot: warning: plot: alerts not drawn: 1 not JSON objects, 2 outside the recording's time span")
    clean = run_cli("plot", str(truth), "-o", str(tmp_path / "d.png"))
    assert clean.returncode == 0 and "warning" not in clean.stderr


def test_info_shows_the_windows_per_device(nab_truth: Path) -> None:
    import json

    result = run_cli("info", str(nab_truth), "--no-values")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    start = lines.index("windows     5 anomaly windows (nab) on 2 devices")
    assert lines[start + 1] == "  speed_7578: 4"  # the most windows first
    assert lines[start + 2].startswith("    2015-") and " -> " in lines[start + 2] and lines[start + 2].endswith(")")
    assert lines[start + 6] == "  exchange-2_cpc_results: 1"
    report = json.loads(run_cli("info", str(nab_truth), "--json", "--no-values").stdout)
    assert report["windows"]["count"] == 5 and report["windows"]["benchmark"] == "nab"
    assert len(report["windows"]["by_device"]["speed_7578"]) == 4
    plain = json.loads(run_cli("info", "recordings/dps368-sample.parquet", "--json", "--no-values").stdout)
    assert plain["windows"] is None
