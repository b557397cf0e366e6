"""Section 2: replay fidelity, end to end, for tesaiot replay and mqtt-recorder's replay.

A synthetic DPS368 stream at exactly ``hz`` messages per second (payload ``seq`` i,
recorded at t0 + i / hz) is written as a tesaiot recording and as an mqtt-recorder CSV.
Each tool replays it (QoS 0) to the private broker, where ``mosquitto_sub -F '%U %p'``
stamps every message on arrival (CLOCK_REALTIME, ns). Message i is due at
``anchor + i / hz / speed``; its end-to-end lateness is ``arrival - due``. The anchor is
the earliest ``arrival_i - i / hz / speed`` over all messages, so the best-delivered
message has lateness 0 and start-up time is left out: lateness shows jitter and drift.
"end drift" is the lateness of the last message: how far behind schedule the replay ends.
tesaiot replay's own report (``--json``: send lateness p50/p99/max) is shown alongside.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib.common import PYTHON, Table, has_module, percentile, progress, say, stop_process, tesaiot_help
from benchlib.data import seq_of, stream, write_mqtt_recorder_csv, write_tesaiot_recording
from benchlib.record import Context

SUBSCRIBE_TIMEOUT_S = 20.0


def _cases(seconds: float, seconds_5x: float) -> list[dict[str, Any]]:
    return [
        {"name": "1 kHz at 1x", "hz": 1000, "speed": 1.0, "seconds": seconds},
        {"name": "10 kHz at 1x", "hz": 10000, "speed": 1.0, "seconds": seconds},
        {"name": "1 kHz at 5x", "hz": 1000, "speed": 5.0, "seconds": seconds_5x},
    ]


def measure(ctx: Context, *, key: str, argv: list[str], topic: str, count: int, hz: float, speed: float,
            case_id: str) -> dict[str, Any]:
    """Run one replay ``argv`` against a stamping sink on ``topic``; returns lateness statistics."""
    sink_file = ctx.workdir / f"replay-{case_id}-{key}.txt"
    client_id = f"bench-replay-sink-{case_id}-{key}"
    expected_s = (count - 1) / hz / speed  # first to last message
    with open(sink_file, "wb") as out:
        sink = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(ctx.broker.port), "-t", topic,
                                 "-q", "0", "-C", str(count), "-i", client_id, "-F", "%U %p"],
                                stdout=out, stderr=subprocess.DEVNULL)
    result: dict[str, Any] = {"tool": key, "count": count, "expected_s": expected_s}
    tool_out = b""
    try:
        ctx.broker.wait_subscribed(client_id, topic, timeout=SUBSCRIBE_TIMEOUT_S, process=sink)
        limit = expected_s * 3 + 30
        begin = time.monotonic()
        tool = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ctx.workdir)
        try:
            tool_out, _ = tool.communicate(timeout=limit)
            result["exit_code"] = tool.returncode
        except subprocess.TimeoutExpired:
            stop_process(tool)
            tool_out = tool.stdout.read() if tool.stdout else b""
            result["note"] = f"did not finish within {limit:.0f} s (stopped)"
            result["exit_code"] = tool.returncode
        result["wall_s"] = round(time.monotonic() - begin, 3)
        try:
            sink.wait(timeout=3)
        except subprocess.TimeoutExpired:
            pass
    finally:
        stop_process(sink, first=15)
    result.update(_lateness(sink_file, count=count, hz=hz, speed=speed))
    if key == "tesaiot":
        try:
            report = json.loads(tool_out.decode().strip().splitlines()[-1])
            result["own_lateness_ms"] = report.get("lateness_ms")
        except (ValueError, IndexError):
            result["own_lateness_ms"] = None
    sink_file.unlink(missing_ok=True)
    return result


def _lateness(path: Path, *, count: int, hz: float, speed: float) -> dict[str, Any]:
    arrivals: dict[int, int] = {}
    with open(path, "rb") as handle:
        for line in handle:
            stamp, _, body = line.partition(b" ")
            seq = seq_of(body)
            if seq is None or seq in arrivals:
                continue
            seconds, _, fraction = stamp.partition(b".")
            arrivals[seq] = int(seconds) * 1_000_000_000 + int(fraction.ljust(9, b"0")[:9] or b"0")
    if not arrivals:
        return {"received": 0, "lost": count}
    step_ns = 1e9 / hz / speed
    offsets = {seq: arrival - seq * step_ns for seq, arrival in arrivals.items()}
    anchor = min(offsets.values())
    late_ms = sorted((value - anchor) / 1e6 for value in offsets.values())
    last_seq = max(arrivals)
    return {
        "received": len(arrivals), "lost": count - len(arrivals),
        "lateness_ms": {"p50": percentile(late_ms, 0.5), "p99": percentile(late_ms, 0.99), "max": late_ms[-1]},
        "end_drift_ms": (offsets[last_seq] - anchor) / 1e6,
        "span_s": (max(arrivals.values()) - min(arrivals.values())) / 1e9,
    }


def run_section(ctx: Context, *, seconds: float, seconds_5x: float) -> dict[str, Any]:
    section: dict[str, Any] = {"cases": []}
    tesaiot = shutil.which("tesaiot")
    tesaiot_reason = None if tesaiot and tesaiot_help("replay") else "tesaiot replay not available"
    recorder_reason = None if has_module("mqtt_recorder") else "mqtt-recorder not installed"
    section["available"] = {"tesaiot": tesaiot_reason, "mqtt-recorder": recorder_reason}
    for index, case in enumerate(_cases(seconds, seconds_5x)):
        count = int(case["hz"] * case["seconds"])
        items = stream(count, case["hz"])
        entry: dict[str, Any] = dict(case, count=count, results={})
        case_id = f"c{index}"
        if tesaiot_reason is None:
            topic = f"device/bench-replay-{case_id}/telemetry"
            recording = _write_recording(ctx.workdir, case_id, items, topic)
            if isinstance(recording, str):
                entry["results"]["tesaiot"] = {"error": recording}
            else:
                argv = [tesaiot or "tesaiot", "replay", str(recording), "--speed", f"{case['speed']:g}x", "--json",
                        "--broker", ctx.broker.url, "--client-id", f"bench-replay-{case_id}"]
                entry["results"]["tesaiot"] = measure(ctx, key="tesaiot", argv=argv, topic=topic, count=count,
                                                      hz=case["hz"], speed=case["speed"], case_id=case_id)
                _unlink(recording)
        if recorder_reason is None:
            topic = f"device/bench-replay-{case_id}-mr/telemetry"
            csv_path = ctx.workdir / f"replay-{case_id}.csv"
            write_mqtt_recorder_csv(csv_path, items, topic=topic, speed=case["speed"])
            argv = [PYTHON, "-m", "mqtt_recorder", "--host", "127.0.0.1", "--port", str(ctx.broker.port),
                    "--mode", "replay", "--file", str(csv_path), "--client_id", f"bench-mr-replay-{case_id}"]
            # mqtt-recorder has no speed option: the CSV's gaps are divided by the speed instead.
            entry["results"]["mqtt-recorder"] = measure(ctx, key="mqtt-recorder", argv=argv, topic=topic,
                                                        count=count, hz=case["hz"], speed=case["speed"],
                                                        case_id=case_id)
            csv_path.unlink(missing_ok=True)
        for key, result in entry["results"].items():
            progress(f"replay {case['name']} {key}: {_short(result)}")
        section["cases"].append(entry)
    return section


def _write_recording(workdir: Path, case_id: str, items: list[tuple[int, bytes]], topic: str) -> Path | str:
    """A tesaiot recording of ``items`` (Parquet, else JSONL); an error text when neither writer works."""
    errors = []
    for suffix in (".parquet", ".jsonl"):
        path = workdir / f"replay-{case_id}{suffix}"
        try:
            write_tesaiot_recording(path, items, topic=topic)
            return path
        except Exception as exc:  # noqa: BLE001 - the format may not exist yet
            errors.append(f"{suffix}: {exc}")
            _unlink(path)
    return "cannot write a tesaiot recording (" + "; ".join(errors) + ")"


def _unlink(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _short(result: dict[str, Any]) -> str:
    if "error" in result:
        return str(result["error"])
    late = result.get("lateness_ms") or {}
    return (f"received {result.get('received')}/{result['count']}, p50 {_ms(late.get('p50'))} ms, "
            f"p99 {_ms(late.get('p99'))} ms, max {_ms(late.get('max'))} ms, end drift "
            f"{_ms(result.get('end_drift_ms'))} ms" + (f", {result['note']}" if result.get("note") else ""))


def report(section: dict[str, Any]) -> None:
    say("## 2. Replay fidelity: end-to-end lateness (ms) at the subscriber, QoS 0")
    table = Table(["case", "tool", "received", "p50", "p99", "max", "end drift", "span s (expected)",
                   "own p50/p99/max"])
    for case in section["cases"]:
        for key in ("tesaiot", "mqtt-recorder"):
            reason = section["available"].get(key)
            if reason:
                table.add(case["name"], key, "not available", "", "", "", "", "", reason)
                continue
            result = case["results"].get(key, {})
            if "error" in result:
                table.add(case["name"], key, "error", "", "", "", "", "", result["error"][:60])
                continue
            late = result.get("lateness_ms") or {}
            own = result.get("own_lateness_ms") or {}
            own_text = "/".join(_ms(own.get(k)) for k in ("p50", "p99", "max")) if own else ""
            span = result.get("span_s")
            table.add(case["name"], key, f"{result.get('received')}/{result['count']}", _ms(late.get("p50")),
                      _ms(late.get("p99")), _ms(late.get("max")), _ms(result.get("end_drift_ms")),
                      f"{span:.3f} ({result['expected_s']:.3f})" if span is not None else "n/a", own_text)
    say(table.render())
    say("(lateness is measured from the best-delivered message; 'own' is tesaiot replay's reported send lateness)")
    say()
