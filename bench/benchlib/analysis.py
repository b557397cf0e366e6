"""Section 7: the Edge-AI test bench offline: ``tesaiot detect`` and ``tesaiot score`` on a
1,000,000-message truth, and ``tesaiot plot`` of it (seconds, messages per second, peak RSS).

The truth is made offline with the simulator's own model (tests/support/truth.py: a
realistic fleet with every anomaly kind, the metadata of ``simulate --record``), so the
numbers do not depend on a broker. Each command runs ``runs`` times as a child process;
its peak RSS is its own VmHWM read from /proc every 0.05 s (as in section 5), the time is
the wall time of the whole process (start-up included). Reported: medians, with min/max.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib.common import BENCH_DIR, Table, progress, rate_text, say
from benchlib.record import Context
from benchlib.startup import _vm_rss_kib

ROOT = BENCH_DIR.parent


def make_truth(path: Path, *, devices: int, count: int) -> int:
    """Write the truth; returns its number of messages."""
    sys.path.insert(0, str(ROOT))
    from tesaiot_cli.recording import open_reader
    from tests.support.truth import write_truth

    write_truth(path, devices=devices, count=count, seed=7, profile="realistic", kinds="all", interval_s=1.0)
    with open_reader(path) as reader:
        return reader.count()


def measured(argv: list[str], *, timeout: float) -> dict[str, Any]:
    """Run ``argv``; its wall time and peak RSS (VmHWM, KiB) sampled until it exits."""
    begin = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    deadline = begin + timeout
    while process.poll() is None:
        value = _vm_rss_kib(process.pid, "VmHWM")
        if value is not None:
            peak = max(peak, value)
        if time.perf_counter() > deadline:
            process.kill()
            process.wait()
            return {"error": f"timed out after {timeout:g} s"}
        time.sleep(0.05)
    elapsed = time.perf_counter() - begin
    _, stderr = process.communicate()
    if process.returncode != 0:
        return {"error": f"exit code {process.returncode}: {stderr.decode(errors='replace').strip()[-300:]}"}
    return {"seconds": elapsed, "peak_rss_mib": peak / 1024}


def repeat(argv: list[str], *, runs: int, timeout: float) -> dict[str, Any]:
    results = [measured(argv, timeout=timeout) for _ in range(runs)]
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    seconds = [r["seconds"] for r in results]
    rss = [r["peak_rss_mib"] for r in results]
    return {"seconds": statistics.median(seconds), "seconds_min": min(seconds), "seconds_max": max(seconds),
            "peak_rss_mib": statistics.median(rss), "peak_rss_mib_max": max(rss), "runs": runs}


def run_section(ctx: Context, *, devices: int, count: int, runs: int) -> dict[str, Any]:
    work = ctx.workdir / "analysis"
    work.mkdir(exist_ok=True)
    truth, alerts, image = work / "truth.parquet", work / "alerts.parquet", work / "plot.png"
    progress(f"analysis: making a truth of {devices} devices x {count} packets")
    began = time.perf_counter()
    messages = make_truth(truth, devices=devices, count=count)
    made_s = time.perf_counter() - began
    tesaiot = ["tesaiot"]
    steps = {
        "detect": [*tesaiot, "detect", str(truth), "--to", str(alerts), "--force", "--quiet"],
        "score": [*tesaiot, "score", str(truth), "--alerts", str(alerts), "--json"],
        "score_delivery": [*tesaiot, "score", str(truth), "--received", str(truth), "--json"],
        "plot": [*tesaiot, "plot", str(truth), "--alerts", str(alerts), "-o", str(image), "--force"],
    }
    result: dict[str, Any] = {"messages": messages, "devices": devices, "truth_bytes": truth.stat().st_size,
                              "truth_made_s": made_s}
    for name, argv in steps.items():
        progress(f"analysis: {name} ({runs} runs)")
        result[name] = repeat(argv, runs=runs, timeout=900)
    scored = subprocess.run(steps["score"], capture_output=True, timeout=900)
    if scored.returncode == 0:
        import json

        detection = json.loads(scored.stdout)["detection"]
        result["detector_scores"] = {k: detection[k] for k in ("events", "detected", "false_alarms", "precision",
                                                               "recall", "f1")}
    return result


def report(section: dict[str, Any]) -> None:
    say(f"## Section 7: detect, score and plot of {section['messages']:,} messages "
        f"({section['devices']} devices, truth {section['truth_bytes'] / 2**20:.1f} MiB)")
    table = Table(["command", "seconds (median)", "min-max", "msg/s", "peak RSS MiB"])
    labels = {"detect": "tesaiot detect REC --to ALERTS", "score": "tesaiot score TRUTH --alerts ALERTS",
              "score_delivery": "tesaiot score TRUTH --received TRUTH", "plot": "tesaiot plot TRUTH --alerts ALERTS"}
    for name, label in labels.items():
        data = section.get(name, {})
        if "error" in data:
            table.add(label, "error", data["error"], "", "")
            continue
        table.add(label, f"{data['seconds']:.1f}", f"{data['seconds_min']:.1f}-{data['seconds_max']:.1f}",
                  rate_text(section["messages"] / data["seconds"]), f"{data['peak_rss_mib']:.0f}")
    say(table.render())
    if "detector_scores" in section:
        s = section["detector_scores"]
        say(f"detector on this truth: {s['events']} events, {s['detected']} detected, {s['false_alarms']} false "
            f"alarms, precision {s['precision']:.3f}, recall {s['recall']:.3f}, F1 {s['f1']:.3f}")
    say()
