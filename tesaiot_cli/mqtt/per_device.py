"""One MQTT connection per simulated device, thousands of them, driven by one event loop.

Each device is its own paho client (its own client id, keepalive, session and
credentials), but no client has a thread: one ``selectors`` loop (epoll on Linux) on the
caller's thread waits on every socket and drives the clients through paho's public
external-loop API only — ``socket()``, ``loop_read()``, ``loop_write()``,
``loop_misc()``, ``want_write()`` and the ``on_socket_*`` callbacks — so this module
touches no paho private name.

- **Connects ramp** at ``connect_rate`` per second (a token bucket shared with the
  reconnects). A connect is paho's own: it blocks for the TCP (and TLS) handshake, at most
  ``connect_timeout``; the loop awaits the CONNACK.
- **Reconnects** after a lost connection or a failed attempt wait a jittered exponential
  backoff (1 s doubling to 30 s, each delay drawn from its upper half), then a token: a
  broker restart does not bring every device back at the same instant.
- **Accounting**, per device: ``sent`` (handed to paho), ``acknowledged`` (PUBACK or
  PUBCOMP; QoS 0: written), ``failed`` (an MQTT 5 reason code >= 128), ``dropped``
  (the device's queue was full, a QoS 0 packet lost with its connection, or still
  unacknowledged at close). QoS 1 and 2 packets published while a device is disconnected
  stay in its client's store and are sent after the reconnect.

Nothing from paho, ``ssl`` or ``socket`` escapes: failures become :class:`ConnectError`,
:class:`AuthError` or :class:`ConfigError` (through :mod:`tesaiot_cli.mqtt.connect`). It
never prints; events go to ``on_event``.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import random
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import AuthError, ConfigError, ConnectError, Interrupted
from tesaiot_cli.message import Message
from tesaiot_cli.mqtt.backoff import FLEET_BACKOFF
from tesaiot_cli.mqtt.connect import (
    AUTH_REASON_CODES,
    PASSWORD_HINT,
    SESSION_TAKEN_OVER,
    TOKEN_HINT,
    new_client,
    reason_value,
    ssl_context,
    translate_connect_error,
)
from tesaiot_cli.mqtt.flow import SessionStats

MISC_PERIOD_S = 1.0  # each client's keepalive check (loop_misc) runs about this often
EVENT_PERIOD_S = 1.0  # connection events are summed up and reported at most this often
MAX_TURN_S = 0.25  # longest single wait of the loop
TURN_EVERY = 256  # publishes between two turns of the loop when the schedule never waits (it is behind)
CLOSE_TIMEOUT_S = 3.0  # after DISCONNECT: longest wait for the sockets to close

EventCallback = Callable[[str, str], None]

# Link states
_WAITING, _CONNECTING, _CONNECTED, _BACKOFF = range(4)


@dataclass
class DeviceCounts:
    """One device's connection and publish counts (see the module docstring)."""

    device_id: str
    client_id: str
    sent: int
    acknowledged: int
    failed: int
    dropped: int
    connects: int
    disconnects: int
    connect_s: float | None  # first connect: from the attempt to the CONNACK, seconds
    last_error: str


class _Link:
    """One device's client and counters."""

    __slots__ = ("index", "device_id", "settings", "client", "state", "attempts", "started", "connects",
                 "disconnects", "sent", "acked", "failed", "dropped", "qos0_open", "connect_s", "last_error",
                 "ever_connected", "answered", "auth_refused")

    def __init__(self, index: int, device_id: str, settings: ConnectionSettings) -> None:
        self.index = index
        self.device_id = device_id
        self.settings = settings
        self.client: paho.Client | None = None
        self.state = _WAITING
        self.attempts = self.connects = self.disconnects = 0
        self.started = 0.0
        self.sent = self.acked = self.failed = self.dropped = 0
        self.qos0_open = 0  # QoS 0 packets handed to paho and not yet written
        self.connect_s: float | None = None
        self.last_error = ""
        self.ever_connected = False
        self.answered = False  # the first attempt has been answered (connected, refused or failed)
        self.auth_refused = False  # the last attempt was refused for its credentials

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked - self.failed - self.dropped


