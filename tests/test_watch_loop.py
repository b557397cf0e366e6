"""The run loop of ``tesaiot watch`` with a terminal of the test's own: redraws are bounded
(never one per message), keys act, alerts are told from telemetry, a replay of a recording
plays to its end, and what was dropped reaches the user with exit 7."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import typer
from rich.console import Console
from rich.text import Text

from tesaiot_cli.commands.watch import finish
from tesaiot_cli.message import Message
from tesaiot_cli.services.watch import AlertTopics, Inbox, WatchResult, _Loop, watch_replay
from tesaiot_cli.watch.model import FleetModel
from tesaiot_cli.watch.view import Header
from tests.support.fakes import FakeClock
from tests.support.watch import telemetry

SAMPLE = Path(__file__).resolve().parent.parent / "recordings" / "dps368-sample.parquet"


class ScriptedTerminal:
    """A terminal of 120x30 that types ``script[i]`` once screen ``i`` was drawn (if the
    condition holds) and remembers every screen as text."""

    interactive = True

    def __init__(self, script: list[tuple[Callable[[str], bool], str]]) -> None:
        self.script = list(script)
        self.screens: list[str] = []
        self._console = Console(width=120, color_system=None, record=True, file=open("/dev/null", "w"))

    def size(self) -> tuple[int, int]:
        return 120, 30

    def show(self, text: Text) -> None:
        self._console.print(text, crop=True, soft_wrap=False)
        self.screens.append(self._console.export_text())

    def keys(self) -> str:
        if self.script and self.screens and self.script[0][0](self.screens[-1]):
            return self.script.pop(0)[1]
        return ""


def factory(terminal: ScriptedTerminal) -> Callable[[], object]:
    @contextmanager
    def open_terminal() -> Iterator[ScriptedTerminal]:
        yield terminal

    return open_terminal


def run_loop(model: FleetModel, inbox: Inbox, terminal: ScriptedTerminal, check: Callable[[], None] = lambda: None
             ) -> tuple[str, _Loop]:
    loop = _Loop(model, Header("mqtt://127.0.0.1:1", "topics: #"), inbox, AlertTopics(["device/+/alerts"]),
                 threading.Event(), check)
    return loop.run(terminal), loop


def test_ten_thousand_messages_are_a_few_redraws_and_alerts_are_told_apart() -> None:
    model = FleetModel(FakeClock())
    inbox = Inbox()
    for i in range(10_000):
        inbox.offer(telemetry(f"d{i % 50}"))
    inbox.offer(Message("device/d1/alerts", b'{"device_id": "d1", "kind": "spike", "score": 0.5}'))
    terminal = ScriptedTerminal([(lambda s: "10,001 msgs" in s, "q")])
    stopped_by, loop = run_loop(model, inbox, terminal)
    # one redraw per message would be 10,001: here one per REDRAW_S at most, plus one per key
    assert stopped_by == "q" and loop.redraws == len(terminal.screens) < 50
    assert model.totals.telemetry == 10_000 and model.totals.alerts == 1 and model.rows["d1"].alerts == 1
    result = loop.result("q")
    assert (result.messages, result.alerts, result.rows, result.dropped) == (10_001, 1, 50, 0)


def test_what_waits_when_the_view_closes_is_counted() -> None:
    model = FleetModel(FakeClock())
    inbox = Inbox()
    terminal = ScriptedTerminal([(lambda s: True, "q")])
    stopped_by, loop = run_loop(model, inbox, terminal)
    for i in range(7):
        inbox.offer(telemetry(f"d{i}"))  # came after the last screen
    loop.take_rest()
    assert loop.result(stopped_by).messages == 7 and len(inbox) == 0


def test_keys_act_at_once_and_a_paused_table_stands_still() -> None:
    clock = FakeClock()
    model = FleetModel(clock)
    inbox = Inbox()
    for name in ("b", "a"):
        inbox.offer(telemetry(name))
    terminal = ScriptedTerminal([(lambda s: "2 devices" in s, "s"), (lambda s: "sort: rate" in s, "p"),
                                 (lambda s: "PAUSED" in s, "q")])
    run_loop(model, inbox, terminal)
    assert any("sort: rate" in screen for screen in terminal.screens)
    assert "PAUSED" in terminal.screens[-1]


def test_what_the_network_side_raises_ends_the_loop() -> None:
    def broken() -> None:
        raise RuntimeError("network thread failed")

    with pytest.raises(RuntimeError, match="network thread failed"):
        run_loop(FleetModel(FakeClock()), Inbox(), ScriptedTerminal([]), check=broken)


def test_a_replay_plays_the_recording_to_its_end_with_its_labels(tmp_path: Path) -> None:
    terminal = ScriptedTerminal([(lambda s: "finished: 300 messages" in s, "q")])
    result = watch_replay(SAMPLE, recording_format=None, speed=None, filters=[], alert_filters=["device/+/alerts"],
                          terminal=factory(terminal), stop=threading.Event())  # type: ignore[arg-type]
    assert result.stopped_by == "q" and result.replay_finished and result.messages == 300 and result.rows == 1
    assert "30 anomalies" in terminal.screens[-1]
    selected = watch_replay(SAMPLE, recording_format=None, speed=None, filters=["other/#"], alert_filters=[],
                            terminal=factory(ScriptedTerminal([(lambda s: "finished: 0 messages" in s, "q")])),
                            stop=threading.Event())  # type: ignore[arg-type]
    assert selected.messages == 0


def test_what_was_dropped_is_reported_with_exit_7(capsys: pytest.CaptureFixture[str]) -> None:
    result = WatchResult(stopped_by="q", messages=10, alerts=0, rows=2, dropped=3, untracked=0, not_parsed=1,
                         elapsed_s=2.0, redraws=8, redraw_median_ms=1.0, redraw_max_ms=2.0,
                         events=[("disconnected", "disconnected from mqtt://x: gone"), ("notice", "quiet")])
    with pytest.raises(typer.Exit) as exit_info:
        finish(result, where="mqtt://x", stopped_by="q")
    assert exit_info.value.exit_code == 7
    err = capsys.readouterr().err
    assert "disconnected from mqtt://x: gone" in err and "quiet" not in err
    assert "stopped (q): 10 messages (0 alerts) from 2 rows" in err and "1 not parsed" in err
    assert "3 messages dropped: the view fell behind the broker (counted, not shown)" in err
    result.dropped = 0
    finish(result, where="mqtt://x", stopped_by="q")  # nothing lost: no exit code
    result.protocol_errors = 1
    with pytest.raises(typer.Exit) as exit_info:
        finish(result, where="mqtt://x", stopped_by="q")
    assert exit_info.value.exit_code == 3


def test_no_default_alert_topic_for_a_token_on_the_cloud() -> None:
    from tesaiot_cli.commands.watch import default_alert_topics
    from tesaiot_cli.config import check_token_topics, resolve_connection
    from tests.support.broker import TOKEN

    cloud = resolve_connection({"token": TOKEN}, {}, client_prefix="x")
    assert default_alert_topics(cloud, no_alerts=False) == []  # the telemetry-only rule would refuse it
    check_token_topics(cloud, ["device/+/telemetry/#", *default_alert_topics(cloud, no_alerts=False)])
    local = resolve_connection({"broker": "mqtt://127.0.0.1:1883"}, {}, client_prefix="x")
    assert default_alert_topics(local, no_alerts=False) == ["device/+/alerts"]
    assert default_alert_topics(local, no_alerts=True) == []
