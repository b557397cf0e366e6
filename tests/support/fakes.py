"""Fakes for what the code lets a test inject: a clock, and names no other test uses."""

from __future__ import annotations

import uuid


class FakeClock:
    """Monotonic time (from ``start``) that moves only when the code sleeps (each sleep
    ``oversleep_s`` late, as a real one wakes up a little late) or the test moves ``now``.
    ``sleeps``: every sleep asked for, in order."""

    def __init__(self, *, start: float = 1000.0, oversleep_s: float = 0.0) -> None:
        self.now = start
        self.oversleep_s = oversleep_s
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def __call__(self) -> float:  # as a bare clock function (time.monotonic)
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep_s


def uid() -> str:
    """A name no other test (or earlier run on the same broker) uses: for topics, device
    and client ids. No trailing digits: a fleet appends -01, -02..."""
    return f"t{uuid.uuid4().hex[:8]}x"
