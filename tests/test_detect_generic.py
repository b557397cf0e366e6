"""tesaiot detect's generic method: any numeric field, per device, deterministic; offline and live on NAB series."""

from __future__ import annotations

import json
import math
import random
import shutil
import subprocess
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from tesaiot_cli.analysis import detect_generic
from tesaiot_cli.analysis.detect_generic import GenericDetector, default_field, field_value, make_detector
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording import open_reader
from tests.support.broker import Mosquitto
from tests.support.cli import run_cli, start_cli, wait_for_stderr
from tests.support.clients import Collector

NAB = Path(__file__).parent / "data" / "nab"
SMALL = ("realTraffic/speed_7578.csv", "realAdExchange/exchange-2_cpc_results.csv")  # 1127 + 1624 rows


def sine(count: int, seed: int = 1) -> list[float]:
    """A daily cycle of 5-minute samples with Gaussian noise: what a clean NAB-like series looks like."""
    rng = random.Random(seed)
    return [10 + 3 * math.sin(2 * math.pi * i / 288) + rng.gauss(0, 0.3) for i in range(count)]


def alerts_of(values: list[float]) -> list[tuple[int, str]]:
    detector = GenericDetector()
    return [(i, found.kind) for i, value in enumerate(values) if (found := detector.feed("d", value)) is not None]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_nothing_on_a_clean_sine(seed: int) -> None:
    assert alerts_of(sine(3000, seed)) == []


def test_a_spike_a_level_shift_and_a_flatline_are_caught_at_once() -> None:
    spiked = sine(3000)
    spiked[2000] += 8
    shifted = sine(3000)
    shifted[2000:] = [value + 5 for value in shifted[2000:]]
    flat = sine(3000)
    flat[2000:] = [flat[2000]] * 1000
    assert alerts_of(spiked) == [(2000, "change")]
    assert alerts_of(shifted) == [(2000, "change")]  # one alert: the new level is learnt, not re-alerted
    found = alerts_of(flat)
    assert len(found) == 1 and found[0][1] == "flatline" and 2000 < found[0][0] <= 2000 + 2 * detect_generic.STILL


def test_deterministic_per_device_with_a_warm_up_and_suppression() -> None:
    values = sine(3000)
    for at in (50, 1000, 1010, 2000):  # in the warm-up; two close together; one far
        values[at] += 10
    first = alerts_of(values)
    assert first == alerts_of(values)
    assert [i for i, _kind in first] == [1000, 2000]  # 50: warm-up; 1010: within SUPPRESS of 1000
    detector = GenericDetector()  # interleaved devices do not disturb each other
    both = [(i, device) for i, value in enumerate(values) for device in ("a", "b")
            if detector.feed(device, value) is not None]
    assert both == [(1000, "a"), (1000, "b"), (2000, "a"), (2000, "b")] and detector.devices == 2


def test_the_field_and_its_default() -> None:
    assert field_value({"value": 3}, "value") == 3.0
    assert field_value({"data": {"pressure": 1.5}}, "pressure") == 1.5
    assert field_value({"a": {"b": 2.5}}, "a.b") == 2.5
    assert field_value({"value": True}, "value") is None and field_value({"value": "3"}, "value") is None
    assert default_field({"timestamp": "t", "device_id": "d", "value": 1.0, "other": 2}) == "value"
    assert default_field({"timestamp": "t", "rpm": 1200}) == "rpm"
    assert default_field({"data": {"load": 0.5}, "seq": 4}) == "data.load"
    assert default_field({"a": 1, "b": 2}) is None and default_field({"state": "on"}) is None
    with pytest.raises(ConfigError, match="invalid --method"):
        make_detector("magic")
    with pytest.raises(ConfigError, match="not with --method dps368"):
        make_detector("dps368", "value")


# -- on NAB series, through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def nab_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short NAB series (shipped in tests/data/nab) as a labelled recording."""
    root = tmp_path_factory.mktemp("nab")
    for name in SMALL:
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / name, root / "data" / name)
    truth = root / "nab.parquet"
    result = run_cli("convert", "--from", "nab", str(root / "data"), str(truth),
                     "--labels", str(NAB / "labels" / "combined_windows.json"))
    assert result.returncode == 0, result.stderr
    return truth


def test_offline_on_nab_is_deterministic_and_scored(nab_small: Path, tmp_path: Path) -> None:
    outputs = []
    for name, extra in (("a.parquet", ["--field", "value"]), ("b.jsonl", [])):  # no --field: 'value' found
        result = run_cli("detect", str(nab_small), "--to", str(tmp_path / name), *extra)
        assert result.returncode == 0, result.stderr
        assert "2751 readings from 2 devices" in result.stderr and "skipped" not in result.stderr
        with open_reader(tmp_path / name) as reader:
            outputs.append([(m.topic, m.payload, m.time_ns) for m in reader])
    assert outputs[0] == outputs[1] and len(outputs[0]) >= 2
    with open_reader(nab_small) as reader:
        stamps = {(m.topic.split("/")[1], json.loads(m.payload)["timestamp"]) for m in reader}
    for topic, payload, _time in outputs[0]:
        alert = json.loads(payload)
        assert (alert["device_id"], alert["timestamp"]) in stamps and topic == f"device/{alert['device_id']}/alerts"
        assert alert["kind"] in ("level", "change", "flatline") and alert["score"] >= detect_generic.THRESHOLD
    result = run_cli("score", str(nab_small), "--alerts", str(tmp_path / "a.parquet"), "--nab", "--json")
    assert result.returncode == 0, result.stderr
    nab = json.loads(result.stdout)["nab"]
    assert nab["unplaced_alerts"] == 0 and nab["standard"]["tp"] >= 1


