"""How fast `tesaiot record` takes messages when nothing paces them: local Parquet against
Parquet to ``s3://`` (docs/benchmarks.md, section 13, "Drain").

The record section's ladder stops where the 2 cores can no longer publish faster (the
"ceiling"), so it cannot say how much headroom a recorder has. Here the publisher runs
first: a persistent session (QoS 1, clean session false) is made for the recorder's client
id, N messages are published into it while it is offline (mosquitto queues them), then
``tesaiot record OUT --count N --session ID`` starts and takes the whole backlog as fast as
it can. The rate is N over the span of the receive times in the sealed recording (start-up
and sealing left out); the wall time to exit (which includes sealing, and for ``s3://`` the
last part's upload) is printed too. Trials alternate local / s3 (A B A B ...); the result is
the median of the per-pair ratios.

Run: ``.venv/bin/python bench/record_drain.py [--count 300000] [--pairs 5]`` (a C compiler
for bench/pacedpub.c; mosquitto; moto from the test extra). Loopback only; every trial is
bounded in count and time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
sys.path.insert(0, str(BENCH))

import paho.mqtt.client as paho  # noqa: E402
import pyarrow.compute as pc  # type: ignore[import-untyped]  # noqa: E402
import pyarrow.parquet as pq  # type: ignore[import-untyped]  # noqa: E402
from benchlib.common import Broker, PacedPublisher, stop_process  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from tests.support.cli import clean_env, cli_command  # noqa: E402
from tests.support.s3 import Moto, start_moto  # noqa: E402

TRIAL_TIMEOUT_S = 120.0


def make_session(port: int, client_id: str, topic: str) -> None:
    """A persistent QoS 1 session for ``client_id`` that mosquitto keeps while it is offline."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    done: list[int] = []
    client.on_subscribe = lambda *args: done.append(1)
    client.connect("127.0.0.1", port)
    client.subscribe(topic, qos=1)
    deadline = time.monotonic() + 10
    while not done and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    if not done:
        raise RuntimeError("no SUBACK for the persistent session")


def trial(kind: str, *, broker: Broker, publisher: PacedPublisher, moto: Moto, count: int, index: int,
          workdir: Path) -> dict[str, float]:
    topic = f"device/drain-{index}/telemetry"
    session = f"drain-{kind}-{index}"
    make_session(broker.port, session, topic)
    pub = publisher.run(timeout=TRIAL_TIMEOUT_S, topic=topic, rate=1e7, count=count, qos=1, device=f"drain-{index}")
    if not pub.ok:
        raise RuntimeError(f"publisher: {pub.data}")
    time.sleep(0.5)  # let mosquitto settle the queue
    env = clean_env()
    if kind == "s3":
        bucket = moto.new_bucket()
        output = f"s3://{bucket}/drain.parquet"
        env = clean_env(**moto.env())
    else:
        output = str(workdir / f"drain-{index}.parquet")
    started = time.monotonic()
    recorder = subprocess.Popen(cli_command("record", output, "-b", broker.url, "-t", topic, "--session", session,
                                            "--count", str(count)),
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = recorder.communicate(timeout=TRIAL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        stop_process(recorder)
        raise RuntimeError(f"{kind}: not done in {TRIAL_TIMEOUT_S:g} s") from None
    wall = time.monotonic() - started
    if recorder.returncode != 0:
        raise RuntimeError(f"{kind}: exit {recorder.returncode}: {err.decode(errors='replace')[-300:]}")
    if kind == "s3":
        table = pq.read_table(output.removeprefix("s3://"), filesystem=moto.filesystem(), columns=["time"])
    else:
        table = pq.read_table(output, columns=["time"])
        os.unlink(output)
    if table.num_rows != count:
        raise RuntimeError(f"{kind}: {table.num_rows} of {count} recorded")
    times = table.column("time").cast("int64")
    span = (pc.max(times).as_py() - pc.min(times).as_py()) / 1e9
    return {"rate": (count - 1) / span, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=300_000, help="messages in each backlog (default 300000)")
    parser.add_argument("--pairs", type=int, default=5, help="local/s3 pairs (default 5)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tesaiot-drain-"))
    build = workdir / "pacedpub"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(build), str(BENCH / "pacedpub.c")], check=True)
    broker = Broker(workdir / "broker")
    broker.start()
    moto = start_moto()
    print(f"# record drain: {args.count} QoS 1 messages queued in a persistent session, {args.pairs} pairs; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    pairs: list[dict[str, dict[str, float]]] = []
    try:
        publisher = PacedPublisher(str(build), broker)
        for index in range(args.pairs):
            pair = {}
            for kind in ("local", "s3"):
                pair[kind] = trial(kind, broker=broker, publisher=publisher, moto=moto, count=args.count,
                                   index=2 * index + (kind == "s3"), workdir=workdir)
            pairs.append(pair)
            print(f"pair {index + 1}: local {pair['local']['rate']:,.0f} msg/s (exit after "
                  f"{pair['local']['wall_s']:.2f} s), s3 {pair['s3']['rate']:,.0f} msg/s (exit after "
                  f"{pair['s3']['wall_s']:.2f} s), ratio {pair['s3']['rate'] / pair['local']['rate']:.2f}",
                  flush=True)
    finally:
        moto.stop()
        broker.stop()
    ratios = [pair["s3"]["rate"] / pair["local"]["rate"] for pair in pairs]
    summary = {"count": args.count, "pairs": args.pairs, "load_end": os.getloadavg()[0],
               "local_rate_median": statistics.median(p["local"]["rate"] for p in pairs),
               "s3_rate_median": statistics.median(p["s3"]["rate"] for p in pairs),
               "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
               "local_wall_median": statistics.median(p["local"]["wall_s"] for p in pairs),
               "s3_wall_median": statistics.median(p["s3"]["wall_s"] for p in pairs)}
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
