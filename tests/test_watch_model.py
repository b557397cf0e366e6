"""The state behind ``tesaiot watch``, on a fake clock: rows, rates, values, labels, alerts,
staleness, bounds, sort and filter; the keys; the replay clock and the inbox."""

from __future__ import annotations

import threading

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.services.watch import AlertTopics, Inbox, ReplayClock
from tesaiot_cli.watch.model import (
    MAX_FIELDS,
    RECENT_FOCUSED,
    RECENT_MESSAGES,
    SPARK_WINDOW,
    FleetModel,
    Ring,
    read_payload,
)
from tesaiot_cli.watch.state import ViewState, decode_keys, next_field
from tests.support.fakes import FakeClock
from tests.support.watch import telemetry


def test_dps368_pressure_and_temperature_come_first_by_name() -> None:
    payload = read_payload(b'{"seq": 7, "battery": 3.3, "data": {"humidity": 40, "temperature": 21.5, '
                           b'"pressure": 1001.0}, "anomaly": null}')
    assert payload.parsed and payload.label == "normal"
    assert payload.values == [("pressure", 1001.0), ("temperature", 21.5), ("battery", 3.3), ("humidity", 40.0)]


def test_generic_payloads_give_their_first_numeric_fields() -> None:
    payload = read_payload(b'{"ts": 1, "a": 1, "b": true, "c": {"x": 2.5, "y": "text"}, "d": 4, "e": 5, "f": 6}')
    assert payload.values == [("a", 1.0), ("c.x", 2.5), ("d", 4.0), ("e", 5.0)]  # ts skipped, MAX_FIELDS kept
    assert len(payload.values) == MAX_FIELDS and payload.device_id is None and payload.label is None
    assert read_payload(b"23.5").values == [("value", 23.5)]
    assert read_payload(b'"just text"') == (True, None, [], None)
    assert read_payload(b"not json").parsed is False
    assert read_payload(b"\xff\x00").parsed is False
    assert read_payload(b'{"anomaly": "spike"}').label == "spike"


def test_one_row_per_device_and_per_topic_when_no_device_is_named() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    model.ingest(telemetry("dev-1"))
    model.ingest(Message("device/dev-1/telemetry/extra", b'{"v": 1}'))  # the topic names the device
    model.ingest(Message("factory/line-3/temp", b"21.5"))  # neither: a row of its own topic
    model.ingest(Message("factory/line-3/temp", b"garbage"))
    assert set(model.rows) == {"dev-1", "factory/line-3/temp"}
    assert model.rows["dev-1"].messages == 2 and model.rows["dev-1"].topics == [
        "device/dev-1/telemetry", "device/dev-1/telemetry/extra"]
    topic_row = model.rows["factory/line-3/temp"]
    assert not topic_row.by_device and topic_row.messages == 2 and topic_row.not_parsed == 1
    assert model.totals.messages == 4 and model.totals.not_parsed == 1


def test_the_rate_is_over_a_sliding_window_on_the_injected_clock() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    for _ in range(300):  # 5 Hz for 60 s
        model.ingest(telemetry("fast"))
        clock.now += 0.2
    row = model.rows["fast"]
    assert row.rate(clock()) == pytest.approx(5.0, rel=0.12)
    clock.now += 30  # silent since: the window has nothing left
    assert row.rate(clock()) == 0.0
    model.ingest(telemetry("fast"))
    assert row.rate(clock()) == pytest.approx(0.1, abs=0.05)  # one message in the last 10 s
    assert model.rows["fast"].messages == 301


def test_latest_values_and_a_bounded_sparkline_per_field() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    for i in range(SPARK_WINDOW * 3):
        model.ingest(telemetry("d", pressure=1000.0 + i))
        clock.now += 1
    row = model.rows["d"]
    assert row.values == {"pressure": 1000.0 + SPARK_WINDOW * 3 - 1, "temperature": 24.5}
    window = row.spark("pressure", 1000)
    assert len(window) == SPARK_WINDOW and window[-1] == row.values["pressure"] and window == sorted(window)
    assert row.spark("pressure", 3) == window[-3:]
    assert row.spark("nothing", 5) == []
    assert model.fields == ["pressure", "temperature"]


def test_ring_keeps_the_last_values_in_order() -> None:
    ring = Ring()
    assert ring.last(5) == []
    for value in range(SPARK_WINDOW + 5):
        ring.add(float(value))
    assert ring.last(3) == [float(SPARK_WINDOW + 2), float(SPARK_WINDOW + 3), float(SPARK_WINDOW + 4)]
    assert ring.count == SPARK_WINDOW


