"""The one MQTT session layer, around paho-mqtt 2.x, shared by every command.

It connects (with a timeout), authenticates, verifies TLS, reconnects with backoff
and re-subscribes, delivers received messages as :class:`Message`, and publishes with
flow control: a bounded window of unacknowledged messages, so paho's queue never
grows without bound and no publish is lost without being counted.

Nothing from paho, ``ssl`` or ``socket`` escapes this module: failures become
:class:`ConnectError`, :class:`AuthError` or :class:`ConfigError`.
It never prints; state changes go to the ``on_event`` callback.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.connection import (
    AUTH_REASON_CODES,
    PASSWORD_HINT,
    SESSION_TAKEN_OVER,
    TOKEN_HINT,
    no_answer_error,
    reason_value,
    ssl_context,
    translate_connect_error,
)
from tesaiot_cli.errors import AuthError, ConfigError, ConnectError, Interrupted
from tesaiot_cli.message import Message, topic_name_problem, validate_topic_filter

RECONNECT_MIN_DELAY_S = 1
RECONNECT_MAX_DELAY_S = 30
DEFAULT_WINDOW = 1000
PERSISTENT_SESSION_EXPIRY_S = 7 * 24 * 3600
NETWORK_TICK_S = 0.05  # threaded=True: longest wait for the socket; bounds shutdown and write latency
MAX_PUMP_S = 1.0  # longest single network wait: keepalive pings are sent between waits
READ_BATCH = 64  # threaded=True: packets read per hold of the I/O lock
MISC_EVERY_S = 0.1  # threaded=True: how often paho's keepalive check runs while data flows
PUMP_EVERY = 64  # threaded=False: read acknowledgements every this many publishes
HOLD_BYTES = 64 * 1024  # publish(hold=True): QoS 0 PUBLISH packets written per send
HOLD_QUEUED = 2  # publish(hold=True): held batches paho may keep unwritten before we wait
HELD_MID = 0  # paho never gives out message id 0: it marks a batch of held packets
MAX_REMAINING_LENGTH = 268_435_455  # the largest MQTT packet body
CLOSE_LINGER_S = 2.0  # after DISCONNECT: longest wait for the broker to close its side
READ_CHUNK = 64 * 1024  # bytes asked of the socket per read (paho asks for 1 byte at a time)

EventCallback = Callable[[str, str], None]
MessageCallback = Callable[[Message], None]


class _BufferedSocket:
    """The connection's socket (tcp, TLS or paho's websocket wrapper) with a read buffer
    and, while corked, a write buffer.

    paho reads each packet with three or more ``recv`` calls (the command byte, each
    remaining-length byte, then the body): a system call each on a plain socket. This
    reads up to ``READ_CHUNK`` bytes at once and serves paho's small reads from them, so a
    batch of packets costs one system call. ``pending()`` tells paho's loop and ours that
    buffered bytes are waiting, as an SSL socket's does.

    The network thread corks the socket while it reads a batch of packets: the PUBACKs
    paho writes for them are collected and sent together by :meth:`uncork` (one system
    call instead of one per message). What the socket does not take at once stays in the write buffer, ahead of anything
    written later: until it has drained, other writes are refused as a full socket
    refuses them (paho keeps those packets and retries).
    """

    __slots__ = ("_inner", "_data", "_pos", "_out", "_corked", "_eof", "_topics", "linger_s")

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._data = b""
        self._pos = 0
        self._out = bytearray()
        self._corked = False
        self._eof = False
        self._topics: dict[bytes, str] = {}
        self.linger_s = 0.0  # set before a clean DISCONNECT: see close()

    def recv(self, size: int) -> bytes:
        data, pos = self._data, self._pos
        if pos < len(data):
            self._pos = pos + size
            return data[pos:pos + size]
        if self._eof:
            return b""
        data = self._inner.recv(READ_CHUNK if size < READ_CHUNK else size)
        if len(data) <= size:
            self._data, self._pos = b"", 0
            return data  # type: ignore[no-any-return]
        self._data, self._pos = data, size
        return data[:size]  # type: ignore[no-any-return]

    def fill(self) -> None:
        """One read from the socket, appended to what is buffered (a partial packet)."""
        if self._eof:
            return
        try:
            chunk = self._inner.recv(READ_CHUNK)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return
        except OSError:
            return  # paho's next read meets the same error and handles the lost connection
        if not chunk:
            self._eof = True  # served to paho as the end of the stream once the buffer is empty
            return
        if self._pos < len(self._data):
            self._data = self._data[self._pos:] + chunk
        else:
            self._data = chunk
        self._pos = 0

    def take_publishes(self, deliver: Callable[[str, bytes, int, bool], None]) -> int:
        """Take the complete MQTT 3.1.1 QoS 0 and QoS 1 PUBLISH packets at the head of
        the buffer, hand each to ``deliver(topic, payload, qos, retain)`` and queue the
        PUBACK of each QoS 1 one (written when uncorked). Stops at anything else — another
        packet type, QoS 2, a partial or malformed packet, a topic that is not UTF-8 —
        which paho then reads as usual. Returns the number of packets taken.

        Call only at a packet boundary (paho holds no partial packet) and while corked.
        """
        data, pos = self._data, self._pos
        end = len(data)
        topics = self._topics
        taken = 0
        while pos < end:
            first = data[pos]
            if first & 0xF0 != 0x30 or first & 0x06 > 0x02:  # not PUBLISH, or QoS 2 (or 3)
                break
            index, length, shift = pos + 1, 0, 0
            while index < end and shift <= 21:
                byte = data[index]
                index += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
            else:
                break  # the remaining length is incomplete (or malformed: paho reports it)
            body_end = index + length
            if body_end > end or length < 2:
                break
            name_end = index + 2 + ((data[index] << 8) | data[index + 1])
            qos = (first >> 1) & 0x03
            payload_start = name_end + 2 if qos else name_end
            if payload_start > body_end:
                break
            name = data[index + 2:name_end]
            topic = topics.get(name)
            if topic is None:
                try:
                    topic = name.decode("utf-8")
                except UnicodeDecodeError:
                    break
                if len(topics) < 65536:
                    topics[name] = topic
            if qos:
                self._out += b"\x40\x02" + data[name_end:payload_start]  # PUBACK with the packet id
            self._pos = pos = body_end
            taken += 1
            deliver(topic, data[payload_start:body_end], qos, bool(first & 0x01))
        return taken

    def pending(self) -> int:
        buffered = len(self._data) - self._pos
        if buffered > 0:
            return buffered
        inner_pending = getattr(self._inner, "pending", None)
        return inner_pending() if inner_pending is not None else 0

    def send(self, data: bytes | bytearray) -> int:
        if self._corked:
            self._out += data
            return len(data)
        if self._out:
            self.flush()
            if self._out:
                raise BlockingIOError  # the socket is full: paho keeps the packet and retries
        return self._inner.send(data)  # type: ignore[no-any-return]

    def cork(self) -> None:
        self._corked = True

    def uncork(self) -> None:
        self._corked = False
        if self._out:
            self.flush()

    def has_output(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        """Write what the socket takes now; raises OSError when the connection is gone."""
        out = self._out
        while out:
            try:
                written = self._inner.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            if not written:
                return
            del out[:written]

    def fileno(self) -> int:
        return self._inner.fileno()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close; after a clean DISCONNECT (``linger_s`` > 0) first wait, reading and
        discarding, until the broker closes its side (at most ``linger_s`` seconds).

        Closing a socket with unread data in it resets the connection, and the broker then
        drops what it had not yet read: the last PUBACKs, so their messages would come
        again to a persistent session. The broker reads in order, so when it closes after
        our DISCONNECT it has taken every PUBACK before it."""
        try:
            self.flush()  # a DISCONNECT written after buffered PUBACKs goes out with them
            if self.linger_s > 0 and not self._out:
                self._linger(self.linger_s)
        except (OSError, ValueError):
            pass
        self._inner.close()

    def _linger(self, seconds: float) -> None:
        raw = getattr(self._inner, "_socket", self._inner)  # paho's websocket wrapper holds one
        raw.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([raw], [], [], remaining)[0]:
                return
            try:
                if not socket.socket.recv(raw, READ_CHUNK):  # raw bytes: TLS was shut down
                    return
            except (BlockingIOError, InterruptedError):
                continue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class SessionStats:
    """Counters, updated by the network thread and read by the caller.

    ``published``: publish attempts; ``completed``: acknowledged by the broker
    (QoS 1/2) or written to the socket (QoS 0); ``failed``: refused by the broker
    (MQTT 5 reason code >= 128); ``dropped``: never delivered (lost while disconnected,
    or no room in the window in time).
    """

    received: int = 0
    published: int = 0
    completed: int = 0
    failed: int = 0
    dropped: int = 0
    disconnects: int = 0
    reconnects: int = 0
    failed_reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def unacknowledged(self) -> int:
        return self.published - self.completed - self.failed - self.dropped


