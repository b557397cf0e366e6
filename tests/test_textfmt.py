"""The text formatters every command shares (tesaiot_cli/textfmt.py)."""

from __future__ import annotations

import pytest

from tesaiot_cli.textfmt import iso_time, utc_text

T = 1_795_335_896_055_689_123  # 2026-11-22T08:24:56.055689123Z


def test_utc_text_is_the_iso_time_people_read() -> None:
    assert utc_text(T) == "2026-11-22 08:24:56 UTC"
    assert utc_text(T, decimals=3) == "2026-11-22 08:24:56.055 UTC"  # cut, not rounded
    assert utc_text(T, decimals=6) == "2026-11-22 08:24:56.055689 UTC"
    assert utc_text(0) == "1970-01-01 00:00:00 UTC"
    assert utc_text(T).split()[1] == iso_time(T)[11:19]


def test_utc_text_refuses_more_than_microseconds() -> None:
    with pytest.raises(ValueError, match="0 to 6"):
        utc_text(T, decimals=7)
