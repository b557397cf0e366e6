"""The naive per-device baseline: one paho-mqtt client per device, each with its own network
thread (``loop_start``), as a quick fleet script would do it.

    python bench/paho_fleet.py --port 1883 --devices 1000 --interval 10 --hold 60 --connect-rate 1000

Connects the clients one after the other at ``--connect-rate`` per second, then every
client publishes one ~160-byte DPS368-like QoS 1 payload per ``--interval`` (spread over
the interval, from the main thread), for ``--hold`` seconds; then disconnects all. Prints
one JSON line: clients connected, still connected at the end, connect times (attempt to
CONNACK) p50/p99, messages published and acknowledged, threads, and the first error.
Bounded: every wait has a deadline.

What it shows: paho's own loop waits with ``select()``, which cannot watch a descriptor
numbered 1024 or more, and each client holds three (its socket and the socket pair that
wakes its thread): from about the 340th client on, the clients' threads fail and close
their connections.
"""

from __future__ import annotations

import argparse
import json
import resource
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

PAYLOAD = (b'{"timestamp": "2026-01-01T00:00:00.000000+00:00", "device_id": "bench-paho-fleet", '
           b'"sensor_type": "DPS368", "data": {"pressure": 1003.17, "temperature": 27.41}, "seq": 0}')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=60.0)
    parser.add_argument("--connect-rate", type=float, default=1000.0)
    parser.add_argument("--prefix", default="paho-fleet")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    lock = threading.Lock()
    state: dict[str, Any] = {"connected": 0, "acked": 0, "error": None, "connect_s": []}
    started: dict[int, float] = {}

    def on_connect(client: mqtt.Client, index: int, flags: Any, reason: Any, props: Any) -> None:
        with lock:
            if not reason.is_failure:
                state["connected"] += 1
                if index in started:
                    state["connect_s"].append(time.monotonic() - started.pop(index))
            elif state["error"] is None:
                state["error"] = f"CONNACK {reason}"

    def on_disconnect(client: mqtt.Client, index: int, flags: Any, reason: Any, props: Any) -> None:
        with lock:
            state["connected"] -= 1

    def on_publish(client: mqtt.Client, index: int, mid: int, reason: Any, props: Any) -> None:
        with lock:
            state["acked"] += 1

    clients: list[mqtt.Client] = []
    begin = time.monotonic()
    try:
        for index in range(args.devices):
            due = begin + index / args.connect_rate
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{args.prefix}-{index + 1}", userdata=index)
            client.on_connect = on_connect
            client.on_disconnect = on_disconnect
            client.on_publish = on_publish
            started[index] = time.monotonic()
            client.connect("127.0.0.1", args.port, keepalive=60)
            client.loop_start()  # one network thread per client: the naive way
            clients.append(client)
    except Exception as exc:  # noqa: BLE001 - the point is to report how far it got
        state["error"] = f"{type(exc).__name__}: {exc}"
    ramp_s = time.monotonic() - begin
    deadline = time.monotonic() + 30
    while state["connected"] < len(clients) and time.monotonic() < deadline:
        time.sleep(0.05)
    published = 0
    start = time.monotonic()
    slot = args.interval / max(len(clients), 1)
    end = start + args.hold
    index = 0
    while clients:
        due = start + index * slot
        if due >= end:
            break
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        client = clients[index % len(clients)]
        client.publish(f"bench/{args.prefix}-{index % len(clients) + 1}/telemetry", PAYLOAD, 1)
        published += 1
        index += 1
    held = state["connected"]
    deadline = time.monotonic() + 15
    while state["acked"] < published and time.monotonic() < deadline:
        time.sleep(0.05)
    threads = threading.active_count()
    for client in clients:
        client.disconnect()
    for client in clients:
        client.loop_stop()
    times = sorted(state["connect_s"])

    def at(q: float) -> float | None:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1) if times else None

    print(json.dumps({"clients": len(clients), "connected_at_end": held, "ramp_s": round(ramp_s, 2),
                      "connect_p50_ms": at(0.5), "connect_p99_ms": at(0.99), "published": published,
                      "acknowledged": state["acked"], "threads": threads, "error": state["error"]}))


if __name__ == "__main__":
    main()
