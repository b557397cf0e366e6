"""Unit tests of the simulator core: the DPS368 model, the payload bytes, fleet naming and
the drift-free schedule (under a fake clock). No broker here."""

from __future__ import annotations

import datetime as dt
import json
import statistics

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import NORMAL_LABEL
from tesaiot_cli.sim.dps368 import (
    ALL_KINDS,
    EPISODE_PACKETS,
    NORMAL,
    UPSTREAM_KINDS,
    DPS368Device,
    DPS368Model,
    Packet,
    TimestampFormatter,
    encode_payload,
    json_string,
    parse_kinds,
    planned_dropouts,
)
from tesaiot_cli.sim.naming import device_ids, fleet_topics, topic_for
from tesaiot_cli.sim.schedule import Scheduler, StopRun, run
from tests.support.fakes import FakeClock

KEYS = ["timestamp", "device_id", "sensor_type", "data"]


def readings(n: int, **kwargs: object) -> list:
    model = DPS368Model(seed=kwargs.pop("seed", 7), **kwargs)  # type: ignore[arg-type]
    return [model.next_reading() for _ in range(n)]


# -- payload bytes -------------------------------------------------------------------


def upstream_bytes(timestamp: str, device_id: str, pressure: float, temperature: float) -> bytes:
    """What the upstream simulator sends: json.dumps of the dict, default separators."""
    return json.dumps({"timestamp": timestamp, "device_id": device_id, "sensor_type": "DPS368",
                       "data": {"pressure": pressure, "temperature": temperature}}).encode()


@settings(max_examples=300)
@given(
    pressure=st.floats(300, 1250).map(lambda x: round(x, 2)) | st.floats(300, 1250).map(lambda x: round(x, 3)),
    temperature=st.floats(-40, 90).map(lambda x: round(x, 2)),
    device_id=st.text(min_size=1, max_size=20),
)
def test_payload_is_byte_identical_to_upstream_json_dumps(pressure: float, temperature: float,
                                                          device_id: str) -> None:
    stamp = "2026-11-22T08:24:56.055689+00:00"
    payload = encode_payload(timestamp=stamp, device_json=json_string(device_id), pressure=pressure,
                             temperature=temperature)
    assert payload == upstream_bytes(stamp, device_id, pressure, temperature)
    decoded = orjson.loads(payload)
    assert list(decoded) == KEYS and list(decoded["data"]) == ["pressure", "temperature"]
    assert decoded["data"] == {"pressure": pressure, "temperature": temperature}


@pytest.mark.parametrize(("value", "text"), [(1030.3, b"1030.3"), (1000.0, b"1000.0"), (31.14, b"31.14"),
                                             (20.1, b"20.1"), (1013.25, b"1013.25"), (-0.5, b"-0.5")])
def test_float_formatting_matches_python_json(value: float, text: bytes) -> None:
    payload = encode_payload(timestamp="t", device_json='"d"', pressure=value, temperature=value)
    assert b'"pressure": ' + text + b", " in payload
    assert json.dumps(value).encode() == text
    # orjson agrees for these values too, so either encoder keeps the numbers as upstream has them.
    assert orjson.dumps(value) == text


