"""cliutil.StatusLine: the one live status line of record, replay, simulate (and new commands)."""

from __future__ import annotations

import io

import pytest

from tesaiot_cli.cliutil import StatusLine, clock_text
from tesaiot_cli.textfmt import plural


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_on_a_terminal_the_line_is_rewritten_in_place_cut_to_the_width(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback=(100, 24): os.terminal_size((30, 24)))
    stream, clock = FakeTTY(), Clock()
    status = StatusLine("rec", tty_period_s=1.0, stream=stream, clock=clock)
    assert not status.update(lambda: "too early")  # the first line waits one period
    clock.now += 1.0
    assert status.update(lambda: "x" * 100)
    assert stream.getvalue() == "\r" + ("rec: " + "x" * 100)[:29] + "\x1b[K"
    calls: list[int] = []
    assert not status.update(lambda: str(calls.append(1)))  # not due: render is not even called
    assert calls == []
    status.say("an event")  # cleared first, so the event line starts at column 0
    assert stream.getvalue().endswith("\r\x1b[K")
    with status:
        clock.now += 1.0
        status.update(lambda: "last")
    assert stream.getvalue().endswith("rec: last\x1b[K\r\x1b[K")  # leaving clears it


def test_off_a_terminal_plain_lines_at_their_own_period_or_none() -> None:
    stream, clock = io.StringIO(), Clock()
    status = StatusLine("sim", tty_period_s=1.0, plain_period_s=5.0, stream=stream, clock=clock)
    clock.now += 1.0
    assert not status.update(lambda: "a")
    clock.now += 4.0
    assert status.update(lambda: "b")
    assert stream.getvalue() == "tesaiot: sim: b\n"
    silent = StatusLine("x", stream=io.StringIO(), clock=clock)  # plain_period_s None: nothing off a TTY
    clock.now += 100
    assert not silent.update(lambda: "never") and not silent.enabled


def test_helpers() -> None:
    assert [plural(1, "message"), plural(2, "message"), plural(1234, "line")] == ["1 message", "2 messages",
                                                                                   "1,234 lines"]
    assert [clock_text(7.4), clock_text(754), clock_text(3723)] == ["0:07", "12:34", "1:02:03"]
