"""Micro-benchmark of the recording writers' own cost, for two source trees side by side.

    .venv/bin/python bench/writer_micro.py --tree before=/path/to/old --tree after=. [--messages 200000]

Each trial runs in a fresh interpreter with ``PYTHONPATH`` set to one tree: it builds
``--messages`` DPS368-like messages (not timed), then times ``write`` for every message,
a ``flush`` every ``--batch`` messages (the flusher's drain: columns, Arrow/JSON, fsync)
and ``close`` (seal), with ``crash_safe`` as ``record`` uses it. Trials alternate between
the trees (paired runs); the report gives per-tree medians of CPU time (process time:
less sensitive to a busy machine than wall time) and wall time, and the median of the
paired ratios against the first tree. ``--properties`` also runs the last tree with
MQTT 5 properties on every message (trees that know ``PublishProperties``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRIAL = r"""
import json, os, sys, time
from pathlib import Path
from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_writer
fmt, n, batch, with_props, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1", sys.argv[5]
props = None
if with_props:
    from tesaiot_cli.message import PublishProperties
    props = PublishProperties(1, 3600, "application/json", "device/d/reply", b"corr-0001", (("site", "lab-1"),))
t0 = 1_795_335_896_055_689_123
messages = []
for i in range(n):
    device = f"infineon-sensor-{i % 50:02d}"
    payload = ('{"timestamp": "2026-11-22T08:24:56.%06d+00:00", "device_id": "%s", "sensor_type": "DPS368", '
               '"data": {"pressure": %.2f, "temperature": %.2f}}' % (i % 1000000, device, 1000 + i % 97 / 7,
                                                                     20 + i % 31 / 3)).encode()
    m = Message(f"device/{device}/telemetry", payload, 1, False, t0 + i * 20_000)
    messages.append(m._replace(properties=props) if with_props else m)
path = Path(out) / f"w.{fmt}"
cpu, wall = time.process_time(), time.perf_counter()
writer = open_writer(path, metadata=RecordingMetadata(), crash_safe=True)
write = writer.write
for start in range(0, n, batch):
    for m in messages[start:start + batch]:
        write(m)
    writer.flush()
summary = writer.close()
print(json.dumps({"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall,
                  "messages": summary.messages, "bytes": summary.file_bytes}))
"""


def trial(tree: Path, fmt: str, messages: int, batch: int, props: bool) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        done = subprocess.run([sys.executable, "-c", TRIAL, fmt, str(messages), str(batch), "1" if props else "0",
                               out], env=env, capture_output=True, text=True, timeout=600, check=True)
        result: dict[str, float] = json.loads(done.stdout)
        assert result["messages"] == messages
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", required=True, help="LABEL=PATH of a source tree (twice or more)")
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=12_500, help="messages per flush (0.25 s at 50k msg/s)")
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument("--properties", action="store_true")
    parser.add_argument("--base", help="LABEL of the tree the ratios are against (default: the first)")
    args = parser.parse_args()
    trees = [(label, Path(path).resolve()) for label, _, path in (item.partition("=") for item in args.tree)]
    runs = [(label, tree, False) for label, tree in trees]
    if args.properties:
        runs.append((f"{trees[-1][0]}+properties", trees[-1][1], True))
    for fmt in args.formats.split(","):
        results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in runs}
        for pair in range(args.pairs):
            order = runs if pair % 2 == 0 else runs[::-1]  # alternate who goes first
            for label, tree, props in order:
                results[label].append(trial(tree, fmt, args.messages, args.batch, props))
        base = args.base or runs[0][0]
        print(f"{fmt}: {args.messages:,} messages, flush every {args.batch:,}, {args.pairs} paired runs")
        for label, _, _ in runs:
            cpu = statistics.median(r["cpu"] for r in results[label])
            wall = statistics.median(r["wall"] for r in results[label])
            ratio = statistics.median(r["cpu"] / b["cpu"] for r, b in zip(results[label], results[base], strict=True))
            per = cpu / args.messages * 1e6
            size = statistics.median(r["bytes"] for r in results[label]) / args.messages
            print(f"  {label:<22} cpu {cpu:6.3f} s ({per:5.2f} us/msg)  wall {wall:6.3f} s  "
                  f"cpu ratio vs {base} {ratio:5.3f}  {size:5.1f} B/msg")


if __name__ == "__main__":
    main()