def test_label_field_is_appended_only_when_asked() -> None:
    args = {"timestamp": "t", "device_json": '"d"', "pressure": 1.0, "temperature": 2.0}
    assert b"anomaly" not in encode_payload(**args, anomaly="spike")  # type: ignore[arg-type]
    normal = orjson.loads(encode_payload(**args, anomaly=NORMAL, label_field=True))  # type: ignore[arg-type]
    spike = orjson.loads(encode_payload(**args, anomaly="spike", label_field=True))  # type: ignore[arg-type]
    assert list(normal) == [*KEYS, "anomaly"] and normal["anomaly"] is None
    assert spike["anomaly"] == "spike"


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=4_102_444_800 * 10**9))
def test_timestamp_matches_isoformat_with_microseconds(time_ns: int) -> None:
    formatter = TimestampFormatter()
    expected = dt.datetime.fromtimestamp(time_ns // 10**9, tz=dt.UTC).replace(
        microsecond=(time_ns % 10**9) // 1000).isoformat(timespec="microseconds")
    assert formatter(time_ns) == expected
    assert formatter(time_ns) == expected  # from the cache
    assert expected.endswith("+00:00") and len(expected) == 32


def test_timestamp_keeps_zero_microseconds_and_cache_follows_seconds() -> None:
    formatter = TimestampFormatter()
    base = 1_795_336_296 * 10**9
    assert formatter(base) == "2026-11-22T08:31:36.000000+00:00"
    assert formatter(base + 999_999_999) == "2026-11-22T08:31:36.999999+00:00"
    assert formatter(base + 10**9) == "2026-11-22T08:31:37.000000+00:00"


def test_device_read_builds_the_packet() -> None:
    device = DPS368Device("infineon-sensor-01", DPS368Model(seed=1, anomaly_every=0))
    packet = device.read(1_795_336_296_055_689_123)
    assert isinstance(packet, Packet) and packet.packet == 1 and packet.label == NORMAL_LABEL == NORMAL
    assert packet.payload == upstream_bytes("2026-11-22T08:31:36.055689+00:00", "infineon-sensor-01",
                                            packet.pressure, packet.temperature)


# -- the upstream profile and anomalies ----------------------------------------------


def test_normal_values_are_in_the_upstream_ranges_with_two_decimals() -> None:
    values = readings(3000, anomaly_every=0)
    assert all(r.label == NORMAL and not r.onset for r in values)
    assert all(950 <= r.pressure <= 1050 and 20 <= r.temperature <= 35 for r in values)
    assert all(round(r.pressure, 2) == r.pressure and round(r.temperature, 2) == r.temperature for r in values)
    assert max(r.pressure for r in values) > 1045 and min(r.pressure for r in values) < 955


def test_upstream_anomalies_are_at_multiples_of_n_with_the_upstream_values() -> None:
    values = readings(7 * 300, anomaly_every=7)
    for r in values:
        assert r.onset == (r.packet % 7 == 0)
        assert (r.label != NORMAL) == r.onset
        if r.label in ("high_temperature", "both"):
            assert 85 <= r.temperature <= 90
        else:
            assert 20 <= r.temperature <= 35
        if r.label in ("high_pressure", "both"):
            assert 1200 <= r.pressure <= 1250
        else:
            assert 950 <= r.pressure <= 1050
    assert {r.label for r in values if r.onset} == set(UPSTREAM_KINDS)


def test_anomaly_every_zero_means_none_and_negative_is_an_error() -> None:
    assert all(r.label == NORMAL for r in readings(500, anomaly_every=0))
    with pytest.raises(ConfigError, match="anomaly interval -1"):
        DPS368Model(seed=1, anomaly_every=-1)


def test_same_seed_same_values_and_kinds_other_seed_or_device_differs() -> None:
    kwargs = {"anomaly_every": 3, "kinds": ALL_KINDS}
    first = readings(300, seed=42, **kwargs)
    assert first == readings(300, seed=42, **kwargs)
    assert first != readings(300, seed=43, **kwargs)
    assert first != readings(300, seed=42, device_index=1, **kwargs)
    assert readings(50, seed=42, profile="realistic") == readings(50, seed=42, profile="realistic")


def test_normal_values_do_not_depend_on_the_anomaly_settings() -> None:
    clean = readings(400, anomaly_every=0)
    dirty = readings(400, anomaly_every=5, kinds=ALL_KINDS)
    same = [c == d._replace(label=NORMAL, onset=False) for c, d in zip(clean, dirty, strict=True) if d.label == NORMAL]
    assert same and all(same)


def run_kind(kind: str, profile: str = "upstream", every: int = 20, n: int = 400) -> tuple[list, list]:
    clean = readings(n, anomaly_every=0, profile=profile, seed=3)
    dirty = readings(n, anomaly_every=every, kinds=[kind], profile=profile, seed=3)
    return clean, dirty


@pytest.mark.parametrize("profile", ["upstream", "realistic"])
def test_spike_moves_one_channel_for_one_packet(profile: str) -> None:
    clean, dirty = run_kind("spike", profile)
    for c, d in zip(clean, dirty, strict=True):
        assert (d.label == "spike") == (d.packet % 20 == 0)
        if d.label == NORMAL:
            assert (c.pressure, c.temperature) == (d.pressure, d.temperature)
            continue
        dp, dtemp = abs(d.pressure - c.pressure), abs(d.temperature - c.temperature)
        assert (dp > 1.9) != (dtemp > 1.9), (c, d)  # exactly one channel jumped
        if profile == "upstream":
            assert not (950 <= d.pressure <= 1050 and 20 <= d.temperature <= 35)  # it leaves the normal range


def test_stuck_repeats_the_previous_values_for_its_length() -> None:
    clean, dirty = run_kind("stuck")
    length = EPISODE_PACKETS["stuck"]
    for d in dirty:
        in_episode = d.packet % 20 < length
        assert (d.label == "stuck") == (d.packet >= 20 and in_episode)
        if d.label == "stuck":
            before = dirty[d.packet - (d.packet % 20) - 2]  # the packet before the onset
            assert (d.pressure, d.temperature) == (before.pressure, before.temperature)


@pytest.mark.parametrize("profile", ["upstream", "realistic"])
def test_drift_is_a_linear_ramp_on_one_channel(profile: str) -> None:
    clean, dirty = run_kind("drift", profile)
    length = EPISODE_PACKETS["drift"]
    episode: list[tuple[float, float]] = []
    for c, d in zip(clean, dirty, strict=True):
        if d.label != "drift":
            assert (c.pressure, c.temperature) == (d.pressure, d.temperature)
            episode = []
            continue
        episode.append((d.pressure - c.pressure, d.temperature - c.temperature))
        if len(episode) == length:
            channel = 0 if abs(episode[-1][0]) > abs(episode[-1][1]) else 1
            final = episode[-1][channel]
            for step, shift in enumerate(episode, start=1):
                assert shift[channel] == pytest.approx(final * step / length, abs=0.021)  # both rounded
                assert shift[1 - channel] == 0
    assert sum(d.label == "drift" for d in dirty) == 19 * length + 1  # the onset at packet 400 is the last one


def test_dropout_packets_have_no_payload_and_match_the_plan() -> None:
    device = DPS368Device("d", DPS368Model(seed=5, anomaly_every=10, kinds=["dropout"]))
    packets = [device.read(10**18 + i) for i in range(60)]
    dropped = [p.packet for p in packets if p.payload is None]
    assert dropped == [10, 11, 12, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51, 52, 60]
    assert all(p.label == "dropout" for p in packets if p.payload is None)
    assert planned_dropouts(seed=5, device_index=0, anomaly_every=10, kinds=["dropout"], packets=60) == dropped


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**40), every=st.integers(1, 12), device=st.integers(0, 5),
       kinds=st.lists(st.sampled_from(ALL_KINDS), min_size=1, max_size=4, unique=True))