def test_labels_from_the_payload_or_the_source_and_alerts_per_device() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    model.ingest(telemetry("d", anomaly=None))
    model.ingest(telemetry("d", anomaly="spike"))
    model.ingest(telemetry("d", anomaly=None))
    model.ingest(telemetry("e"), label="drift")  # a recording's label column
    model.ingest_alert(Message("device/d/alerts", b'{"timestamp": "t", "device_id": "d", "kind": "spike", '
                                                  b'"score": 0.931}'))
    model.ingest_alert(Message("device/z/alerts", b"not json"))  # still an alert, of the topic's device
    d = model.rows["d"]
    assert (d.anomalies, d.last_anomaly, d.last_label) == (1, "spike", "normal")
    assert (d.alerts, d.last_alert, d.last_alert_score) == (1, "spike", 0.931)
    assert d.messages == 3  # alerts are not telemetry messages
    assert model.rows["e"].last_anomaly == "drift"
    assert model.rows["z"].alerts == 1 and model.rows["z"].last_alert == "alert"
    assert (model.totals.anomalies, model.totals.alerts, model.totals.messages, model.totals.not_parsed) == (2, 2, 6, 1)
    assert [(recent.label, recent.alert) for recent in d.recent] == [
        ("normal", False), ("spike", False), ("normal", False), (None, True)]


def test_stale_after_three_usual_intervals_or_the_given_seconds() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    for _ in range(5):
        model.ingest(telemetry("slow"))
        clock.now += 4.0  # every 4 s: stale after 12 s
    row = model.rows["slow"]
    clock.now += 7.0  # 11 s since the last
    assert not row.stale(clock())
    clock.now += 2.0
    assert row.stale(clock()) and model.stale_rows() == 1
    assert not row.stale(clock(), stale_after=60)
    fixed = FleetModel(clock, stale_after=1.0)
    fixed.ingest(telemetry("x"))
    clock.now += 1.5
    assert fixed.stale_rows() == 1


def test_rows_past_the_limit_are_counted_not_kept() -> None:
    model = FleetModel(FakeClock(), max_rows=3)
    for i in range(5):
        model.ingest(telemetry(f"d{i}"))
    model.ingest_alert(Message("device/d9/alerts", b'{"device_id": "d9", "kind": "spike"}'))
    assert len(model.rows) == 3 and model.totals.untracked == 3 and model.totals.messages == 6


def test_recent_messages_are_bounded_and_more_are_kept_for_the_focused_row() -> None:
    model = FleetModel(FakeClock())
    for i in range(100):
        model.ingest(telemetry("d", pressure=float(i)))
    assert len(model.rows["d"].recent) == RECENT_MESSAGES
    model.focus("d")
    for i in range(100):
        model.ingest(telemetry("d", pressure=float(i)))
    assert len(model.rows["d"].recent) == RECENT_FOCUSED
    model.focus(None)
    assert len(model.rows["d"].recent) == RECENT_MESSAGES


def test_sorts_and_filters() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    for name, count in (("dev-10", 1), ("dev-2", 10), ("other", 2)):
        for _ in range(count):
            model.ingest(telemetry(name))
        clock.now += 1
    model.ingest(telemetry("other", anomaly="spike"))
    names = lambda rows: [row.key for row in rows]  # noqa: E731
    assert names(model.select(sort="name")) == ["dev-2", "dev-10", "other"]  # digits compare as numbers
    assert names(model.select(sort="rate")) == ["dev-2", "other", "dev-10"]
    assert names(model.select(sort="last seen")) == ["dev-10", "dev-2", "other"]  # the longest silent first
    assert names(model.select(sort="anomalies"))[0] == "other"
    assert names(model.select("DEV-")) == ["dev-2", "dev-10"]
    assert names(model.select("dev-?")) == ["dev-2"]
    assert names(model.select("telemetry")) == ["dev-2", "dev-10", "other"]  # topics match too
    with pytest.raises(ValueError):
        model.select(sort="size")


def test_connection_events_set_the_state() -> None:
    model = FleetModel(FakeClock())
    model.connection = "connected"
    model.event("disconnected", "disconnected from mqtt://127.0.0.1:1: gone")
    model.event("reconnecting", "reconnecting (every 1 s)")
    assert model.connection == "reconnecting" and model.disconnects == 1
    model.event("reconnected", "reconnected to mqtt://127.0.0.1:1")
    assert model.connection == "connected" and model.events[-1][1] == "reconnected"


def test_a_device_id_cannot_move_the_cursor() -> None:
    model = FleetModel(FakeClock())
    model.ingest(Message("x", b'{"device_id": "evil\\u001b[2J", "v": 1}'))
    assert model.rows["evil\x1b[2J"].name == "evil\\x1b[2J"


# -- keys -------------------------------------------------------------------------------


