"""The one reconnect backoff: how long a lost connection waits before each attempt.

A session (one connection) tries ``quick_tries`` times ``min_s`` apart, then doubles the
delay up to ``max_s``: a broker restart is usually back within seconds, and doubling from
the first failure turned a 3 s restart into a 7 s outage (attempts at 1, 3, 7 s) and an 8 s
one into 15 s. One client trying once a second against a broker that is down costs nothing.
A fleet of per-device connections doubles from the first attempt and draws each delay from
its upper half (``rng``): a broker restart does not bring every device back at the same
instant (the fleet's connects are rate-limited as well).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

RECONNECT_MIN_DELAY_S = 1.0
RECONNECT_MAX_DELAY_S = 30.0


@dataclass(frozen=True)
class Backoff:
    """Delays in seconds: ``quick_tries`` attempts ``min_s`` apart, then doubling to ``max_s``."""

    min_s: float = RECONNECT_MIN_DELAY_S
    max_s: float = RECONNECT_MAX_DELAY_S
    quick_tries: int = 10

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds before the next attempt after ``failures`` failed ones in a row (0: the
        first attempt after the connection was lost); with ``rng``, drawn at random from the
        upper half of that delay."""
        if failures < self.quick_tries:
            full = self.min_s
        else:
            full = min(self.min_s * 2 ** min(failures - self.quick_tries + 1, 16), self.max_s)
        return full if rng is None else full / 2 + rng.uniform(0, full / 2)

    def after_violation(self, delay: float) -> float:
        """The delay after the broker broke the protocol: twice the last one, at most ``max_s``."""
        return min(delay * 2, self.max_s)

    def text(self) -> str:
        """The policy in words, for the reconnecting event."""
        doubling = f"doubling to {self.max_s:g} s"
        if self.quick_tries <= 1:
            return f"{self.min_s:g} s {doubling}"
        return f"every {self.min_s:g} s for {self.quick_tries} attempts, then {doubling}"


SESSION_BACKOFF = Backoff()
FLEET_BACKOFF = Backoff(quick_tries=1)  # jittered by the fleet's rng