def test_planned_dropouts_match_the_model(seed: int, every: int, device: int, kinds: list[str]) -> None:
    model = DPS368Model(seed=seed, device_index=device, anomaly_every=every, kinds=kinds)
    actual = [r.packet for r in (model.next_reading() for _ in range(120)) if r.label == "dropout"]
    assert planned_dropouts(seed=seed, device_index=device, anomaly_every=every, kinds=kinds, packets=120) == actual


def test_a_new_onset_cuts_an_episode_short() -> None:
    labels = [r.label for r in readings(12, anomaly_every=2, kinds=["stuck"])]
    assert labels == [NORMAL] + ["stuck"] * 11
    labels = [r.label for r in readings(12, anomaly_every=4, kinds=["drift"])]
    assert labels == [NORMAL] * 3 + ["drift"] * 9


def test_realistic_profile_varies_slowly_with_datasheet_noise() -> None:
    values = readings(2000, anomaly_every=0, profile="realistic", step_s=1.0)
    assert all(950 < r.pressure < 1060 and 15 < r.temperature < 35 for r in values)
    assert all(round(r.pressure, 3) == r.pressure and round(r.temperature, 2) == r.temperature for r in values)
    steps = [abs(b.pressure - a.pressure) for a, b in zip(values, values[1:], strict=False)]
    assert max(steps) < 0.3  # slowly varying: no jumps from one second to the next
    # With a tiny step only the sensor noise is left: the difference of two readings has
    # a standard deviation of sqrt(2) * 0.002 hPa (rounded to 0.001 hPa).
    fast = readings(3000, anomaly_every=0, profile="realistic", step_s=1e-6)
    diffs = [b.pressure - a.pressure for a, b in zip(fast, fast[1:], strict=False)]
    assert 0.0022 < statistics.pstdev(diffs) < 0.0036


