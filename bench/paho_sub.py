"""The raw paho-mqtt baseline subscriber: connect, subscribe, count, nothing else.

    python bench/paho_sub.py --port 1883 --topic 'device/+/telemetry' --qos 1 --count 100000

paho-mqtt 2 with ``loop_forever``; ``on_message`` only counts. Exits after ``--count``
messages (or on SIGINT/SIGTERM, or after ``--timeout`` seconds) and prints one JSON line:
``{"received": N, "first_mono_ns": ..., "last_mono_ns": ...}`` (CLOCK_MONOTONIC, ns).
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--qos", type=int, default=0, choices=(0, 1, 2))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--client-id", default="")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after SECONDS (default 600)")
    args = parser.parse_args()

    state = {"received": 0, "first": 0, "last": 0}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=args.client_id)

    def on_connect(client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(args.topic, qos=args.qos)

    def on_message(client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        state["received"] += 1
        if state["received"] == 1:
            state["first"] = time.monotonic_ns()
        if state["received"] >= args.count:
            state["last"] = time.monotonic_ns()
            client.disconnect()

    def stop(*_: Any) -> None:
        # From another thread: a signal handler runs inside the loop, which may hold paho's locks.
        threading.Thread(target=client.disconnect, daemon=True).start()

    client.on_connect = on_connect
    client.on_message = on_message
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    watchdog = threading.Timer(args.timeout, stop)
    watchdog.daemon = True
    watchdog.start()
    client.connect(args.host, args.port, keepalive=60)
    client.loop_forever()
    watchdog.cancel()
    print(json.dumps({"received": state["received"], "first_mono_ns": state["first"],
                      "last_mono_ns": state["last"]}), flush=True)


if __name__ == "__main__":
    main()