@pytest.mark.parametrize("args, text", [
    (["--method", "magic"], "invalid --method 'magic'"),
    (["--field", ""], "not empty"),
    (["--method", "dps368", "--field", "value"], "not with --method dps368"),
])
def test_bad_method_or_field(nab_small: Path, tmp_path: Path, args: list[str], text: str) -> None:
    result = run_cli("detect", str(nab_small), "--to", str(tmp_path / "a.parquet"), *args)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, \
        result.stderr
    assert not (tmp_path / "a.parquet").exists()


def test_a_field_that_is_not_there_is_counted(nab_small: Path, tmp_path: Path) -> None:
    result = run_cli("detect", str(nab_small), "--to", str(tmp_path / "a.parquet"), "--field", "rpm")
    assert result.returncode == 0, result.stderr
    assert "0 readings from 0 devices" in result.stderr
    assert "2751 messages were not readings (no number at 'rpm') (skipped)" in result.stderr


def _offline_alerts(source: Path, tmp_path: Path, *args: str) -> list[bytes]:
    """The alerts offline ``detect`` writes for ``source`` (sorted payloads)."""
    offline = tmp_path / "offline.parquet"
    assert run_cli("detect", str(source), "--to", str(offline), *args).returncode == 0
    with open_reader(offline) as reader:
        return sorted(m.payload for m in reader)


def _replay_into(detect: subprocess.Popen[str], broker: Mosquitto, source: Path, alerts_expected: int
                 ) -> tuple[str, list[paho.MQTTMessage]]:
    """Replay ``source`` at max speed into the live ``detect``; its stderr and the alerts it published."""
    try:
        with Collector(broker.tcp_port, "device/+/alerts", qos=1) as alerts:
            wait_for_stderr(detect, "detecting on")
            replay = run_cli("replay", str(source), "-b", broker.tcp_url, "--speed", "max", "--qos", "1")
            assert replay.returncode == 0, replay.stderr
            _out, err = detect.communicate(timeout=60)
            received = alerts.wait_for(alerts_expected, timeout=10)
    finally:
        if detect.poll() is None:
            detect.kill()
            detect.communicate()
    assert detect.returncode == 0, err
    return err, received


def test_live_on_nab_replayed_at_max_speed_publishes_what_offline_finds(broker: Mosquitto, nab_small: Path,
                                                                         tmp_path: Path) -> None:
    expected = _offline_alerts(nab_small, tmp_path, "--field", "value")
    detect = start_cli("detect", "-b", broker.tcp_url, "-t", "nab/#", "--field", "value", "--count", "2751")
    err, received = _replay_into(detect, broker, nab_small, len(expected))
    assert f"2751 readings from 2 devices analysed, {len(expected)} alerts published" in err
    assert sorted(m.payload for m in received) == expected


def test_live_detector_behind_the_replay_holds_the_stream_instead_of_dropping(broker: Mosquitto, nab_small: Path,
                                                                              tmp_path: Path) -> None:
    """A detector slower than replay --speed max: with a 20-reading inbox (100,000 in the real
    command) the network thread waits for room, the broker holds the rest: every reading analysed."""
    import sys

    from tests.support.cli import clean_env

    expected = _offline_alerts(nab_small, tmp_path)
    code = ("import sys; import tesaiot_cli.services.detector as d; d.INBOX_LIMIT = 20; "
            "sys.argv[0] = 'tesaiot'; from tesaiot_cli.cli import main; main()")
    detect = subprocess.Popen([sys.executable, "-c", code, "detect", "-b", broker.tcp_url, "-t", "nab/#",
                               "--count", "2751"], env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    err, received = _replay_into(detect, broker, nab_small, len(expected))
    assert "2751 readings from 2 devices analysed" in err and "not analysed" not in err
    assert sorted(m.payload for m in received) == expected


def test_inbox_keeps_order_holds_the_producer_back_and_never_while_publishing() -> None:
    import threading

    from tesaiot_cli.services.inbox import Inbox

    inbox: Inbox[int] = Inbox(3)
    for item in range(3):
        inbox.put(item)
    done = threading.Event()

    def produce() -> None:
        inbox.put(3)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    assert not done.wait(0.3) and inbox.held_back == 1  # full: the producer waits
    assert inbox.get(1.0) == 0 and done.wait(5)  # room: it goes on
    with inbox.publishing():  # the consumer publishes: the producer must not wait
        inbox.put(4)
        inbox.put(5)
    assert [inbox.get(1.0) for _ in range(5)] == [1, 2, 3, 4, 5] and inbox.get(0.01) is None
    for item in range(3):
        inbox.put(item)
    inbox.close()
    inbox.put(9)  # after close: counted, not kept, never waits
    assert inbox.refused == 1 and len(inbox) == 3
    producer.join()
