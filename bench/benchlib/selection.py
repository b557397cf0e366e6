"""Section 11: readers that take the selection. ``tesaiot replay --start`` of the last 2 % of
an N-message Parquet recording beside a full pass of the same file, and ``tesaiot info
--summary`` (counts and span from the footer) of N messages beside N/10.

Both replays go to stdout at ``--speed max`` (``--to -``, output to /dev/null), so no
broker sets the pace: what is measured is reading, selecting and writing the lines. Runs are
paired (A B A B ...), as in section 8; the report quotes the median of the pairs' ratios.
The recording is written by the project's own writer (row groups of 32,768 rows), ten
devices' DPS368 telemetry at 10 kHz, so a million messages span 100 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from benchlib import data
from benchlib.common import progress, say
from benchlib.export import paired, say_paired
from benchlib.record import Context

RATE_HZ = 10_000.0
DEVICES = 10
TAIL = 0.02  # the share of the recording replayed by --start


def write_fleet_recording(path: Path, count: int) -> float:
    """``count`` DPS368 messages from ten devices at RATE_HZ; returns the span in seconds."""
    from tesaiot_cli import __version__
    from tesaiot_cli.message import Message
    from tesaiot_cli.recording import RecordingMetadata, open_writer

    metadata = RecordingMetadata(tool_version=__version__, source="convert")
    items = data.stream(count, RATE_HZ)
    with open_writer(path, metadata=metadata, crash_safe=False) as writer:
        for index, (time_ns, payload) in enumerate(items):
            writer.write(Message(f"device/bench-{index % DEVICES:02d}/telemetry", payload, 0, False, time_ns))
    return (items[-1][0] - items[0][0]) / 1e9


def run_section(ctx: Context, *, count: int, runs: int) -> dict[str, Any]:
    tesaiot = shutil.which("tesaiot") or "tesaiot"
    directory = ctx.workdir / "selection"
    directory.mkdir(exist_ok=True)
    big, small = directory / "big.parquet", directory / "small.parquet"
    progress(f"writing a {count:,}-message and a {count // 10:,}-message recording")
    span_s = write_fleet_recording(big, count)
    write_fleet_recording(small, count // 10)
    start = f"{span_s * (1 - TAIL):.3f}"
    replay = [tesaiot, "replay", str(big), "--to", "-", "--speed", "max", "--quiet"]
    section: dict[str, Any] = {"count": count, "file_bytes": big.stat().st_size, "span_s": span_s, "start": start}
    section["replay"] = paired(f"replay --start {start}", [*replay, "--start", start], "replay (full pass)", replay,
                               runs=runs, timeout=900, cleanup=[])
    section["info"] = paired(f"info --summary, {count:,}", [tesaiot, "info", str(big), "--json", "--summary"],
                             f"info --summary, {count // 10:,}", [tesaiot, "info", str(small), "--json", "--summary"],
                             runs=runs, timeout=300, cleanup=[])
    section["info_scan"] = paired(
        f"info --no-values, {count:,}", [tesaiot, "info", str(big), "--json", "--no-values"],
        f"info --no-values, {count // 10:,}", [tesaiot, "info", str(small), "--json", "--no-values"],
        runs=runs, timeout=300, cleanup=[])
    return section


def report(section: dict[str, Any]) -> list[dict[str, Any]]:
    say(f"## 11. Readers that take the selection: {section['count']:,} messages "
        f"({section['file_bytes'] / 2**20:.1f} MiB Parquet, {section['span_s']:.1f} s recorded)")
    goals: list[dict[str, Any]] = []
    titles = (("replay", f"replay --start {section['start']} (the last {TAIL:.0%}) / a full pass"),
              ("info", "info --summary of 10x the messages / of 1x (flat: about 1)"),
              ("info_scan", "info --no-values of 10x the messages / of 1x (a scan, for comparison)"))
    for key, title in titles:
        result = section[key]
        if not say_paired(title, result, digits=3):
            continue
        if key == "replay":
            goals.append({"goal": "replay --start of the last 2 % <= 0.10x a full pass",
                          "met": result["median_ratio"] <= 0.10, "detail": f"{result['median_ratio']:.3f}x"})
        elif key == "info":
            goals.append({"goal": "info --summary flat in the file's size (10x messages <= 1.2x the time)",
                          "met": result["median_ratio"] <= 1.2, "detail": f"{result['median_ratio']:.2f}x"})
    return goals
