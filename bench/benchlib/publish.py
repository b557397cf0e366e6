"""Section 3: publish throughput, QoS 0 and QoS 1.

Each publisher sends N DPS368-like messages as fast as it can to the private broker; a
``mosquitto_sub -C N -F %U`` sink stamps every arrival. Throughput is what the sink saw:
``(received - 1) / (last arrival - first arrival)`` msg/s, so process start-up and
connecting are left out (``wall`` includes them). A run passes only when every message
arrived. The C paced publisher at rate 0 (flat out) shows the broker's ceiling here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from benchlib.common import (
    BENCH_DIR,
    PYTHON,
    Table,
    progress,
    rate_text,
    ratio_text,
    say,
    stop_process,
    tesaiot_help,
)
from benchlib.data import stream, write_lines
from benchlib.record import Context
from benchlib.replay import _unlink, _write_recording

SUBSCRIBE_TIMEOUT_S = 20.0
WINDOW = 1000


def _publishers(ctx: Context, *, qos: int, count: int, topic: str, trial: str, recording: Path | str | None,
                lines: Path) -> list[dict[str, Any]]:
    """Name, argv (or why not available), stdin file for each publisher."""
    url, port = ctx.broker.url, str(ctx.broker.port)
    tesaiot = shutil.which("tesaiot") or "tesaiot"
    entries: list[dict[str, Any]] = []
    simulate_help = tesaiot_help("simulate")
    if simulate_help:
        argv = [tesaiot, "simulate", "--interval", "0", "--count", str(count), "--qos", str(qos),
                "--anomaly-every", "0", "--seed", "1", "--topic", topic, "--broker", url,
                "--client-id", f"bench-sim-{trial}"]
        if "--quiet" in simulate_help:
            argv.append("--quiet")
        entries.append({"key": "tesaiot-simulate", "label": "tesaiot simulate --interval 0", "argv": argv})
    else:
        entries.append({"key": "tesaiot-simulate", "label": "tesaiot simulate --interval 0",
                        "unavailable": "tesaiot simulate not available"})
    replay_help = tesaiot_help("replay")
    if not replay_help:
        entries.append({"key": "tesaiot-replay", "label": "tesaiot replay --speed max",
                        "unavailable": "tesaiot replay not available"})
    elif isinstance(recording, str) or recording is None:
        entries.append({"key": "tesaiot-replay", "label": "tesaiot replay --speed max",
                        "unavailable": recording or "no recording"})
    else:
        entries.append({"key": "tesaiot-replay", "label": "tesaiot replay --speed max",
                        "argv": [tesaiot, "replay", str(recording), "--speed", "max", "--qos", str(qos),
                                 "--quiet", "--topic-prefix", topic + "/", "--broker", url,
                                 "--client-id", f"bench-rep-{trial}"],
                        "topic": topic + "/device/bench-pubsrc/telemetry"})
        # The same on paho's public path: what a paho the session does not recognise gets.
        entries.append({"key": "tesaiot-replay-public", "label": "tesaiot replay --speed max (paho public path)",
                        "argv": [tesaiot, "replay", str(recording), "--speed", "max", "--qos", str(qos),
                                 "--quiet", "--topic-prefix", topic + "/", "--broker", url,
                                 "--client-id", f"bench-repp-{trial}"],
                        "env": {"TESAIOT_PAHO_PATH": "public"},
                        "topic": topic + "/device/bench-pubsrc/telemetry"})
    for mode in ("window", "naive"):
        entries.append({"key": f"paho-{mode}",
                        "label": f"raw paho ({'window' if mode == 'window' else 'naive loop, queue'} {WINDOW})",
                        "argv": [PYTHON, str(BENCH_DIR / "paho_pub.py"), "--port", port, "--topic", topic,
                                 "--qos", str(qos), "--count", str(count), "--mode", mode, "--window", str(WINDOW)]})
    if shutil.which("mosquitto_pub"):
        entries.append({"key": "mosquitto_pub", "label": "mosquitto_pub -l (C)",
                        "argv": ["mosquitto_pub", "-h", "127.0.0.1", "-p", port, "-t", topic, "-q", str(qos), "-l",
                                 "-i", f"bench-mpub-{trial}"],
                        "stdin": lines})
    else:
        entries.append({"key": "mosquitto_pub", "label": "mosquitto_pub -l (C)",
                        "unavailable": "mosquitto_pub not found"})
    entries.append({"key": "pacedpub-max", "label": "bench/pacedpub -r 0 (C, ceiling)",
                    "argv": ctx.publisher.argv(topic=topic, rate=0, count=count, qos=qos,
                                               client_id=f"bench-pp-{trial}")})
    return entries


def measure(ctx: Context, entry: dict[str, Any], *, qos: int, count: int, topic: str, trial: str) -> dict[str, Any]:
    topic = entry.get("topic", topic)
    sink_file = ctx.workdir / f"publish-{trial}.txt"
    client_id = f"bench-pub-sink-{trial}"
    result: dict[str, Any] = {"count": count, "qos": qos}
    with open(sink_file, "wb") as out:
        sink = subprocess.Popen(["mosquitto_sub", "-h", "127.0.0.1", "-p", str(ctx.broker.port), "-t", topic,
                                 "-q", str(qos), "-C", str(count), "-i", client_id, "-F", "%U"],
                                stdout=out, stderr=subprocess.DEVNULL)
    out_text = b""
    try:
        ctx.broker.wait_subscribed(client_id, topic, timeout=SUBSCRIBE_TIMEOUT_S, process=sink)
        limit = 60 + count / 1000
        stdin = open(entry["stdin"], "rb") if entry.get("stdin") else None
        begin = time.monotonic()
        try:
            env = {**os.environ, **entry["env"]} if entry.get("env") else None
            process = subprocess.Popen(entry["argv"], stdin=stdin or subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.DEVNULL, cwd=ctx.workdir, env=env)
        finally:
            if stdin is not None:
                stdin.close()
        try:
            out_text, _ = process.communicate(timeout=limit)
        except subprocess.TimeoutExpired:
            stop_process(process)
            result["note"] = f"did not finish within {limit:.0f} s (stopped)"
        result["wall_s"] = round(time.monotonic() - begin, 3)
        result["exit_code"] = process.returncode
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    except Exception as exc:  # noqa: BLE001 - one failed run must not end the benchmark
        result["error"] = str(exc)
    finally:
        stop_process(sink, first=15)
    stamps = []
    for line in sink_file.read_bytes().splitlines():
        seconds, _, fraction = line.partition(b".")
        try:
            stamps.append(int(seconds) * 1_000_000_000 + int(fraction.ljust(9, b"0")[:9] or b"0"))
        except ValueError:
            continue
    sink_file.unlink(missing_ok=True)
    result["received"] = len(stamps)
    if len(stamps) > 1 and stamps[-1] > stamps[0]:
        result["rate"] = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
    if entry["key"].startswith("paho"):
        try:
            result["client"] = json.loads(out_text.decode().strip().splitlines()[-1])
            result["rejected"] = result["client"].get("rejected")
        except (ValueError, IndexError):
            pass
    return result


def run_section(ctx: Context, *, count: int) -> dict[str, Any]:
    section: dict[str, Any] = {"count": count, "window": WINDOW, "qos0": {}, "qos1": {}, "labels": {}}
    source = stream(count, 1000.0, device="bench-pubsrc")
    lines = ctx.workdir / "publish-lines.txt"
    write_lines(lines, source)
    recording: Path | str | None = None
    if tesaiot_help("replay"):
        recording = _write_recording(ctx.workdir, "publish", source, "device/bench-pubsrc/telemetry")
    del source
    trial = 0
    keys = [e["key"] for e in _publishers(ctx, qos=0, count=count, topic="t", trial="0", recording=recording,
                                          lines=lines)]
    for qos in (0, 1):
        for key in keys:
            trial += 1
            topic = f"bench-pub-{trial}"
            entry = {e["key"]: e for e in _publishers(ctx, qos=qos, count=count, topic=topic, trial=str(trial),
                                                      recording=recording, lines=lines)}[key]
            section["labels"][key] = entry["label"]
            if "unavailable" in entry:
                section[f"qos{qos}"][key] = {"unavailable": entry["unavailable"]}
                continue
            result = measure(ctx, entry, qos=qos, count=count, topic=topic, trial=str(trial))
            section[f"qos{qos}"][key] = result
            progress(f"publish qos{qos} {key}: {rate_text(result.get('rate'))}/s, received "
                     f"{result['received']}/{count}" + (f", {result['note']}" if result.get("note") else ""))
    lines.unlink(missing_ok=True)
    if isinstance(recording, Path):
        _unlink(recording)
    return section


def report(section: dict[str, Any]) -> None:
    say(f"## 3. Publish throughput: {section['count']} messages, msg/s as seen by a subscriber")
    for qos in (0, 1):
        results = section[f"qos{qos}"]
        paho = results.get("paho-window", {}).get("rate")
        table = Table([f"QoS {qos}", "msg/s", "vs paho window", "received", "rejected", "wall s"])
        for key, result in results.items():
            label = section["labels"].get(key, key)
            if "unavailable" in result:
                table.add(label, "not available", "", "", "", result["unavailable"])
                continue
            complete = result["received"] == result["count"]
            rate = result.get("rate")
            table.add(label, rate_text(rate) + ("" if complete else " (incomplete)"), ratio_text(rate, paho),
                      f"{result['received']}/{result['count']}",
                      "" if result.get("rejected") is None else result["rejected"], result.get("wall_s", ""))
        say(table.render())
        say()
