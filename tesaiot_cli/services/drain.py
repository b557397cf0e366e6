"""The one wait for in-flight messages after a stop, shared by every publishing run
(``simulate``, ``replay``, live ``detect``).

A first Ctrl+C or SIGTERM ends the run; what was published and not yet acknowledged may
still complete. :func:`drain` clears the stop event (so the wait can happen), waits a
bounded time, and a second Ctrl+C cuts it short. Nothing here prints: the lines saying how
the wait goes reach the caller through ``say``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

from tesaiot_cli.errors import Interrupted

DRAIN_TIMEOUT_S = 10.0
DRAIN_GLANCE_S = 0.5  # a first short wait: most runs end with nothing (or nearly) in flight
DRAIN_TICK_S = 4.0  # how often the wait says how many are still unacknowledged

Drained = Literal["all", "timeout", "interrupted"]


class StopFlag(Protocol):
    """Ctrl+C / SIGTERM (the CLI's ``StopSignals``): the event a signal sets, and its name."""

    @property
    def event(self) -> threading.Event: ...

    @property
    def signal_name(self) -> str | None: ...


class Flushable(Protocol):
    """A session, or a fleet of per-device connections."""

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for what is in flight; True when nothing is left.
        Raises :class:`Interrupted` when the stop event is set meanwhile."""
        ...

    def in_flight(self) -> int:
        ...


def drain(link: Flushable, stop: threading.Event, *, timeout_s: float = DRAIN_TIMEOUT_S,
          tick_s: float = DRAIN_TICK_S, say: Callable[[str], None] | None = None,
          noun: str = "packets") -> Drained:
    """Wait (bounded: a glance of ``DRAIN_GLANCE_S``, then ``timeout_s``) for the messages
    still unacknowledged; a second Ctrl+C (the stop event set again) stops waiting.

    ``say`` (optional) gets a line when the wait goes beyond the glance, and one every
    ``tick_s`` seconds after that. Returns how it ended: ``all`` (nothing left),
    ``timeout`` or ``interrupted``."""
    # The first Ctrl+C ended the run; clear it so the flush waits, and a second one cuts it short.
    stop.clear()
    try:
        if link.flush(DRAIN_GLANCE_S):
            return "all"
        if say is not None:
            say(f"waiting up to {timeout_s:g} s for {link.in_flight():,} unacknowledged {noun} "
                "(Ctrl+C to stop waiting)")
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            if link.flush(min(tick_s, left)):
                return "all"
            left = deadline - time.monotonic()
            if say is not None and left >= 1:  # the wait says how it goes, as the live status did
                say(f"still waiting: {link.in_flight():,} unacknowledged {noun}, {left:.0f} s left")
        return "timeout"
    except Interrupted:
        return "interrupted"
