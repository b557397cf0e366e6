"""tesaiot score: hand-built truth and alert sets with known answers, delivery, the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tesaiot_cli.analysis.score import dropout_plan, score_delivery, score_detection
from tesaiot_cli.analysis.thresholds import parse_thresholds
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata
from tesaiot_cli.sim.dps368 import TimestampFormatter
from tests.support.cli import run_cli
from tests.support.recordings import write_recording
from tests.support.truth import write_truth

T0 = 1_795_000_000_000_000_000
SECOND = 1_000_000_000
STAMP = TimestampFormatter()


def reading(device: str, time_ns: int, pressure: float = 1000.0, temperature: float = 25.0) -> Message:
    payload = (f'{{"timestamp": "{STAMP(time_ns)}", "device_id": "{device}", "sensor_type": "DPS368", '
               f'"data": {{"pressure": {pressure!r}, "temperature": {temperature!r}}}}}').encode()
    return Message(f"device/{device}/telemetry", payload, 1, False, time_ns)


class Truth:
    """One device's readings at 1 s steps (packet k at T0 + k s), labels given per packet;
    ``dropouts``: packet numbers (1-based) left out."""

    def __init__(self, labels: Sequence[str], *, device: str = "d1", dropouts: Sequence[int] = (),
                 anomaly_every: int = 0) -> None:
        self.device = device
        self.rows: list[tuple[Message, str | None]] = []
        self.time_of: dict[int, int] = {}
        packet = 0
        for label in labels:
            packet += 1
            while packet in dropouts:
                packet += 1
            time_ns = T0 + packet * SECOND
            self.time_of[packet] = time_ns
            self.rows.append((reading(device, time_ns), label))
        self.metadata = RecordingMetadata(source="simulate", labelled=True, extra={
            "anomaly_every": anomaly_every, "episode_packets": {"stuck": 5, "drift": 10, "dropout": 3},
            "dropouts": {device: list(dropouts)} if dropouts else {}, "interval_s": 1.0})

    def alert(self, packet: int, *, kind: str | None = None, delay_s: float = 0.1, with_timestamp: bool = True,
              at_ns: int | None = None) -> Message:
        reading_ns = self.time_of[packet]
        body: dict[str, Any] = {"device_id": self.device}
        if with_timestamp:
            body = {"timestamp": STAMP(reading_ns), **body}
        if kind is not None:
            body["kind"] = kind
        arrival = at_ns if at_ns is not None else reading_ns + int(delay_s * SECOND)
        return Message(f"device/{self.device}/alerts", json.dumps(body).encode(), 1, False, arrival)

    def score(self, alerts: list[Message], tolerance_s: float = 2.0) -> Any:
        return score_detection(iter(self.rows), self.metadata, alerts, tolerance_s=tolerance_s)


SPIKES = ["normal", "spike", "normal", "high_pressure", "normal", "both", "normal", "spike", "normal", "normal"]
ANOMALOUS = [i + 1 for i, label in enumerate(SPIKES) if label != "normal"]  # packets 2, 4, 6, 8


def test_perfect_detector() -> None:
    truth = Truth(SPIKES)
    score = truth.score([truth.alert(p) for p in ANOMALOUS])
    o = score.overall
    assert (o.events, o.detected, o.missed, o.false_alarms) == (4, 4, 0, 0)
    assert (o.precision, o.recall, o.f1) == (1.0, 1.0, 1.0)
    assert o.latency_ms() == {"p50": 100.0, "p95": 100.0, "max": 100.0}
    assert {k: (s.events, s.detected) for k, s in score.by_kind.items()} == {
        "spike": (2, 2), "high_pressure": (1, 1), "both": (1, 1)}
    assert score.false_alarms_per_hour == 0.0


def test_no_detector() -> None:
    score = Truth(SPIKES).score([])
    o = score.overall
    assert (o.events, o.detected, o.missed, o.false_alarms) == (4, 0, 4, 0)
    assert o.precision is None and o.recall == 0.0 and o.f1 == 0.0
    assert o.latency_ms() == {"p50": None, "p95": None, "max": None}


def test_half_detected() -> None:
    truth = Truth(SPIKES)
    score = truth.score([truth.alert(2), truth.alert(6)])
    o = score.overall
    assert (o.detected, o.missed, o.false_alarms) == (2, 2, 0)
    assert o.recall == 0.5 and o.precision == 1.0 and o.f1 == pytest.approx(2 / 3)


def test_only_false_alarms() -> None:
    truth = Truth(SPIKES)
    # Normal readings flagged: false alarms even when an event started less than --tolerance before.
    score = truth.score([truth.alert(3), truth.alert(5), truth.alert(10)])
    o = score.overall
    assert (o.detected, o.false_alarms) == (0, 3)
    assert o.precision == 0.0 and o.recall == 0.0 and o.f1 == 0.0
    assert score.false_alarms_per_hour == pytest.approx(3 / (9 / 3600))


def test_time_matched_alerts_within_tolerance() -> None:
    truth = Truth(SPIKES)
    alerts = [
        truth.alert(2, with_timestamp=False, delay_s=1.5),  # within 2 s of packet 2
        truth.alert(4, with_timestamp=False, delay_s=0.0),  # at the reading's time
        truth.alert(8, with_timestamp=False, delay_s=3.5),  # too late: a false alarm
    ]
    score = truth.score(alerts)
    o = score.overall
    assert score.time_matched == 2
    assert (o.detected, o.false_alarms) == (2, 1)
    assert sorted(o.latencies_ns) == [0, int(1.5 * SECOND)]
    # A wider tolerance takes the late one too.
    assert truth.score(alerts, tolerance_s=4.0).overall.detected == 3


def test_stuck_and_drift_runs_are_one_event_each() -> None:
    labels = ["normal"] * 3 + ["stuck"] * 5 + ["normal"] * 2 + ["drift"] * 10 + ["drift"] * 10 + ["normal"] * 3
    # With an anomaly every 10 packets the two drift runs (packets 11-20 and 21-30... here
    # 11-20 and 21-30 by onset) are two events.
    truth = Truth(labels, anomaly_every=10)
    # packets: stuck 4-8, drift 11-20 and 21-30 (onsets at 10, 20, 30 split runs: 11-19, 20-29, 30)
    score = truth.score([truth.alert(6), truth.alert(15)])
    by_kind = score.by_kind
    assert by_kind["stuck"].events == 1 and by_kind["stuck"].detected == 1
    assert by_kind["stuck"].latencies_ns == [2 * SECOND + SECOND // 10]  # flagged on its 3rd reading
    assert by_kind["drift"].events == 3 and by_kind["drift"].detected == 1


def test_stuck_run_without_onsets_is_one_event() -> None:
    truth = Truth(["normal", "stuck", "stuck", "stuck", "normal", "drift", "drift", "normal"])
    score = truth.score([truth.alert(3), truth.alert(4), truth.alert(7)])
    assert score.by_kind["stuck"].events == 1 and score.by_kind["drift"].events == 1
    o = score.overall
    assert (o.events, o.detected, o.false_alarms, o.alerts) == (2, 2, 0, 3)


def test_dropouts_from_the_metadata() -> None:
    labels = ["normal"] * 10
    truth = Truth(labels, dropouts=[4, 5, 6])  # packets 1-3, then 7-13
    assert truth.time_of[7] - truth.time_of[3] == 4 * SECOND
    score = truth.score([truth.alert(7, kind="dropout")])
    dropout = score.by_kind["dropout"]
    assert (dropout.events, dropout.detected) == (1, 1)
    # The first missing packet was due at packet 4's time; the alert came 0.1 s after packet 7.
    assert dropout.latencies_ns == [3 * SECOND + SECOND // 10]
    missed = truth.score([]).by_kind["dropout"]
    assert (missed.events, missed.detected) == (1, 0)
    # Matched by time: after the gap, within the tolerance after the reading that ends it.
    late = truth.score([truth.alert(7, with_timestamp=False, delay_s=1.0)])
    assert late.by_kind["dropout"].detected == 1 and late.time_matched == 1


def test_dropout_and_anomaly_on_the_same_reading() -> None:
    truth = Truth(["normal", "normal", "normal", "spike", "normal"], dropouts=[4])
    # packet 5 (a spike) is the first reading after the gap: a dropout alert and a spike alert.
    score = truth.score([truth.alert(5, kind="dropout"), truth.alert(5, kind="spike")])
    assert score.by_kind["dropout"].detected == 1 and score.by_kind["spike"].detected == 1
    assert score.overall.false_alarms == 0


def test_dropouts_recomputed_from_the_seed_when_the_metadata_says_null(tmp_path: Path) -> None:
    extra = write_truth(tmp_path / "t.parquet", devices=3, count=200, seed=5, anomaly_every=5)
    known = {device: set(numbers) for device, numbers in extra["dropouts"].items()}
    assert any(known.values())
    duration_run = RecordingMetadata(source="simulate", seed=5, labelled=True,
                                     extra={**extra, "dropouts": None, "count": None, "duration_s": 200.0})
    assert dropout_plan(duration_run) == (known, True)
    sharded = RecordingMetadata(source="simulate", seed=5, labelled=True,
                                extra={**extra, "dropouts": None, "shard": "1/2"})
    assert dropout_plan(sharded) == ({}, False)


def test_simulate_writes_the_dropout_plan_score_reads() -> None:
    """One dropout plan (recording/truth.py, computed by sim.dps368.fleet_dropouts): what a
    --count run lists at the start, a --duration run at the end, and score recomputes from
    a null are the same numbers, per device, also for a shard."""
    from tesaiot_cli.config import ConnectionSettings, parse_broker_url
    from tesaiot_cli.recording.truth import DropoutPlan
    from tesaiot_cli.services.simulator import finish_metadata, simulation_metadata
    from tesaiot_cli.sim.dps368 import planned_dropouts
    from tesaiot_cli.sim.options import resolve_options

    settings = ConnectionSettings(url=parse_broker_url("mqtt://127.0.0.1:1883"), client_id="t")
    def shard_of_six(**length: Any) -> Any:
        return resolve_options({}, devices=6, shard="2/3", seed=7, anomaly_every=4, anomaly_kinds="spike,dropout",
                               **length)

    counted = shard_of_six(count=50)
    ids = [f"d{i}" for i in range(counted.first_index, counted.first_index + counted.devices)]
    at_start = simulation_metadata(counted, settings, ids, ids, [])
    finish_metadata(at_start, 50 * len(ids), len(ids))
    timed = shard_of_six(duration=10.0)
    at_end = simulation_metadata(timed, settings, ids, ids, [])
    assert at_end.extra["dropouts"] is None
    finish_metadata(at_end, 50 * len(ids), len(ids))
    expected = {device: planned_dropouts(seed=7, device_index=counted.first_index + offset, anomaly_every=4,
                                         kinds=["spike", "dropout"], packets=50)
                for offset, device in enumerate(ids)}
    assert any(expected.values())
    assert at_start.extra["dropouts"] == at_end.extra["dropouts"] == expected
    assert DropoutPlan.of(at_start).listed == {device: tuple(numbers) for device, numbers in expected.items()}
    nulled = RecordingMetadata(source="simulate", seed=7, labelled=True, extra={**at_end.extra, "dropouts": None})
    assert dropout_plan(nulled) == ({device: set(numbers) for device, numbers in expected.items()}, True)


def test_invalid_alert_payload_is_a_false_alarm() -> None:
    truth = Truth(SPIKES)
    junk = Message("device/d1/alerts", b"\xff not json", 0, False, T0)
    score = truth.score([junk, truth.alert(2)])
    assert score.invalid_alerts == 1 and score.overall.false_alarms == 1 and score.overall.detected == 1


def test_alert_of_another_device_does_not_match() -> None:
    truth = Truth(SPIKES)
    other = Message("device/d2/alerts", json.dumps({"timestamp": STAMP(truth.time_of[2])}).encode(), 1, False,
                    truth.time_of[2])
    assert truth.score([other]).overall.false_alarms == 1


def test_delivery_counts() -> None:
    sent = [reading("d1", T0 + k * SECOND, pressure=1000.0 + k) for k in range(10)]
    sent.append(reading("d2", T0, pressure=5.0))
    received = [m._replace(time_ns=m.time_ns + 2_000_000) for m in sent[:8]]  # 8 of d1 arrive, 2 ms late
    received.insert(3, received[5])  # one arrives early: out of order on its topic
    received.append(received[0]._replace(time_ns=T0 + 20 * SECOND))  # a duplicate
    received.append(Message("device/d1/telemetry", b"never sent", 0, False, T0))
    score = score_delivery(sent, received)
    assert (score.sent, score.received, score.lost, score.duplicated, score.unexpected) == (11, 8, 3, 2, 1)
    assert score.out_of_order == 1  # packet 5 came before 3 and 4
    assert score.as_dict()["latency_ms"]["p50"] == 2.0
    assert score.delivered == pytest.approx(8 / 11)


def test_delivery_all_and_nothing() -> None:
    sent = [reading("d1", T0 + k * SECOND) for k in range(5)]
    assert score_delivery(sent, sent).as_dict()["lost"] == 0
    nothing = score_delivery(sent, [])
    assert (nothing.received, nothing.lost) == (0, 5) and nothing.as_dict()["latency_ms"]["max"] is None


def test_thresholds_parse() -> None:
    assert parse_thresholds("f1=0.9, recall=0.95") == {"f1": 0.9, "recall": 0.95}
    for bad in ("f1", "speed=1", "f1=abc", "f1=2"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


# -- the CLI ---------------------------------------------------------------------------


def write(path: Path, rows: list[tuple[Message, str | None]], metadata: RecordingMetadata) -> Path:
    return write_recording(path, rows, metadata=metadata, crash_safe=False)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    truth = Truth(SPIKES)
    alerts = [(truth.alert(p), None) for p in ANOMALOUS[:3]] + [(truth.alert(3), None)]
    return {
        "truth": write(tmp_path / "truth.parquet", truth.rows, truth.metadata),
        "alerts": write(tmp_path / "alerts.jsonl", alerts, RecordingMetadata(source="record")),
        "received": write(tmp_path / "received.parquet", [(m, None) for m, _ in truth.rows[:9]],
                          RecordingMetadata(source="record")),
        "plain": write(tmp_path / "plain.parquet", [(m, None) for m, _ in truth.rows], RecordingMetadata()),
    }


def test_cli_json_has_the_documented_keys(files: dict[str, Path]) -> None:
    result = run_cli("score", str(files["truth"]), "--alerts", str(files["alerts"]), "--received",
                     str(files["received"]), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    detection, delivery = report["detection"], report["delivery"]
    assert {"events", "detected", "missed", "false_alarms", "precision", "recall", "f1", "latency_ms",
            "by_kind", "false_alarms_per_hour"} <= set(detection)
    assert set(detection["latency_ms"]) == {"p50", "p95", "max"}
    assert (detection["events"], detection["detected"], detection["false_alarms"]) == (4, 3, 1)
    assert detection["by_kind"]["spike"]["events"] == 2
    assert {"sent", "received", "lost", "duplicated", "out_of_order"} <= set(delivery)
    assert set(delivery["latency_ms"]) == {"p50", "p99", "max"}
    assert (delivery["sent"], delivery["received"], delivery["lost"]) == (10, 9, 1)


def test_cli_table(files: dict[str, Path]) -> None:
    result = run_cli("score", str(files["truth"]), "--alerts", str(files["alerts"]))
    assert result.returncode == 0, result.stderr
    assert "detection: 4 events, 3 detected, 1 missed, 1 false alarms" in result.stdout
    assert "precision 0.750  recall 0.750  F1 0.750" in result.stdout
    assert any(line.split()[:3] == ["spike", "2", "1"] for line in result.stdout.splitlines())


def test_cli_fail_under_exits_8(files: dict[str, Path]) -> None:
    ok = run_cli("score", str(files["truth"]), "--alerts", str(files["alerts"]), "--fail-under", "f1=0.7")
    assert ok.returncode == 0, ok.stderr
    failed = run_cli("score", str(files["truth"]), "--alerts", str(files["alerts"]), "--fail-under",
                     "f1=0.9,recall=0.5")
    assert failed.returncode == 8
    assert failed.stderr.strip().splitlines()[-1] == "tesaiot: below --fail-under: f1 0.750 < 0.9"
    delivered = run_cli("score", str(files["truth"]), "--received", str(files["received"]), "--fail-under",
                        "delivered=1")
    assert delivered.returncode == 8 and "delivered 0.900 < 1" in delivered.stderr


@pytest.mark.parametrize("args, code, text", [
    (["--alerts", "{alerts}", "--fail-under", "speed=3"], 1, "invalid --fail-under"),
    (["--alerts", "{alerts}", "--tolerance", "soon"], 1, "invalid --tolerance"),
    ([], 1, "nothing to score"),
    (["--received", "{received}", "--fail-under", "f1=0.5"], 1, "needs --alerts"),
    (["--alerts", "{missing}"], 5, "not found"),
])
def test_cli_bad_input(files: dict[str, Path], tmp_path: Path, args: list[str], code: int, text: str) -> None:
    paths = {**{k: str(v) for k, v in files.items()}, "missing": str(tmp_path / "nope.parquet")}
    result = run_cli("score", str(files["truth"]), *[a.format(**paths) for a in args])
    assert result.returncode == code, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and text in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_truth_without_labels(files: dict[str, Path]) -> None:
    result = run_cli("score", str(files["plain"]), "--alerts", str(files["alerts"]))
    assert result.returncode == 1 and "no ground-truth labels" in result.stderr
