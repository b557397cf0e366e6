"""`tesaiot simulate --shard K/M`: a fleet split over processes, disjoint and complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from tesaiot_cli.cliutil import EXIT_CONFIG
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording import open_reader
from tesaiot_cli.sim.naming import parse_shard, shard_range
from tesaiot_cli.sim.options import resolve_options
from tests.support.broker import Mosquitto
from tests.support.cli import run_cli
from tests.support.recordings import device_readings


@pytest.mark.parametrize(("devices", "shards"), [(1, 1), (7, 3), (10, 10), (1000, 7), (10_000, 64)])
def test_shards_are_disjoint_and_cover_the_fleet(devices: int, shards: int) -> None:
    ranges = [shard_range(devices, k, shards) for k in range(1, shards + 1)]
    indices = [i for r in ranges for i in r]
    assert indices == list(range(devices))  # in order, each device exactly once
    sizes = [len(r) for r in ranges]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


def test_shard_options() -> None:
    opts = resolve_options({}, devices=10, shard="2/3", interval=1.0, seed=1)
    assert (opts.devices, opts.fleet_size, opts.first_index, opts.shard) == (3, 10, 3, (2, 3))
    assert opts.slot_s == pytest.approx(1 / 3)  # this process spreads its own devices over the interval
    whole = resolve_options({}, devices=10, interval=1.0, seed=1)
    assert (whole.devices, whole.fleet_size, whole.first_index, whole.shard) == (10, 10, 0, None)


@pytest.mark.parametrize(("text", "needle"), [
    ("0/4", "numbered from 1"), ("5/4", "numbered from 1"), ("1/0", "at least 1"), ("abc", "use K/M"),
    ("1/", "use K/M"), ("-1/4", "use K/M"), ("2/8", "at most 4 shards"),
])
def test_bad_shards(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_shard(text, 4)


def test_bad_shard_on_the_command_line() -> None:
    result = run_cli("simulate", "--devices", "4", "--shard", "3/2", "--count", "1", "-b", "mqtt://127.0.0.1:1")
    assert result.returncode == EXIT_CONFIG
    assert result.stderr.strip() == "tesaiot: error: invalid --shard '3/2': shards are numbered from 1: use 1/2 to 2/2"



def test_the_union_of_the_shards_is_the_fleet(broker: Mosquitto, tmp_path: Path) -> None:
    common = ["--devices", "7", "--count", "6", "--interval", "0", "--seed", "42", "--anomaly-every", "2",
              "--anomaly-kinds", "all", "--quiet", "-b", broker.tcp_url, "-t", "shardtest/{device_id}/telemetry"]
    whole = run_cli("simulate", *common, "--record", str(tmp_path / "fleet.jsonl"))
    assert whole.returncode == 0, whole.stderr
    shards = []
    for k in (1, 2, 3):
        path = tmp_path / f"shard{k}.jsonl"
        result = run_cli("simulate", *common, "--shard", f"{k}/3", "--record", str(path))
        assert result.returncode == 0, result.stderr
        shards.append(path)
    fleet, parts = device_readings(tmp_path / "fleet.jsonl"), [device_readings(path) for path in shards]
    ids = [sorted(part) for part in parts]
    assert ids == [["infineon-sensor-01", "infineon-sensor-02"], ["infineon-sensor-03", "infineon-sensor-04"],
                   ["infineon-sensor-05", "infineon-sensor-06", "infineon-sensor-07"]]  # disjoint blocks
    union = {device: readings for part in parts for device, readings in part.items()}
    assert union == fleet  # same values, anomalies and labels, device by device
    with open_reader(shards[1]) as reader:
        extra = reader.metadata.extra
    assert extra["shard"] == "2/3" and extra["fleet_devices"] == 7 and extra["devices"] == 2