class DeviceFleet:
    """Per-device MQTT connections, all on the caller's thread. Use as a context manager::

        with DeviceFleet(per_device_settings, topics, connect_rate=100, queue=60) as fleet:
            fleet.connect_all()
            fleet.publish(message)      # routed to the device whose topic it is
            fleet.wait(0.5)             # runs the event loop meanwhile

    ``settings[i]`` are device i's connection settings (client id, credentials, TLS
    files); ``topics[i]`` its topic. ``queue``: unacknowledged packets a device keeps
    (in flight, or stored while disconnected); more are dropped and counted.
    ``interrupt`` cuts waits short (Ctrl+C). Raises :class:`ConfigError` for bad values.
    """

    def __init__(
        self,
        settings: Sequence[ConnectionSettings],
        topics: Sequence[str],
        device_ids: Sequence[str],
        *,
        connect_rate: float,
        queue: int = 60,
        on_event: EventCallback | None = None,
        interrupt: threading.Event | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not settings or len(settings) != len(topics) or len(settings) != len(device_ids):
            raise ConfigError("a fleet needs one topic and one device id per device")
        if not math.isfinite(connect_rate) or connect_rate <= 0:
            raise ConfigError(f"invalid --connect-rate {connect_rate}: it must be a positive number per second")
        if queue < 1:
            raise ConfigError(f"invalid --queue {queue}: it must be at least 1")
        self.stats = SessionStats()
        self._links = [_Link(i, d, s) for i, (d, s) in enumerate(zip(device_ids, settings, strict=True))]
        self._by_topic = {topic: link for topic, link in zip(topics, self._links, strict=True)}
        self._rate = connect_rate
        self._burst = max(1.0, connect_rate / 10)  # at most 0.1 s worth of connects at once
        self._tokens = 1.0
        self._refilled = 0.0
        self._queue = queue
        self._on_event = on_event
        self._interrupt = interrupt or threading.Event()
        self._clock = clock
        self._rng = rng or random.Random()
        self._selector: selectors.BaseSelector | None = None
        self._due: list[tuple[float, int]] = []  # (time, link index): attempts waiting for their time
        self._again: set[_Link] = set()  # TLS/websocket sockets with bytes already buffered
        self._misc_next = 0
        self._misc_at = 0.0
        self._tls: ssl.SSLContext | None = None
        self._shared_tls = not any(s.cert_file for s in settings)
        self._in_state = [len(self._links), 0, 0, 0]  # links per state (_WAITING ... _BACKOFF)
        self._closing = False
        self._unanswered = len(self._links)
        self._since_turn = 0
        # Summed up for on_event, at most once per EVENT_PERIOD_S.
        self._lost: dict[str, int] = {}
        self._back = 0
        self._refused: dict[str, int] = {}
        self._events_at = 0.0

    # -- context manager ------------------------------------------------------------

    def __enter__(self) -> DeviceFleet:
        self._selector = selectors.DefaultSelector()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- what the caller sees -------------------------------------------------------

    def link_counts(self) -> tuple[int, int, int]:
        """(connected, connecting (or waiting for the first attempt), failed: waiting to retry
        after a failed attempt or a lost connection)."""
        waiting, connecting, connected, backoff = self._in_state
        return connected, waiting + connecting, backoff

    def _set_state(self, link: _Link, state: int) -> None:
        self._in_state[link.state] -= 1
        self._in_state[state] += 1
        link.state = state

    def in_flight(self) -> int:
        """Packets sent and not yet acknowledged (nor counted failed or dropped), all devices."""
        return sum(link.in_flight for link in self._links)

    def connect_times(self) -> list[float]:
        """Seconds from each device's first attempt to its first CONNACK (connected devices)."""
        return [link.connect_s for link in self._links if link.connect_s is not None]

    def devices(self) -> list[DeviceCounts]:
        """Every device's counts."""
        return [DeviceCounts(link.device_id, link.settings.client_id, link.sent, link.acked, link.failed,
                             link.dropped, link.connects, link.disconnects, link.connect_s, link.last_error)
                for link in self._links]

    # -- connecting -----------------------------------------------------------------

    def connect_all(self, *, on_progress: Callable[[], object] | None = None) -> None:
        """Connect every device, ramping at the connect rate; return once each device has
        had its first attempt answered (connected, refused or failed; the failed ones keep
        retrying in the background). ``on_progress`` runs every loop turn.

        Raises :class:`ConnectError` / :class:`AuthError` / :class:`ConfigError` with the
        first device's error when no device could connect, :class:`Interrupted` on the
        caller's interrupt.
        """
        now = self._clock()
        self._refilled = now
        self._misc_at = now
        self._events_at = now + EVENT_PERIOD_S
        self._due = [(0.0, link.index) for link in self._links]
        while self._unanswered:
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            self._turn(MAX_TURN_S)
            if on_progress is not None:
                on_progress()
        if self._in_state[_CONNECTED] == 0:
            first = self._links[0]
            error = first.last_error or "no device could connect"
            raise AuthError(error) if first.auth_refused else ConnectError(error)

    def _answered(self, link: _Link) -> None:
        if not link.answered:
            link.answered = True
            self._unanswered -= 1

    def _attempt(self, link: _Link, now: float) -> None:
        """Start one connect attempt (blocking for the TCP and TLS handshakes)."""
        s = link.settings
        where = f"{s.url.host}:{s.url.port}"
        link.attempts += 1
        link.started = now
        client = link.client
        try:
            if client is None:
                client = link.client = self._build_client(link)
                self._set_state(link, _CONNECTING)
                if s.mqtt_version == 5:
                    client.connect(s.url.host, s.url.port, keepalive=s.keepalive, clean_start=s.clean_session)
                else:
                    client.connect(s.url.host, s.url.port, keepalive=s.keepalive)
            else:
                self._set_state(link, _CONNECTING)
                client.reconnect()
        except ConfigError:
            raise
        except BaseException as exc:  # noqa: BLE001 - translated, the device retries later
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            error = translate_connect_error(exc, where, s)
            if isinstance(error, ConfigError):
                raise error from None
            self._attempt_failed(link, str(error))

    def _attempt_failed(self, link: _Link, why: str, *, auth: bool = False, who: str = "") -> None:
        """``why`` is summed up over devices in the events; ``who`` (the client id) is added
        for the device's own last error."""
        link.auth_refused = auth
        self._set_state(link, _BACKOFF)
        link.last_error = f"{why} ({who})" if who else why
        self._answered(link)
        self._refused[why] = self._refused.get(why, 0) + 1
        self._schedule_retry(link)

    def _schedule_retry(self, link: _Link) -> None:
        delay = FLEET_BACKOFF.delay(link.attempts - 1, self._rng)  # the upper half, at random: no herd
        heapq.heappush(self._due, (self._clock() + delay, link.index))

    def _build_client(self, link: _Link) -> paho.Client:
        s = link.settings
        tls = None  # the device's own certificate: a context of its own
        if s.url.tls and self._shared_tls:
            if self._tls is None:
                self._tls = ssl_context(s)
            tls = self._tls
        client = new_client(s, tls=tls, userdata=link)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    # -- publishing -----------------------------------------------------------------

    def publish(self, message: Message) -> bool:
        """Hand ``message`` to the client of the device whose topic it is. Returns False
        (counted dropped) when that device's queue is full, or for QoS 0 while it is not
        connected. Raises :class:`ConfigError` for a topic no device has."""
        link = self._by_topic.get(message.topic)
        if link is None:
            raise ConfigError(f"no device publishes to {message.topic!r}")
        link.sent += 1
        self.stats.published += 1
        client = link.client
        if client is None or link.in_flight >= self._queue or (message.qos == 0 and link.state != _CONNECTED):
            link.dropped += 1
            self.stats.dropped += 1
            return False
        try:
            info = client.publish(message.topic, message.payload, message.qos, message.retain)
        except ValueError as exc:
            raise ConfigError(f"cannot publish to {message.topic!r}: {exc}") from None
        if message.qos == 0:
            if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                link.qos0_open += 1
            else:
                link.dropped += 1
                self.stats.dropped += 1
        # QoS 1/2 while disconnected (MQTT_ERR_NO_CONN): kept in paho's store, sent after the reconnect.
        self._since_turn += 1
        if self._since_turn >= TURN_EVERY:
            self._turn(0.0)  # a schedule that is behind never waits: write, read acknowledgements meanwhile
        return True

    # -- the event loop -------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass running the event loop (returns early on the interrupt)."""
        deadline = self._clock() + seconds
        while not self._interrupt.is_set():
            remaining = deadline - self._clock()
            if remaining <= 0:
                return
            self._turn(remaining)

    def _turn(self, timeout: float) -> None:
        """One turn: due connect attempts, one wait on every socket, reads and writes,
        a slice of the keepalive checks, and the events summed up."""
        selector = self._selector
        if selector is None:
            raise RuntimeError("use DeviceFleet as a context manager")
        self._since_turn = 0
        now = self._clock()
        wake = now + min(timeout, MAX_TURN_S)
        due = self._due
        if due and not self._closing:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
            self._refilled = now
            while due and due[0][0] <= now and self._tokens >= 1.0:
                _, index = heapq.heappop(due)
                link = self._links[index]
                if link.state in (_CONNECTED, _CONNECTING):
                    continue
                self._tokens -= 1.0
                self._attempt(link, self._clock())
            if due:
                next_at = due[0][0] if self._tokens >= 1.0 else max(due[0][0], now + (1.0 - self._tokens) / self._rate)
                wake = min(wake, next_at)
        if self._again:
            wake = now
        ready = selector.select(max(0.0, wake - self._clock())) if selector.get_map() else []
        if not ready and not selector.get_map():
            self._interrupt.wait(max(0.0, min(wake - self._clock(), MAX_TURN_S)))
        again, self._again = self._again, set()
        for key, events in ready:
            link = key.data
            client = link.client
            if client is None:
                continue
            if events & selectors.EVENT_READ:
                again.discard(link)
                self._read(link, client)
            if events & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()
        for link in again:
            if link.client is not None:
                self._read(link, link.client)
        self._misc(self._clock())

    def _read(self, link: _Link, client: paho.Client) -> None:
        client.loop_read()
        sock = client.socket()
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            self._again.add(link)  # decrypted bytes wait in the TLS object: the selector will not say so

    def _misc(self, now: float) -> None:
        """Keepalive for a slice of the clients (each about once per MISC_PERIOD_S), a
        CONNACK that does not come within the connect timeout, and the summed events."""
        links = self._links
        share = int(len(links) * (now - self._misc_at) / MISC_PERIOD_S)
        if share > 0:
            self._misc_at = now
            start = self._misc_next
            for offset in range(min(share, len(links))):
                link = links[(start + offset) % len(links)]
                client = link.client
                if client is None:
                    continue
                if link.state == _CONNECTED:
                    client.loop_misc()
                elif link.state == _CONNECTING and now - link.started > link.settings.connect_timeout:
                    s = link.settings
                    self._give_up(link, client, f"no answer (CONNACK) from the MQTT broker at {s.url.host}:"
                                                f"{s.url.port} within {s.connect_timeout:g} s")
            self._misc_next = (start + share) % len(links)
        if now >= self._events_at:
            self._events_at = now + EVENT_PERIOD_S
            self._report_events()

    def _give_up(self, link: _Link, client: paho.Client, why: str) -> None:
        self._attempt_failed(link, why)
        if client.socket() is not None:
            # No public way to make paho drop a socket: disconnect() then closes it once written.
            client.disconnect()
            client.loop_write()

    def _report_events(self) -> None:
        for why, n in self._lost.items():
            self._emit("disconnected", f"{n} device{'s' if n > 1 else ''} lost the connection: {why}")
        if self._lost:
            self._emit("reconnecting", f"reconnecting with jittered backoff ({FLEET_BACKOFF.text()}) at up to "
                                       f"{self._rate:g} connects/s")
        for why, n in self._refused.items():
            self._emit("reconnecting", f"{n} connect attempt{'s' if n > 1 else ''} failed: {why}; retrying")
        if self._back:
            self._emit("reconnected", f"{self._back} device{'s' if self._back > 1 else ''} reconnected")
        self._lost.clear()
        self._refused.clear()
        self._back = 0

    def _emit(self, kind: str, text: str) -> None:
        if self._on_event is not None:
            self._on_event(kind, text)

    # -- paho callbacks (on this thread, from loop_read / loop_write / loop_misc) ---

    def _on_socket_open(self, client: paho.Client, link: _Link, sock: Any) -> None:
        if isinstance(sock, socket.socket):  # Nagle would hold small packets back up to ~40 ms
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._watch(sock, link, selectors.EVENT_READ, new=True)

    def _on_socket_close(self, client: paho.Client, link: _Link, sock: Any) -> None:
        self._again.discard(link)
        self._watch(sock, link, 0)

    def _on_register_write(self, client: paho.Client, link: _Link, sock: Any) -> None:
        self._watch(sock, link, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_unregister_write(self, client: paho.Client, link: _Link, sock: Any) -> None:
        self._watch(sock, link, selectors.EVENT_READ)

    def _watch(self, sock: Any, link: _Link, events: int, *, new: bool = False) -> None:
        """What the selector waits for on ``sock``: ``events``, or nothing (0: unregistered)."""
        selector = self._selector
        if selector is None:
            return
        with contextlib.suppress(KeyError, ValueError):  # a socket paho already dropped
            if new:
                selector.register(sock, events, link)
            elif events:
                selector.modify(sock, events, link)
            else:
                selector.unregister(sock)

    def _on_connect(self, client: paho.Client, link: _Link, flags: Any, reason: Any, properties: Any) -> None:
        code = reason_value(reason)
        if code == 0:
            self._set_state(link, _CONNECTED)
            link.connects += 1
            link.attempts = 0
            if link.connect_s is None:
                link.connect_s = self._clock() - link.started
            if link.ever_connected:
                self.stats.reconnects += 1
                self._back += 1
            link.ever_connected = True
            self._answered(link)
            return
        s = link.settings
        text = str(getattr(reason, "getName", lambda: reason)())
        where = f"{s.url.host}:{s.url.port}"
        auth = code in AUTH_REASON_CODES
        if auth:
            hint = TOKEN_HINT if s.token is not None else PASSWORD_HINT
            why = f"authentication failed at {where} (code {code}: {text}): {hint}"
        else:
            why = f"the broker at {where} refused the connection (code {code}: {text})"
        self._attempt_failed(link, why, auth=auth, who=f"client id {s.client_id}")

    def _on_disconnect(self, client: paho.Client, link: _Link, flags: Any, reason: Any, properties: Any) -> None:
        if link.qos0_open:
            # Unwritten QoS 0 packets go with the connection (paho discards them at the reconnect).
            link.dropped += link.qos0_open
            self.stats.dropped += link.qos0_open
            link.qos0_open = 0
        if link.state != _CONNECTED:
            if link.state == _CONNECTING:
                self._attempt_failed(link, f"the connection to {link.settings.url.host}:{link.settings.url.port} "
                                           "closed before the CONNACK")
            return
        self._set_state(link, _BACKOFF)
        if self._closing:
            return
        link.disconnects += 1
        self.stats.disconnects += 1
        code = reason_value(reason)
        why = str(getattr(reason, "getName", lambda: reason)())
        if code in SESSION_TAKEN_OVER:
            why += " (another client with the same client id took the session over)"
        self._lost[why] = self._lost.get(why, 0) + 1
        link.attempts = max(link.attempts, 1)
        self._schedule_retry(link)

    def _on_publish(self, client: paho.Client, link: _Link, mid: int, reason: Any, properties: Any) -> None:
        code = reason_value(reason)
        if code >= 0x80:
            link.failed += 1
            self.stats.failed += 1
            self.stats.failed_reasons[str(getattr(reason, "getName", lambda: code)())] += 1
            return
        link.acked += 1
        self.stats.completed += 1
        if link.qos0_open:
            link.qos0_open -= 1  # a run publishes at one QoS: with QoS 0 this was one of those

    # -- finishing ------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Run the loop until every packet is acknowledged (or ``timeout`` s); whether all were.
        Raises :class:`Interrupted` on the caller's interrupt."""
        deadline = self._clock() + timeout
        while self.in_flight():
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            remaining = deadline - self._clock()
            if remaining <= 0:
                return False
            self._turn(min(remaining, 0.05))
        return True

    def close(self) -> None:
        """Disconnect every device cleanly (bounded); what is still unacknowledged is
        counted as dropped."""
        selector = self._selector
        if selector is None:
            return
        self._closing = True
        self._due.clear()
        for link in self._links:
            client = link.client
            if client is not None and client.socket() is not None:
                client.disconnect()
        deadline = self._clock() + CLOSE_TIMEOUT_S
        while selector.get_map() and self._clock() < deadline:
            self._turn(0.05)
        for link in self._links:
            lost = link.in_flight
            if lost > 0:
                link.dropped += lost
                self.stats.dropped += lost
        self._selector = None
        selector.close()
