"""The connection and its network loops: the network thread (subscribers, ``threaded=True``)
and the caller-driven loop (publishers, ``threaded=False``), on the fast path or on paho's
public path, with reconnects, keepalive and the delivery of received messages.

Nothing here catches broadly and goes on: a protocol error from the broker closes the
connection (MQTT says so) and the usual reconnect follows; any other exception on the
network thread stops it and is handed to the caller's thread (:meth:`Connection.raise_failure`).
"""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import Interrupted, ProtocolError, TesaiotError
from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.mqtt import codec, paho_compat
from tesaiot_cli.mqtt.backoff import SESSION_BACKOFF
from tesaiot_cli.mqtt.connect import (
    SESSION_TAKEN_OVER,
    new_client,
    reason_value,
    translate_connect_error,
)
from tesaiot_cli.mqtt.flow import SessionStats
from tesaiot_cli.mqtt.paho_compat import FastPath
from tesaiot_cli.mqtt.transport import BufferedSocket, IoHandoff, set_nodelay

NETWORK_TICK_S = 0.05  # threaded=True: longest wait for the socket; bounds shutdown and write latency
MAX_PUMP_S = 1.0  # longest single network wait: keepalive pings are sent between waits
READ_BATCH = 64  # threaded=True: packets read per hold of the I/O lock
MISC_EVERY_S = 0.1  # how often paho's keepalive check runs while data flows
CLOSE_LINGER_S = 2.0  # after DISCONNECT: longest wait for the broker to close its side
STOP_WAIT_S = 5.0  # stop(): longest wait for the network thread, then for the I/O lock

EventCallback = Callable[[str, str], None]
# Returns False when the message was not kept (it is then not acknowledged); None or True: kept.
MessageCallback = Callable[[Message], "bool | None"]


class NetworkFailure(RuntimeError):
    """An unexpected error on the network thread, re-raised on the caller's thread."""


