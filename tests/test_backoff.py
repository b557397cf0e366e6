"""The one reconnect backoff (tesaiot_cli/mqtt/backoff.py): the session's and the fleet's."""

from __future__ import annotations

import random

from tesaiot_cli.mqtt.backoff import FLEET_BACKOFF, SESSION_BACKOFF, Backoff


def test_reconnect_delays_start_quick_then_double() -> None:
    """After a loss: ten attempts a second apart (a restarting broker is usually back
    within seconds), then the delay doubles up to 30 s. (Was in tests/test_session.py.)"""
    assert [SESSION_BACKOFF.delay(n) for n in range(16)] == [1] * 10 + [2, 4, 8, 16, 30, 30]
    assert SESSION_BACKOFF.delay(10_000) == 30
    assert SESSION_BACKOFF.text() == "every 1 s for 10 attempts, then doubling to 30 s"


def test_a_protocol_violation_doubles_the_delay_up_to_the_most() -> None:
    assert SESSION_BACKOFF.after_violation(SESSION_BACKOFF.delay(0)) == 2
    assert SESSION_BACKOFF.after_violation(25) == 30


def test_the_fleet_doubles_from_the_first_attempt_in_the_upper_half_at_random() -> None:
    assert [FLEET_BACKOFF.delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert FLEET_BACKOFF.text() == "1 s doubling to 30 s"
    rng = random.Random(1)
    drawn = [FLEET_BACKOFF.delay(3, rng) for _ in range(1000)]
    assert 4 <= min(drawn) and max(drawn) <= 8 and max(drawn) - min(drawn) > 3.6


def test_a_policy_of_its_own() -> None:
    quick = Backoff(min_s=0.1, max_s=0.4, quick_tries=2)
    assert [quick.delay(n) for n in range(5)] == [0.1, 0.1, 0.2, 0.4, 0.4]
    assert quick.text() == "every 0.1 s for 2 attempts, then doubling to 0.4 s"
