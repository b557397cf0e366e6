"""``simulate`` at fleet scale: one connection per device (a real mosquitto), big fleets on
one connection (the schedule under a fake clock), shards, the descriptor limit."""

from __future__ import annotations

import re
import resource
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from tesaiot_cli.config import Secret, resolve_connection
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.sim.credentials import device_settings
from tesaiot_cli.sim.dps368 import NORMAL, Packet
from tesaiot_cli.sim.schedule import BATCH_S, LATE_IDLE_EVERY, Scheduler, run
from tests.support.broker import PASSWORD, USER, Mosquitto
from tests.support.cli import clean_env, cli_command, run_cli, start_cli, wait_for_stderr
from tests.support.clients import Collector
from tests.support.fakes import FakeClock, uid


def clients_in_log(broker: Mosquitto, prefix: str) -> set[str]:
    """Client ids the broker logged as connected ("New client connected ... as ID")."""
    text = broker.log_path.read_text(errors="replace")
    return set(re.findall(rf"New client connected from \S+ as ({re.escape(prefix)}\S*) ", text))


# -- one connection per device, on a real broker ----------------------------------------------


def test_2000_devices_each_with_its_own_connection_and_client_id(broker: Mosquitto) -> None:
    base = uid()
    with Collector(broker.tcp_port, f"{base}/+/telemetry") as sub:
        result = run_cli("simulate", "-b", broker.tcp_url, "--devices", "2000", "--device-id", f"{base}-0001",
                         "-t", f"{base}/{{device_id}}/telemetry", "--connections", "per-device",
                         "--connect-rate", "2000", "--interval", "2", "--count", "2", "--anomaly-every", "0",
                         timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        messages = sub.wait_for(4000, timeout=30)
    assert "2000 of 2000 connected" in result.stderr
    assert "every device: every packet sent was acknowledged" in result.stderr
    assert re.search(r"4,000 packets published .* 4,000 acknowledged by the broker, 0 failed, 0 dropped", result.stderr)
    # The broker saw 2000 distinct clients, the device ids as client ids.
    seen = clients_in_log(broker, f"{base}-")
    assert len(seen) == 2000 and f"{base}-0001" in seen and f"{base}-2000" in seen
    per_topic: dict[str, int] = {}
    for message in messages:
        per_topic[message.topic] = per_topic.get(message.topic, 0) + 1
    assert len(per_topic) == 2000 and set(per_topic.values()) == {2}


def test_broker_restart_every_device_comes_back_and_nothing_is_lost_at_qos_1(own_broker: Mosquitto) -> None:
    base, devices, count = uid(), 150, 16
    with Collector(own_broker.tcp_port, f"{base}/+/telemetry", client_id=f"{base}-sub", clean_session=False) as sub:
        process = start_cli("simulate", "-b", own_broker.tcp_url, "--devices", str(devices), "--device-id",
                            f"{base}-001", "-t", f"{base}/{{device_id}}/telemetry", "--connections", "per-device",
                            "--connect-rate", "1000", "--interval", "0.5", "--count", str(count), "--qos", "1",
                            "--anomaly-every", "0")
        try:
            assert len(sub.wait_for(devices * 3, timeout=20)) >= devices * 3
            own_broker.stop()
            time.sleep(1.0)
            own_broker.start()
            _, err = process.communicate(timeout=90)
        finally:
            process.kill()
        assert process.returncode == 0, err[-3000:]
        expected = devices * count
        deadline = time.monotonic() + 20
        while True:
            packets = {(m.topic, orjson.loads(m.payload)["timestamp"]) for m in list(sub.messages)}
            if len(packets) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert len(packets) == expected  # every packet of every device, duplicates aside
    assert f"reconnected {devices} time(s)" in err
    assert f"{devices} of {devices} connected" in err and f"{devices} reconnects" in err
    assert "0 failed, 0 dropped" in err
    # Jittered backoff: the reconnects were spread out, not one burst.
    assert re.search(r"devices reconnected", err)


def test_a_device_that_cannot_deliver_is_counted_and_exit_7(own_broker: Mosquitto) -> None:
    """The broker goes away for good: what each device could not deliver is reported."""
    base = uid()
    process = start_cli("simulate", "-b", own_broker.tcp_url, "--devices", "20", "--device-id", f"{base}-01",
                        "-t", f"{base}/{{device_id}}/telemetry", "--connections", "per-device", "--connect-rate",
                        "1000", "--interval", "0.2", "--count", "15", "--qos", "1", "--anomaly-every", "0",
                        "--drain-timeout", "1")
    try:
        begun = wait_for_stderr(process, "tesaiot: topic ")  # connected and publishing, however slow the start
        time.sleep(1.0)
        own_broker.stop()
        _, err = process.communicate(timeout=60)
        err = begun + err
    finally:
        process.kill()
    assert process.returncode == 7, err[-3000:]
    assert "device(s) with packets not acknowledged" in err
    assert "waiting up to 1 s for" in err  # --drain-timeout: the final wait is the user's to set
    match = re.search(r"300 packets published .*?(\d+) acknowledged by the broker, 0 failed, (\d+) dropped", err)
    assert match and int(match.group(1)) + int(match.group(2)) == 300 and int(match.group(2)) > 0


def test_per_device_credentials_from_a_password_file(broker: Mosquitto, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.txt", tmp_path / "bad.txt"
    good.write_text(f"# user:password\n{USER}:{PASSWORD}\n")
    bad.write_text(f"{USER}:wrong\n")
    base = uid()
    common = ["simulate", "-b", broker.auth_url, "--devices", "5", "--device-id", f"{base}-1", "-t",
              f"{base}/{{device_id}}/t", "--connections", "per-device", "--username-template", USER, "--interval",
              "0.1", "--count", "2", "--connect-rate", "1000"]
    result = run_cli(*common, "--password-file", str(good))
    assert result.returncode == 0, result.stderr
    assert "5 of 5 connected" in result.stderr
    refused = run_cli(*common, "--password-file", str(bad))
    assert refused.returncode == 4, refused.stderr
    assert "authentication failed" in refused.stderr and "wrong" not in refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("mode", ["shared", "per-device"])
def test_shards_add_up_to_the_whole_fleet(broker: Mosquitto, tmp_path: Path, mode: str) -> None:
    from tests.support.recordings import device_readings

    base = uid()
    common = ["--devices", "7", "--count", "6", "--interval", "0.05", "--seed", "42", "--anomaly-every", "2",
              "--anomaly-kinds", "all", "--quiet", "-b", broker.tcp_url, "--device-id", f"{base}-01",
              "-t", f"{base}/{{device_id}}/telemetry", "--connections", mode]
    if mode == "per-device":
        common += ["--connect-rate", "1000"]
    whole = run_cli("simulate", *common, "--record", str(tmp_path / "fleet.jsonl"))
    assert whole.returncode == 0, whole.stderr
    parts = []
    for k in (1, 2, 3):
        path = tmp_path / f"shard{k}.jsonl"
        result = run_cli("simulate", *common, "--shard", f"{k}/3", "--record", str(path))
        assert result.returncode == 0, result.stderr
        parts.append(device_readings(path))
    fleet = device_readings(tmp_path / "fleet.jsonl")
    assert [len(part) for part in parts] == [2, 2, 3]
    assert sorted(d for part in parts for d in part) == sorted(fleet)  # disjoint, together the fleet
    union = {device: readings for part in parts for device, readings in part.items()}
    assert union == fleet and len(fleet) == 7


def _low_fd_limit(soft: int, hard: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return apply


def test_too_few_file_descriptors_is_one_line_before_connecting(broker: Mosquitto) -> None:
    import subprocess

    base = uid()
    args = cli_command("simulate", "-b", broker.tcp_url, "--devices", "1000", "--device-id", f"{base}-0001",
                       "-t", f"{base}/{{device_id}}/t", "--connections", "per-device", "--count", "1")
    result = subprocess.run(args, env=clean_env(), capture_output=True, text=True, timeout=60,
                            preexec_fn=_low_fd_limit(256, 256))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ulimit -n" in lines[0] and "1000 connections" in lines[0], result.stderr
    time.sleep(0.2)
    assert not clients_in_log(broker, f"{base}-")  # nothing connected
    # When the hard limit is enough, the soft one is raised and the run goes ahead.
    raised = subprocess.run([*args, "--interval", "0.1", "--connect-rate", "5000", "--quiet"], env=clean_env(),
                            capture_output=True, text=True, timeout=90, preexec_fn=_low_fd_limit(256, 4096))
    assert raised.returncode == 0, raised.stderr
    assert len(clients_in_log(broker, f"{base}-")) == 1000


def test_per_device_options_need_per_device_mode(broker: Mosquitto) -> None:
    result = run_cli("simulate", "-b", broker.tcp_url, "--username-template", "dev-{n}", "--count", "1")
    assert result.returncode == 1 and "goes with --connections per-device" in result.stderr
    result = run_cli("simulate", "-b", broker.tcp_url, "--connections", "each", "--count", "1")
    assert result.returncode == 1 and "use shared or per-device" in result.stderr
    result = run_cli("simulate", "-b", broker.tcp_url, "--connections", "per-device", "--interval", "0",
                     "--count", "1")
    assert result.returncode == 1 and "needs a schedule" in result.stderr


# -- per-device settings (pure) ----------------------------------------------------------------


def test_device_settings_templates_password_file_and_certificates(tmp_path: Path) -> None:
    base = resolve_connection({"broker": "mqtts://localhost:8883"}, {}, client_prefix="t")
    ids = ["dev-07", "dev-08"]
    plain = device_settings(base, ids, first_number=7)
    assert [s.client_id for s in plain] == ids and plain[0].username is None
    templated = device_settings(base, ids, first_number=7, client_id="run1", username_template="u-{n}",
                                password_template=Secret("pw-{device_id}"))
    assert [s.client_id for s in templated] == ["run1-7", "run1-8"]
    assert [s.username for s in templated] == ["u-7", "u-8"]
    assert templated[1].password is not None and templated[1].password.reveal() == "pw-dev-08"
    passwords = tmp_path / "pw.txt"
    passwords.write_text("u-7:seven\nu-8:eight:with:colons\n")
    from_file = device_settings(base, ids, first_number=7, username_template="u-{n}", password_file=passwords)
    assert [s.password.reveal() for s in from_file if s.password] == ["seven", "eight:with:colons"]
    certs = tmp_path / "certs"
    certs.mkdir()
    for device in ids:
        (certs / f"{device}.crt").write_text("x")
        (certs / f"{device}.key").write_text("x")
    with_certs = device_settings(base, ids, first_number=7, cert_dir=certs)
    assert with_certs[1].cert_file == str(certs / "dev-08.crt") and with_certs[1].key_file == str(certs / "dev-08.key")
    (certs / "dev-08.key").unlink()
    with pytest.raises(ConfigError, match="dev-08.key"):
        device_settings(base, ids, first_number=7, cert_dir=certs)
    with pytest.raises(ConfigError, match="no password for user 'u-9'"):
        device_settings(base, ["dev-09"], first_number=9, username_template="u-{n}", password_file=passwords)
    with pytest.raises(ConfigError, match="unknown placeholder"):
        device_settings(base, ids, first_number=1, username_template="u-{id}")


# -- a big fleet's schedule on a fake clock ------------------------------------------------


class FakeDevice:
    """What run() needs of a device, without the model: the packets are not the point here."""

    __slots__ = ("index", "count")

    def __init__(self, index: int) -> None:
        self.index = index
        self.count = 0

    def read(self, time_ns: int) -> Packet:
        self.count += 1
        return Packet(self.index, self.count, NORMAL, False, 1000.0, 25.0, time_ns, b"{}")


def test_a_100000_device_fleet_keeps_its_absolute_schedule_in_batches() -> None:
    devices, interval, count, cost = 100_000, 1.0, 3, 2e-6  # each publish costs 2 us of fake time
    fake = FakeClock()
    sent: list[tuple[str, float]] = []

    def publish(message: object) -> bool:
        sent.append((message.topic, fake.now))  # type: ignore[attr-defined]
        fake.now += cost
        return True

    fleet = [FakeDevice(i) for i in range(devices)]
    topics = [f"d/{i}" for i in range(devices)]
    scheduler = Scheduler(interval_s=interval, devices=devices, clock=fake.clock, sleep=fake.sleep)
    assert scheduler.batched
    stats = run(fleet, topics, scheduler, publish, count=count, wall_ns=lambda: 10**18)  # type: ignore[arg-type]
    assert stats.packets == stats.sent == devices * count and stats.stopped_by == "count"
    start, slot = stats.start_s, interval / devices
    for i in range(0, len(sent), 997):  # device d's packet k at start + k * interval + d * slot
        topic, when = sent[i]
        assert topic == topics[i % devices]
        due = start + i * slot
        assert due - 1e-9 <= when <= due + BATCH_S + 0.001  # never early, at most a batch late
    assert stats.last_due_s == pytest.approx(start + (count - 1) * interval + (devices - 1) * slot)  # no drift
    assert stats.lateness.percentile(0.99) <= BATCH_S + 0.001  # type: ignore[operator]
    # One wake-up per batch, not one per packet: about duration / BATCH_S sleeps.
    assert len(fake.sleeps) <= count * interval / BATCH_S * 1.2 + 10


def test_a_slow_fleet_still_sends_each_packet_at_its_due_time() -> None:
    fake = FakeClock()
    times: list[float] = []
    scheduler = Scheduler(interval_s=1.0, devices=10, clock=fake.clock, sleep=fake.sleep)
    assert not scheduler.batched  # 100 ms apart: no batching
    stats = run([FakeDevice(i) for i in range(10)], [f"d/{i}" for i in range(10)], scheduler,  # type: ignore[arg-type]
                lambda m: times.append(fake.now) or True, count=2, wall_ns=lambda: 10**18)
    assert times == pytest.approx([stats.start_s + i * 0.1 for i in range(20)])


def test_a_password_template_is_masked_in_the_recorded_command_line() -> None:
    from tesaiot_cli.sim.options import safe_argv

    assert safe_argv(["--password-template", "pw-{n}", "--password-template=x{n}"]) == [
        "--password-template", "****", "--password-template=****"]


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_per_device_every_qos_and_mqtt_version(broker: Mosquitto, qos: int, version: str) -> None:
    base = uid()
    with Collector(broker.tcp_port, f"{base}/+/t") as sub:
        result = run_cli("simulate", "-b", broker.tcp_url, "--devices", "20", "--device-id", f"{base}-01", "-t",
                         f"{base}/{{device_id}}/t", "--connections", "per-device", "--connect-rate", "1000",
                         "--interval", "0.2", "--count", "3", "--qos", str(qos), "--mqtt-version", version)
        assert result.returncode == 0, result.stderr
        messages = sub.wait_for(60, timeout=10)
    assert len({(m.topic, m.payload) for m in messages}) == 60
    done = "acknowledged by the broker" if qos else r"written to the socket \(QoS 0: no acknowledgement\)"
    assert re.search(rf"60 packets published \([\d.]+ msg/s\), 60 {done}, 0 failed, 0 dropped", result.stderr)
    assert len(clients_in_log(broker, f"{base}-")) == 20


@pytest.mark.parametrize("transport", ["ws", "mtls"])
def test_per_device_over_websockets_and_mutual_tls_with_a_certificate_each(broker: Mosquitto, tmp_path: Path,
                                                                          transport: str) -> None:
    import shutil

    base = uid()
    args = ["--devices", "3", "--device-id", f"{base}-1", "-t", f"{base}/{{device_id}}/t", "--connections",
            "per-device", "--connect-rate", "1000", "--interval", "0.2", "--count", "2"]
    if transport == "ws":
        args += ["-b", broker.ws_url]
    else:
        certs = tmp_path / "certs"
        certs.mkdir()
        for n in (1, 2, 3):  # the test PKI has one client certificate: each device gets a copy of its own
            shutil.copy(broker.pki.client_cert, certs / f"{base}-{n}.crt")
            shutil.copy(broker.pki.client_key, certs / f"{base}-{n}.key")
        args += ["-b", broker.mtls_url, "--ca-file", str(broker.pki.ca_cert), "--cert-dir", str(certs)]
    result = run_cli("simulate", *args)
    assert result.returncode == 0, result.stderr
    assert "3 of 3 connected" in result.stderr and "6 acknowledged by the broker" in result.stderr
    if transport == "mtls":
        # Without the certificates the broker refuses the handshake: every device fails, exit 3.
        bare = [a for a in args if a not in ("--cert-dir", str(tmp_path / "certs"))]
        refused = run_cli("simulate", *bare)
        assert refused.returncode == 3, refused.stderr
        assert "Traceback" not in refused.stderr


def test_per_device_on_the_embedded_amqtt_broker() -> None:
    import signal

    from tests.support.broker import free_ports, wait_for_port

    port, ws_port = free_ports(2)
    broker = start_cli("broker", "--port", str(port), "--ws-port", str(ws_port))
    try:
        wait_for_port(port, timeout=30)
        result = run_cli("simulate", "-b", f"mqtt://127.0.0.1:{port}", "--devices", "30", "--device-id", "amq-01",
                         "--connections", "per-device", "--connect-rate", "500", "--interval", "0.3", "--count", "3")
        assert result.returncode == 0, result.stderr
        assert "30 of 30 connected" in result.stderr and "90 acknowledged by the broker" in result.stderr
    finally:
        broker.send_signal(signal.SIGINT)
        broker.communicate(timeout=20)


def test_reconnect_delays_are_exponential_with_jitter() -> None:
    """After a broker restart every device retries: the delays are drawn from the upper half
    of 1, 2, 4 ... 30 s (spread, not one instant)."""
    import random

    from tesaiot_cli.mqtt.backoff import RECONNECT_MAX_DELAY_S
    from tesaiot_cli.mqtt.per_device import DeviceFleet

    now = [100.0]
    base = resolve_connection({"broker": "mqtt://127.0.0.1:9"}, {}, client_prefix="t")
    ids = [f"d{i}" for i in range(1000)]
    fleet = DeviceFleet(device_settings(base, ids, first_number=1), [f"t/{i}" for i in ids], ids,
                        connect_rate=100, rng=random.Random(1), clock=lambda: now[0])
    delays: dict[int, list[float]] = {}
    for attempts in (1, 2, 3, 4, 5, 6, 7):
        fleet._due.clear()  # noqa: SLF001 - the retry queue, inspected directly
        for link in fleet._links:  # noqa: SLF001
            link.attempts = attempts
            fleet._schedule_retry(link)  # noqa: SLF001
        delays[attempts] = sorted(at - now[0] for at, _ in fleet._due)  # noqa: SLF001
    for attempts, values in delays.items():
        full = min(RECONNECT_MAX_DELAY_S, 2.0 ** (attempts - 1))
        assert full / 2 <= values[0] and values[-1] <= full  # the upper half of the delay
        assert values[-1] - values[0] > full / 2 * 0.9  # spread over it, not a burst
    assert delays[7][-1] <= RECONNECT_MAX_DELAY_S


def test_connects_ramp_at_the_connect_rate(broker: Mosquitto) -> None:
    base = uid()
    result = run_cli("simulate", "-b", broker.tcp_url, "--devices", "150", "--device-id", f"{base}-001", "-t",
                     f"{base}/{{device_id}}/t", "--connections", "per-device", "--connect-rate", "50",
                     "--interval", "1", "--count", "1", "--quiet")
    assert result.returncode == 0, result.stderr
    text = broker.log_path.read_text(errors="replace")
    stamps = [int(m) for m in re.findall(rf"^(\d+): New client connected from \S+ as {base}-", text, re.M)]
    assert len(stamps) == 150
    # 150 connects at 50/s (a burst of 5, then one per 20 ms) take about 2.9 s: in the log
    # (whole seconds) they span at least 2 s, where without a ramp they would take a few ms.
    assert max(stamps) - min(stamps) >= 2


def test_a_schedule_running_late_still_calls_on_idle() -> None:
    """A slow link or broker makes every publish late, so no wait comes: the caller's status
    line is fed through on_idle anyway (it froze under back-pressure before)."""
    fake = FakeClock()
    idle_at: list[int] = []

    def publish(message: object) -> bool:
        fake.now += 0.05  # each publish takes longer than the 10 ms slot: always behind
        return True

    scheduler = Scheduler(interval_s=0.01, devices=1, clock=fake.clock, sleep=fake.sleep)
    stats = run([FakeDevice(0)], ["d/0"], scheduler, publish, count=640, wall_ns=lambda: 10**18,  # type: ignore[arg-type]
                on_idle=lambda s: idle_at.append(s.packets))
    assert stats.packets == 640 and stats.lateness.percentile(0.5) > 1.0  # type: ignore[operator]
    assert len(idle_at) >= 640 // LATE_IDLE_EVERY - 1 and idle_at == sorted(idle_at)