def test_parse_kinds() -> None:
    assert parse_kinds("upstream") == UPSTREAM_KINDS
    assert parse_kinds("all") == ALL_KINDS
    assert parse_kinds("Spike, stuck,spike") == ("spike", "stuck")
    with pytest.raises(ConfigError, match="unknown anomaly kind 'bogus'"):
        parse_kinds("spike,bogus")
    with pytest.raises(ConfigError, match="no anomaly kind"):
        parse_kinds(" , ")


def test_bad_profile_is_an_error() -> None:
    with pytest.raises(ConfigError, match="unknown profile 'noisy'"):
        DPS368Model(seed=1, profile="noisy")


# -- fleet naming ----------------------------------------------------------------------


@pytest.mark.parametrize(("base", "n", "expected"), [
    ("infineon-sensor-01", 1, ["infineon-sensor-01"]),
    ("infineon-sensor-01", 3, ["infineon-sensor-01", "infineon-sensor-02", "infineon-sensor-03"]),
    ("dev-7", 3, ["dev-7", "dev-8", "dev-9"]),
    ("dev-9", 2, ["dev-09", "dev-10"]),
    ("lab", 2, ["lab-01", "lab-02"]),
    ("lab", 100, [f"lab-{i:03d}" for i in range(1, 101)]),
])
def test_device_ids(base: str, n: int, expected: list[str]) -> None:
    assert device_ids(base, n) == expected


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", " "])
def test_bad_device_ids(bad: str) -> None:
    with pytest.raises(ConfigError, match="invalid device id"):
        device_ids(bad, 1)


def test_topics() -> None:
    assert topic_for("device/{device_id}/telemetry", "x") == "device/x/telemetry"
    assert fleet_topics("t/{device_id}", ["a", "b"]) == ["t/a", "t/b"]
    assert fleet_topics("fixed/topic", ["a"]) == ["fixed/topic"]
    with pytest.raises(ConfigError, match="must contain"):
        fleet_topics("fixed/topic", ["a", "b"])
    with pytest.raises(ConfigError, match="wildcards"):
        topic_for("device/+/telemetry", "x")


# -- the schedule, under a fake clock --------------------------------------------------


def fleet_of(n: int, **kwargs: object) -> list[DPS368Device]:
    return [DPS368Device(f"d{i}", DPS368Model(seed=1, device_index=i, **kwargs), device_index=i)  # type: ignore[arg-type]
            for i in range(n)]


def test_1000_packets_at_10ms_end_within_one_interval_of_the_ideal_end() -> None:
    fake = FakeClock(oversleep_s=0.0004)  # a real sleep wakes up a little late
    sent_at: list[float] = []

    def publish(message: Message) -> bool:
        sent_at.append(fake.now)
        fake.now += 0.050 if len(sent_at) == 500 else 0.003  # 3 ms per publish, one 50 ms stall
        return True

    scheduler = Scheduler(interval_s=0.01, clock=fake.clock, sleep=fake.sleep)
    stats = run(fleet_of(1, anomaly_every=0), ["t"], scheduler, publish, count=1000, wall_ns=lambda: 10**18)
    ideal_end = stats.start_s + 999 * 0.01
    assert len(sent_at) == stats.sent == 1000
    assert ideal_end <= sent_at[-1] <= ideal_end + 0.01
    # Each packet goes at its due time or later, never early; after the stall it catches up.
    assert all(t >= stats.start_s + k * 0.01 for k, t in enumerate(sent_at))
    assert sent_at[510] - (stats.start_s + 510 * 0.01) < 0.01
    # sleep(interval) after each packet would have ended about 1000 * 3 ms + 50 ms late.
    assert sent_at[-1] < stats.start_s + 1000 * 0.013


