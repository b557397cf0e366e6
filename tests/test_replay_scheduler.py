"""The replay core on a fake clock: schedule, speed, loops, window, clamping, lateness,
selection and rewriting. No broker, no files: recordings are plain lists of messages."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator

import orjson
import pytest

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.replay import (
    MAX_SLEEP_S,
    LatenessHistogram,
    Replayer,
    ReplayOptions,
    check_topic_prefix,
    parse_remap,
    parse_speed,
    restamp_payload,
    summary,
)
from tesaiot_cli.playback.selection import parse_time_bound
from tesaiot_cli.textfmt import iso_time
from tests.support.fakes import FakeClock

T0 = 1_790_000_000_000_000_000  # an arbitrary recording start, ns since the epoch
S = 1_000_000_000


def msg(seconds: float, topic: str = "device/d1/telemetry", payload: bytes = b"x", *, retain: bool = False,
        qos: int = 1) -> Message:
    return Message(topic, payload, qos, retain, T0 + round(seconds * S))


def run(messages: list[Message], clock: FakeClock | None = None, **options: object
        ) -> tuple[list[tuple[float, Message]], Replayer, FakeClock]:
    """Replay ``messages``; returns (send time relative to the first send, message) pairs."""
    fake = clock or FakeClock(start=100.0)
    sent: list[tuple[float, Message]] = []
    replayer = Replayer(ReplayOptions(**options),  # type: ignore[arg-type]
                        send=lambda m: sent.append((fake.now, m)), clock=fake.clock, sleep=fake.sleep,
                        wall_ns=lambda: T0 + 7 * S, spin_s=0.0)
    replayer.run(lambda: list(messages))
    origin = sent[0][0] if sent else 0.0
    return [(round(t - origin, 9), m) for t, m in sent], replayer, fake


def times(sent: list[tuple[float, Message]]) -> list[float]:
    return [t for t, _ in sent]


# -- speed values ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("5x", 5.0), ("5", 5.0), ("0.5x", 0.5), ("1X", 1.0), (" 2.5x ", 2.5), ("max", None), ("MAX", None),
])
def test_parse_speed_accepts_factors_and_max(text: str, expected: float | None) -> None:
    assert parse_speed(text) == expected


@pytest.mark.parametrize("text", ["0", "0x", "-1", "-2x", "nan", "NaNx", "inf", "infx", "", "x", "fast",
                                  "5xx", "x5", "1e9x", "1e-9"])
def test_parse_speed_rejects_bad_values(text: str) -> None:
    with pytest.raises(ConfigError, match="--speed"):
        parse_speed(text)


# -- the schedule ----------------------------------------------------------------------------


def test_schedule_follows_recorded_times_at_1x() -> None:
    sent, replayer, _ = run([msg(0), msg(0.5), msg(2.0), msg(2.25)])
    assert times(sent) == [0.0, 0.5, 2.0, 2.25]
    assert replayer.stats.sent == 4
    assert replayer.stats.expected_s == pytest.approx(2.25)
    assert replayer.stats.duration_s == pytest.approx(2.25)


def test_speed_2x_halves_the_due_times() -> None:
    sent, _, _ = run([msg(0), msg(1), msg(3), msg(4)], speed=2.0)
    assert times(sent) == [0.0, 0.5, 1.5, 2.0]


def test_speed_half_doubles_the_due_times() -> None:
    sent, _, _ = run([msg(0), msg(1), msg(3)], speed=0.5)
    assert times(sent) == [0.0, 2.0, 6.0]


def test_max_speed_never_waits_and_records_no_lateness() -> None:
    sent, replayer, fake = run([msg(0), msg(10), msg(20)], speed=None)
    assert times(sent) == [0.0, 0.0, 0.0]
    assert fake.sleeps == []
    assert replayer.stats.lateness.count == 0
    assert replayer.stats.expected_s is None
    assert summary(replayer.stats, speed=None)["speed"] == "max"


def test_due_times_are_absolute_so_one_late_send_does_not_shift_the_rest() -> None:
    fake = FakeClock(start=100.0)
    original_sleep = fake.sleep

    def sleep_late_once(seconds: float) -> None:
        original_sleep(seconds + (0.3 if len(fake.sleeps) == 0 else 0.0))

    fake.sleep = sleep_late_once  # type: ignore[method-assign]
    sent, replayer, _ = run([msg(0), msg(0.2), msg(0.4), msg(0.6)], clock=fake)
    # the second send is 0.3 s late; the third is sent at once (0.1 s late), the fourth on time
    assert times(sent) == [0.0, 0.5, 0.5, 0.6]
    assert replayer.stats.lateness.max_s == pytest.approx(0.3)
    assert replayer.stats.lateness.percentile(0.5) == 0.0
    assert replayer.stats.lateness.percentile(0.75) == pytest.approx(0.1, rel=0.003)


def test_lateness_is_measured_for_every_message() -> None:
    sent, replayer, _ = run([msg(i * 0.01) for i in range(101)], clock=FakeClock(start=100.0, oversleep_s=0.0004))
    late = replayer.stats.lateness
    assert late.count == 101
    assert late.percentile(0.5) == pytest.approx(0.0004, abs=1e-6)
    assert late.percentile(0.99) == pytest.approx(0.0004, abs=1e-6)
    assert late.max_s == pytest.approx(0.0004)
    assert late.mean_s == pytest.approx(0.0004 * 100 / 101)
    report = summary(replayer.stats, speed=1.0)["lateness_ms"]
    assert report == {"p50": 0.4, "p99": 0.4, "max": 0.4, "mean": pytest.approx(0.396, abs=0.001)}


def test_long_gaps_are_slept_in_slices() -> None:
    sent, _, fake = run([msg(0), msg(10)])
    assert times(sent) == [0.0, 10.0]
    assert max(fake.sleeps) <= MAX_SLEEP_S
    assert len(fake.sleeps) == math.ceil(10 / MAX_SLEEP_S)


def test_short_waits_spin_on_the_clock_instead_of_sleeping() -> None:
    calls = {"clock": 0}
    now = [0.0]

    def ticking_clock() -> float:
        calls["clock"] += 1
        now[0] += 0.00001
        return now[0]

    slept: list[float] = []
    sent: list[float] = []
    replayer = Replayer(ReplayOptions(), send=lambda m: sent.append(now[0]), clock=ticking_clock,
                        sleep=slept.append, spin_s=0.001)
    replayer.run(lambda: [msg(0), msg(0.0005)])
    assert slept == []
    assert sent[1] - sent[0] == pytest.approx(0.0005, abs=0.00003)


def test_out_of_order_times_are_clamped_and_sent_in_file_order() -> None:
    messages = [msg(0, "a"), msg(2, "b"), msg(1, "c"), msg(3, "d")]
    sent, replayer, _ = run(messages)
    assert [m.topic for _, m in sent] == ["a", "b", "c", "d"]
    assert times(sent) == [0.0, 2.0, 2.0, 3.0]
    assert replayer.stats.clamped == 1


def test_a_message_older_than_the_first_is_clamped_to_the_start() -> None:
    sent, replayer, _ = run([msg(5, "a"), msg(1, "b"), msg(6, "c")])
    assert times(sent) == [0.0, 0.0, 1.0]
    assert replayer.stats.clamped == 1


# -- loops -----------------------------------------------------------------------------------


def test_loops_continue_the_timeline_with_one_mean_gap() -> None:
    sent, replayer, _ = run([msg(0), msg(1), msg(2)], loops=3)
    # span 2 s, mean gap 1 s: each loop starts 3 s after the previous one
    assert times(sent) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert replayer.stats.loops_done == 3
    assert replayer.stats.lateness.max_s == 0.0


def test_loops_at_2x_and_with_uneven_gaps() -> None:
    sent, _, _ = run([msg(0), msg(0.5), msg(4)], loops=2, speed=2.0)
    # span 4 s, mean gap 2 s: period 6 s of recording = 3 s at 2x
    assert times(sent) == [0.0, 0.25, 2.0, 3.0, 3.25, 5.0]


def test_a_single_message_loops_once_a_second() -> None:
    sent, _, _ = run([msg(0)], loops=3)
    assert times(sent) == [0.0, 1.0, 2.0]


def test_loop_forever_runs_until_stopped_and_reopens_the_source() -> None:
    fake = FakeClock(start=100.0)
    sent: list[Message] = []
    opened = {"count": 0}

    def passes() -> Iterator[Message]:
        opened["count"] += 1
        yield from [msg(0), msg(1)]

    replayer = Replayer(ReplayOptions(loops=None), send=sent.append, clock=fake.clock, sleep=fake.sleep,
                        should_stop=lambda: len(sent) >= 7, spin_s=0.0)
    stats = replayer.run(passes)
    assert len(sent) == 7
    assert stats.stopped
    assert stats.loops_done == 3
    assert opened["count"] == 4


def test_an_empty_selection_does_not_loop_forever() -> None:
    sent, replayer, _ = run([msg(0, "other/topic")], loops=None, topic_filters=("device/#",))
    assert sent == []
    assert replayer.stats.skipped == 1
    assert replayer.stats.loops_done == 0


# -- selection -------------------------------------------------------------------------------


def test_window_by_offsets_starts_the_schedule_at_the_first_selected_message() -> None:
    messages = [msg(s) for s in range(6)]
    sent, replayer, _ = run(messages, start=parse_time_bound("1.5", name="--start"),
                            end=parse_time_bound("4", name="--end"))
    assert [m.time_ns for _, m in sent] == [T0 + 2 * S, T0 + 3 * S, T0 + 4 * S]
    assert times(sent) == [0.0, 1.0, 2.0]
    assert replayer.stats.skipped == 2  # 0 and 1; reading stopped at 5, the first after --end
    assert replayer.stats.first_ns == T0 + 2 * S


def test_reading_stops_at_the_first_message_after_the_end() -> None:
    pulled: list[int] = []

    def source() -> Iterator[Message]:
        for second in range(1000):
            pulled.append(second)
            yield msg(second)

    fake = FakeClock(start=100.0)
    replayer = Replayer(ReplayOptions(end=parse_time_bound("2", name="--end")), send=lambda m: None,
                        clock=fake.clock, sleep=fake.sleep, spin_s=0.0)
    assert replayer.run(source).sent == 3
    assert pulled == [0, 1, 2, 3]


def test_window_by_iso_times() -> None:
    messages = [msg(s) for s in range(6)]
    start = parse_time_bound(iso_time(T0 + 3 * S), name="--start")
    end = parse_time_bound(iso_time(T0 + 4 * S).replace("+00:00", "Z"), name="--end")
    sent, _, _ = run(messages, start=start, end=end)
    assert [m.time_ns for _, m in sent] == [T0 + 3 * S, T0 + 4 * S]


def test_window_with_loops_replays_the_same_window() -> None:
    messages = [msg(s) for s in range(5)]
    sent, _, _ = run(messages, start=parse_time_bound("1", name="--start"),
                     end=parse_time_bound("2", name="--end"), loops=2)
    assert [m.time_ns - T0 for _, m in sent] == [S, 2 * S, S, 2 * S]
    assert times(sent) == [0.0, 1.0, 2.0, 3.0]


def test_topic_filters_with_wildcards() -> None:
    messages = [msg(0, "device/a/telemetry"), msg(1, "device/b/status"), msg(2, "device/c/telemetry/DPS368")]
    sent, replayer, _ = run(messages, topic_filters=("device/+/telemetry", "device/+/telemetry/#"))
    assert [m.topic for _, m in sent] == ["device/a/telemetry", "device/c/telemetry/DPS368"]
    assert replayer.stats.skipped == 1


def test_restore_retained_sends_the_last_retained_per_topic_from_before_the_window_first() -> None:
    messages = [
        msg(0, "device/a/status", b"a-old", retain=True),
        msg(0.5, "device/b/status", b"b", retain=True),
        msg(1, "device/a/status", b"a-new", retain=True),
        msg(1.5, "device/c/status", b"not retained"),
        msg(1.7, "other/x", b"filtered out", retain=True),
        msg(3, "device/d/telemetry", b"first in window"),
        msg(4, "device/e/status", b"retained in window", retain=True),
    ]
    sent, replayer, _ = run(messages, start=parse_time_bound("2", name="--start"), restore_retained=True,
                            topic_filters=("device/#",))
    assert [m.payload for _, m in sent] == [b"b", b"a-new", b"first in window", b"retained in window"]
    assert all(m.retain for _, m in sent[:2])
    assert times(sent) == [0.0, 0.0, 0.0, 1.0]
    assert replayer.stats.restored == 2
    assert replayer.stats.sent == 2


def test_restore_retained_happens_once_even_with_loops() -> None:
    messages = [msg(0, "s", b"r", retain=True), msg(1, "t", b"w")]
    sent, replayer, _ = run(messages, start=parse_time_bound("1", name="--start"), restore_retained=True,
                            loops=2)
    assert [m.payload for _, m in sent] == [b"r", b"w", b"w"]
    assert replayer.stats.restored == 1


def test_without_restore_retained_nothing_from_before_the_window_is_sent() -> None:
    messages = [msg(0, "s", b"r", retain=True), msg(1, "t", b"w")]
    sent, _, _ = run(messages, start=parse_time_bound("1", name="--start"))
    assert [m.payload for _, m in sent] == [b"w"]


# -- rewriting -------------------------------------------------------------------------------


def test_messages_are_untouched_by_default() -> None:
    original = [msg(0, "device/a/telemetry", b'{"timestamp": "x",  "v": 1.50}', retain=True, qos=2)]
    sent, _, _ = run(original)
    assert [m for _, m in sent] == original


def test_remap_prefix_qos_and_retain_overrides() -> None:
    messages = [msg(0, "device/a/telemetry", retain=True, qos=1), msg(1, "sensors/b", qos=0)]
    sent, _, _ = run(messages, remaps=(("device/", "lab/dev/"), ("device/a", "never/")), topic_prefix="replay/",
                     qos=2, retain=False)
    assert [(m.topic, m.qos, m.retain) for _, m in sent] == [
        ("replay/lab/dev/a/telemetry", 2, False), ("replay/sensors/b", 2, False)]
    assert [m.payload for _, m in sent] == [b"x", b"x"]


def test_a_remap_that_empties_a_topic_is_an_error() -> None:
    with pytest.raises(ConfigError, match="topic"):
        run([msg(0, "device/a")], remaps=(("device/a", ""),))


def test_restamp_rewrites_only_the_timestamp_and_keeps_key_order() -> None:
    payload = (b'{"timestamp": "2026-11-22T08:24:56.055689+00:00", "device_id": "infineon-sensor-01", '
               b'"sensor_type": "DPS368", "data": {"pressure": 1030.3, "temperature": 31.14}}')
    messages = [msg(0, payload=payload), msg(1, payload=b"not json"), msg(2, payload=b'[1, 2]'),
                msg(3, payload=b'{"no": "timestamp here"}'), msg(4, payload=b'{"timestamp": 1, "a": [1e400]}')]
    sent, replayer, _ = run(messages, restamp=True)
    stamped = orjson.loads(sent[0][1].payload)
    assert list(stamped) == ["timestamp", "device_id", "sensor_type", "data"]
    assert stamped["timestamp"] == iso_time(T0 + 7 * S)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00", stamped["timestamp"])
    assert {k: v for k, v in stamped.items() if k != "timestamp"} == {
        k: v for k, v in orjson.loads(payload).items() if k != "timestamp"}
    assert [m.payload for _, m in sent[1:]] == [m.payload for m in messages[1:]]
    assert (replayer.stats.restamped, replayer.stats.not_restamped) == (1, 4)


def test_restamp_payload_unit() -> None:
    assert restamp_payload(b'{"a": 1, "timestamp": "old", "z": null}', "NEW") == b'{"a":1,"timestamp":"NEW","z":null}'
    assert restamp_payload(b'"timestamp"', "NEW") is None
    assert restamp_payload(b'{"timestamp": ', "NEW") is None


# -- stopping and progress -------------------------------------------------------------------


def test_stop_request_during_a_long_wait_ends_the_replay_and_closes_the_source() -> None:
    fake = FakeClock(start=100.0)
    sent: list[Message] = []
    closed = {"done": False}

    def source() -> Iterator[Message]:
        try:
            yield from [msg(0), msg(100), msg(200)]
        finally:
            closed["done"] = True

    replayer = Replayer(ReplayOptions(), send=sent.append, clock=fake.clock, sleep=fake.sleep,
                        should_stop=lambda: fake.now > 105.0, spin_s=0.0)
    stats = replayer.run(source)
    assert len(sent) == 1
    assert stats.stopped
    assert closed["done"]
    assert fake.now < 106.0


def test_progress_is_reported_during_waits_and_flush_hook_runs_before_sleeping() -> None:
    fake = FakeClock(start=100.0)
    events: list[str] = []
    replayer = Replayer(ReplayOptions(), send=lambda m: events.append("send"), clock=fake.clock,
                        sleep=fake.sleep, before_wait=lambda: events.append("flush"),
                        on_progress=lambda stats: events.append(f"progress {stats.sent}"), spin_s=0.0)
    replayer.run(lambda: [msg(0), msg(2)])
    assert events[:2] == ["send", "flush"]
    assert "progress 1" in events
    assert events[-2:] == ["send", "flush"]


# -- option parsing and validation -----------------------------------------------------------


def test_time_bounds() -> None:
    assert parse_time_bound("30", name="--start").offset_ns == 30 * S
    assert parse_time_bound("1.5", name="--start").offset_ns == 1_500_000_000
    assert parse_time_bound("2026-11-22T08:24:56.055689+00:00", name="--end").at_ns == 1795335896055689000
    naive = parse_time_bound("2026-11-22T08:24:56.055689", name="--end")
    assert naive.at_ns == 1795335896055689000
    assert parse_time_bound("2026-11-22T09:24:56.055689+01:00", name="--end").at_ns == 1795335896055689000
    for bad in ("-1", "nan", "inf", "yesterday", ""):
        with pytest.raises(ConfigError, match="--start"):
            parse_time_bound(bad, name="--start")


def test_remaps_and_prefixes_are_validated() -> None:
    assert parse_remap("device/=lab/device/") == ("device/", "lab/device/")
    assert parse_remap("a=b=c") == ("a", "b=c")
    assert parse_remap("device/=") == ("device/", "")
    for bad in ("nothing", "=new", "dev/+/x=y", "a=#"):
        with pytest.raises(ConfigError, match="--remap"):
            parse_remap(bad)
    assert check_topic_prefix("replay/") == "replay/"
    for bad in ("", "a/#", "+"):
        with pytest.raises(ConfigError, match="--topic-prefix"):
            check_topic_prefix(bad)


@pytest.mark.parametrize(("options", "match"), [
    ({"topic_filters": ("device/#/x",)}, "topic filter"),
    ({"loops": 0}, "--loop"),
    ({"qos": 3}, "--qos"),
    ({"restore_retained": True, "retain": False}, "contradict"),
    ({"start": parse_time_bound("5", name="--start"), "end": parse_time_bound("2", name="--end")}, "before"),
])
def test_options_are_validated(options: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ReplayOptions(**options)  # type: ignore[arg-type]


def test_end_before_start_with_mixed_kinds_is_found_at_the_first_message() -> None:
    with pytest.raises(ConfigError, match="before"):
        run([msg(0)], start=parse_time_bound("10", name="--start"),
            end=parse_time_bound(iso_time(T0 + 5 * S), name="--end"))


# -- lateness histogram ----------------------------------------------------------------------


def test_histogram_percentiles_are_close_and_max_is_exact() -> None:
    hist = LatenessHistogram()
    values = [i * 1e-5 for i in range(1, 100_001)]  # 10 us .. 1 s, uniform
    for value in values:
        hist.record(value)
    assert hist.count == len(values)
    assert hist.max_s == values[-1]
    assert hist.percentile(0.5) == pytest.approx(0.5, rel=0.003)
    assert hist.percentile(0.99) == pytest.approx(0.99, rel=0.003)
    assert hist.percentile(0.001) == pytest.approx(1e-3, rel=0.003)
    assert len(hist._buckets) < 6000  # bounded, not one entry per value


def test_histogram_empty_and_negative() -> None:
    hist = LatenessHistogram()
    assert hist.percentile(0.5) is None and hist.mean_s is None
    hist.record(-0.001)
    assert hist.percentile(0.5) == 0.0 and hist.max_s == 0.0
