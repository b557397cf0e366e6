"""Raw paho clients for the other side of a test (a real MQTT peer, not a mock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class Collector:
    """A raw paho subscriber that keeps every message it receives."""

    def __init__(self, port: int, topic: str = "#", *, qos: int = 1, client_id: str = "",
                 clean_session: bool = True, username: str | None = None, password: str | None = None) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos)
        self.port = port

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(msg)

    def __enter__(self) -> Collector:
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise TimeoutError("no SUBACK")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[paho.MQTTMessage]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    return list(self.messages)
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)


def publish(port: int, messages: Iterable[tuple[str, bytes]], *, qos: int = 1, retain: bool = False,
            username: str | None = None, password: str | None = None) -> None:
    """Publish and wait until every message is acknowledged (bounded: 20 s)."""
    client = paho.Client(CallbackAPIVersion.VERSION2)
    if username:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos, retain) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=20)
    finally:
        client.disconnect()
        client.loop_stop()