def test_fleet_packets_are_spread_over_the_interval() -> None:
    fake = FakeClock()
    sent: list[tuple[str, float]] = []

    def publish(message: Message) -> bool:
        sent.append((message.topic, fake.now - 1000.0))
        return True

    scheduler = Scheduler(interval_s=1.0, devices=4, clock=fake.clock, sleep=fake.sleep)
    stats = run(fleet_of(4, anomaly_every=0), ["a", "b", "c", "d"], scheduler, publish, count=3,
                wall_ns=lambda: 10**18)
    assert stats.packets == 12
    assert [topic for topic, _ in sent] == ["a", "b", "c", "d"] * 3
    assert [t for _, t in sent] == pytest.approx([k + d / 4 for k in range(3) for d in range(4)])


def test_duration_stop_and_flat_out() -> None:
    fake = FakeClock()
    scheduler = Scheduler(interval_s=1.0, devices=2, clock=fake.clock, sleep=fake.sleep)
    stats = run(fleet_of(2), ["a", "b"], scheduler, lambda m: True, duration_s=10.0, wall_ns=lambda: 10**18)
    assert stats.packets == 20 and stats.stopped_by == "duration"

    published: list[Message] = []

    def publish(message: Message) -> bool:
        published.append(message)
        return True

    stats = run(fleet_of(1), ["a"], Scheduler(interval_s=1.0, clock=fake.clock, sleep=fake.sleep),
                publish, stop=lambda: len(published) >= 5, wall_ns=lambda: 10**18)
    assert stats.packets == 5 and stats.stopped_by == "signal"

    fake = FakeClock()
    stats = run(fleet_of(3), ["a", "b", "c"], Scheduler(interval_s=0.0, devices=3, clock=fake.clock,
                                                        sleep=fake.sleep), lambda m: True, count=100,
                wall_ns=lambda: 10**18)
    assert stats.packets == 300 and fake.sleeps == []


def test_run_counts_not_sent_dropouts_and_stop_requests() -> None:
    fake = FakeClock()
    seen: list[tuple[int, str, bool, bool]] = []
    answers = iter([True, False] * 50)

    def publish(message: Message) -> bool:
        assert message.qos == 0 and message.retain is False
        return next(answers)

    device = DPS368Device("d", DPS368Model(seed=2, anomaly_every=5, kinds=["dropout"]))
    stats = run([device], ["t"], Scheduler(interval_s=0.5, clock=fake.clock, sleep=fake.sleep), publish, qos=0,
                count=20, on_packet=lambda p, m, s: seen.append((p.packet, p.label, m is None, s)),
                wall_ns=lambda: 10**18)
    assert stats.packets == 20 and stats.labelled["dropout"] == 10 and stats.onsets["dropout"] == 4
    assert stats.sent + stats.not_sent == 10 and stats.sent == 5
    assert [p for p, label, no_message, _ in seen if no_message] == [5, 6, 7, 10, 11, 12, 15, 16, 17, 20]

    def interrupted(message: Message) -> bool:
        raise StopRun

    stats = run(fleet_of(1), ["t"], Scheduler(interval_s=0.5, clock=fake.clock, sleep=fake.sleep), interrupted,
                count=5, wall_ns=lambda: 10**18)
    assert stats.packets == 0 and stats.stopped_by == "signal"


def test_negative_interval_is_an_error() -> None:
    with pytest.raises(ConfigError, match="invalid interval -1"):
        Scheduler(interval_s=-1)
