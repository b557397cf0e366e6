"""Waiting for an absolute due time, with the clock and the sleep injected.

The one wait-until-due loop of ``replay`` and ``simulate``: both compute every due time
from the start of the run (never from summed sleeps, which drift), and both run under a
fake clock in tests. Sleeps are sliced (at most ``max_sleep_s``) so a stop request is seen
even with a sleep that cannot be woken; the last ``spin_s`` before the due time are spent
spinning on the clock instead, because a sleep can overshoot by a scheduler tick.
"""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable

Clock = Callable[[], float]
Sleep = Callable[[float], object]
StopCheck = Callable[[], bool]

MAX_SLEEP_S = 0.25  # longest single sleep: stop requests and progress are seen during long gaps

# Spinning gives up the GIL between clock reads (a pure busy loop would hold it for the
# 5 ms switch interval); sleep(0) would sleep a whole timer slack instead.
release_gil: Callable[[], object] = getattr(os, "sched_yield", None) or functools.partial(time.sleep, 0)


def freeze_startup_objects() -> None:
    """Take what start-up allocated (typer, pyarrow, paho...) out of the garbage collector's
    sight, just before a timed loop. A full collection would otherwise walk all of it in the
    middle of a schedule: measured here, a 1 kHz replay's send lateness went from p99 0.2-0.5 ms,
    max ~20 ms, to p99 0.003 ms, max ~4 ms."""
    import gc

    gc.collect()
    gc.freeze()


def wait_until(
    due: float,
    *,
    clock: Clock,
    sleep: Sleep,
    should_stop: StopCheck,
    spin_s: float = 0.0,
    spin: Callable[[], object] = release_gil,
    max_sleep_s: float = MAX_SLEEP_S,
    before_sleep: Callable[[float], object] | None = None,
) -> bool:
    """Return True once ``clock()`` reaches ``due`` (seconds on ``clock``), or False as soon
    as ``should_stop()`` says so (checked before every sleep, never while not waiting).

    Sleeps in slices of at most ``max_sleep_s``; within ``spin_s`` of ``due`` calls ``spin``
    instead of sleeping. ``before_sleep(now)`` runs before each slice (progress output).
    ``sleep`` may return early (an ``Event.wait``, or a network loop's wait).
    """
    while True:
        now = clock()
        remaining = due - now
        if remaining <= 0:
            return True
        if should_stop():
            return False
        if remaining > spin_s:
            if before_sleep is not None:
                before_sleep(now)
            sleep(min(remaining - spin_s, max_sleep_s))
        else:
            spin()


class LatenessHistogram:
    """Send lateness (actual send time - due time) in fixed memory.

    To the nearest 1 us below 1024 us, then log-linear buckets of 512 per power of two (within
    0.2 %); ``max`` and ``mean`` are exact.
    """

    __slots__ = ("_buckets", "count", "total_s", "max_s")

    def __init__(self) -> None:
        self._buckets: dict[int, int] = {}
        self.count = 0
        self.total_s = 0.0
        self.max_s = 0.0

    def record(self, seconds: float) -> None:
        if seconds < 0:
            seconds = 0.0
        self.count += 1
        self.total_s += seconds
        if seconds > self.max_s:
            self.max_s = seconds
        micros = int(seconds * 1e6 + 0.5)
        if micros >= 1024:
            shift = micros.bit_length() - 10
            micros = 1024 + (shift - 1) * 512 + (micros >> shift) - 512
        self._buckets[micros] = self._buckets.get(micros, 0) + 1

    @staticmethod
    def _bucket_value_s(index: int) -> float:
        if index < 1024:
            return index * 1e-6
        shift, mantissa = divmod(index - 1024, 512)
        low = (mantissa + 512) << (shift + 1)
        return (low + (1 << shift)) * 1e-6  # the middle of the bucket

    def percentile(self, fraction: float) -> float | None:
        """The lateness (seconds) below which ``fraction`` (0..1) of sends fall; None if empty."""
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for index in sorted(self._buckets):
            seen += self._buckets[index]
            if seen >= rank:
                return min(self._bucket_value_s(index), self.max_s)
        return self.max_s

    @property
    def mean_s(self) -> float | None:
        return self.total_s / self.count if self.count else None
