"""The tesaiot benchmark: record, replay fidelity, publish throughput, storage, start-up and memory,
and scaling the recorder out over processes.

Run it through ``bench/run`` (which prepares the venv and compiles bench/pacedpub.c);
see docs/benchmarks.md for what each section measures. It starts its own mosquitto on a
free loopback port, prints a report on stdout (progress on stderr) and writes the
results to bench/results/<date>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (  # noqa: E402
    analysis,
    export,
    fleet,
    publish,
    record,
    replay,
    scaling,
    selection,
    startup,
    storage,
    watch,
)
from benchlib.common import (  # noqa: E402
    BENCH_DIR,
    MAX_INFLIGHT_MESSAGES,
    MAX_QUEUED_MESSAGES,
    Broker,
    PacedPublisher,
    Table,
    progress,
    run,
    say,
)

SECTIONS = ("record", "replay", "publish", "storage", "startup", "scaling", "analysis", "export", "fleet",
            "selection", "watch")

FULL: dict[str, Any] = {
    "ladder": [5000, 10000, 20000, 30000, 40000, 50000, 60000, 80000, 100000],
    "record_duration": 3.0, "retries": 1, "record_budget_s": 360,
    "replay_seconds": 5.0, "replay_5x_seconds": 10.0,
    "publish_count": 50_000,
    "storage_count": 10_000,
    "memory_count": 1_000_000,
    "startup_runs": 21,
    "scaling_ladder": [20000, 40000, 60000, 80000, 100000, 120000], "scaling_duration": 2.0,
    "scaling_budget_s": 110,
    "analysis_devices": 100, "analysis_count": 10_500, "analysis_runs": 3,
    "export_count": 1_000_000, "export_runs": 3,
    "selection_count": 1_000_000, "selection_runs": 3,
    "fleet_ladder": [10000, 20000, 30000, 50000, 75000, 100000], "fleet_baseline_ladder": [5000, 10000],
    "fleet_duration": 12.0, "fleet_qos": [1, 0],
    "fleet_per_device_ladder": [300, 1000, 2000, 5000, 10000], "fleet_hold": 60.0, "fleet_connect_rate": 1000.0,
    "fleet_budget_s": 1500,
    "watch_devices": 10_000, "watch_warmup_s": 12.0, "watch_window_s": 20.0,
}
QUICK: dict[str, Any] = {
    "ladder": [2000, 5000, 10000],
    "record_duration": 1.0, "retries": 0, "record_budget_s": 120,
    "replay_seconds": 1.0, "replay_5x_seconds": 2.0,
    "publish_count": 10_000,
    "storage_count": 5_000,
    "memory_count": 50_000,
    "startup_runs": 5,
    "scaling_ladder": [5000, 10000], "scaling_duration": 1.0, "scaling_budget_s": 60,
    "analysis_devices": 10, "analysis_count": 5_000, "analysis_runs": 1,
    "export_count": 50_000, "export_runs": 2,
    "selection_count": 50_000, "selection_runs": 1,
    "fleet_ladder": [2000, 10000], "fleet_baseline_ladder": [2000, 10000], "fleet_duration": 11.0, "fleet_qos": [1],
    "fleet_per_device_ladder": [300, 1000], "fleet_hold": 11.0, "fleet_connect_rate": 1000.0, "fleet_budget_s": 240,
    "watch_devices": 2_000, "watch_warmup_s": 6.0, "watch_window_s": 6.0,
}


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("tesaiot-cli", "paho-mqtt", "pyarrow", "typer", "orjson", "mqtt-recorder", "duckdb", "mcap"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    out = run([mosquitto, "-h"], timeout=10).stdout.decode(errors="replace").splitlines()
    found["mosquitto"] = out[0].replace("mosquitto version", "").strip() if out else None
    return found


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": os.cpu_count(), "kernel": platform.release(), "arch": platform.machine()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["memory_gib"] = round(int(line.split()[1]) / 1024 / 1024, 1)
        info["loadavg_at_start"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    return info


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: bench/run --quick --only record,storage")
    parser.add_argument("--pacedpub", required=True, help="the compiled bench/pacedpub.c (bench/run builds it)")
    parser.add_argument("--quick", action="store_true", help="short smoke run: small rates and counts")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default: all): {', '.join(SECTIONS)}")
    parser.add_argument("--ladder", help="record section: comma-separated rates to try, msg/s (overrides the plan)")
    parser.add_argument("--duration", type=float, help="record section: seconds per trial (overrides the plan)")
    parser.add_argument("--tools", help="record section: comma-separated recorders to run (default: all): "
                        "tesaiot-parquet, tesaiot-jsonl, tesaiot-parquet-public (paho public path), tesaiot-detect, "
                        "paho, mosquitto_sub, mqtt-recorder; and, only when named, tesaiot-parquet-s3 (to "
                        "s3:// on a moto server on loopback)")
    parser.add_argument("--qos", help="record section: QoS levels to run, comma-separated (default: 0,1)")
    parser.add_argument("--numbered-pair", action="store_true",
                        help="record section: run each tool again right after itself at every rung (key "
                             "TOOL+seq), fed payloads that carry tesaiot's sequence numbers (seq and boot)")
    parser.add_argument("--fleet-baseline", default=fleet.DEFAULT_BASELINE,
                        help="fleet section: the git ref of 'today's build' run beside this one "
                        f"(default {fleet.DEFAULT_BASELINE}, the commit before the fleet work)")
    parser.add_argument("--fleet-ladder", help="fleet section: comma-separated fleet sizes on one connection, or none")
    parser.add_argument("--fleet-per-device",
                        help="fleet section: comma-separated per-device connection counts, or none")
    parser.add_argument("--fleet-qos", help="fleet section: QoS levels of the one-connection part (default 1,0)")
    parser.add_argument("--fleet-all-rungs", action="store_true",
                        help="fleet section: run every one-connection rung, past the first that fails (CPU per "
                        "message of each size on a shared machine)")
    parser.add_argument("--fleet-hold", type=float, help="fleet section: seconds the per-device connections are held")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results",
                        help="directory for the JSON results (default: bench/results)")
    args = parser.parse_args(argv)
    args.sections = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    try:
        args.ladder = sorted(int(float(x)) for x in args.ladder.split(",")) if args.ladder else None
    except ValueError:
        parser.error(f"invalid --ladder {args.ladder!r}: give rates like 5000,10000,20000")
    args.tools = [name.strip() for name in args.tools.split(",") if name.strip()] if args.tools else None
    try:
        args.qos = tuple(int(x) for x in args.qos.split(",")) if args.qos else (0, 1)
    except ValueError:
        parser.error(f"invalid --qos {args.qos!r}: give 0, 1 or 0,1")
    if not args.qos or any(q not in (0, 1) for q in args.qos):
        parser.error("--qos takes 0, 1 or 0,1")
    if args.duration is not None and not 0.2 <= args.duration <= 60:
        parser.error("--duration must be between 0.2 and 60 seconds")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    plan: dict[str, Any] = dict(QUICK if args.quick else FULL)
    if args.ladder:
        plan["ladder"] = args.ladder
    if args.duration:
        plan["record_duration"] = args.duration
    if args.fleet_ladder:
        if args.fleet_ladder == "none":  # skip the one-connection part (both builds)
            plan["fleet_ladder"], plan["fleet_baseline_ladder"] = [], []
        else:
            plan["fleet_ladder"] = [int(x) for x in args.fleet_ladder.split(",")]
    if args.fleet_per_device:
        plan["fleet_per_device_ladder"] = ([] if args.fleet_per_device == "none"
                                           else [int(x) for x in args.fleet_per_device.split(",")])
    if args.fleet_qos:
        plan["fleet_qos"] = [int(x) for x in args.fleet_qos.split(",")]
    if args.fleet_hold:
        plan["fleet_hold"] = min(max(args.fleet_hold, 5.0), 300.0)
    started = time.monotonic()
    now = datetime.now(UTC)
    results: dict[str, Any] = {
        "date": now.isoformat(timespec="seconds"), "mode": "quick" if args.quick else "full",
        "sections_run": args.sections, "plan": plan, "versions": versions(), "machine": machine(),
        "broker_config": {"max_queued_messages": MAX_QUEUED_MESSAGES, "max_inflight_messages": MAX_INFLIGHT_MESSAGES,
                          "set_tcp_nodelay": True, "persistence": False},
        "goals": [],
    }
    say(f"# tesaiot benchmark, {results['date']} ({results['mode']} run)")
    say(f"machine: {results['machine'].get('cpu')}, {results['machine']['nproc']} cores, "
        f"{results['machine'].get('memory_gib')} GiB; load at start {results['machine'].get('loadavg_at_start')}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v))
    say()
    with tempfile.TemporaryDirectory(prefix="tesaiot-bench-") as tmp:
        workdir = Path(tmp)
        broker = Broker(workdir / "broker")
        broker.start()
        progress(f"mosquitto on {broker.url} (config {broker.directory / 'mosquitto.conf'})")
        publisher = PacedPublisher(args.pacedpub, broker)
        ctx = record.Context(broker, publisher, workdir)
        steps: list[tuple[str, str, Callable[[], Any], Callable[[Any], Any]]] = [
            ("record", "section 1: record",
             lambda: record.run_section(ctx, ladder=plan["ladder"], duration=plan["record_duration"],
                                        retries=plan["retries"], budget_s=plan["record_budget_s"],
                                        qos_levels=args.qos, tool_keys=args.tools,
                                        numbered_pair=args.numbered_pair),
             lambda section: results["goals"].extend(record.report(section))),
            ("replay", "section 2: replay fidelity",
             lambda: replay.run_section(ctx, seconds=plan["replay_seconds"], seconds_5x=plan["replay_5x_seconds"]),
             replay.report),
            ("publish", "section 3: publish throughput",
             lambda: publish.run_section(ctx, count=plan["publish_count"]), publish.report),
            ("storage", "section 4: storage",
             lambda: storage.run_section(ctx, count=plan["storage_count"]), storage.report),
            ("startup", "section 5: start-up and memory",
             lambda: startup.run_section(ctx, runs=plan["startup_runs"], memory_count=plan["memory_count"],
                                         record_results=results.get("record")),
             startup.report),
            ("scaling", "section 6: scaling record out (--workers 1, 2, 4)",
             lambda: scaling.run_section(ctx, ladder=plan["scaling_ladder"], duration=plan["scaling_duration"],
                                         budget_s=plan["scaling_budget_s"]),
             scaling.report),
            ("analysis", "section 7: detect, score and plot of a large truth",
             lambda: analysis.run_section(ctx, devices=plan["analysis_devices"], count=plan["analysis_count"],
                                          runs=plan["analysis_runs"]),
             analysis.report),
            ("export", "section 8: export vs DuckDB, info with values",
             lambda: export.run_section(ctx, count=plan["export_count"], runs=plan["export_runs"]),
             lambda section: results["goals"].extend(export.report(section))),
            ("fleet", "section 9: simulate fleets (one connection; one connection per device)",
             lambda: fleet.run_section(
                 broker, workdir, ladder=plan["fleet_ladder"], baseline_ladder=plan["fleet_baseline_ladder"],
                 duration=plan["fleet_duration"], qos_levels=tuple(plan["fleet_qos"]),
                 per_device_ladder=plan["fleet_per_device_ladder"], hold=plan["fleet_hold"],
                 connect_rate=plan["fleet_connect_rate"], baseline_ref=args.fleet_baseline,
                 budget_s=plan["fleet_budget_s"], all_rungs=args.fleet_all_rungs),
             lambda section: results["goals"].extend(fleet.report(section))),
            ("selection", "section 11: readers that take the selection (replay --start, info --summary)",
             lambda: selection.run_section(ctx, count=plan["selection_count"], runs=plan["selection_runs"]),
             lambda section: results["goals"].extend(selection.report(section))),
            ("watch", "section 12: watch at fleet scale, beside listen --json",
             lambda: watch.run_section(broker, devices=plan["watch_devices"], warmup_s=plan["watch_warmup_s"],
                                       window_s=plan["watch_window_s"]),
             watch.report),
        ]
        try:
            for name, title, measure, show in steps:
                if name not in args.sections:
                    continue
                progress(title)
                if not broker.alive():
                    broker.start()  # it died in an earlier section: a fresh one, on a new port
                    progress(f"mosquitto restarted on {broker.url}")
                try:
                    results[name] = measure()
                    show(results[name])
                except Exception as exc:  # noqa: BLE001 - one broken section must not lose the others
                    results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                    say(f"## {title}: FAILED ({type(exc).__name__}: {exc})")
                    say()
        except KeyboardInterrupt:
            results["interrupted"] = True
            say("interrupted: writing what was measured so far")
        finally:
            broker.stop()
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    if results["goals"]:
        say("## Goals")
        table = Table(["goal", "met", "detail"])
        for goal in results["goals"]:
            met = {True: "yes", False: "NO", None: "n/a"}[goal["met"]]
            table.add(goal["goal"], met, goal["detail"])
        say(table.render())
        say()
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / f"{now.strftime('%Y-%m-%dT%H%M%SZ')}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    say(f"whole run: {results['elapsed_s']:.0f} s; results in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
