"""Small text formatting the commands share: times, sizes, durations, terminal colours.

Pure functions with no heavy imports (``tesaiot --help`` imports this module).
"""

from __future__ import annotations

import datetime as dt

_RESET = "\x1b[0m"
_STYLES = {"time": "\x1b[2m", "device": "\x1b[1;36m", "sensor": "\x1b[35m", "anomaly": "\x1b[1;31m",
           "normal": "\x1b[32m", "dim": "\x1b[2m", "key": "\x1b[33m"}


def iso_time(time_ns: int) -> str:
    """ISO 8601 UTC with microseconds, like the DPS368 payload: ``2026-11-22T08:24:56.055689+00:00``."""
    seconds, rest = divmod(time_ns, 1_000_000_000)
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC).replace(microsecond=rest // 1000)
    return moment.isoformat(timespec="microseconds")


def utc_text(time_ns: int, *, decimals: int = 0) -> str:
    """The time people read: ``2026-11-22 08:24:56 UTC``, the second cut (not rounded) to
    ``decimals`` places (0 to 6): ``2026-11-22 08:24:56.055 UTC`` with 3."""
    if not 0 <= decimals <= 6:
        raise ValueError(f"decimals must be 0 to 6, not {decimals}")
    text = iso_time(time_ns)
    return f"{text[:10]} {text[11:20 + decimals] if decimals else text[11:19]} UTC"


def human_bytes(size: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_duration(seconds: float) -> str:
    """3723.5 -> '1 h 2 min 3.5 s'."""
    if seconds < 60:
        return f"{seconds:.3g} s" if seconds < 10 else f"{seconds:.1f} s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    days, hours = divmod(hours, 24)
    parts = [f"{days} d"] if days else []
    parts += [f"{hours} h"] if hours or days else []
    return " ".join(parts + [f"{minutes} min", f"{secs:.0f} s"])


def paint(text: str, style: str, color: bool) -> str:
    """``text`` in the terminal style named ``style`` (time, device, sensor, anomaly, normal,
    dim, key) when ``color``, else unchanged."""
    return f"{_STYLES[style]}{text}{_RESET}" if color else text


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 message``, ``2 messages``, ``1,000 messages`` (``many``: an irregular plural)."""
    return f"{count:,} {word if count == 1 else (many or word + 's')}"
