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