def test_keys_from_terminal_bytes() -> None:
    assert decode_keys("\x1b[A\x1b[B\x1b[5~\x1b[6~\x1bOA\r\n\x7fq/") == [
        "up", "down", "pageup", "pagedown", "up", "enter", "enter", "backspace", "q", "/"]
    assert decode_keys("\x1b") == ["esc"]
    assert decode_keys("\x1b[1;5A") == ["unknown"]
    assert decode_keys("\x1b[H\x1b[F\x1b[1~\x1b[4~") == ["home", "end", "home", "end"]


def test_view_state_follows_the_keys() -> None:
    state = ViewState()
    rows = ["a", "b", "c", "d"]
    for key, check in [
        ("s", lambda: state.sort == "rate"), ("s", lambda: state.sort == "last seen"),
        ("s", lambda: state.sort == "anomalies"), ("s", lambda: state.sort == "name"),
        ("down", lambda: (state.selected, state.selected_key) == (1, "b")),
        ("end", lambda: state.selected == 3), ("pageup", lambda: state.selected == 1),
        ("home", lambda: state.selected == 0),
        ("p", lambda: state.paused), ("p", lambda: not state.paused),
        ("f", lambda: state.field == "temperature"), ("f", lambda: state.field == "pressure"),
        ("/", lambda: state.editing), ("d", lambda: state.filter == "d"), ("x", lambda: state.filter == "dx"),
        ("backspace", lambda: state.filter == "d"), ("q", lambda: state.filter == "dq" and not state.quit),
        ("enter", lambda: not state.editing and state.filter == "dq"),
        ("esc", lambda: state.filter == ""),
        ("down", lambda: state.selected == 1),
        ("enter", lambda: state.detail == "b"), ("down", lambda: state.detail_top == 1),
        ("s", lambda: state.sort == "name"),  # in the detail view, keys scroll or go back only
        ("esc", lambda: state.detail is None),
        ("q", lambda: state.quit),
    ]:
        state.handle(key, fields=["pressure", "temperature"], rows=rows, page=2)
        assert check(), (key, vars(state))


def test_the_selection_stays_on_its_row_and_on_screen() -> None:
    state = ViewState()
    state.handle("down", fields=[], rows=["a", "b", "c"], page=2)
    state.place(["c", "b", "a"], page=2)  # the order changed: still on b
    assert state.selected == 1 and state.selected_key == "b"
    state.selected, state.selected_key = 9, "x"
    state.place(["a", "b", "c", "d", "e"], page=2)
    assert (state.selected, state.top, state.selected_key) == (4, 3, "e")
    state.place([], page=2)
    assert (state.selected, state.top, state.selected_key) == (0, 0, None)
    fresh = ViewState()  # nothing chosen yet: the top row stays selected while rows arrive
    fresh.place(["m"], page=2)
    fresh.place(["a", "m"], page=2)
    assert (fresh.selected, fresh.selected_key) == (0, None)


def test_next_field_cycles() -> None:
    assert next_field(None, []) is None
    assert next_field(None, ["a"]) == "a"
    assert next_field("b", ["a", "b"]) == "a"
    assert next_field("gone", ["a", "b"]) == "a"


# -- the run loop's parts ------------------------------------------------------------


def test_the_live_inbox_drops_and_counts_when_full_and_a_replay_waits() -> None:
    inbox = Inbox(limit=2)
    message = Message("t", b"1")
    assert all(inbox.offer(message) for _ in range(5))  # acknowledged either way
    assert len(inbox) == 2 and inbox.dropped == 3
    done = threading.Event()

    def put() -> None:
        inbox.put(message, "spike", lambda: False)
        done.set()

    thread = threading.Thread(target=put)
    thread.start()
    assert not done.wait(0.2)  # waits for room
    assert [label for _, label in inbox.take(10)] == [None, None]
    thread.join(5)
    assert done.is_set() and inbox.take(10) == [(message, "spike")] and inbox.dropped == 3


def test_alert_topics_match_filters() -> None:
    is_alert = AlertTopics(["device/+/alerts", "lab/+/anomaly"])
    assert is_alert("device/d1/alerts") and is_alert("lab/x/anomaly") and not is_alert("device/d1/telemetry")


def test_the_replay_clock_runs_in_recording_time() -> None:
    mono = FakeClock(start=50.0)
    clock = ReplayClock(10.0, monotonic=mono)
    assert clock() == 0.0
    clock.reached(1_000_000_000_000)  # t = 1000 s in the recording
    assert clock() == 1000.0
    mono.now += 0.5  # half a second of wall time at 10x
    assert clock() == pytest.approx(1005.0)
    clock.reached(1_003_000_000_000)  # a message due earlier than the clock: it does not go back
    assert clock() == pytest.approx(1005.0)
    clock.end()
    mono.now += 100
    assert clock() == pytest.approx(1005.0)
    at_max = ReplayClock(None, monotonic=mono)
    at_max.reached(2_000_000_000)
    mono.now += 10
    assert at_max() == 2.0
