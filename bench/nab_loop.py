#!/usr/bin/env python3
"""The whole NAB loop over MQTT, with the real CLI: NAB's score of ``tesaiot detect --field value``.

    corpus --convert --from nab--> nab.parquet --replay --speed max--> mosquitto (loopback)
        --> live tesaiot detect -t 'nab/#' --field value --> device/<id>/alerts
        --> tesaiot record alerts.parquet --> tesaiot score nab.parquet --alerts alerts.parquet --nab

    bench/nab_loop.py --corpus ../shared/nab            # the whole corpus (58 series)
    bench/nab_loop.py --corpus ../shared/nab --only realKnownCause --json

A private mosquitto on a free 127.0.0.1 port (``max_queued_messages`` raised: the detector may
be slower than the replay for a while). Every step's wall time and peak RSS (``/usr/bin/time``'s
``%M``), the live alerts compared with ``detect --to`` on the same recording (they must be the
same), and the score. Exit 1 when a step fails, a message is lost or the live alerts differ.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import BenchError, Broker, stop_process  # noqa: E402

STEP_TIMEOUT_S = 1800.0


def tesaiot() -> list[str]:
    return [sys.executable, "-m", "tesaiot_cli"]


def timed(argv: list[str], work: Path, name: str) -> list[str]:
    """``argv`` under ``/usr/bin/time`` writing wall seconds and peak RSS (KiB) to ``work/name.time``."""
    if not Path("/usr/bin/time").exists():
        return argv
    return ["/usr/bin/time", "-o", str(work / f"{name}.time"), "-f", "%e %M", *argv]


def cost(work: Path, name: str) -> dict[str, float]:
    path = work / f"{name}.time"
    if not path.exists():
        return {}
    wall, rss = path.read_text().split()[-2:]
    return {"seconds": float(wall), "peak_rss_mib": round(int(rss) / 1024, 1)}


def interrupt(process: subprocess.Popen[str], *, timeout: float = 30.0) -> int:
    """Ctrl+C for a command started in its own session under ``/usr/bin/time`` (which ignores
    SIGINT itself): the signal goes to the whole group; SIGKILL if it does not end in time."""
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return process.wait(timeout=10)


def check(result: subprocess.CompletedProcess[str], what: str) -> None:
    if result.returncode != 0:
        raise BenchError(f"{what} exited {result.returncode}: {result.stderr.strip()[-500:]}")


def count_messages(path: Path) -> int:
    result = subprocess.run([*tesaiot(), "info", str(path), "--json"], capture_output=True, text=True, check=False)
    check(result, "info")
    return int(json.loads(result.stdout)["messages"])


def payloads(path: Path) -> list[bytes]:
    from tesaiot_cli.recording import open_reader

    with open_reader(path) as reader:
        return sorted(m.payload for m in reader)


def run_loop(corpus: Path, work: Path, *, only: str | None) -> dict[str, Any]:
    data = corpus / "data" if only is None else corpus / "data" / only
    truth, alerts, offline = work / "nab.parquet", work / "alerts.parquet", work / "offline.parquet"
    steps: dict[str, Any] = {}
    begin = time.monotonic()
    check(subprocess.run(timed([*tesaiot(), "convert", "--from", "nab", str(data), str(truth),
                                "--labels", str(corpus / "labels" / "combined_windows.json")], work, "convert"),
                         capture_output=True, text=True, check=False), "convert")
    steps["convert"] = cost(work, "convert")
    readings = count_messages(truth)
    broker = Broker(work / "broker")
    broker.start()
    record = detect = None
    try:
        record = subprocess.Popen(timed([*tesaiot(), "record", str(alerts), "-b", broker.url, "-t", "device/+/alerts",
                                         "--qos", "1", "--client-id", "nab-loop-record"], work, "record"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
        broker.wait_subscribed("nab-loop-record", "device/+/alerts", timeout=30, process=None)
        detect = subprocess.Popen(timed([*tesaiot(), "detect", "-b", broker.url, "-t", "nab/#", "--field", "value",
                                         "--qos", "1", "--count", str(readings), "--client-id", "nab-loop-detect"],
                                        work, "detect"),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        broker.wait_subscribed("nab-loop-detect", "nab/#", timeout=30, process=None)
        mark = broker.mark()
        loop_started = time.monotonic()
        replay = subprocess.run(timed([*tesaiot(), "replay", str(truth), "-b", broker.url, "--speed", "max",
                                       "--qos", "1"], work, "replay"),
                                capture_output=True, text=True, check=False, timeout=STEP_TIMEOUT_S)
        check(replay, "replay")
        steps["replay"] = cost(work, "replay")
        _out, detect_err = detect.communicate(timeout=STEP_TIMEOUT_S)
        steps["detect"] = cost(work, "detect") | {"after_replay_s": round(time.monotonic() - loop_started
                                                                          - steps["replay"].get("seconds", 0), 1)}
        if detect.returncode != 0:
            raise BenchError(f"detect exited {detect.returncode}: {detect_err.strip()[-500:]}")
        time.sleep(1.0)  # the last alerts reach the recorder
        code = interrupt(record)
        record_err = record.stderr.read() if record.stderr else ""
        if code != 0:
            raise BenchError(f"record exited {code}: {record_err.strip()[-500:]}")
        steps["record"] = cost(work, "record")
        broker_warnings = broker.warnings_since(mark)
    finally:
        if detect is not None and detect.poll() is None:
            stop_process(detect)
        if record is not None and record.poll() is None:
            interrupt(record)
        broker.stop()
    loop_s = time.monotonic() - begin
    check(subprocess.run(timed([*tesaiot(), "detect", str(truth), "--to", str(offline), "--field", "value"],
                               work, "detect-offline"), capture_output=True, text=True, check=False), "detect --to")
    steps["detect_offline"] = cost(work, "detect-offline")
    score = subprocess.run(timed([*tesaiot(), "score", str(truth), "--alerts", str(alerts), "--nab", "--json"],
                                 work, "score"), capture_output=True, text=True, check=False)
    check(score, "score")
    steps["score"] = cost(work, "score")
    nab = json.loads(score.stdout)["nab"]
    live, expected = payloads(alerts), payloads(offline)
    return {"readings": readings, "alerts": len(live), "offline_alerts": len(expected),
            "live_equals_offline": live == expected, "broker_warnings": broker_warnings,
            "detect_summary": detect_err.strip().splitlines()[-1] if detect_err.strip() else "",
            "loop_s": round(loop_s, 1), "steps": steps,
            "score": {name: nab[name]["score"] for name in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")},
            "standard": {key: nab["standard"][key] for key in ("tp", "fp", "fn")}, "windows": nab["windows"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/nab"), help="NAB's data/ and labels/")
    parser.add_argument("--only", metavar="SUBDIR", help="a part of data/ (e.g. realKnownCause)")
    parser.add_argument("--work", type=Path, help="keep the files here (default: a temporary directory)")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of the text")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="nab-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run_loop(args.corpus, work, only=args.only)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"nab_loop: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        score = result["score"]
        print(f"{result['readings']:,} readings, {result['windows']} windows: {result['alerts']} alerts through MQTT "
              f"({result['offline_alerts']} offline; the same: {result['live_equals_offline']})")
        print(f"NAB standard {score['standard']:.2f}, reward_low_FP_rate {score['reward_low_FP_rate']:.2f}, "
              f"reward_low_FN_rate {score['reward_low_FN_rate']:.2f} (standard: {result['standard']})")
        print(f"loop {result['loop_s']} s; " + "; ".join(
            f"{name} {step.get('seconds', '?')} s {step.get('peak_rss_mib', '?')} MiB"
            for name, step in result["steps"].items()))
        print(f"detect: {result['detect_summary']}")
        for line in result["broker_warnings"]:
            print(f"broker: {line}")
    return 0 if result["live_equals_offline"] and not result["broker_warnings"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