class Connection:
    """One paho client and the loop that serves it. Owned by :class:`Session`."""

    def __init__(self, settings: ConnectionSettings, stats: SessionStats, *, on_event: EventCallback | None,
                 interrupt: threading.Event, threaded: bool, on_message: MessageCallback | None,
                 on_publish_done: Callable[[int, int, str], None]) -> None:
        self.settings = settings
        self.stats = stats
        self.interrupt = interrupt
        self.threaded = threaded
        self.on_message = on_message
        self._on_event = on_event
        self._on_publish_done = on_publish_done
        self.client: paho.Client | None = None
        self.fast: FastPath | None = None
        self.mqtt5 = settings.mqtt_version == 5
        # Serialises paho's socket use between the network thread and the caller's thread,
        # handed to a waiting caller first (transport.IoHandoff); ``io`` is its lock.
        self.handoff = IoHandoff()
        self.io = self.handoff.lock
        self.connack = threading.Event()
        self.connack_code = -1
        self.connack_text = ""
        self.receive_maximum: int | None = None
        self.shared_subscriptions: bool | None = None  # MQTT 5 CONNACK: None when not said
        self.connected = threading.Event()
        self.closing = False
        self.ever_connected = False
        self.subscriptions: list[tuple[str, int]] = []
        self.suback: dict[int, list[int]] = {}
        self.awaited_mids: set[int] = set()
        self.suback_ready = threading.Condition()
        self.refused_pubrec: dict[int, int] = {}
        self._failure: BaseException | None = None
        self._failure_on_network = False
        self._protocol_error: str | None = None
        self._reconnect_delay = SESSION_BACKOFF.delay(0)
        self._failed_reconnects = 0  # in a row, since the last CONNACK
        self._next_reconnect = 0.0
        self._next_misc = 0.0
        self._network: threading.Thread | None = None
        self._stop_network = threading.Event()

    # -- events and failures ---------------------------------------------------------

    def emit(self, kind: str, text: str) -> None:
        """Hand a state change to the caller's ``on_event``. Its errors are the caller's:
        they go to the caller's thread like a message callback's."""
        if self._on_event is not None:
            try:
                self._on_event(kind, text)
            except Exception as exc:  # noqa: BLE001 - handed to the caller's thread, not dropped
                self.fail(exc)

    def fail(self, exc: BaseException, *, on_network: bool = False) -> None:
        """Keep the first unexpected error for the caller's thread (``on_network``: raised
        by the loop itself rather than by one of the caller's callbacks)."""
        if self._failure is None:
            self._failure = exc
            self._failure_on_network = on_network

    def raise_failure(self) -> None:
        """Re-raise, on the caller's thread, what failed on the network thread or in a callback.

        A callback's own exception is raised as it is (it is the caller's); anything else
        the loop raised becomes :class:`NetworkFailure`, so no paho, ssl or socket
        exception type leaves this package.
        """
        error, self._failure = self._failure, None
        if error is None:
            return
        if self._failure_on_network and not isinstance(error, TesaiotError):
            raise NetworkFailure(f"the MQTT network loop failed: {type(error).__name__}: {error}") from error
        raise error

    # -- building and connecting ------------------------------------------------------

    def build(self, *, force_public: bool) -> paho.Client:
        s = self.settings
        # manual_ack: we acknowledge a message once the callback kept it (never what is not kept).
        client = new_client(s, reconnect_on_failure=True, manual_ack=True)
        client.reconnect_delay_set(int(SESSION_BACKOFF.min_s), int(SESSION_BACKOFF.max_s))
        # Set to the in-flight limit once CONNACK has said what it is (Session.connect).
        client.max_inflight_messages_set(0)
        client.max_queued_messages_set(0)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_connect_fail = self._handle_connect_fail
        client.on_subscribe = self._handle_subscribe
        client.on_socket_open = self._handle_socket_open
        why_not = None if force_public else paho_compat.probe(client)
        if why_not is None and not force_public:
            self.fast = FastPath(client)
            self.fast.set_message_handler(self._handle_paho_message)
            self.fast.watch_puback(self._puback, mqtt5=self.mqtt5)
            if self.mqtt5:
                self.fast.watch_pubrec(self.refused_pubrec.__setitem__)
        else:
            client.on_message = self._handle_public_message
            if why_not is not None:  # asked for (TESAIOT_PAHO_PATH=public): no notice
                self.emit("notice", f"using paho's public API (slower): {why_not}; at MQTT 5 a broker's "
                                    "refusal of a QoS 2 message (PUBREC reason code) cannot be seen there")
        if self.mqtt5 or self.fast is None:
            # Only MQTT 5 acknowledgements carry a reason code that can say "refused"; on the
            # public path this is also how completions are known. Without a callback paho skips
            # building a ReasonCode per message (a third of the CPU of a QoS 0 publish).
            client.on_publish = self._handle_publish
        self.client = client
        return client

    def connect(self, *, force_public: bool) -> None:
        """Connect; wait for CONNACK with :meth:`wait_for`. Raises as :meth:`Session.connect`."""
        s = self.settings
        client = self.build(force_public=force_public)
        where = f"{s.url.host}:{s.url.port}"
        connect_kwargs: dict[str, Any] = {"keepalive": s.keepalive}
        if self.mqtt5:
            connect_kwargs["clean_start"] = s.clean_session
            if not s.clean_session:
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = PERSISTENT_SESSION_EXPIRY_S
                connect_kwargs["properties"] = props
        try:
            client.connect(s.url.host, s.url.port, **connect_kwargs)
        except BaseException as exc:  # noqa: BLE001 - translated, never leaks
            self.client = None
            raise translate_connect_error(exc, where, s) from None
        if self.threaded:
            self._stop_network.clear()
            self._network = threading.Thread(target=self._network_main, name="tesaiot-mqtt", daemon=True)
            self._network.start()

    def check_fast_path(self) -> None:
        """After CONNACK: keep the fast path only if paho behaved as the probe expects."""
        if self.fast is None or self.client is None:
            return
        why_not = self.fast.behaves()
        if why_not is None:
            return
        with self.handoff.for_caller():
            self.fast.uninstall()
            self.fast = None
            self.client.on_message = self._handle_public_message
            self.client.on_publish = self._handle_publish
        self.emit("notice", f"using paho's public API (slower): {why_not}")

    def wait_for(self, event: threading.Event, deadline: float) -> None:
        while not event.is_set():
            if self.interrupt.is_set():
                raise Interrupted("interrupted")
            self.raise_failure()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self.threaded:
                event.wait(min(remaining, 0.1))
            else:
                self.pump(min(remaining, 0.1))

    # -- the loops ------------------------------------------------------------------

    def pump(self, timeout: float, *, idle: threading.Event | None = None) -> None:
        """One turn of the network loop on this thread, or a reconnect attempt when due.

        ``idle`` is the event whose wait passes the time while disconnected (the caller's
        interrupt, or the network thread's stop event).
        """
        client = self.client
        if client is None:
            return
        if client.socket() is not None:
            timeout = min(max(timeout, 0.0), MAX_PUMP_S)  # paho checks keepalive only between waits
            with self.io:
                turn = self._turn(client, timeout, wait_first=True)
            if turn is not None:
                self._after_turn(client, turn[0])
            return
        now = time.monotonic()
        if now < self._next_reconnect:
            (idle or self.interrupt).wait(min(timeout, self._next_reconnect - now))
            return
        try:
            with self.io:
                client.reconnect()
        except (OSError, paho.WebsocketConnectionError) as exc:  # the broker is still away: said, retried later
            self._failed_reconnects += 1
            self._reconnect_delay = SESSION_BACKOFF.delay(self._failed_reconnects)
            self._next_reconnect = time.monotonic() + self._reconnect_delay
            if self._failed_reconnects == 1 or self._failed_reconnects >= SESSION_BACKOFF.quick_tries:
                # Said once for the quick attempts, then at each longer delay.
                why = translate_connect_error(exc, f"{self.settings.url.host}:{self.settings.url.port}",
                                              self.settings)
                self.emit("reconnecting", f"reconnect failed ({why}); next attempt in {self._reconnect_delay:g} s")

    def _turn(self, client: paho.Client, timeout: float, *, wait_first: bool) -> tuple[int, bool] | None:
        """One turn of the loop, with ``io`` held: on the fast path (after waiting up to
        ``timeout`` for the socket when ``wait_first``) or paho's public one (which always
        waits up to ``timeout``). Returns paho's result code and whether messages were
        received, or None when the broker broke the protocol and the connection was closed."""
        try:
            if self.fast is not None:
                if wait_first:
                    self._wait_for_socket(client, timeout)
                return self._fast_turn(client, self.fast)
            return self._public_turn(client, timeout), False
        except ProtocolError as exc:
            self._close_for(client, str(exc))
        except paho_compat.MALFORMED as exc:
            self._close_for(client, str(paho_compat.malformed(exc)))
        return None

    def _after_turn(self, client: paho.Client, rc: int) -> None:
        """paho's result of a turn: a protocol error paho found itself (a packet it could not
        take; it closed the connection and says why in on_disconnect) is counted like ours;
        when the socket is closed, the reconnect is due after the delay."""
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return
        if rc == MQTTErrorCode.MQTT_ERR_PROTOCOL:
            self.stats.protocol_errors += 1
        if not self.closing and client.socket() is None:
            self._next_reconnect = time.monotonic() + self._reconnect_delay

    def _public_turn(self, client: paho.Client, timeout: float) -> int:
        """paho's public loop, one turn: wait for the socket, read, write, keepalive."""
        sock = client.socket()
        if sock is None:
            return int(MQTTErrorCode.MQTT_ERR_NO_CONN)
        pending = getattr(sock, "pending", None)
        if not (pending is not None and pending()):
            select.select([sock], [sock] if client.want_write() else [], [], timeout)
        rc = client.loop_read()
        for _ in range(READ_BATCH - 1):  # read on while more is waiting, a packet per call
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or client.socket() is not sock:
                break
            if not (pending is not None and pending()) and not select.select([sock], [], [], 0)[0]:
                break
            rc = client.loop_read()
        return self._write_and_keepalive(client, rc)

    def _network_main(self) -> None:
        """The network thread (threaded=True). Any unexpected error stops it and goes to the
        caller's thread; a protocol error from the broker closes the connection."""
        client = self.client
        stop = self._stop_network
        try:
            while client is not None and not stop.is_set():
                if client.socket() is None:
                    self.pump(NETWORK_TICK_S, idle=stop)
                    continue
                self.handoff.stand_back()
                with self.io:
                    turn = self._turn(client, NETWORK_TICK_S, wait_first=False)
                if turn is None:
                    continue  # a protocol error closed the connection
                rc, progressed = turn
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self._after_turn(client, rc)
                    continue
                if progressed:
                    continue  # more is probably waiting: read on without a select
                self._wait_for_socket(client, NETWORK_TICK_S)
        except BaseException as exc:  # noqa: BLE001 - not swallowed: the caller's thread re-raises it
            self.fail(exc, on_network=True)

    def _fast_turn(self, client: paho.Client, fast: FastPath) -> tuple[int, bool]:
        """Read what has arrived (PUBLISH packets parsed from the buffer, the rest by paho),
        send the acknowledgements in one write, write what is queued, keepalive. Returns
        paho's result code and whether messages were received."""
        sock = client.socket()
        buffered = sock if isinstance(sock, BufferedSocket) else None
        if buffered is None:
            return self._public_turn(client, 0.0), False
        before = self.stats.received
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        buffered.cork()
        try:
            for _ in range(READ_BATCH):
                if not buffered.buffered():
                    ended = buffered.fill()  # one system call for what the socket holds (64 KiB at most)
                    if not buffered.buffered():
                        if ended:
                            rc = client.loop_read()  # paho meets the end and handles the lost connection
                        break
                if fast.at_packet_boundary():
                    if buffered.take_publishes(mqtt5=self.mqtt5, deliver=self._deliver, acknowledged=self._puback):
                        fast.note_bytes_received()
                        continue
                rc = client.loop_read()  # one packet (or the rest of one); its acknowledgement goes into the cork
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    break
        finally:
            buffered.uncork()  # the batch's acknowledgements in one send
        return self._write_and_keepalive(client, rc), self.stats.received != before

    def _write_and_keepalive(self, client: paho.Client, rc: int) -> int:
        """The end of a turn after a successful read (``rc``): write what paho has queued, and
        run paho's keepalive check at most every ``MISC_EVERY_S``. Returns paho's result code."""
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and client.want_write():
            rc = client.loop_write()
        now = time.monotonic()
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and now >= self._next_misc:
            self._next_misc = now + MISC_EVERY_S
            rc = client.loop_misc()
        return int(rc)

    def _wait_for_socket(self, client: paho.Client, timeout: float) -> None:
        sock = client.socket()
        if sock is None:
            return
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return
        buffered = sock if isinstance(sock, BufferedSocket) else None
        writing = client.want_write() or (buffered is not None and buffered.has_output())
        select.select([sock], [sock] if writing else [], [], timeout)

    def _close_for(self, client: paho.Client, why: str) -> None:
        """A protocol error from the broker: close the connection (MQTT 3.1.1 4.8, MQTT 5
        4.13), say so in one line, reconnect after the usual backoff. Call with ``io`` held."""
        self._protocol_error = why
        self.stats.protocol_errors += 1
        reason = (ReasonCode(PacketTypes.DISCONNECT, "Protocol error")  # type: ignore[no-untyped-call,unused-ignore]
                  if self.mqtt5 else None)
        client.disconnect(reasoncode=reason)
        if client.socket() is not None and client.want_write():
            client.loop_write()  # writes the DISCONNECT; paho then closes the socket
        self._reconnect_delay = SESSION_BACKOFF.after_violation(self._reconnect_delay)
        self._next_reconnect = time.monotonic() + self._reconnect_delay

    def stop(self) -> None:
        """Stop the network thread and disconnect cleanly (a DISCONNECT, then a linger so
        the broker reads every acknowledgement before the socket closes)."""
        client, self.client = self.client, None
        if client is None:
            return
        self.closing = True
        network, self._network = self._network, None
        if network is not None:
            self._stop_network.set()
            network.join(timeout=STOP_WAIT_S)
        # The I/O lock, so nothing else is inside paho: free unless the network thread did
        # not stop. Then it holds paho's state, and stopping must not wait on it forever:
        # the socket is closed under it (no DISCONNECT: the broker sees the connection drop).
        if not self.io.acquire(timeout=STOP_WAIT_S):
            self.emit("warning", f"the network loop did not stop within {2 * STOP_WAIT_S:g} s: "
                                 "the connection was closed without a DISCONNECT")
            sock = client.socket()
            if sock is not None:
                sock.close()
            self.connected.clear()
            return
        try:
            sock = client.socket()
            if isinstance(sock, BufferedSocket):
                sock.linger_s = CLOSE_LINGER_S
            if client.socket() is not None:
                client.disconnect()
                if client.socket() is not None:
                    client.loop_write()  # writes the DISCONNECT, then paho closes the socket
        finally:
            self.io.release()
        self.connected.clear()

    # -- receiving --------------------------------------------------------------------

    def _deliver(self, topic: str, payload: bytes, qos: int, retain: bool,
                 properties: PublishProperties | None, mid: int) -> bool:
        """One received message to the callback: whether it was kept (and may be acknowledged)."""
        self.stats.received += 1
        sink = self.on_message
        if sink is None:
            return True
        try:
            kept = sink(Message(topic, payload, qos, retain, time.time_ns(), properties, mid)) is not False
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            self.fail(exc)
            return False
        if not kept:
            self.stats.not_kept += 1
        return kept

    def _take_paho_message(self, client: paho.Client, msg: paho.MQTTMessage) -> None:
        """A PUBLISH paho read (on the fast path: QoS 2, or a packet the buffer had cut):
        checked as the codec checks it, delivered, then acknowledged if kept."""
        try:
            topic = msg.topic
        except UnicodeDecodeError:
            raise ProtocolError("the broker sent a PUBLISH whose topic is not valid UTF-8") from None
        if "+" in topic or "#" in topic or "\x00" in topic:
            codec.check_topic_name(topic.encode("utf-8"))  # raises, with the reason
        qos = int(msg.qos)
        codec.check_packet_id(int(msg.mid), qos)
        properties = paho_compat.from_paho_properties(msg.properties) if self.mqtt5 else None
        kept = self._deliver(topic, bytes(msg.payload), qos, bool(msg.retain), properties, int(msg.mid) if qos else 0)
        if qos == 2 and not kept:
            # QoS 2 handed it over when paho sent PUBREC: it cannot go back to the broker.
            self.stats.not_kept -= 1
            self.stats.discarded += 1
        if qos and (kept or qos == 2):
            client.ack(int(msg.mid), qos)

    def _handle_paho_message(self, msg: paho.MQTTMessage) -> None:
        client = self.client
        if client is not None:
            self._take_paho_message(client, msg)

    def _handle_public_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self._take_paho_message(client, msg)

    # -- paho callbacks ----------------------------------------------------------------

    def _handle_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if self.fast is not None:
            set_nodelay(paho_compat.raw_socket(sock))
            self.fast.install_socket(sock)
        else:
            set_nodelay(sock)  # plain TCP or TLS; paho's websocket wrapper keeps its socket to itself

    def _handle_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        code = reason_value(reason)
        self.connack_code = code
        self.connack_text = str(getattr(reason, "getName", lambda: reason)())
        if code == 0:
            self._reconnect_delay = SESSION_BACKOFF.delay(0)
            self._failed_reconnects = 0
            if self.mqtt5 and properties is not None:
                receive_maximum = getattr(properties, "ReceiveMaximum", None)
                self.receive_maximum = int(receive_maximum) if receive_maximum is not None else None
                shared = getattr(properties, "SharedSubscriptionAvailable", None)
                self.shared_subscriptions = None if shared is None else bool(shared)
            if self.ever_connected:
                self.stats.reconnects += 1
                self.emit("reconnected", f"reconnected to {self.settings.url.display()}")
                if self.subscriptions and not getattr(flags, "session_present", False):
                    self.stats.sessions_lost += 1
                    self.emit("warning", "the broker kept no session for this client: messages published while "
                                         "it was disconnected may have been lost (--session NAME makes the broker "
                                         "keep them)")
            if self.ever_connected and self.fast is not None:
                self.fast.resend_qos1()  # ours; paho sends its own store again itself
            self.ever_connected = True
            self.connected.set()
            if self.subscriptions:
                client.subscribe(self.subscription_list())
        elif self.ever_connected:
            self.emit("reconnecting", f"reconnect refused (code {code}: {self.connack_text}); retrying")
        self.connack.set()

    def subscription_list(self) -> list[tuple[str, Any]]:
        """The subscriptions as paho takes them: at MQTT 5 with Retain-As-Published, so a
        retained message published live keeps its retain flag (what record keeps)."""
        if not self.mqtt5:
            return list(self.subscriptions)
        from paho.mqtt.subscribeoptions import SubscribeOptions

        return [(f, SubscribeOptions(qos=q, retainAsPublished=True)) for f, q in self.subscriptions]

    def _handle_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any,
                           properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self.closing or not was_connected:
            return
        self.stats.disconnects += 1
        code = reason_value(reason)
        why = str(getattr(reason, "getName", lambda: reason)())
        if code == 0x80:  # paho's "Unspecified error": what it reports for a lost connection
            why = "the connection was closed (broker stopped or restarted, or the network dropped)"
        if code in SESSION_TAKEN_OVER:
            why += " (another client with the same client id took the session over)"
        protocol_error, self._protocol_error = self._protocol_error, None
        if protocol_error is not None:
            self.emit("disconnected", f"closed the connection to {self.settings.url.display()}: {protocol_error}")
        else:
            self.emit("disconnected", f"disconnected from {self.settings.url.display()}: {why}")
        self.emit("reconnecting", f"reconnecting ({SESSION_BACKOFF.text()})")

    def _handle_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        if not self.closing and self.ever_connected:
            self.emit("reconnecting", "reconnect attempt failed; trying again")

    def _handle_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        codes = [reason_value(r) for r in reasons]
        with self.suback_ready:  # held by subscribe() until it has noted its mid
            if mid in self.awaited_mids:
                self.suback[mid] = codes
                self.suback_ready.notify_all()
                return
        # A re-subscription after a reconnect: nobody waits for it, so say it if it failed.
        refused = [f for (f, _), code in zip(self.subscriptions, codes, strict=False) if code >= 0x80]
        if refused:
            self.emit("warning", f"the broker refused the subscription to {', '.join(refused)}")

    def _puback(self, mid: int, code: int) -> bool:
        """A PUBACK read from the buffer (fast path): completed here when it is for a QoS 1
        message the fast path wrote (else paho reads it), counted as :meth:`_handle_publish`
        counts paho's."""
        fast = self.fast
        if fast is None or not fast.complete_qos1(mid):
            return False
        if self.mqtt5:  # only MQTT 5 counts completions by callback (its reason codes can refuse)
            self._on_publish_done(mid, code, puback_reason_name(code))
        return True

    def _handle_publish(self, client: paho.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        if mid == paho_compat.HELD_MID:
            return  # a batch of held QoS 0 packets: counted when the batches are reaped
        code = reason_value(reason)
        refused = self.refused_pubrec.pop(mid, None) if self.refused_pubrec else None
        if refused is not None and code < 0x80:
            code = refused
            reason = ReasonCode(PacketTypes.PUBREC, identifier=refused)  # type: ignore[no-untyped-call,unused-ignore]
        self._on_publish_done(mid, code, str(getattr(reason, "getName", lambda: code)()))


PERSISTENT_SESSION_EXPIRY_S = 7 * 24 * 3600


def puback_reason_name(code: int) -> str:
    """The MQTT 5 name of a PUBACK reason code (paho's table), or its number when it has none."""
    if code < 0x80:
        return "Success"
    try:
        return str(ReasonCode(PacketTypes.PUBACK, identifier=code).getName())  # type: ignore[no-untyped-call,unused-ignore]
    except (KeyError, ValueError, TypeError):  # not a PUBACK reason code: paho has no name for it
        return f"reason code 0x{code:02x}"


