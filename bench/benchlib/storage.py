"""Section 4: storage, bytes per message of each recorder for the same DPS368 stream.

tesaiot record (Parquet), tesaiot record (JSONL) and mqtt-recorder (CSV) subscribe at the
same time, with a ``mosquitto_sub -F %l`` that logs each payload's length; bench/pacedpub
then sends N messages at a rate all of them keep up with (QoS 0). Bytes per message is
the output's size on disk divided by the messages it holds.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from benchlib.common import Table, progress, say
from benchlib.record import Context
from benchlib.subscribers import MosquittoSub, MqttRecorder, Running, SubscriberTool, TesaiotRecord

RATE = 2000
SUBSCRIBE_TIMEOUT_S = 20.0


def disk_bytes(path: Path) -> int:
    """Size of a recording: the file, or every file under it (an unsealed Parquet directory)."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    if path.exists():
        return path.stat().st_size
    partial = path.with_name(path.name + ".partial")
    return disk_bytes(partial) if partial.exists() else 0


def run_section(ctx: Context, *, count: int) -> dict[str, Any]:
    tools: list[SubscriberTool] = [TesaiotRecord("parquet"), TesaiotRecord("jsonl"), MqttRecorder()]
    lengths = MosquittoSub()
    topic = "device/bench-storage/telemetry"
    section: dict[str, Any] = {"count": count, "rate": RATE, "results": {}, "labels": {}}
    running: list[Running] = []
    workdir = ctx.workdir / "storage"
    workdir.mkdir(exist_ok=True)
    try:
        for tool in [*tools, lengths]:
            section["labels"][tool.key] = tool.label
            reason = tool.unavailable()
            if reason:
                section["results"][tool.key] = {"unavailable": reason}
                continue
            client_id = f"bench-storage-{tool.key}"
            job = tool.start(ctx.broker, topic=topic, qos=0, count=count, client_id=client_id, workdir=workdir)
            running.append(job)
            ctx.broker.wait_subscribed(client_id, topic, timeout=SUBSCRIBE_TIMEOUT_S, process=job.process)
        time.sleep(0.1)
        pub = ctx.publisher.run(topic=topic, rate=RATE, count=count, qos=0, device="bench-storage",
                                timeout=count / RATE * 3 + 30)
        section["publisher"] = pub.data
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(job.poll_done() for job in running):
            time.sleep(0.05)
    except Exception as exc:  # noqa: BLE001 - report what could be measured
        section["error"] = str(exc)
    finally:
        for job in running:
            job.finish()
    for job in running:
        if job.tool is lengths:
            sizes = [int(line) for line in job.output.read_text().split() if line.isdigit()]
            section["payload_bytes_mean"] = sum(sizes) / len(sizes) if sizes else None
            continue
        size = disk_bytes(job.output)
        section["results"][job.tool.key] = {
            "messages": job.received, "bytes": size,
            "bytes_per_message": size / job.received if job.received else None,
        }
        progress(f"storage {job.tool.key}: {size} bytes for {job.received} messages")
    shutil.rmtree(workdir, ignore_errors=True)
    return section


def report(section: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    payload = section.get("payload_bytes_mean")
    say(f"## 4. Storage: bytes per message, {section['count']} DPS368 messages"
        + (f" (payload {payload:.1f} bytes on average)" if payload else ""))
    table = Table(["format", "messages", "bytes", "bytes/message", "vs payload", "vs CSV"])
    csv = (section["results"].get("mqtt-recorder") or {}).get("bytes_per_message")
    for key, result in section["results"].items():
        label = section["labels"].get(key, key)
        if "unavailable" in result:
            table.add(label, "not available", "", "", "", result["unavailable"])
            continue
        per = result["bytes_per_message"]
        table.add(label, result["messages"], result["bytes"], f"{per:.1f}" if per else "n/a",
                  f"{per / payload:.2f}x" if per and payload else "n/a", f"{per / csv:.2f}x" if per and csv else "n/a")
    say(table.render())
    if section.get("error"):
        say(f"(error: {section['error']})")
    say()
