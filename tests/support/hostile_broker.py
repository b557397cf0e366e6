"""A hostile MQTT broker for tests: it answers like a broker, then breaks the protocol.

    python tests/support/hostile_broker.py --port PORT --case CASE

CASE is one of wildcard-topic, packet-id-zero, bad-utf8-topic, qos3, bad-remaining-length
(and no-shared-subscriptions: an MQTT 5 CONNACK saying Shared Subscription Available 0,
then only good packets).
Listens on 127.0.0.1 only and serves clients one after another: CONNACK 0 to CONNECT,
SUBACK (granted QoS 1) to SUBSCRIBE, then a good QoS 0 PUBLISH (topic device/h/telemetry,
payload {"ok":1}), the crafted packet, and a good one again; it keeps each connection
until the client closes it. It exits on SIGTERM, and by itself after --lifetime seconds
(default 120), so a test that forgets it leaves nothing behind.
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
import sys
import time

GOOD_TOPIC = b"device/h/telemetry"
GOOD_PAYLOAD = b'{"ok":1}'
CASES = ("wildcard-topic", "packet-id-zero", "bad-utf8-topic", "qos3", "bad-remaining-length",
         "no-shared-subscriptions")


def _length(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def publish(topic: bytes, payload: bytes, *, qos: int = 0, packet_id: int = 1, mqtt5: bool = False) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += packet_id.to_bytes(2, "big")
    if mqtt5:
        body += b"\x00"  # no properties
    body += payload
    return bytes([0x30 | (qos << 1)]) + _length(len(body)) + body


def crafted(case: str, mqtt5: bool) -> bytes:
    """The packet a broker must never send."""
    if case == "wildcard-topic":
        return publish(b"device/+/telemetry", GOOD_PAYLOAD, mqtt5=mqtt5)
    if case == "packet-id-zero":
        return publish(GOOD_TOPIC, GOOD_PAYLOAD, qos=1, packet_id=0, mqtt5=mqtt5)
    if case == "bad-utf8-topic":
        return publish(b"device/\xff\xfe/telemetry", GOOD_PAYLOAD, mqtt5=mqtt5)
    if case == "qos3":
        good = publish(GOOD_TOPIC, GOOD_PAYLOAD, qos=1, packet_id=7, mqtt5=mqtt5)
        return bytes([good[0] | 0x06]) + good[1:]
    if case == "bad-remaining-length":
        return b"\x30\xff\xff\xff\xff\x7f" + GOOD_PAYLOAD  # five length bytes
    if case == "no-shared-subscriptions":
        return b""
    raise ValueError(case)


class Client:
    """One connection: a read buffer and the packets read from it."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.mqtt5 = False

    def packets(self) -> list[tuple[int, bytes]]:
        found = []
        while len(self.buffer) >= 2:
            length, shift, index = 0, 0, 1
            while True:
                if index >= len(self.buffer):
                    return found
                byte = self.buffer[index]
                index += 1
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            if len(self.buffer) < index + length:
                return found
            found.append((self.buffer[0], self.buffer[index:index + length]))
            self.buffer = self.buffer[index + length:]
        return found


def serve(sock: socket.socket, case: str, deadline: float, stopping: list[bool]) -> None:
    client = Client(sock)
    while not stopping and time.monotonic() < deadline:
        if not select.select([sock], [], [], 0.2)[0]:
            continue
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        client.buffer += data
        for first, body in client.packets():
            kind = first & 0xF0
            if kind == 0x10:  # CONNECT: protocol level is after the protocol name
                name_length = int.from_bytes(body[:2], "big")
                client.mqtt5 = body[2 + name_length] == 5
                if client.mqtt5 and case == "no-shared-subscriptions":
                    sock.sendall(b"\x20\x05\x00\x00\x02\x2a\x00")  # Shared Subscription Available: 0
                else:
                    sock.sendall(b"\x20\x03\x00\x00\x00" if client.mqtt5 else b"\x20\x02\x00\x00")
            elif kind == 0x80:  # SUBSCRIBE: answer, then the show
                packet_id = body[:2]
                if client.mqtt5:
                    sock.sendall(b"\x90\x04" + packet_id + b"\x00\x01")
                else:
                    sock.sendall(b"\x90\x03" + packet_id + b"\x01")
                good = publish(GOOD_TOPIC, GOOD_PAYLOAD, mqtt5=client.mqtt5)
                sock.sendall(good + crafted(case, client.mqtt5) + good)
            elif kind == 0xC0:  # PINGREQ
                sock.sendall(b"\xd0\x00")
            elif kind == 0xE0:  # DISCONNECT
                return


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--case", choices=CASES, required=True)
    parser.add_argument("--lifetime", type=float, default=120.0, help="exit after this many seconds")
    args = parser.parse_args()
    stopping: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    deadline = time.monotonic() + args.lifetime
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(8)
    try:
        while not stopping and time.monotonic() < deadline:
            if not select.select([listener], [], [], 0.2)[0]:
                continue
            sock, _ = listener.accept()
            with sock:
                serve(sock, args.case, deadline, stopping)
    finally:
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
