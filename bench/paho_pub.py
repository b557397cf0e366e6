"""The raw paho-mqtt baseline publisher: publish N DPS368-like payloads as fast as it can.

    python bench/paho_pub.py --port 1883 --topic t --qos 1 --count 100000 --mode window

paho-mqtt 2, network loop in paho's thread (``loop_start``). Two modes:

* ``window`` (the fair baseline): at most ``--window`` messages are unfinished (not yet
  written for QoS 0, not yet acknowledged for QoS 1); the loop waits for room, so the
  client never rejects a message;
* ``naive``: ``publish()`` in a tight loop with paho's queue bounded to ``--window``
  (``max_queued_messages_set``), counting what paho refuses (``MQTT_ERR_QUEUE_SIZE``).

Prints one JSON line: published, rejected, seconds (first publish to all finished).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

DEADLINE_S = 300.0


def payloads(count: int) -> list[bytes]:
    rng = random.Random(1)
    out = []
    for seq in range(min(count, 1000)):
        out.append((f'{{"timestamp": "2026-01-01T00:00:00.{seq:06d}+00:00", "device_id": "bench-paho", '
                    f'"sensor_type": "DPS368", "data": {{"pressure": {rng.randint(95000, 105000) / 100:.2f}, '
                    f'"temperature": {rng.randint(2000, 3500) / 100:.2f}}}, "seq": {seq}}}').encode())
    return out or [b"{}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--mode", choices=("window", "naive"), default="window")
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()

    bodies = payloads(args.count)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-paho-pub-{random.getrandbits(32):08x}")
    client.max_inflight_messages_set(args.window)
    if args.mode == "naive":
        client.max_queued_messages_set(args.window)
    room = threading.Semaphore(args.window)
    finished = threading.Event()
    state = {"done": 0}
    expected = {"total": args.count}

    def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        state["done"] += 1
        if args.mode == "window":
            room.release()
        if state["done"] >= expected["total"]:
            finished.set()

    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()
    client.on_publish = on_publish
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    connected.wait(10)
    deadline = time.monotonic() + DEADLINE_S
    published = rejected = 0
    begin = time.monotonic()
    for index in range(args.count):
        if args.mode == "window" and not room.acquire(timeout=max(0.0, deadline - time.monotonic())):
            break
        info = client.publish(args.topic, bodies[index % len(bodies)], qos=args.qos)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            published += 1
        else:
            rejected += 1
    expected["total"] = published
    if state["done"] >= published:
        finished.set()
    finished.wait(max(0.0, deadline - time.monotonic()))
    seconds = time.monotonic() - begin
    client.disconnect()
    client.loop_stop()
    print(json.dumps({"published": published, "rejected": rejected, "completed": state["done"],
                      "seconds": round(seconds, 6)}), flush=True)


if __name__ == "__main__":
    main()
