"""Section 8: export. ``tesaiot export`` of an N-message DPS368 recording to Parquet beside
DuckDB doing the same flatten from the same file, and ``tesaiot info`` with value statistics
beside ``info --no-values``.

Runs are paired (A B A B ...) and each pair's ratio is taken; the report quotes the median
ratio and the median time of each side, so a noisy neighbour hits both sides of a pair.
Peak RSS is the child's VmHWM (which exec resets), read from /proc every 10 ms until it
exits: the last reading is the high-water mark up to then.

DuckDB's query is the flatten a user would write (docs/recording-format.md): every field of
the payload extracted with ``decode(payload)::json->>'$.path'`` and cast to the type
``tesaiot export`` infers, written to Parquet with zstd.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import data
from benchlib.common import Table, progress, say
from benchlib.record import Context
from benchlib.startup import _vm_rss_kib

PYTHON = sys.executable
TOPIC = "device/bench-rec/telemetry"

DUCKDB_FLATTEN = """
import sys, duckdb
source, target = sys.argv[1], sys.argv[2]
duckdb.connect().execute(f'''COPY (SELECT time, topic, device_id, sensor_type, qos, retain,
  (decode(payload)::json->>'$.timestamp')::timestamptz AS "timestamp",
  decode(payload)::json->>'$.device_id' AS "payload.device_id",
  decode(payload)::json->>'$.sensor_type' AS "payload.sensor_type",
  (decode(payload)::json->>'$.data.pressure')::double AS "data.pressure",
  (decode(payload)::json->>'$.data.temperature')::double AS "data.temperature",
  (decode(payload)::json->>'$.seq')::bigint AS "seq"
  FROM read_parquet('{source}')) TO '{target}' (FORMAT parquet, COMPRESSION zstd)''')
"""


def measure(argv: list[str], *, timeout: float) -> dict[str, Any]:
    """Wall time (s) and peak RSS (MiB) of one run; ``error`` when it fails."""
    begin = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    high = 0
    while process.poll() is None:
        high = max(high, _vm_rss_kib(process.pid, "VmHWM") or 0)
        if time.perf_counter() - begin > timeout:
            process.kill()
            process.wait()
            return {"error": f"timed out after {timeout:.0f} s"}
        time.sleep(0.01)
    elapsed = time.perf_counter() - begin
    stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode != 0:
        return {"error": f"exit code {process.returncode}: {stderr.strip()[-200:]}"}
    return {"seconds": elapsed, "peak_rss_mib": high / 1024}


def paired(name_a: str, argv_a: list[str], name_b: str, argv_b: list[str], *, runs: int, timeout: float,
           cleanup: list[Path]) -> dict[str, Any]:
    """``runs`` pairs A B; per side the median time and the max peak RSS; the median of A/B ratios."""
    results: dict[str, list[dict[str, Any]]] = {name_a: [], name_b: []}
    for index in range(runs):
        for name, argv in ((name_a, argv_a), (name_b, argv_b)):
            for path in cleanup:
                path.unlink(missing_ok=True)
            result = measure(argv, timeout=timeout)
            progress(f"{name} run {index + 1}: {result}")
            if "error" in result:
                return {"error": f"{name}: {result['error']}"}
            results[name].append(result)
    ratios = [a["seconds"] / b["seconds"] for a, b in zip(results[name_a], results[name_b], strict=True)]
    return {
        "runs": runs,
        "sides": {name: {"median_s": statistics.median(r["seconds"] for r in rs),
                         "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)} for name, rs in results.items()},
        "median_ratio": statistics.median(ratios),
        "ratios": ratios,
    }


def run_section(ctx: Context, *, count: int, runs: int) -> dict[str, Any]:
    tesaiot = shutil.which("tesaiot") or "tesaiot"
    directory = ctx.workdir / "export"
    directory.mkdir(exist_ok=True)
    source = directory / "dps368.parquet"
    progress(f"writing a {count:,}-message DPS368 recording")
    data.write_tesaiot_recording(source, data.stream(count, 1000.0), topic=TOPIC)
    section: dict[str, Any] = {"count": count, "file_bytes": source.stat().st_size}
    ours, theirs = directory / "export.parquet", directory / "duckdb.parquet"
    try:
        import duckdb  # noqa: F401
    except ImportError:
        section["export"] = {"error": "duckdb is not installed (pip install 'tesaiot-cli[bench]')"}
    else:
        section["export"] = paired(
            "tesaiot export", [tesaiot, "export", str(source), str(ours), "--force"],
            "duckdb flatten", [PYTHON, "-c", DUCKDB_FLATTEN, str(source), str(theirs)],
            runs=runs, timeout=600, cleanup=[ours, theirs])
        for path in (ours, theirs):
            if path.exists():
                section["export"].setdefault("output_bytes", {})[path.name] = path.stat().st_size
    section["info"] = paired(
        "info (with values)", [tesaiot, "info", str(source), "--json"],
        "info --no-values", [tesaiot, "info", str(source), "--json", "--no-values"],
        runs=runs, timeout=600, cleanup=[])
    return section


def say_paired(title: str, result: dict[str, Any], *, digits: int) -> bool:
    """A table of one paired measurement (see :func:`paired`) and its median ratio; False,
    after a line that says so, when it was not measured."""
    if "error" in result:
        say(f"{title}: not measured ({result['error']})")
        return False
    table = Table(["command", "median s", "peak RSS MiB"])
    for name, side in result["sides"].items():
        table.add(name, f"{side['median_s']:.2f}", f"{side['peak_rss_mib']:.0f}")
    say(table.render())
    say(f"{title}: median ratio of {result['runs']} paired runs {result['median_ratio']:.{digits}f}x "
        f"(ratios {', '.join(f'{r:.{digits}f}' for r in result['ratios'])})")
    say()
    return True


def report(section: dict[str, Any]) -> list[dict[str, Any]]:
    say(f"## 8. Export: {section['count']:,} DPS368 messages ({section['file_bytes'] / 2**20:.1f} MiB Parquet)")
    goals: list[dict[str, Any]] = []
    for key, title in (("export", "export to Parquet vs DuckDB"), ("info", "info with value statistics")):
        result = section[key]
        if not say_paired(title, result, digits=2):
            continue
        if key == "export":
            ours = result["sides"]["tesaiot export"]
            goals.append({"goal": "export no slower than DuckDB (median paired ratio <= 1.0)",
                          "met": result["median_ratio"] <= 1.0, "detail": f"{result['median_ratio']:.2f}x"})
            goals.append({"goal": "export peak RSS <= 300 MiB", "met": ours["peak_rss_mib"] <= 300,
                          "detail": f"{ours['peak_rss_mib']:.0f} MiB"})
    return goals