class Session:
    """One connection to one broker. Use as a context manager::

        with Session(settings, on_event=print_event) as session:
            session.subscribe(["device/+/telemetry/#"], qos=1, on_message=handle)

    ``window`` bounds the messages published but not yet completed. ``interrupt`` is an
    event the caller sets (on Ctrl+C) to cut blocking waits short with :class:`Interrupted`.
    ``on_message`` receives messages from the moment the session connects (a persistent
    session's queued messages arrive before any SUBSCRIBE); ``subscribe`` may also set it.

    ``threaded=True`` (subscribers) runs paho's network loop on its own thread.
    ``threaded=False`` (publishers) runs it on the caller's thread: paho then writes each
    PUBLISH straight to the socket instead of waking a network thread for it (about 3x less
    CPU per message), and the caller lets time pass with :meth:`wait` instead of sleeping,
    which reads acknowledgements, keeps the connection alive and reconnects with backoff.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        *,
        on_event: EventCallback | None = None,
        window: int = DEFAULT_WINDOW,
        interrupt: threading.Event | None = None,
        on_message: MessageCallback | None = None,
        threaded: bool = True,
    ) -> None:
        if window < 1:
            raise ConfigError(f"invalid publish window {window}: it must be at least 1")
        self.settings = settings
        self.stats = SessionStats()
        self._on_event = on_event
        self._window = window
        self._interrupt = interrupt or threading.Event()
        self._client: paho.Client | None = None
        self._connack = threading.Event()
        self._connack_code = -1
        self._connack_text = ""
        self._ever_connected = False
        self._closing = False
        self._connected = threading.Event()
        self._subscriptions: list[tuple[str, int]] = []
        # Given here, it also receives what a persistent session delivers right after CONNACK,
        # before subscribe() is called.
        self._on_message: MessageCallback | None = on_message
        self._suback: dict[int, list[int]] = {}
        self._suback_ready = threading.Condition()
        self._pending: collections.deque[paho.MQTTMessageInfo] = collections.deque()
        self._callback_error: BaseException | None = None
        self._awaited_mids: set[int] = set()
        self._threaded = threaded
        self._network: threading.Thread | None = None
        self._stop_network = threading.Event()
        # Serialises paho's socket writes between the network thread and the caller's thread.
        self._io: threading.Lock | contextlib.nullcontext[None] = (
            threading.Lock() if threaded else contextlib.nullcontext()
        )
        self._reconnect_delay = float(RECONNECT_MIN_DELAY_S)
        self._next_reconnect = 0.0
        self._since_pump = 0
        # publish(hold=True): QoS 0 PUBLISH packets built here and handed to paho together.
        self._held = bytearray()
        self._held_count = 0  # packets held (QoS 0 and 1)
        self._held_qos0 = 0  # of which QoS 0: completed when written (QoS 1: when acknowledged)
        self._held_batches: collections.deque[tuple[paho.MQTTMessageInfo, int]] = collections.deque()
        self._topic_names: dict[str, bytes] = {}

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Session:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    # -- connecting ----------------------------------------------------------------

    def _build_client(self) -> paho.Client:
        s = self.settings
        protocol = paho.MQTTv5 if s.mqtt_version == 5 else paho.MQTTv311
        kwargs: dict[str, Any] = {
            "callback_api_version": CallbackAPIVersion.VERSION2,
            "client_id": s.client_id,
            "protocol": protocol,
            "transport": s.url.transport,
            "reconnect_on_failure": True,
        }
        if protocol != paho.MQTTv5:
            kwargs["clean_session"] = s.clean_session
        client = paho.Client(**kwargs)
        if s.url.transport == "websockets":
            client.ws_set_options(path=s.url.path or "/mqtt")
        if s.token is not None:
            client.username_pw_set(s.token.reveal(), s.token.reveal())
        elif s.username is not None:
            client.username_pw_set(s.username, s.password.reveal() if s.password else None)
        if s.url.tls:
            client.tls_set_context(ssl_context(s))
        client.connect_timeout = s.connect_timeout
        client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)
        # Our window bounds what is in flight. paho's own limit would make it walk its whole
        # outgoing store on every acknowledgement (twice as slow at a window of 1000, quadratic
        # after a reconnect with a backlog), so it is switched off.
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        # paho's own dispatch matches every message against per-topic callbacks (we add none)
        # under two mutexes; each message goes straight to the session instead.
        client._handle_on_message = self._deliver  # type: ignore[method-assign,assignment]  # noqa: SLF001
        client.on_subscribe = self._handle_subscribe
        if s.mqtt_version == 5:
            # Only MQTT 5 acknowledgements carry a reason code that can say "refused". Without
            # a callback paho skips building a ReasonCode per message (a third of the CPU of a
            # QoS 0 publish); completions are then counted when the window is reaped.
            client.on_publish = self._handle_publish
        client.on_socket_open = self._handle_socket_open
        return client

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK.

        Raises :class:`ConnectError` (refused, DNS, TLS, timeout), :class:`AuthError`
        (CONNACK 4/5/134/135), :class:`ConfigError` (bad TLS files) or :class:`Interrupted`.
        """
        if self._client is not None:
            raise RuntimeError("session already connected")
        s = self.settings
        client = self._build_client()
        where = f"{s.url.host}:{s.url.port}"
        connect_kwargs: dict[str, Any] = {"keepalive": s.keepalive}
        if s.mqtt_version == 5:
            connect_kwargs["clean_start"] = s.clean_session
            if not s.clean_session:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = PERSISTENT_SESSION_EXPIRY_S
                connect_kwargs["properties"] = props
        try:
            client.connect(s.url.host, s.url.port, **connect_kwargs)
        except BaseException as exc:  # noqa: BLE001 - translated, never leaks
            raise translate_connect_error(exc, where, s) from None
        self._client = client
        if self._threaded:
            self._stop_network.clear()
            self._network = threading.Thread(target=self._network_main, name="tesaiot-mqtt", daemon=True)
            self._network.start()
        deadline = time.monotonic() + s.connect_timeout
        try:
            self._wait(self._connack, deadline)
        except Interrupted:
            self._teardown()
            raise
        if not self._connack.is_set():
            self._teardown()
            raise no_answer_error(where, s)
        if self._connack_code != 0:
            code, text = self._connack_code, self._connack_text
            self._teardown()
            if code in AUTH_REASON_CODES:
                hint = TOKEN_HINT if s.token is not None else PASSWORD_HINT
                raise AuthError(
                    f"authentication failed at {where} (code {code}: {text}): {hint}", reason_code=code
                )
            raise ConnectError(f"the broker at {where} refused the connection (code {code}: {text})",
                               reason_code=code)

    def _wait(self, event: threading.Event, deadline: float) -> None:
        while not event.is_set():
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._threaded:
                event.wait(min(remaining, 0.1))
            else:
                self._pump(min(remaining, 0.1))

    # -- the caller-driven network loop (threaded=False) ---------------------------------

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass (returns early when the interrupt is set).

        With ``threaded=False`` the time is spent serving the connection: reading
        acknowledgements, sending keepalives and reconnecting with backoff. Publishers call
        this instead of ``time.sleep``.
        """
        deadline = time.monotonic() + seconds
        while not self._interrupt.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._threaded or self._client is None:
                self._interrupt.wait(remaining)
            else:
                self._pump(remaining)

    def _pump(self, timeout: float, *, idle: threading.Event | None = None) -> None:
        """One turn of the network loop on this thread, or a reconnect attempt when due.

        ``idle`` is the event whose wait passes the time while disconnected (the caller's
        interrupt, or the network thread's stop event).
        """
        client = self._client
        if client is None:
            return
        self._since_pump = 0
        if self._held_count:
            self._release()
        if client.socket() is not None:
            # _loop, not loop(): loop() creates the wake-up socket pair of paho's own thread,
            # and paho would then write a byte to it for every packet it queues.
            # At most a second per turn: paho checks keepalive only between its selects.
            with self._io:
                rc = client._loop(timeout=min(max(timeout, 0.0), MAX_PUMP_S))  # noqa: SLF001
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._closing and client.socket() is None:
                # paho closed the socket and called on_disconnect: reconnect after the delay.
                self._next_reconnect = time.monotonic() + self._reconnect_delay
            return
        now = time.monotonic()
        if now < self._next_reconnect:
            (idle or self._interrupt).wait(min(timeout, self._next_reconnect - now))
            return
        try:
            with self._io:
                client.reconnect()
        except BaseException as exc:  # noqa: BLE001 - translated into an event, retried later
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_MAX_DELAY_S)
            self._next_reconnect = time.monotonic() + self._reconnect_delay
            why = translate_connect_error(exc, f"{self.settings.url.host}:{self.settings.url.port}", self.settings)
            self._emit("reconnecting", f"reconnect failed ({why}); next attempt in {self._reconnect_delay:g} s")

    def _network_main(self) -> None:
        """The network thread (threaded=True): wait for the socket outside the lock, then
        let paho read, write and keep alive under it.

        paho's own thread (``loop_start``) would make paho queue every outgoing packet for
        that thread and wake it through a socket pair; here the PUBACKs paho writes from the
        read loop are collected while a batch is read and sent together (the socket is
        corked), and other threads' writes (subscribe, publish, disconnect) are serialised
        with this one by ``self._io``.
        """
        client = self._client
        stop = self._stop_network
        next_misc = 0.0
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        while client is not None and not stop.is_set():
            try:
                sock = client.socket()
                if sock is None:
                    self._pump(NETWORK_TICK_S, idle=stop)
                    continue
                before = self.stats.received
                buffered = sock if isinstance(sock, _BufferedSocket) else None
                # MQTT 5 PUBLISH packets carry properties: those stay with paho.
                fast = buffered if self.settings.mqtt_version != 5 else None
                with self._io:
                    # What paho's _loop does after its select (which ours replaces), but reading
                    # a batch of packets per lock hold, and checking keepalive every 0.1 s
                    # rather than after every packet.
                    if buffered is not None:
                        buffered.cork()
                    try:
                        for _ in range(READ_BATCH):
                            seen = self.stats.received
                            if fast is not None and client._in_packet["command"] == 0:  # noqa: SLF001
                                # At a packet boundary: PUBLISH packets are parsed here, the
                                # rest (and partial packets) are left to paho.
                                taken = fast.take_publishes(self._deliver_parts)
                                if not taken:
                                    fast.fill()  # the buffer is empty, or holds the start of a packet
                                    taken = fast.take_publishes(self._deliver_parts)
                                if taken:
                                    client._last_bytes_received = time.monotonic()  # noqa: SLF001 - keepalive
                                    continue
                            rc = client.loop_read()  # one packet; its PUBACK is written into the cork
                            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self.stats.received == seen:
                                break
                    finally:
                        if buffered is not None:
                            buffered.uncork()  # the batch's PUBACKs in one send
                    if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
                        rc = client.loop_write()
                    now = time.monotonic()
                    if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and now >= next_misc:
                        next_misc = now + MISC_EVERY_S
                        rc = client.loop_misc()
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    if not self._closing and client.socket() is None:
                        self._next_reconnect = time.monotonic() + self._reconnect_delay
                    continue
                if self.stats.received != before:
                    continue  # more is probably waiting: read on without a select
                pending = getattr(sock, "pending", None)
                if pending is None or not pending():
                    writing = client.want_write() or (buffered is not None and buffered.has_output())
                    select.select([sock], [sock] if writing else [], [], NETWORK_TICK_S)
            except (OSError, ValueError, TypeError):
                continue  # the socket was closed under us: the next turn sees it
            except BaseException as exc:  # noqa: BLE001 - the thread must not die silently
                if self._callback_error is None:
                    self._callback_error = exc
                stop.wait(NETWORK_TICK_S)

    def _teardown(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        network, self._network = self._network, None
        if network is not None:
            self._stop_network.set()
            network.join(timeout=5)
        sock = client.socket()
        if isinstance(sock, _BufferedSocket):
            sock.linger_s = CLOSE_LINGER_S
        try:
            client.disconnect()
            if client.socket() is not None:
                client._loop(timeout=0.1)  # noqa: SLF001 - writes the DISCONNECT, then paho closes the socket
        except Exception:  # noqa: BLE001 - best effort on the way out
            pass
        self._connected.clear()

    # -- paho callbacks (network thread: they must never raise) ----------------------

    def _emit(self, kind: str, text: str) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, text)
            except Exception:  # noqa: BLE001
                pass

    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # Nagle's algorithm holds small packets back up to ~40 ms; telemetry wants them now.
        raw = getattr(sock, "_socket", sock)
        try:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        if client._sock is sock:  # noqa: SLF001 - paho reads and writes through client._sock
            client._sock = _BufferedSocket(sock)  # noqa: SLF001

    def _handle_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        code = reason_value(reason)
        self._connack_code = code
        self._connack_text = str(getattr(reason, "getName", lambda: reason)())
        if code == 0:
            self._reconnect_delay = float(RECONNECT_MIN_DELAY_S)
            if self._ever_connected:
                self.stats.reconnects += 1
                self._emit("reconnected", f"reconnected to {self.settings.url.display()}")
            self._ever_connected = True
            self._connected.set()
            if self._subscriptions:
                client.subscribe(list(self._subscriptions))
        elif self._ever_connected:
            self._emit("reconnecting", f"reconnect refused (code {code}: {self._connack_text}); retrying")
        self._connack.set()

    def _handle_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._closing or not was_connected:
            return
        self.stats.disconnects += 1
        code = reason_value(reason)
        why = str(getattr(reason, "getName", lambda: reason)())
        if code == 0x80:  # paho's "Unspecified error": what it reports for a lost connection
            why = "the connection was closed (broker stopped or restarted, or the network dropped)"
        if code in SESSION_TAKEN_OVER:
            why += " (another client with the same client id took the session over)"
        self._emit("disconnected", f"disconnected from {self.settings.url.display()}: {why}")
        self._emit(
            "reconnecting",
            f"reconnecting with backoff ({RECONNECT_MIN_DELAY_S} s doubling to {RECONNECT_MAX_DELAY_S} s)",
        )

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self._closing and self._ever_connected:
            self._emit("reconnecting", "reconnect attempt failed; trying again")

    def _deliver_parts(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        """A PUBLISH parsed by :meth:`_BufferedSocket.take_publishes`: as :meth:`_deliver`."""
        self.stats.received += 1
        sink = self._on_message
        if sink is None:
            return
        try:
            sink(Message(topic, payload, qos, retain, time.time_ns()))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            if self._callback_error is None:
                self._callback_error = exc

    def _deliver(self, msg: paho.MQTTMessage) -> None:
        """A PUBLISH read by paho (MQTT 5, QoS 2, or a packet cut by the read buffer)."""
        try:
            topic = msg.topic
        except UnicodeDecodeError as exc:  # a topic that is not UTF-8: kept as a callback error
            self.stats.received += 1
            if self._callback_error is None:
                self._callback_error = exc
            return
        self._deliver_parts(topic, msg.payload, msg.qos, bool(msg.retain))  # type: ignore[arg-type]

    def _handle_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any
    ) -> None:
        codes = [reason_value(r) for r in reasons]
        with self._suback_ready:  # held by subscribe() until it has noted its mid
            if mid in self._awaited_mids:
                self._suback[mid] = codes
                self._suback_ready.notify_all()
                return
        # A re-subscription after a reconnect: nobody waits for it, so say it if it failed.
        refused = [f for (f, _), code in zip(self._subscriptions, codes, strict=False) if code >= 0x80]
        if refused:
            self._emit("warning", f"the broker refused the subscription to {', '.join(refused)}")

    def _handle_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any
    ) -> None:
        if mid == HELD_MID:
            return  # a batch of held QoS 0 packets: counted when the batches are reaped
        code = reason_value(reason)
        if code >= 0x80:
            self.stats.failed += 1
            self.stats.failed_reasons[str(getattr(reason, "getName", lambda: code)())] += 1
        else:
            self.stats.completed += 1

    # -- subscribing ---------------------------------------------------------------

    def subscribe(self, filters: Sequence[str], *, qos: int, on_message: MessageCallback | None = None) -> None:
        """Subscribe and wait for the SUBACK; re-subscribed after every reconnect.

        ``on_message`` runs on the network thread for every message: keep it short.
        Raises :class:`AuthError` when the broker refuses a filter, :class:`ConfigError`
        for an invalid filter or QoS, :class:`ConnectError` when no SUBACK comes.
        """
        client = self._require_client()
        if qos not in (0, 1, 2):
            raise ConfigError(f"invalid QoS {qos}: use 0, 1 or 2")
        if not filters:
            raise ConfigError("no topic filter to subscribe to")
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        if on_message is not None:
            self._on_message = on_message
        self._subscriptions = [(f, qos) for f in filters]
        deadline = time.monotonic() + self.settings.connect_timeout
        # Lock order, as on the network thread: self._io, then self._suback_ready. Holding
        # self._io while subscribing keeps the SUBACK from being handled before its mid is noted.
        with self._io:
            rc, mid = client.subscribe(list(self._subscriptions))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise ConnectError(f"cannot subscribe: {paho.error_string(rc)}")
            with self._suback_ready:
                self._awaited_mids.add(mid)
        seen = self.stats.received
        while True:
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.stats.received != seen:
                # The broker is busy sending us messages (a persistent session's backlog comes
                # before the SUBACK): it is alive, so the wait goes on while they keep coming.
                seen = self.stats.received
                deadline = time.monotonic() + self.settings.connect_timeout
                remaining = self.settings.connect_timeout
            with self._suback_ready:
                if mid in self._suback:
                    codes = self._suback.pop(mid)
                    break
                if remaining <= 0:
                    raise ConnectError("no answer (SUBACK) from the broker to the subscription")
                if self._threaded:
                    self._suback_ready.wait(min(remaining, 0.1))
                    continue
            self._pump(min(remaining, 0.05))
        refused = [f for f, code in zip(filters, codes, strict=False) if code >= 0x80]
        if refused:
            hint = (
                "; a TESAIoT token may only subscribe to topics that start with device/ and contain /telemetry"
                if self.settings.token is not None
                else ""
            )
            raise AuthError(f"the broker refused the subscription to {', '.join(refused)} (not authorized){hint}")

    # -- publishing ----------------------------------------------------------------

    def publish(self, message: Message, *, timeout: float | None = None, hold: bool = False) -> bool:
        """Publish with flow control. Returns False (and counts it dropped) when no slot
        in the window became free within ``timeout`` seconds (``None``: wait as long as
        it takes). Raises :class:`Interrupted` when the caller's interrupt is set while
        waiting, :class:`ConfigError` for an invalid topic or QoS.

        ``hold=True`` is for publishing flat out: with ``threaded=False`` a QoS 0 or 1
        message may then be held back and written together with the ones after it, up to
        ``HOLD_BYTES`` per ``send`` (one system call per batch; the session builds the
        packets). Held messages keep their order with every other packet; they are
        written at the latest by the next :meth:`wait`, :meth:`flush`, :meth:`close` or
        publish without ``hold``. QoS 1 ones count in the window and are registered with
        paho, which handles their PUBACK and resends them after a reconnect; for QoS 0,
        what paho has not yet written is bounded to ``HOLD_QUEUED`` batches.
        """
        client = self._require_client()
        if hold and not self._threaded:
            if message.qos == 0:
                return self._hold(message)
            if message.qos == 1 and client.socket() is not None:
                if len(self._pending) >= self._window and not self._make_room(timeout):
                    self.stats.published += 1
                    self.stats.dropped += 1
                    return False
                info = self._hold_qos1(client, message)
                if info is not None:
                    self._pending.append(info)
                    return True
        if self._held_count:
            self._release()
        if len(self._pending) >= self._window and not self._make_room(timeout):
            self.stats.published += 1
            self.stats.dropped += 1
            return False
        try:
            with self._io:
                info = client.publish(message.topic, message.payload, message.qos, message.retain)
        except ValueError as exc:
            raise ConfigError(f"cannot publish to {message.topic!r}: {exc}") from None
        self.stats.published += 1
        if not self._threaded:
            self._since_pump += 1
            if self._since_pump >= PUMP_EVERY:
                self._pump(0.0)  # read the acknowledgements that have arrived meanwhile
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            message.qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            # QoS 1/2 published while disconnected stays in paho's store and is sent on reconnect.
            self._pending.append(info)
        else:
            self.stats.dropped += 1
        return True

    def _hold(self, message: Message) -> bool:
        """Build the QoS 0 PUBLISH packet into the held batch (MQTT 3.1.1 and 5: fixed
        header, remaining length, topic, for MQTT 5 an empty property list, payload)."""
        self._append_publish(message, None)
        return True

    def _hold_qos1(self, client: paho.Client, message: Message) -> paho.MQTTMessageInfo | None:
        """Build a QoS 1 PUBLISH packet into the held batch, registered in paho's store of
        outgoing messages as paho's own ``publish`` registers it: paho then handles its
        PUBACK, and after a reconnect sends it again (with DUP) as it does its own.
        None when the next packet id is still in use (the caller publishes through paho)."""
        topic = self._topic_name(message.topic)[2:]
        mid = client._mid_generate()  # noqa: SLF001
        msg = paho.MQTTMessage(mid, topic)
        msg.timestamp = time.monotonic()  # paho's clock
        msg.payload = message.payload
        msg.qos = 1
        msg.retain = message.retain
        msg.dup = False
        msg.properties = None
        msg.state = paho.mqtt_ms_wait_for_puback
        with client._out_message_mutex:  # noqa: SLF001
            if mid in client._out_messages:  # noqa: SLF001
                return None
            client._out_messages[mid] = msg  # noqa: SLF001
            client._inflight_messages += 1  # noqa: SLF001
        msg.info.rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        self._append_publish(message, mid)
        return msg.info

    def _append_publish(self, message: Message, mid: int | None) -> None:
        """One PUBLISH packet (QoS 0 without ``mid``, QoS 1 with it) onto the held batch;
        the batch is written once it holds ``HOLD_BYTES``."""
        name = self._topic_name(message.topic)
        payload = message.payload
        five = self.settings.mqtt_version == 5
        size = len(name) + len(payload) + (2 if mid is not None else 0) + (1 if five else 0)
        if size > MAX_REMAINING_LENGTH:
            raise ConfigError(f"cannot publish to {message.topic!r}: the payload is too large for MQTT")
        held = self._held
        held.append((0x32 if mid is not None else 0x30) | (1 if message.retain else 0))
        while size > 0x7F:  # remaining length: 7 bits a byte, least significant first
            held.append((size & 0x7F) | 0x80)
            size >>= 7
        held.append(size)
        held += name
        if mid is not None:
            held += mid.to_bytes(2, "big")
        if five:
            held.append(0)  # no properties
        held += payload
        self._held_count += 1
        if mid is None:
            self._held_qos0 += 1
        self.stats.published += 1
        if len(held) >= HOLD_BYTES:
            self._pump(0.0)  # writes the batch, reads what arrived, keeps the connection alive

    def _topic_name(self, topic: str) -> bytes:
        """``topic`` as a PUBLISH packet's topic name (length-prefixed UTF-8), checked as
        :func:`~tesaiot_cli.message.validate_topic_name` checks it, cached."""
        name = self._topic_names.get(topic)
        if name is not None:
            return name
        problem = topic_name_problem(topic)  # the CLI's check: they agree (NUL included)
        if problem is not None:
            raise ConfigError(f"cannot publish to {topic!r}: {problem}")
        encoded = topic.encode("utf-8")
        name = len(encoded).to_bytes(2, "big") + encoded
        if len(self._topic_names) < 65536:
            self._topic_names[topic] = name
        return name

    def _release(self) -> None:
        """Hand the held packets to paho as one write; wait while paho still has more than
        ``HOLD_QUEUED`` batches to write (the socket is full: the broker sets the pace)."""
        if not self._held_count:
            return
        count, self._held_qos0, self._held_count = self._held_qos0, 0, 0
        batch, self._held = self._held, bytearray()
        client = self._client
        if client is None or client.socket() is None:
            # QoS 0 while disconnected is lost, as paho would lose it; QoS 1 stays in paho's
            # store and goes out again after the reconnect.
            self.stats.dropped += count
            return
        info = paho.MQTTMessageInfo(HELD_MID)
        self._held_batches.append((info, count))
        with self._io:
            # paho's own queue: it keeps the order with its other packets, writes what the
            # socket takes and the rest as the socket drains, through tcp, TLS or websockets.
            client._packet_queue(paho.PUBLISH, batch, HELD_MID, 0, info)  # noqa: SLF001
        while len(client._out_packet) > HOLD_QUEUED and client.socket() is not None:  # noqa: SLF001
            if self._interrupt.is_set():
                return  # what is unwritten is written by close(), or counted dropped there
            self._pump(0.005)

    def _make_room(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0002
        while True:
            self._reap()
            if len(self._pending) < self._window:
                return True
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._threaded:
                time.sleep(pause)
            else:
                self._pump(pause)
            pause = min(pause * 2, 0.005)

    def _reap(self) -> None:
        batches = self._held_batches
        while batches and batches[0][0]._published:  # noqa: SLF001
            info, count = batches.popleft()
            if info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                self.stats.dropped += count
            else:
                self.stats.completed += count
        pending = self._pending
        while pending:
            info = pending[0]
            if not info._published:  # noqa: SLF001 - is_published() raises for NO_CONN rcs
                return
            pending.popleft()
            if info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                # A QoS 0 packet still queued when the connection dropped: paho discards it.
                self.stats.dropped += 1
            elif self.settings.mqtt_version != 5:
                self.stats.completed += 1

    def in_flight(self) -> int:
        """Messages published but not yet completed."""
        self._reap()
        return len(self._pending) + self._held_qos0 + sum(count for _, count in self._held_batches)

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every published message completed.

        Returns whether all did. Raises :class:`Interrupted` on the caller's interrupt.
        """
        deadline = time.monotonic() + timeout
        if self._held_count:
            self._release()
        while self.in_flight():
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            if time.monotonic() >= deadline:
                return False
            if self._threaded:
                time.sleep(0.002)
            else:
                self._pump(0.002)
        return True

    # -- lifecycle -----------------------------------------------------------------

    def check(self) -> None:
        """Re-raise, on the caller's thread, an error raised by the message callback."""
        error, self._callback_error = self._callback_error, None
        if error is not None:
            raise error

    def close(self, *, flush_timeout: float = 5.0) -> None:
        """Wait for in-flight publishes (up to ``flush_timeout`` s), then disconnect cleanly.

        What is still unacknowledged after that is counted as dropped.
        """
        if self._client is None:
            return
        try:
            if self._pending and self.connected:
                self.flush(flush_timeout)
        except Interrupted:
            pass
        self._reap()
        self.stats.dropped += self.in_flight()
        self._pending.clear()
        self._held_batches.clear()
        self._held, self._held_count, self._held_qos0 = bytearray(), 0, 0
        self._teardown()

    def _require_client(self) -> paho.Client:
        if self._client is None:
            raise RuntimeError("session is not connected: use it as a context manager")
        return self._client
