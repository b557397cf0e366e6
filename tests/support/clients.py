"""Raw paho clients for the other side of a test (a real MQTT peer, not a mock)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.hostile_broker import publish as publish_packet


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


def publish_many(port: int, topic: str, payloads: Iterable[bytes], *, window: int = 10_000,
                 timeout: float = 30.0) -> None:
    """Publish at QoS 1 over a raw MQTT 3.1.1 connection, ``window`` messages in flight at a
    time, and return once every one is acknowledged (raises when one is not within
    ``timeout``). Packets are written in batches and acknowledgements counted, not tracked
    one by one: the backlog test took 7 CPU-s with paho's client, 2 with this. The packets
    are the hostile broker's, built by hand, not by the code under test."""
    name = topic.encode()
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        client_id = b"raw-%d" % time.monotonic_ns()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id  # clean, keepalive 60
        sock.sendall(bytes((0x10, len(body))) + body)
        if _read_exactly(sock, 4, deadline) != b"\x20\x02\x00\x00":
            raise ConnectionError("the broker refused the raw publisher")
        batch: list[bytes] = []
        for payload in payloads:
            batch.append(publish_packet(name, payload, qos=1, packet_id=len(batch) + 1))
            if len(batch) == window:
                _send_and_wait_for_acks(sock, batch, deadline)
                batch = []
        if batch:
            _send_and_wait_for_acks(sock, batch, deadline)
        sock.sendall(b"\xe0\x00")


def _send_and_wait_for_acks(sock: socket.socket, packets: list[bytes], deadline: float) -> None:
    sock.sendall(b"".join(packets))
    acks = _read_exactly(sock, 4 * len(packets), deadline)  # PUBACK: 0x40 0x02 id id
    if acks[::4] != b"\x40" * len(packets):
        raise ConnectionError("the broker sent something other than PUBACKs")


def _read_exactly(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = bytearray()
    while len(data) < size:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        data += chunk
    return bytes(data)
