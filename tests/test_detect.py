"""tesaiot detect: the reference detector finds every kind on seeded fleets, offline and live."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tesaiot_cli.analysis.detect import Detector, detect_messages
from tesaiot_cli.analysis.score import score_detection
from tesaiot_cli.message import Message
from tesaiot_cli.recording import open_reader
from tests.support.broker import PASSWORD, READER, READER_PASSWORD, USER, Mosquitto
from tests.support.cli import run_cli, start_cli, wait_for_stderr
from tests.support.clients import Collector, publish
from tests.support.truth import write_truth


def score_offline(truth: Path) -> dict[str, dict[str, float]]:
    from tesaiot_cli.analysis.detect import alert_message

    with open_reader(truth) as reader:
        alerts = [alert_message(alert) for _message, alert in detect_messages(iter(reader))]
    with open_reader(truth) as reader:
        score = score_detection(reader.iter_labelled(), reader.metadata, alerts)
    result = {kind: {"events": s.events, "recall": s.recall or 0.0} for kind, s in score.by_kind.items()}
    result["overall"] = {"events": score.overall.events, "recall": score.overall.recall or 0.0,
                         "precision": score.overall.precision or 0.0}
    return result


@pytest.mark.parametrize("profile", ["upstream", "realistic"])
@pytest.mark.parametrize("seed", [1, 2])
def test_finds_every_kind_on_a_seeded_fleet(tmp_path: Path, profile: str, seed: int) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=5, count=600, seed=seed, profile=profile, kinds="all")
    scores = score_offline(truth)
    kinds = {"high_temperature", "high_pressure", "both", "spike", "stuck", "drift", "dropout"}
    assert kinds <= set(scores)
    for kind in kinds:
        assert scores[kind]["events"] > 5, (kind, scores)
        assert scores[kind]["recall"] >= 0.75, (kind, scores)
    for kind in ("high_temperature", "high_pressure", "both", "dropout"):
        assert scores[kind]["recall"] == 1.0, (kind, scores)
    assert scores["overall"]["recall"] >= 0.9 and scores["overall"]["precision"] >= 0.97, scores


def test_clean_signal_raises_few_alerts(tmp_path: Path) -> None:
    for profile in ("upstream", "realistic"):
        truth = tmp_path / f"{profile}.parquet"
        write_truth(truth, devices=5, count=600, seed=3, profile=profile, anomaly_every=0)
        detector = Detector()
        with open_reader(truth) as reader:
            alerts = [alert for _m, alert in detect_messages(iter(reader), detector)]
        assert detector.readings == 3000
        assert len(alerts) <= 6, (profile, alerts[:5])  # < 0.2 % false alarms on clean signals


def test_offline_cli_is_deterministic_and_follows_the_contract(tmp_path: Path) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=3, count=300, seed=4)
    outputs = []
    rows = pq.read_table(truth).num_rows
    for name in ("a.parquet", "b.jsonl"):
        result = run_cli("detect", str(truth), "--to", str(tmp_path / name))
        assert result.returncode == 0, result.stderr
        assert f"{rows} readings from 3 devices" in result.stderr
        with open_reader(tmp_path / name) as reader:
            assert reader.metadata.source == "detect"
            outputs.append([(m.topic, m.payload, m.time_ns) for m in reader])
    assert outputs[0] == outputs[1] and len(outputs[0]) > 20
    with open_reader(truth) as reader:
        stamps = {json.loads(m.payload)["timestamp"]: m for m in reader}
    for topic, payload, time_ns in outputs[0]:
        alert = json.loads(payload)
        assert list(alert) == ["timestamp", "device_id", "kind", "score"]
        reading = stamps[alert["timestamp"]]  # copied verbatim from a reading
        assert topic == f"device/{alert['device_id']}/alerts" and reading.topic.split("/")[1] == alert["device_id"]
        assert time_ns == reading.time_ns  # offline, an alert's time is its reading's


def test_offline_cli_on_the_shipped_sample(tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.parquet"
    assert run_cli("detect", "recordings/dps368-sample.parquet", "--to", str(alerts)).returncode == 0
    result = run_cli("score", "recordings/dps368-sample.parquet", "--alerts", str(alerts), "--json",
                     "--fail-under", "f1=1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["detection"]["events"] == 30


@pytest.mark.parametrize("args, code, text", [
    (["{truth}"], 1, "needs --to"),
    (["{truth}", "--to", "{existing}"], 1, "already exists"),
    (["{missing}", "--to", "{new}"], 5, "not found"),
    (["{truth}", "--to", "{new}", "--count", "5"], 1, "--count is for live"),
    (["{truth}", "--to", "{new}", "--alert-topic", "a/#"], 1, "wildcards"),
    (["{truth}", "--to", "{truth}", "--force"], 1, "must not be the RECORDING"),
    (["--to", "{new}"], 1, "--to is for offline"),
])
def test_cli_bad_input(tmp_path: Path, args: list[str], code: int, text: str) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, count=50)
    existing = tmp_path / "existing.parquet"
    existing.write_bytes(b"keep me")
    paths = {"truth": truth, "existing": existing, "missing": tmp_path / "nope.parquet",
             "new": tmp_path / "new.parquet"}
    result = run_cli("detect", *[a.format(**{k: str(v) for k, v in paths.items()}) for a in args])
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr, result.stderr
    assert existing.read_bytes() == b"keep me"
    assert not (tmp_path / "new.parquet").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing.parquet", "truth.parquet"]


# -- live --------------------------------------------------------------------------------


def truth_messages(path: Path) -> list[tuple[str, bytes]]:
    with open_reader(path) as reader:
        return [(m.topic, m.payload) for m in reader]


@pytest.mark.parametrize("qos, version", [(0, "3.1.1"), (1, "3.1.1"), (1, "5"), (2, "5")])
def test_live_publishes_what_offline_finds(broker: Mosquitto, tmp_path: Path, qos: int, version: str) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=2, count=200, seed=6)
    messages = truth_messages(truth)
    with open_reader(truth) as reader:
        expected = sorted(detector_payloads(reader))
    detect = start_cli("detect", "-b", broker.tcp_url, "--qos", str(qos), "--mqtt-version", version,
                       "--count", str(len(messages)))
    try:
        with Collector(broker.tcp_port, "device/+/alerts", qos=1) as alerts:
            wait_for_stderr(detect, "detecting on")
            publish(broker.tcp_port, messages, qos=1)
            _out, err = detect.communicate(timeout=60)
            received = alerts.wait_for(len(expected), timeout=10)
    finally:
        if detect.poll() is None:
            detect.kill()
            detect.communicate()
    assert detect.returncode == 0, err
    assert f"{len(messages)} readings from 2 devices analysed, {len(expected)} alerts published, " \
           f"{len(expected)} acknowledged, 0 refused, 0 dropped" in err
    assert sorted(m.payload for m in received) == expected
    assert {m.topic for m in received} == {"device/infineon-sensor-01/alerts", "device/infineon-sensor-02/alerts"}


def detector_payloads(reader: object) -> list[bytes]:
    from tesaiot_cli.analysis.detect import alert_payload

    return [alert_payload(alert) for _m, alert in detect_messages(iter(reader))]  # type: ignore[call-overload]


def test_live_refused_alerts_are_counted_and_exit_7(broker: Mosquitto, tmp_path: Path) -> None:
    """A user that may only read: the broker refuses every alert (MQTT 5 reason code); detect says so."""
    truth = tmp_path / "truth.parquet"
    write_truth(truth, devices=1, count=100, seed=6)
    messages = truth_messages(truth)
    detect = start_cli("detect", "-b", broker.auth_url, "--username", READER, "--password", READER_PASSWORD,
                       "--mqtt-version", "5", "--count", str(len(messages)))
    try:
        wait_for_stderr(detect, "detecting on")
        publish(broker.auth_port, messages, qos=1, username=USER, password=PASSWORD)
        _out, err = detect.communicate(timeout=60)
    finally:
        if detect.poll() is None:
            detect.kill()
            detect.communicate()
    assert detect.returncode == 7, err
    lines = err.strip().splitlines()
    assert "0 acknowledged" in lines[-2] and "alerts were not delivered" in lines[-1]
    refused = int(lines[-1].split(" refused")[0].split(", ")[-1])
    assert refused > 5 and f"{refused} alerts published" in lines[-2]


def test_detector_unit_cases() -> None:
    """Range kinds at and beyond the datasheet limits, a stuck repeat, a gap, non-readings."""
    import random

    from tesaiot_cli.analysis.telemetry import Reading

    rng = random.Random(1)
    detector = Detector()
    second = 1_000_000_000

    def feed(k: int, pressure: float, temperature: float, *, at: int | None = None) -> list[str]:
        reading = Reading("d", f"t{k}", (at if at is not None else k) * second, pressure, temperature)
        return [alert.kind for alert in detector.feed(reading)]

    k = 0
    for k in range(1, 100):  # warm-up: independent values, like the upstream profile
        assert feed(k, round(rng.uniform(950, 1050), 2), round(rng.uniform(20, 35), 2)) == []
    assert feed(100, 1200.0, 25.0) == ["high_pressure"]  # on the limit: the simulator clamps there
    assert feed(101, 1000.0, 85.0) == ["high_temperature"]
    assert feed(102, 1230.5, 87.1) == ["both"]
    assert feed(103, 1000.0, -40.0) == ["low_temperature"]
    assert feed(104, 1010.0, 26.0) == []
    assert feed(105, 940.0, 25.0) == ["spike"]  # 10 hPa below the normal range
    assert feed(106, 939.0, 26.3) == ["drift"]  # flagged again right after: the same episode
    assert feed(107, 1000.5, 25.5) == []
    assert feed(108, 1000.5, 25.5) == ["stuck"]  # independent values never repeat: once is enough
    assert feed(109, 990.1, 22.2) == []
    assert feed(113, 1001.1, 30.2) == ["dropout"]  # 4 s after the last reading, 1 s apart before
    assert feed(114, 1002.2, 27.7) == []
    parser_input = [Message("device/x/telemetry", b"not json"), Message("device/x/telemetry", b'{"a": 1}')]
    counting = Detector()
    assert list(detect_messages(parser_input, counting)) == [] and counting.readings == 0
