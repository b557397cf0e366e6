"""What ``tesaiot watch`` draws, as text: columns that fit, rows that fit, marks that survive
without colour, the detail view, and terminals too small or resized."""

from __future__ import annotations

import pytest
from rich.console import Console
from rich.text import Text

from tesaiot_cli.message import Message
from tesaiot_cli.watch.model import FleetModel, Row
from tesaiot_cli.watch.state import ViewState
from tesaiot_cli.watch.view import Header, age_text, draw, layout, middle_cut, sparkline, value_text
from tests.support.fakes import FakeClock
from tests.support.watch import telemetry

HEADER = Header("mqtt://127.0.0.1:1883", "topics: device/+/telemetry/#  alerts: device/+/alerts")


def text_of(text: Text, width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None, force_terminal=False, file=open("/dev/null", "w"))
    console.print(text, crop=True, soft_wrap=False)
    return console.export_text().rstrip("\n").split("\n")


def fleet(devices: int = 3, messages: int = 20) -> tuple[FleetModel, FakeClock]:
    clock = FakeClock()
    model = FleetModel(clock)
    model.connection = "connected"
    for i in range(messages):
        for d in range(devices):
            anomaly = "spike" if (i == 10 and d == 1) else None
            model.ingest(telemetry(f"infineon-sensor-{d + 1:02d}", pressure=1000.0 + i + d, temperature=20.0 + d,
                                   anomaly=anomaly))
        clock.now += 1.0
    alert = b'{"timestamp": "t", "device_id": "infineon-sensor-02", "kind": "spike", "score": 0.93}'
    model.ingest_alert(Message("device/infineon-sensor-02/alerts", alert))
    return model, clock


@pytest.mark.parametrize(("width", "height"), [(80, 24), (200, 60), (40, 12), (20, 6)])
def test_every_size_gets_exactly_its_lines_none_wider(width: int, height: int) -> None:
    model, _ = fleet()
    screen, _ = draw(model, ViewState(), HEADER, width=width, height=height)
    lines = text_of(screen.text, width)
    assert len(lines) == height
    assert all(len(line) <= width for line in lines)


def test_a_fleet_at_80_columns_shows_values_rates_anomalies_and_alerts() -> None:
    model, _ = fleet()
    lines = text_of(draw(model, ViewState(), HEADER, width=80, height=24)[0].text, 80)
    assert lines[0].startswith("tesaiot watch  mqtt://127.0.0.1:1883  connected")
    assert "3 devices  61 msgs" in lines[1] and "1 anomaly  1 alert  0 dropped  0 not parsed" in lines[1]
    titles = lines[3].split()
    assert titles[:4] == ["DEVICE", "RATE", "PRESSURE", "TEMP"] and "ANOMALY" in titles and "ALERT" in titles
    row = next(line for line in lines if "nsor-02" in line)  # the middle of a long name is cut
    assert "infineon…nsor-02  1.0/s  1020.00  21.00" in row
    assert "1× spike   1× spike 0…" in row  # the anomaly label, then the alert (its score cut)
    assert lines[4].startswith(">")  # the selection
    assert lines[-1].startswith("rows 1-3 of 3  sort: name  field: pressure  q quit")


def test_wide_terminals_get_every_column_and_a_long_sparkline() -> None:
    model, _ = fleet()
    lines = text_of(draw(model, ViewState(), HEADER, width=200, height=60)[0].text, 200)
    assert lines[3].split()[:7] == ["DEVICE", "MSGS", "RATE", "PRESSURE", "TEMP", "TREND", "pressure"]
    row = next(line for line in lines if "infineon-sensor-01" in line)
    assert "▁▁▂▂▃▃▄▄▅▅▆▆▇▇██" in sparkline([float(i) for i in range(16)]) and "▁" in row and "█" in row


def test_narrow_terminals_leave_columns_out_least_useful_first() -> None:
    names = [c.name for c in layout(200, ["pressure", "temperature"], labels=True, alerts=True, longest=18)]
    assert names == ["device", "messages", "rate", "value:pressure", "value:temperature", "trend", "last",
                     "anomaly", "alert"]
    names = [c.name for c in layout(50, ["pressure", "temperature"], labels=True, alerts=True, longest=18)]
    assert names == ["device", "rate", "value:pressure", "last", "anomaly"]
    assert [c.name for c in layout(14, ["pressure"], labels=True, alerts=True, longest=18)] == ["device"]
    for width in range(20, 201, 7):
        columns = layout(width, ["pressure", "temperature", "x"], labels=True, alerts=True, longest=30)
        assert 1 + sum(c.width + 1 for c in columns) <= width


