"""`tesaiot simulate` as a user runs it: a real process, a real broker, a raw paho subscriber.

Plus unit tests of the option resolution, the command line kept in metadata, and the
console lines.
"""

from __future__ import annotations

import json
import re
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.sim.dps368 import Packet, planned_dropouts
from tesaiot_cli.sim.options import QUEUE_FLAT_OUT, QUEUE_MAX, QUEUE_MIN, resolve_options, safe_argv
from tesaiot_cli.sim.report import packet_line, summary_lines
from tests.support.broker import TOKEN, Mosquitto
from tests.support.cli import clean_env, run_cli, start_cli, wait_for_stderr
from tests.support.clients import Collector
from tests.support.fakes import uid

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
LINE = re.compile(r"^\[\d\d:\d\d:\d\d UTC\] \[(NORMAL|ANOMALY)\]( \((\w+)\))? Published: "
                  r"Pressure=(\d+\.\d\d) hPa, Temperature=(\d+\.\d\d) °C$")


def simulate(broker: Mosquitto, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Any:
    return run_cli("simulate", "-b", broker.tcp_url, *args, env=env, timeout=timeout)


def received(collector: Collector, count: int, timeout: float = 15) -> list[tuple[str, bytes]]:
    messages = collector.wait_for(count, timeout=timeout)
    return [(m.topic, m.payload) for m in messages]


def values(messages: list[tuple[str, bytes]]) -> list[tuple[str, Any]]:
    return [(topic, orjson.loads(payload)["data"]) for topic, payload in messages]


def seed_in(stderr: str) -> int:
    match = re.search(r"seed (\d+)", stderr)
    assert match, stderr
    return int(match.group(1))


# -- end to end on a real broker -------------------------------------------------------


def test_payload_schema_ranges_and_anomaly_positions(broker: Mosquitto) -> None:
    device = uid()
    with Collector(broker.tcp_port, f"device/{device}/telemetry") as collector:
        result = simulate(broker, "--device-id", device, "--interval", "0", "--count", "40", "--anomaly-every", "10")
        assert result.returncode == 0, result.stderr
        messages = collector.wait_for(40)
    assert len(messages) == 40 and result.stdout == ""
    now = time.time()
    for number, msg in enumerate(messages, start=1):
        assert msg.topic == f"device/{device}/telemetry" and msg.qos == 1 and not msg.retain
        payload = orjson.loads(msg.payload)
        assert json.dumps(payload).encode() == msg.payload  # upstream's json.dumps bytes, exactly
        assert list(payload) == ["timestamp", "device_id", "sensor_type", "data"]
        assert list(payload["data"]) == ["pressure", "temperature"]
        assert TIMESTAMP.match(payload["timestamp"])
        assert abs(datetime.fromisoformat(payload["timestamp"]).timestamp() - now) < 120
        assert payload["device_id"] == device and payload["sensor_type"] == "DPS368"
        pressure, temperature = payload["data"]["pressure"], payload["data"]["temperature"]
        assert round(pressure, 2) == pressure and round(temperature, 2) == temperature
        hot, high = temperature >= 85, pressure >= 1200
        if number % 10:
            assert 950 <= pressure <= 1050 and 20 <= temperature <= 35
        else:
            assert hot or high
            assert (85 <= temperature <= 90) if hot else (20 <= temperature <= 35)
            assert (1200 <= pressure <= 1250) if high else (950 <= pressure <= 1050)
    assert "40 packets published" in result.stderr and "40 acknowledged by the broker" in result.stderr
    assert "anomaly onsets: 4 (" in result.stderr and "0 dropped" in result.stderr


def test_per_packet_lines_like_upstream(broker: Mosquitto) -> None:
    result = simulate(broker, "--device-id", uid(), "--interval", "0.2", "--count", "3", "--anomaly-every", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    matches = [LINE.match(line) for line in lines]
    assert len(lines) == 3 and all(matches), lines
    assert [m.group(1) for m in matches if m] == ["NORMAL", "NORMAL", "ANOMALY"]
    assert matches[2] and matches[2].group(3) in ("high_temperature", "high_pressure", "both")
    assert "\x1b[" not in result.stdout  # not a terminal: no colour
    assert "schedule: last packet" in result.stderr


def published(stderr: str) -> int:
    match = re.search(r"(\d+) packets published", stderr)
    assert match, stderr
    return int(match.group(1))


def test_seed_reproduces_values_and_kinds(broker: Mosquitto) -> None:
    ids = [uid() for _ in range(3)]
    common = ("--interval", "0", "--count", "30", "--anomaly-every", "3", "-k", "all", "--label")
    with Collector(broker.tcp_port, "device/+/telemetry") as collector:
        first = simulate(broker, "--device-id", ids[0], *common)  # no --seed: a random one, shown on stderr
        seed = seed_in(first.stderr)
        assert f"repeat this run with --seed {seed}" in first.stderr
        second = simulate(broker, "--device-id", ids[1], *common, "--seed", str(seed))
        third = simulate(broker, "--device-id", ids[2], *common, "--seed", str(seed + 1))
        results = (first, second, third)
        assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
        payloads = [orjson.loads(p) for _, p in received(collector, sum(published(r.stderr) for r in results))]
    runs = [[(p["data"], p["anomaly"]) for p in payloads if p["device_id"] == device] for device in ids]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    # The seed is random, so the number of dropout packets is too: check it against the plan.
    left_out = planned_dropouts(seed=seed, device_index=0, anomaly_every=3, kinds=["all"], packets=30)
    assert len(runs[0]) == published(first.stderr) == 30 - len(left_out) > 0
    assert any(anomaly for _, anomaly in runs[0])


def test_fleet_ids_topics_and_order(broker: Mosquitto) -> None:
    base = uid()
    with Collector(broker.tcp_port, "device/+/telemetry") as collector:
        result = simulate(broker, "--devices", "3", "--device-id", f"{base}-01", "--interval", "0.03",
                          "--count", "4", "--anomaly-every", "0")
        assert result.returncode == 0, result.stderr
        messages = [(t, p) for t, p in received(collector, 12) if t.startswith(f"device/{base}")]
    ids = [f"{base}-01", f"{base}-02", f"{base}-03"]
    assert [topic for topic, _ in messages] == [f"device/{i}/telemetry" for i in ids] * 4
    assert all(orjson.loads(p)["device_id"] == t.split("/")[1] for t, p in messages)
    assert result.stdout == "" and "3 DPS368 devices" in result.stderr
    with Collector(broker.tcp_port, f"lab/{base}/#") as collector:
        result = simulate(broker, "--devices", "2", "--device-id", base, "--topic", f"lab/{base}/{{device_id}}",
                          "--interval", "0", "--count", "2")
        assert result.returncode == 0, result.stderr
        topics = sorted({t for t, _ in received(collector, 4)})
    assert topics == [f"lab/{base}/{base}-01", f"lab/{base}/{base}-02"]


def test_label_field_and_extra_kinds(broker: Mosquitto) -> None:
    device = uid()
    with Collector(broker.tcp_port, f"device/{device}/telemetry") as collector:
        result = simulate(broker, "--device-id", device, "--interval", "0", "--count", "24", "--anomaly-every", "6",
                          "-k", "stuck", "--label", "--profile", "realistic", "--qos", "0", "--seed", "4")
        assert result.returncode == 0, result.stderr
        messages = collector.wait_for(24)
    payloads = [orjson.loads(m.payload) for m in messages]
    assert all(list(p) == ["timestamp", "device_id", "sensor_type", "data", "anomaly"] for p in payloads)
    labels = [p["anomaly"] for p in payloads]
    stuck = {n for n in range(1, 25) if n >= 6 and n % 6 < 5}  # onsets 6, 12, 18, 24; 5 packets each
    assert {n for n, label in enumerate(labels, start=1) if label == "stuck"} == stuck
    assert all(label is None for n, label in enumerate(labels, start=1) if n not in stuck)
    assert payloads[6]["data"] == payloads[4]["data"]  # packet 7 repeats packet 5 (before the onset at 6)
    assert any(round(p["data"]["pressure"], 2) != p["data"]["pressure"] for p in payloads)  # 3 decimals
    assert all(m.qos == 0 for m in messages) and "written to the socket" in result.stderr


def test_anomaly_every_zero_means_no_anomalies(broker: Mosquitto) -> None:
    device = uid()
    with Collector(broker.tcp_port, f"device/{device}/telemetry") as collector:
        result = simulate(broker, "--device-id", device, "--interval", "0", "--count", "25", "--anomaly-every", "0")
        assert result.returncode == 0, result.stderr
        data = [d for _, d in values(received(collector, 25))]
    assert len(data) == 25 and all(950 <= d["pressure"] <= 1050 and 20 <= d["temperature"] <= 35 for d in data)
    assert "anomaly onsets: 0" in result.stderr and "no anomalies" in result.stderr


def test_upstream_environment_names_and_precedence(broker: Mosquitto, tmp_path: Path) -> None:
    device, topic = uid(), f"custom/{uid()}/t"
    env = clean_env(MQTT_BROKER_HOST="127.0.0.1", MQTT_BROKER_PORT=str(broker.tcp_port), DEVICE_ID=device,
                    MQTT_TOPIC=topic, PUBLISH_INTERVAL="0.01", ANOMALY_INTERVAL="2", MQTT_CLIENT_ID=f"{device}-c")
    with Collector(broker.tcp_port, topic) as collector:
        result = run_cli("simulate", "--count", "4", env=env)
        assert result.returncode == 0, result.stderr
        payloads = [orjson.loads(p) for _, p in received(collector, 4)]
    assert all(p["device_id"] == device for p in payloads)
    assert [p["data"]["temperature"] >= 85 or p["data"]["pressure"] >= 1200 for p in payloads] == [
        False, True, False, True]
    assert f"client-id={device}-c" in result.stderr and "every 0.01 s" in result.stderr
    # .env is under the environment, flags are over both.
    dotenv = tmp_path / "sim.env"
    dotenv.write_text(f"DEVICE_ID=from-dotenv\nANOMALY_INTERVAL=3\nMQTT_TOPIC={topic}\n")
    env.pop("MQTT_TOPIC")
    env.pop("ANOMALY_INTERVAL")
    env["PUBLISH_INTERVAL"] = "0"
    with Collector(broker.tcp_port, topic) as collector:
        result = run_cli("simulate", "--env-file", str(dotenv), "--count", "3", env=env)
        assert result.returncode == 0, result.stderr
        flagged = run_cli("simulate", "--env-file", str(dotenv), "--count", "3", "--anomaly-every", "0",
                          "--device-id", "flag-id", env=env)
        assert flagged.returncode == 0, flagged.stderr
        payloads = [orjson.loads(p) for _, p in received(collector, 6)]
    assert [p["device_id"] for p in payloads] == [device] * 3 + ["flag-id"] * 3
    assert "anomaly every 3 packets" in result.stderr and "no anomalies" in flagged.stderr


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_record_ground_truth_matches_what_a_subscriber_received(broker: Mosquitto, tmp_path: Path,
                                                                suffix: str) -> None:
    from tesaiot_cli.recording import open_reader

    device, path = uid(), tmp_path / f"truth{suffix}"
    args = ("--device-id", device, "--interval", "0", "--count", "40", "--anomaly-every", "4", "-k", "spike,dropout",
            "--seed", "9", "--label", "--record", str(path), "--username", "someone", "--password", "not-printed")
    with Collector(broker.tcp_port, f"device/{device}/telemetry") as collector:
        result = simulate(broker, *args)
        assert result.returncode == 0, result.stderr
        dropouts = planned_dropouts(seed=9, device_index=0, anomaly_every=4, kinds=["spike", "dropout"], packets=40)
        messages = received(collector, 40 - len(dropouts))
    assert dropouts and len(messages) == 40 - len(dropouts)
    with open_reader(path) as reader:
        rows = list(reader.iter_labelled())
        metadata = reader.metadata
    assert [(m.topic, m.payload) for m, _ in rows] == messages
    assert [label for _, label in rows] == [orjson.loads(m.payload)["anomaly"] or "normal" for m, _ in rows]
    assert {label for _, label in rows} == {"normal", "spike"}
    assert all(orjson.loads(m.payload)["timestamp"].startswith(
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(m.time_ns // 10**9))) for m, _ in rows)
    assert metadata.source == "simulate" and metadata.seed == 9 and metadata.labelled
    assert metadata.extra["dropouts"] == {device: dropouts} and metadata.extra["packets"] == 40
    assert metadata.extra["anomaly_every"] == 4 and metadata.extra["anomaly_kinds"] == ["spike", "dropout"]
    assert "not-printed" not in json.dumps(metadata.extra) and "****" in metadata.extra["command"]
    assert metadata.broker == broker.tcp_url
    # An existing file is not overwritten without --force.
    again = simulate(broker, *args)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert simulate(broker, *args, "--force").returncode == 0


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--anomaly-every", "-1"], {}, "invalid anomaly interval -1"),
    (["--interval", "-1"], {}, "invalid interval -1"),
    (["--count", "-5"], {}, "invalid --count -5"),
    (["--count", "0"], {}, "invalid --count 0"),
    (["--duration", "0"], {}, "invalid --duration 0"),
    (["--anomaly-kinds", "spike,bogus"], {}, "unknown anomaly kind 'bogus'"),
    (["--profile", "noisy"], {}, "unknown profile 'noisy'"),
    (["--devices", "0"], {}, "invalid --devices 0"),
    (["--devices", "2", "--topic", "fixed/topic"], {}, "must contain {device_id}"),
    (["--device-id", "a/b"], {}, "invalid device id 'a/b'"),
    (["--interval", "0"], {}, "needs --count or --duration"),
    (["--qos", "3"], {}, "invalid --qos 3"),
    (["--queue", "0"], {}, "invalid --queue 0"),
    (["--record", "truth.csv"], {}, "cannot tell the recording format"),
    ([], {"ANOMALY_INTERVAL": "abc"}, "invalid ANOMALY_INTERVAL 'abc'"),
    ([], {"PUBLISH_INTERVAL": "-2"}, "invalid interval -2"),
    ([], {"MQTT_TOPIC": "device/+/telemetry/#"}, "MQTT_TOPIC='device/+/telemetry/#' is a topic filter"),
])
def test_bad_options_exit_1_with_one_clear_line(broker: Mosquitto, args: list[str], env: dict[str, str],
                                                message: str) -> None:
    result = simulate(broker, *args, env=clean_env(**env))
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("tesaiot: error: ") and message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_unreachable_broker_exit_3() -> None:
    from tests.support.broker import free_ports

    result = run_cli("simulate", "-b", f"mqtt://127.0.0.1:{free_ports(1)[0]}", "--count", "1")
    assert result.returncode == 3 and "connection refused" in result.stderr
    assert "Traceback" not in result.stderr and "simulating" not in result.stderr


def test_a_token_may_not_publish(broker: Mosquitto) -> None:
    result = run_cli("simulate", "-b", broker.auth_url, "--count", "1", env=clean_env(MQTT_API_TOKEN=TOKEN))
    assert result.returncode == 1
    assert "may only subscribe" in result.stderr and TOKEN not in result.stderr


def test_sigterm_stops_with_a_summary(broker: Mosquitto) -> None:
    device = uid()
    with Collector(broker.tcp_port, f"device/{device}/telemetry") as collector:
        process = start_cli("simulate", "-b", broker.tcp_url, "--device-id", device, "--interval", "0.05")
        try:
            assert len(collector.wait_for(5, timeout=15)) >= 5
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=20)
        finally:
            process.kill()
        published = int(re.search(r"(\d+) packets published", err)[1])  # type: ignore[index]
        assert len(collector.wait_for(published, timeout=10)) == published
    assert process.returncode == 0, err
    assert "stopped (SIGTERM)" in err and f"{published} acknowledged by the broker" in err
    assert "Traceback" not in err


# -- broker outages (a broker of the test's own, stopped and started again) ---------------


def distinct_packets(collector: Collector, count: int, timeout: float) -> set[str]:
    """Timestamps of distinct packets (QoS 1 may deliver a packet twice after a reconnect)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = {orjson.loads(m.payload)["timestamp"] for m in list(collector.messages)}
        if len(seen) >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.05)


def outage_run(broker: Mosquitto, *args: str, count: int) -> tuple[int, str, set[str]]:
    """Publish ``count`` packets every 50 ms with a 2 s broker outage in the middle.

    The subscriber has a persistent session, so it also gets what reached the broker
    while it was reconnecting. Returns the exit code, stderr and the distinct packets seen.
    """
    device = uid()
    with Collector(broker.tcp_port, "device/+/telemetry", client_id=f"{device}-sub", clean_session=False) as sub:
        process = start_cli("simulate", "-b", broker.tcp_url, "--device-id", device, "--interval", "0.05",
                            "--count", str(count), "--anomaly-every", "0", *args)
        try:
            assert len(sub.wait_for(15, timeout=15)) >= 15
            broker.stop()
            time.sleep(2.0)
            broker.start()
            _, err = process.communicate(timeout=40)
        finally:
            process.kill()
        match = re.search(r"(\d+) dropped", err)
        expected = count - int(match.group(1)) if match else count
        return process.returncode, err, distinct_packets(sub, expected, timeout=15)


def test_outage_queued_packets_are_delivered_after_reconnect(own_broker: Mosquitto) -> None:
    code, err, packets = outage_run(own_broker, count=100)
    assert code == 0, err
    assert len(packets) == 100
    assert "disconnected from" in err and "reconnected to" in err
    assert "Unspecified error" not in err and "the connection was closed (broker stopped" in err
    assert "100 packets published" in err and "100 acknowledged by the broker" in err and "0 dropped" in err
    assert "connection lost 1 time(s), reconnected 1 time(s)" in err


def test_outage_beyond_the_queue_is_reported_as_dropped(own_broker: Mosquitto) -> None:
    code, err, packets = outage_run(own_broker, "--queue", "5", count=80)
    assert code == 7, err
    dropped = int(re.search(r"(\d+) dropped", err)[1])  # type: ignore[index]
    assert dropped > 5 and "dropped while the broker was unreachable: --queue (now 5) keeps more" in err
    assert "raise --queue" not in err and "while connected" not in err
    assert len(packets) == 80 - dropped


def test_qos0_outage_hint_says_qos0_is_not_queued(own_broker: Mosquitto) -> None:
    """QoS 0 is not queued while disconnected: the hint says so, not 'raise --queue'."""
    code, err, _ = outage_run(own_broker, "--qos", "0", count=80)
    assert code == 7, err
    assert "QoS 0 packets are not queued while disconnected (--qos 1 queues" in err, err
    assert "--queue (now" not in err


def simulate_with_broker_paused(broker: Mosquitto, options: list[str], *, pause_at: float,
                                pause_for: float) -> tuple[int, str]:
    """Run simulate (one device, no anomalies) and stop the broker (SIGSTOP: the connection
    stays up, nothing is read or acknowledged) from ``pause_at`` s after it has connected
    and begun (its "topic" line: a loaded machine's start-up time does not count) for
    ``pause_for`` s. Returns the exit code and stderr."""
    import signal as signals

    assert broker.process is not None
    process = start_cli("simulate", "-b", broker.tcp_url, "--device-id", uid(), "--anomaly-every", "0", *options)
    try:
        begun = wait_for_stderr(process, "tesaiot: topic ")
        time.sleep(pause_at)
        broker.process.send_signal(signals.SIGSTOP)
        time.sleep(pause_for)
        broker.process.send_signal(signals.SIGCONT)
        _, rest = process.communicate(timeout=40)
        err = begun + rest
    finally:
        broker.process.send_signal(signals.SIGCONT)
        process.kill()
    return process.returncode, err


def test_slow_broker_drops_are_blamed_on_the_pace_not_the_queue(own_broker: Mosquitto) -> None:
    """A broker that stops reading (SIGSTOP: the connection stays up, nothing is
    acknowledged) is a link slower than the schedule: the drops happen while connected,
    and the hint says to publish less, not to raise --queue."""
    code, err = simulate_with_broker_paused(own_broker, ["--interval", "0.02", "--count", "150", "--queue", "5"],
                                            pause_at=1.5, pause_for=1.5)
    assert code == 7, err
    assert "dropped while connected: the broker or the link took packets more slowly than the schedule" in err
    assert "publish less (--interval, --devices)" in err and "unreachable" not in err


def test_the_closing_drain_says_how_it_goes(own_broker: Mosquitto) -> None:
    """The broker stops answering before the last packets are acknowledged: the drain says
    what it waits for, then how many are still unacknowledged every few seconds, and ends
    when the broker answers again."""
    # The run ends at ~1.5 s; the drain waits, and says so at ~5.5 s.
    code, err = simulate_with_broker_paused(own_broker, ["--interval", "0.05", "--count", "30"],
                                            pause_at=1.0, pause_for=6.5)
    assert code == 0, err
    waiting = re.search(r"waiting up to 10 s for (\d+) unacknowledged packets \(Ctrl\+C to stop waiting\)", err)
    assert waiting and int(waiting[1]) > 0, err
    assert re.search(r"still waiting: \d+ unacknowledged packets, \d+ s left", err), err
    assert "30 packets published" in err and "30 acknowledged by the broker" in err


@pytest.mark.parametrize(("qos", "version"), [(0, "3.1.1"), (1, "3.1.1"), (1, "5"), (2, "5")])
def test_live_status_on_a_tty_shows_acknowledged_and_queued_moving(broker: Mosquitto, qos: int,
                                                                   version: str) -> None:
    """On a terminal the status line is redrawn every second, and its acknowledged count
    (QoS 0: written) moves while publishing (it stayed at 0 until the queue emptied)."""
    from tests.support.tty import run_on_tty

    run = run_on_tty("simulate", "-b", broker.tcp_url, "--device-id", uid(), "--devices", "20", "--interval",
                     "0.1", "--duration", "3.5", "--anomaly-every", "5", "--qos", str(qos), "--mqtt-version",
                     version, timeout=60)
    assert run.returncode == 0, run.terminal
    status = [frame for frame in run.frames() if " msg/s" in frame and "sent " in frame]
    assert len(status) >= 2, run.frames()
    done = "written" if qos == 0 else "acked"
    acked = [int(re.search(rf"{done} ([\d,]+)", frame)[1].replace(",", "")) for frame in status]  # type: ignore[index]
    assert acked[0] > 0 and acked == sorted(acked) and acked[-1] > acked[0], status
    assert all(re.search(r"queued [\d,]+/[\d,]+", frame) for frame in status), status
    assert all("anomaly onsets" in frame for frame in status)


def test_status_line_says_what_happens_to_packets_while_disconnected() -> None:
    from tesaiot_cli.sim.report import status_line

    common: dict[str, Any] = {"sent": 10, "acknowledged": 4, "queued": 6, "onsets": 1, "dropped": 0, "rate": 5.0,
                              "elapsed_s": 2.0, "devices": 1, "connected": False, "queue": 50}
    assert "DISCONNECTED (queueing)" in status_line(qos=1, **common)
    line = status_line(qos=0, **common)
    assert "DISCONNECTED (QoS 0: dropping)" in line and "queueing" not in line and "written 4" in line


def test_undelivered_hints_fit_the_cause() -> None:
    from tesaiot_cli.sim.report import undelivered_lines

    common: dict[str, Any] = {"failed": 0, "failed_reasons": {}, "queue": 100, "drain_timeout_s": 10.0,
                              "acknowledged_rate": 40.0, "scheduled_rate": 500.0, "stopped_by": None,
                              "drained": "all"}
    slow = " ".join(undelivered_lines(dropped=30, qos=1, dropped_slow=30, dropped_offline=0, **common))
    assert "more slowly than the schedule (40/s acknowledged against 500/s scheduled)" in slow
    assert "unreachable" not in slow
    qos0 = " ".join(undelivered_lines(dropped=30, qos=0, dropped_slow=30, dropped_offline=0, **common))
    assert "40/s written against" in qos0
    offline = " ".join(undelivered_lines(dropped=7, qos=0, dropped_slow=0, dropped_offline=7, **common))
    assert "QoS 0 packets are not queued" in offline and "--queue (now" not in offline
    common.update(stopped_by="SIGINT", drained="interrupted")
    ctrl_c = " ".join(undelivered_lines(dropped=12, qos=1, dropped_slow=0, dropped_offline=0, **common))
    assert "12 still unacknowledged when a second Ctrl+C cut the final wait short" in ctrl_c
    assert "--queue" not in ctrl_c


# -- units: options, command line, console ----------------------------------------------


def test_resolve_options_precedence_and_defaults() -> None:
    env = {"DEVICE_ID": "env-id", "MQTT_TOPIC": "env/topic", "PUBLISH_INTERVAL": "0.5", "ANOMALY_INTERVAL": "4"}
    opts = resolve_options(env, seed=1)
    assert (opts.device_id, opts.topic, opts.interval_s, opts.anomaly_every) == ("env-id", "env/topic", 0.5, 4)
    opts = resolve_options(env, device_id="flag", topic="t/{device_id}", interval=2.0, anomaly_every=0)
    assert (opts.device_id, opts.topic, opts.interval_s, opts.anomaly_every) == ("flag", "t/{device_id}", 2.0, 0)
    opts = resolve_options({})
    assert (opts.device_id, opts.topic, opts.interval_s, opts.anomaly_every, opts.qos) == (
        "infineon-sensor-01", "device/{device_id}/telemetry", 1.0, 10, 1)
    assert not opts.seed_given and 0 <= opts.seed < 2**31 and opts.per_packet_lines
    assert opts.queue == QUEUE_MIN and resolve_options({}, interval=0.001).queue == QUEUE_MAX
    assert resolve_options({}, interval=0.0, count=5).queue == QUEUE_FLAT_OUT
    assert not resolve_options({}, devices=2).per_packet_lines
    assert not resolve_options({}, interval=0.1).per_packet_lines
    with pytest.raises(ConfigError, match="whole number"):
        resolve_options({"ANOMALY_INTERVAL": "1.5"})


def test_safe_argv_masks_secrets() -> None:
    argv = ["-b", "mqtt://bob:pw@h:1883", "--password", "pw", "--token=tesa_mqtt_x", "--seed", "1"]
    assert safe_argv(argv) == ["-b", "mqtt://****@h:1883", "--password", "****", "--token=****", "--seed", "1"]


def test_console_line_and_summary() -> None:
    packet = Packet(0, 7, "normal", False, 1013.25, 25.1, 1_795_336_296 * 10**9, b"{}")
    line = packet_line(packet, sent=True)
    assert LINE.match(line) and line.endswith("Pressure=1013.25 hPa, Temperature=25.10 °C")
    anomaly = packet_line(packet._replace(label="high_temperature", temperature=87.5), sent=True)
    assert "[ANOMALY] (high_temperature) Published:" in anomaly
    assert "Not sent" in packet_line(packet._replace(label="dropout", payload=None), sent=False)
    lines = summary_lines(stopped_by="count", elapsed_s=2.0, sent=10, completed=10, failed=0, dropped=0,
                          qos=1, onsets={"dropout": 1, "spike": 2}, labelled={"normal": 8, "spike": 2, "dropout": 2},
                          disconnects=0, reconnects=0, interval_s=0.1, last_lateness_s=0.001, max_lateness_s=0.002)
    assert lines[0].startswith("stopped (count) after 2.0 s: 10 packets published (5.0 msg/s), 10 acknowledged")
    assert "anomaly onsets: 3 (spike 2, dropout 1); 4 anomalous packets; 2 packets left out" in lines[1]


def test_duration_run_lists_its_dropouts_at_the_end(broker: Mosquitto, tmp_path: Path) -> None:
    """A run whose length is not known in advance still writes the exact dropouts (score needs them)."""
    from tesaiot_cli.recording import open_reader

    path = tmp_path / "truth.parquet"
    result = simulate(broker, "--devices", "2", "--interval", "0.01", "--duration", "1.5", "--anomaly-every", "3",
                      "-k", "spike,dropout", "--seed", "11", "--qos", "0", "--quiet", "--record", str(path))
    assert result.returncode == 0, result.stderr
    with open_reader(path) as reader:
        metadata = reader.metadata
        rows = sum(1 for _ in reader)
    extra = metadata.extra
    made = {device: len(range(i, extra["packets"], 2)) for i, device in enumerate(extra["device_ids"])}
    expected = {device: planned_dropouts(seed=11, device_index=i, anomaly_every=3, kinds=["spike", "dropout"],
                                         packets=made[device]) for i, device in enumerate(extra["device_ids"])}
    assert extra["dropouts"] == expected and any(expected.values())
    assert extra["first_device_index"] == 0
    assert rows == extra["packets"] - sum(len(v) for v in expected.values())
