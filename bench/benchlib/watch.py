"""Section 12: ``tesaiot watch`` at fleet scale, beside ``tesaiot listen --json > /dev/null``.

One simulated fleet (``simulate --devices N --interval 1``, one connection, QoS 0) feeds both
subscribers at once on the bench's own loopback mosquitto. ``watch`` runs on a pseudo-terminal
of 200x60 (its output read and thrown away, as a terminal would show it); ``listen --json``
writes to /dev/null. After a warm-up (every device seen at least once), each one's CPU time is
read from /proc over the same window; ``watch`` reports its own redraw times (median and
longest, from the moment it starts building a screen to the moment the terminal has it) and
its peak memory. Bounded: the fleet runs for warm-up + window + 5 s, every process is stopped
at the end.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path
from typing import Any

from benchlib.common import Broker, Table, progress, say, stop_process

TICKS = os.sysconf("SC_CLK_TCK")
_SUMMARY = re.compile(r"stopped \((?P<why>[^)]*)\): (?P<messages>[\d,]+) messages? \((?P<alerts>[\d,]+) alerts?\) "
                      r"from (?P<rows>[\d,]+) rows? .*?(?P<redraws>[\d,]+) redraws?, median (?P<median>[\d.]+) ms, "
                      r"longest (?P<longest>[\d.]+) ms")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _memory_mib(pid: int, name: str) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) / 1024
    return None


def _on_pty(argv: list[str], columns: int, lines: int) -> tuple[subprocess.Popen[bytes], threading.Thread, list[int]]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", lines, columns, 0, 0))
    process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=subprocess.PIPE, start_new_session=True)
    os.close(slave)
    drawn = [0]

    def drain() -> None:  # the terminal: takes what is drawn, so the view never waits on it
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            drawn[0] += len(data)
        os.close(master)

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    return process, thread, drawn


def run_section(broker: Broker, *, devices: int, warmup_s: float, window_s: float) -> dict[str, Any]:
    url = broker.url
    watch, drain, drawn = _on_pty(["tesaiot", "watch", "-b", url, "--qos", "0"], 200, 60)
    listen = subprocess.Popen(["tesaiot", "listen", "-b", url, "--qos", "0", "--json", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # both subscribed before the fleet starts
    simulate = subprocess.Popen(["tesaiot", "simulate", "-b", url, "--devices", str(devices), "--interval", "1",
                                 "--qos", "0", "--quiet", "--duration", str(warmup_s + window_s + 5)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result: dict[str, Any] = {"devices": devices, "interval_s": 1.0, "window_s": window_s, "terminal": "200x60"}
    try:
        progress(f"watch: {devices:,} devices at 1 Hz, {warmup_s:g} s warm-up, {window_s:g} s measured")
        time.sleep(warmup_s)
        start = {name: _cpu_s(p.pid) for name, p in (("watch", watch), ("listen", listen), ("simulate", simulate))}
        began = time.monotonic()
        time.sleep(window_s)
        elapsed = time.monotonic() - began
        for name, process in (("watch", watch), ("listen", listen), ("simulate", simulate)):
            result[f"{name}_cpu_percent"] = round((_cpu_s(process.pid) - start[name]) / elapsed * 100, 1)
        result["watch_rss_mib"] = _memory_mib(watch.pid, "VmRSS")
        result["watch_peak_rss_mib"] = _memory_mib(watch.pid, "VmHWM")
    finally:
        watch_code = stop_process(watch, first=15)  # SIGTERM: the view leaves cleanly and says what it did
        stop_process(listen)
        stop_process(simulate)
        drain.join(timeout=5)
    err = watch.stderr.read().decode(errors="replace") if watch.stderr else ""
    result["watch_exit"] = watch_code
    result["terminal_bytes"] = drawn[0]
    match = _SUMMARY.search(err)
    if match:
        result.update({key: float(value.replace(",", "")) if key in ("median", "longest") else value.replace(",", "")
                       for key, value in match.groupdict().items()})
    else:
        result["error"] = f"no summary from watch: {err[-400:]!r}"
    result["watch_stderr"] = err[-2000:]
    return result


def report(section: dict[str, Any]) -> None:
    say(f"## 12. watch: {section.get('devices', 0):,} devices at 1 Hz beside listen --json > /dev/null "
        f"({section.get('window_s')} s window, terminal {section.get('terminal')})")
    table = Table(["process", "CPU %", "note"])
    redraws = (f"redraws {section.get('redraws')}, median {section.get('median')} ms, "
               f"longest {section.get('longest')} ms")
    table.add("tesaiot watch", section.get("watch_cpu_percent"),
              f"{redraws}; RSS {section.get('watch_rss_mib') or 0:.0f} MiB (peak "
              f"{section.get('watch_peak_rss_mib') or 0:.0f}); {section.get('rows')} rows, "
              f"{section.get('messages')} messages; exit {section.get('watch_exit')}")
    table.add("tesaiot listen --json > /dev/null", section.get("listen_cpu_percent"), "")
    table.add("tesaiot simulate (the fleet)", section.get("simulate_cpu_percent"), "")
    say(table.render())
    if section.get("error"):
        say(f"(error: {section['error']})")
    say()
