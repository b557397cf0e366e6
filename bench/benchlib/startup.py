"""Section 5: start-up time and peak memory while recording.

Start-up: the commands run in turns (A B C A B C ..., ``runs`` rounds, after one untimed
warm-up round so the page cache is warm), so that a burst of load on a shared machine hits
every command of a round alike; the median wall time (time.perf_counter around the whole
process) is reported with the minimum, and ``tesaiot --help`` against ``import typer`` as the
median of the per-round ratios (medians of separate runs drifted: 1.44x reported where
paired runs gave 2.04x). ``python -c pass`` is the floor for any Python program.

Memory: ``tesaiot record FILE.parquet --count N`` (QoS 0) while bench/pacedpub sends N
messages at a rate it keeps up with; the peak resident set size is the child's VmHWM
(its own high-water mark) read from /proc every 0.05 s until it exits, with VmRSS
sampled alongside. Not ``ru_maxrss`` from wait4(): Linux carries it across exec, so a
child started from this (larger) Python process reports the parent's size.
A short recording (N / 100) is measured too: if the peak does not grow with N, memory
is bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib.common import PYTHON, Table, progress, rate_text, say, tesaiot_help
from benchlib.data import count_recording
from benchlib.record import Context
from benchlib.storage import disk_bytes

DEFAULT_MEMORY_RATE = 20000
MAX_MEMORY_SECONDS = 90  # the large recording is cut to what this many seconds at the rate hold


def _wall_s(argv: list[str]) -> tuple[float, int]:
    begin = time.perf_counter()
    code = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                          check=False).returncode
    return time.perf_counter() - begin, code


def paired_timings(commands: dict[str, list[str]], runs: int) -> dict[str, dict[str, Any]]:
    """Each command's wall times, the commands taking turns round by round (A B A B ...).

    Returns per command: median_ms, min_ms, runs and ``seconds`` (each round's time, in
    round order, for per-round ratios); or ``error`` when it exited non-zero.
    """
    for argv in commands.values():
        _wall_s(argv)
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    errors: dict[str, str] = {}
    for _ in range(runs):
        for name, argv in commands.items():
            if name in errors:
                continue
            wall, code = _wall_s(argv)
            if code != 0:
                errors[name] = f"exit code {code}"
            seconds[name].append(wall)
    results: dict[str, dict[str, Any]] = {}
    for name, values in seconds.items():
        if name in errors:
            results[name] = {"error": errors[name]}
        else:
            results[name] = {"median_ms": statistics.median(values) * 1000, "min_ms": min(values) * 1000,
                             "runs": runs, "seconds": values}
    return results


def median_ratio(numerator: dict[str, Any], denominator: dict[str, Any]) -> float | None:
    """The median of the per-round ratios of two commands timed by :func:`paired_timings`."""
    if "seconds" not in numerator or "seconds" not in denominator:
        return None
    return statistics.median(a / b for a, b in zip(numerator["seconds"], denominator["seconds"], strict=True) if b > 0)


def _vm_rss_kib(pid: int, field: str = "VmRSS") -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def peak_rss(ctx: Context, *, count: int, rate: int, tag: str) -> dict[str, Any]:
    """Record ``count`` messages at ``rate`` with tesaiot record (Parquet); its peak RSS and more."""
    tesaiot = shutil.which("tesaiot") or "tesaiot"
    output = ctx.workdir / f"memory-{tag}.parquet"
    topic = f"device/bench-memory-{tag}/telemetry"
    client_id = f"bench-memory-{tag}"
    argv = [tesaiot, "record", str(output), "--count", str(count), "--qos", "0", "--topic", topic,
            "--broker", ctx.broker.url, "--client-id", client_id]
    if "--quiet" in tesaiot_help("record"):
        argv.append("--quiet")
    result: dict[str, Any] = {"count": count, "rate": rate}
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ctx.workdir)
    sampled_max = 0
    high_water = 0
    status = None
    usage = None
    try:
        ctx.broker.wait_subscribed(client_id, topic, timeout=20, process=process)
        pub_process = ctx.publisher.start(topic=topic, rate=rate, count=count, qos=0, device="bench-memory")
        hard_deadline = time.monotonic() + count / rate * 2 + 60
        published_at: float | None = None
        interrupted_at: float | None = None
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            sampled_max = max(sampled_max, _vm_rss_kib(process.pid) or 0)
            high_water = max(high_water, _vm_rss_kib(process.pid, "VmHWM") or 0)
            now = time.monotonic()
            if published_at is None and pub_process.poll() is not None:
                published_at = now
            if interrupted_at is None and ((published_at is not None and now > published_at + 15)
                                           or now > hard_deadline):
                result["note"] = "recorder did not finish: stopped with SIGINT"
                process.send_signal(signal.SIGINT)
                interrupted_at = now
            if interrupted_at is not None and now > interrupted_at + 20:
                process.kill()
                _, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.05)
        process.returncode = os.waitstatus_to_exitcode(status) if status is not None else -1
        pub = ctx.publisher.result(pub_process, timeout=30)
        result["publisher_rate"] = pub.data.get("rate")
    except Exception as exc:  # noqa: BLE001 - report what could be measured
        result["error"] = str(exc)
        if process.returncode is None:
            process.kill()
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = -9
    if high_water:
        result["peak_rss_mib"] = high_water / 1024
    if usage is not None:
        result["ru_maxrss_mib"] = usage.ru_maxrss / 1024  # inherited across exec: not the peak
    result["sampled_max_rss_mib"] = sampled_max / 1024
    result["exit_code"] = process.returncode
    result["received"] = count_recording(output)
    size = disk_bytes(output)
    result["file_bytes"] = size
    if result["received"] and result["received"] > 0:
        result["bytes_per_message"] = size / result["received"]
    for path in (output, output.with_name(output.name + ".partial")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return result


def memory_rate(record_results: dict[str, Any] | None) -> int:
    """A rate tesaiot record keeps up with: 60 % of its best QoS 0 Parquet rate, 10k..50k/s."""
    best = (((record_results or {}).get("qos0") or {}).get("tesaiot-parquet") or {}).get("best_rate")
    if not best:
        return DEFAULT_MEMORY_RATE
    return int(min(50000, max(min(10000, best), best * 0.6)))  # at most its best, at least 10k if it passed 10k


def run_section(ctx: Context, *, runs: int, memory_count: int, record_results: dict[str, Any] | None
                ) -> dict[str, Any]:
    section: dict[str, Any] = {"runs": runs, "startup": {}, "memory": {}}
    tesaiot = shutil.which("tesaiot")
    commands = {
        "python -c pass": [PYTHON, "-c", "pass"],
        "python -c 'import typer'": [PYTHON, "-c", "import typer"],
        "tesaiot --help": [tesaiot or "tesaiot", "--help"],
    }
    section["startup"] = paired_timings(commands, runs)
    section["help_over_typer"] = median_ratio(section["startup"]["tesaiot --help"],
                                              section["startup"]["python -c 'import typer'"])
    for name, result in section["startup"].items():
        progress(f"start-up {name}: {({k: v for k, v in result.items() if k != 'seconds'})}")
    if not tesaiot_help("record"):
        section["memory"] = {"unavailable": "tesaiot record not available"}
        return section
    rate = memory_rate(record_results)
    large = min(memory_count, int(rate * MAX_MEMORY_SECONDS))
    if large < memory_count:
        section["memory_note"] = (f"{large} messages instead of {memory_count}: at {rate_text(rate)}/s more would "
                                  f"take over {MAX_MEMORY_SECONDS} s")
    for tag, count in (("small", max(1000, large // 100)), ("large", large)):
        section["memory"][tag] = peak_rss(ctx, count=count, rate=rate, tag=tag)
        progress(f"memory {tag}: {section['memory'][tag]}")
    return section


def report(section: dict[str, Any]) -> None:
    say(f"## 5. Start-up (medians of {section['runs']} paired rounds) and memory")
    table = Table(["command", "median ms", "min ms"])
    for name, result in section["startup"].items():
        if "error" in result:
            table.add(name, "error", result["error"])
        else:
            table.add(name, f"{result['median_ms']:.0f}", f"{result['min_ms']:.0f}")
    say(table.render())
    typer_ms = section["startup"].get("python -c 'import typer'", {}).get("median_ms")
    ours = section["startup"].get("tesaiot --help", {}).get("median_ms")
    ratio = section.get("help_over_typer")
    if typer_ms and ours and ratio:
        say(f"tesaiot --help / import typer: {ratio:.2f}x (median of the per-round ratios; "
            f"{ours - typer_ms:+.0f} ms between the medians)")
    say()
    memory = section["memory"]
    if "unavailable" in memory:
        say(f"memory: not available ({memory['unavailable']})")
        say()
        return
    table = Table(["tesaiot record (Parquet, QoS 0)", "rate", "received", "peak RSS MiB", "sampled max MiB",
                   "file bytes/msg", "note"])
    for result in memory.values():
        per = result.get("bytes_per_message")
        table.add(f"{result['count']} messages", f"{rate_text(result['rate'])}/s", result.get("received"),
                  f"{result['peak_rss_mib']:.1f}" if "peak_rss_mib" in result else "n/a",
                  f"{result['sampled_max_rss_mib']:.1f}", f"{per:.1f}" if per else "n/a",
                  result.get("note") or result.get("error") or "")
    say(table.render())
    if section.get("memory_note"):
        say(f"note: {section['memory_note']}")
    say()
