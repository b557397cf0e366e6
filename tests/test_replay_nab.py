"""Replaying years in minutes: NAB series at --speed max and at large factors (3600x, 1e6x) keep
every message, the recorded order and the spacing ratios — on the schedule (fake clock) and
through a real mosquitto (every message recorded, score --received delivered 1.000)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.playback.replay import Replayer, ReplayOptions
from tesaiot_cli.recording import open_reader
from tests.support.broker import Mosquitto
from tests.support.cli import run_cli, start_cli, wait_for_stderr

NAB = Path(__file__).parent / "data" / "nab" / "data"


def nab_truth(root: Path, rows: dict[str, tuple[str, str]]) -> Path:
    """NAB series (file -> [first, last) timestamps kept) as a truth, their windows left out."""
    labels = {}
    for name, (first, last) in rows.items():
        lines = (NAB / name).read_text().splitlines()
        kept = [line for line in lines[1:] if first <= line.split(",")[0] < last]
        (root / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / name).write_text("\n".join([lines[0], *kept]) + "\n")
        labels[name] = []
    (root / "labels.json").write_text(json.dumps(labels))
    truth = root / "nab.parquet"
    result = run_cli("convert", "--from", "nab", str(root / "data"), str(truth), "--labels", str(root / "labels.json"))
    assert result.returncode == 0, result.stderr
    return truth


# Three hours in February 2014 of two series that overlap: 5-minute CPU and hourly temperatures.
OVERLAP = {"realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv": ("2014-02-14 14:27", "2014-02-14 17:27"),
           "realKnownCause/ambient_temperature_system_failure.csv": ("2014-02-14 14:27", "2014-02-14 17:27")}
WHOLE = {"realTraffic/speed_7578.csv": ("", "9"), "realAdExchange/exchange-2_cpc_results.csv": ("", "9")}


@pytest.fixture(scope="module")
def overlap(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return nab_truth(tmp_path_factory.mktemp("overlap"), OVERLAP)


def recorded(path: Path) -> list[tuple[str, bytes]]:
    with open_reader(path) as reader:
        return [(m.topic, m.payload) for m in reader]


@pytest.mark.parametrize("speed", [3600.0, 1e6])
def test_large_factors_keep_the_order_and_the_spacing_ratios(overlap: Path, speed: float) -> None:
    with open_reader(overlap) as reader:
        messages = list(reader)
    assert len({m.topic for m in messages}) == 2 and len(messages) == 39
    now = [100.0]
    sent: list[tuple[float, Message]] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    Replayer(ReplayOptions(speed=speed), send=lambda m: sent.append((now[0], m)), clock=lambda: now[0],
             sleep=sleep, wall_ns=lambda: 0, spin_s=0.0).run(lambda: list(messages))
    assert [m for _t, m in sent] == messages  # every message, in the recorded order (devices interleaved)
    t0, s0 = messages[0].time_ns, sent[0][0]
    for (at, message) in sent:
        assert (at - s0) * speed == pytest.approx((message.time_ns - t0) / 1e9, abs=1e-6)
    gaps = [b.time_ns - a.time_ns for a, b in zip(messages, messages[1:], strict=False)]
    assert sorted(set(gaps)) == [120 * 10**9, 180 * 10**9, 300 * 10**9]  # the hourly series between 5-minute rows


def _replay_into_record(broker: Mosquitto, source: Path, out: Path, *, count: int, speed: str) -> None:
    """``record OUT --count N`` (QoS 1) while ``source`` is replayed at ``speed``; both exit 0."""
    record = start_cli("record", str(out), "-b", broker.tcp_url, "-t", "nab/#", "--qos", "1", "--count", str(count))
    try:
        wait_for_stderr(record, "recording")
        replay = run_cli("replay", str(source), "-b", broker.tcp_url, "--speed", speed, "--qos", "1")
        assert replay.returncode == 0, replay.stderr
        _out, err = record.communicate(timeout=60)
    finally:
        if record.poll() is None:
            record.kill()
            record.communicate()
    assert record.returncode == 0, err


def test_3600x_through_mosquitto_records_everything_in_order(broker: Mosquitto, overlap: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    _replay_into_record(broker, overlap, out, count=39, speed="3600x")
    assert recorded(out) == recorded(overlap)
    score = run_cli("score", str(overlap), "--received", str(out), "--json", "--fail-under", "delivered=1")
    assert score.returncode == 0, score.stdout + score.stderr
    delivery = json.loads(score.stdout)["delivery"]
    assert delivery["delivered"] == 1.0 and delivery["lost"] == delivery["out_of_order"] == 0


def test_max_speed_through_mosquitto_loses_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    truth = nab_truth(tmp_path, WHOLE)  # 2,751 readings of two series four years apart
    count = len(recorded(truth))
    out = tmp_path / "out.jsonl"
    _replay_into_record(broker, truth, out, count=count, speed="max")
    assert recorded(out) == recorded(truth)
    score = run_cli("score", str(truth), "--received", str(out), "--json")
    assert score.returncode == 0, score.stderr
    assert json.loads(score.stdout)["delivery"]["delivered"] == 1.0