def test_only_the_rows_that_fit_are_rendered() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    for d in range(10_000):
        model.ingest(telemetry(f"d{d}"))
    rendered: list[str] = []
    original = Row.spark

    def counting(self: Row, field: str, n: int) -> list[float]:
        rendered.append(self.key)
        return original(self, field, n)

    Row.spark = counting  # type: ignore[method-assign]
    try:
        screen, table = draw(model, ViewState(), HEADER, width=120, height=30)
    finally:
        Row.spark = original  # type: ignore[method-assign]
    assert screen.page == 25 and len(table) == 26 and len(rendered) == 25
    assert len(screen.keys) == 10_000


def test_stale_rows_are_marked_without_colour() -> None:
    model, clock = fleet()
    clock.now += 30
    lines = text_of(draw(model, ViewState(), HEADER, width=120, height=20)[0].text, 120)
    assert "(3 stale)" in lines[1]
    assert all("30s!" in line or "31s!" in line for line in lines[4:7])


def test_a_filter_that_matches_nothing_says_so_and_the_footer_shows_the_typing() -> None:
    model, _ = fleet()
    state = ViewState()
    for key in "/zzz":
        state.handle(key, fields=model.fields, rows=[], page=10)
    lines = text_of(draw(model, state, HEADER, width=100, height=20)[0].text, 100)
    assert "(no row matches 'zzz')" in "\n".join(lines)
    assert lines[-1].startswith("filter (Enter keeps, Esc clears): zzz")


def test_pause_keeps_the_table_and_the_header_counts_on() -> None:
    model, clock = fleet()
    state = ViewState()
    state.paused = True
    screen, frozen = draw(model, state, HEADER, width=100, height=20)
    for _ in range(5):
        model.ingest(telemetry("infineon-sensor-01", pressure=5.0))
    again = text_of(draw(model, state, HEADER, width=100, height=20, frozen=frozen)[0].text, 100)
    assert "66 msgs" in again[1] and "PAUSED" in again[1]
    assert text_of(screen.text, 100)[4:8] == again[4:8]  # the rows as they were


def test_the_detail_view_shows_recent_messages_in_full() -> None:
    model, _ = fleet()
    state = ViewState()
    state.detail = "infineon-sensor-02"
    lines = text_of(draw(model, state, HEADER, width=90, height=40)[0].text, 90)
    body = "\n".join(lines)
    assert "infineon-sensor-02  20 messages, 1.0/s" in body
    assert "alerts: 1 (last spike, score 0.93)" in body
    assert "ALERT [" in body and '"kind": "spike"' in body and '"pressure": 1020.0' in body
    assert lines[-1].startswith("Esc/Enter back")
    state.detail = "gone"
    assert "'gone': no such row" in "\n".join(text_of(draw(model, state, HEADER, width=90, height=40)[0].text, 90))


def test_small_helpers() -> None:
    assert [age_text(s) for s in (None, 0.42, 12.4, 185, 7500)] == ["-", "0.4s", "12s", "3m05", "2h05"]
    assert [value_text(v) for v in (None, 3, 3.0, 1013.254, 123456.7)] == ["-", "3", "3.00", "1013.25", "1.235e+05"]
    assert middle_cut("infineon-sensor-01", 14) == "infineo…sor-01" and middle_cut("short", 14) == "short"
    assert sparkline([]) == "" and sparkline([2.0, 2.0]) == "▄▄" and sparkline([0.0, 1.0]) == "▁█"


def test_without_keys_the_footer_says_how_to_leave() -> None:
    model, _ = fleet()
    header = Header("mqtt://127.0.0.1:1883", "topics: #", keys=False)
    lines = text_of(draw(model, ViewState(), header, width=120, height=20)[0].text, 120)
    assert lines[-1].endswith("Ctrl+C quits (stdin is not a terminal: no keys)")
