"""The Session facade: connect / subscribe / publish / wait / flush / close / check.

One connection to one broker, shared by every command. It connects (with a timeout),
authenticates, verifies TLS, reconnects with backoff and re-subscribes, delivers received
messages as :class:`Message`, and publishes with flow control (a bounded window, and at
most the broker's Receive Maximum of QoS 1/2 messages unacknowledged), so no publish is
lost without being counted. It never prints; state changes go to ``on_event``.

Nothing from paho, ``ssl`` or ``socket`` escapes: failures become :class:`ConnectError`,
:class:`AuthError`, :class:`ConfigError`, :class:`ProtocolError` or
:class:`NetworkFailure` (an unexpected error on the network thread, re-raised here).
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Sequence

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import AuthError, ConfigError, ConnectError, Interrupted
from tesaiot_cli.message import Message, validate_topic_filter
from tesaiot_cli.mqtt import codec, paho_compat
from tesaiot_cli.mqtt.connect import AUTH_REASON_CODES, PASSWORD_HINT, TOKEN_HINT, no_answer_error
from tesaiot_cli.mqtt.flow import DEFAULT_WINDOW, HeldBatches, InFlight, SessionStats, inflight_limits
from tesaiot_cli.mqtt.loops import Connection, EventCallback, MessageCallback

PUMP_EVERY = 64  # threaded=False: read acknowledgements every this many publishes
HOLD_BYTES = 64 * 1024  # publish(hold=True): PUBLISH packets written per send
HOLD_QUEUED = 2  # publish(hold=True): held batches paho may keep unwritten before we wait

__all__ = ["DEFAULT_WINDOW", "HOLD_QUEUED", "EventCallback", "MessageCallback", "Session", "SessionStats"]


class Session:
    """One connection to one broker. Use as a context manager::

        with Session(settings, on_event=print_event) as session:
            session.subscribe(["device/+/telemetry/#"], qos=1, on_message=handle)

    ``window`` bounds the messages published but not yet completed; ``max_inflight`` the
    QoS 1/2 ones not yet acknowledged (default: the broker's Receive Maximum at MQTT 5; at
    MQTT 3.1.1 20 for QoS 2, and the window for QoS 1). ``interrupt`` is an event the
    caller sets (on Ctrl+C) to cut blocking waits short with :class:`Interrupted`.

    ``on_message`` receives messages from the moment the session connects (a persistent
    session's queued messages arrive before any SUBSCRIBE); ``subscribe`` may also set it.
    It runs on the network thread; when it returns False the message was not kept and is
    not acknowledged (at QoS 1 the broker delivers it again to a persistent session).

    ``threaded=True`` (subscribers) runs the network loop on its own thread.
    ``threaded=False`` (publishers) runs it on the caller's thread: each PUBLISH goes
    straight to the socket instead of waking a network thread (about 3x less CPU per
    message), and the caller lets time pass with :meth:`wait` instead of sleeping, which
    reads acknowledgements, keeps the connection alive and reconnects with backoff.

    ``public_path=True`` (or ``TESAIOT_PAHO_PATH=public`` in the settings) uses only
    paho's public API, as on a paho version the probe does not recognise.
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
        max_inflight: int | None = None,
        public_path: bool | None = None,
    ) -> None:
        if window < 1:
            raise ConfigError(f"invalid publish window {window}: it must be at least 1")
        if max_inflight is not None and not 1 <= max_inflight <= 65535:
            raise ConfigError(f"invalid --max-inflight {max_inflight}: use 1 to 65535")
        self.settings = settings
        self.stats = SessionStats()
        self._on_event = on_event
        self._window = window
        self._max_inflight = max_inflight
        self._public_path = settings.paho_path == "public" if public_path is None else public_path
        self._interrupt = interrupt or threading.Event()
        self._threaded = threaded
        self._initial_on_message = on_message
        self._net: Connection | None = None
        self._inflight = InFlight(window, *inflight_limits(mqtt_version=settings.mqtt_version,
                                                           receive_maximum=None, max_inflight=max_inflight))
        self._since_pump = 0
        # publish(hold=True): PUBLISH packets built here and handed to paho together.
        self._held = bytearray()
        self._held_count = 0  # packets held (QoS 0 and 1)
        self._held_qos0 = 0  # of which QoS 0: completed when written (QoS 1: when acknowledged)
        self._held_batches = HeldBatches()
        self._topic_names: dict[str, bytes] = {}
        self._completed_public: set[int] = set()  # paho's public path: mids on_publish reported
        self._backlog: collections.deque[Message] = collections.deque()  # QoS 1/2 kept while disconnected
        self._closed_net: Connection | None = None
        self._hold_fast = False  # set at connect: see publish()
        self._qos2_public_said = False
        self._no_properties: bytes | None = None

    # -- context manager -------------------------------------------------------------

    def __enter__(self) -> Session:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._net is not None and self._net.connected.is_set()

    @property
    def fast_path(self) -> bool:
        """Whether the session reads and writes packets itself (False: paho's public path)."""
        return self._net is not None and self._net.fast is not None

    @property
    def receive_maximum(self) -> int | None:
        """The broker's Receive Maximum from CONNACK (MQTT 5; None when not given)."""
        return self._net.receive_maximum if self._net is not None else None

    @property
    def shared_subscriptions_available(self) -> bool | None:
        """MQTT 5 CONNACK's Shared Subscription Available (None: the broker did not say)."""
        return self._net.shared_subscriptions if self._net is not None else None

    # -- connecting ----------------------------------------------------------------

    def connect(self) -> None:
        """Connect and wait for the broker's CONNACK.

        Raises :class:`ConnectError` (refused, DNS, TLS, timeout), :class:`AuthError`
        (CONNACK 4/5/134/135), :class:`ConfigError` (bad TLS files) or :class:`Interrupted`.
        """
        if self._net is not None:
            raise RuntimeError("session already connected")
        s = self.settings
        net = Connection(s, self.stats, on_event=self._on_event, interrupt=self._interrupt, threaded=self._threaded,
                         on_message=self._initial_on_message, on_publish_done=self._publish_done)
        net.connect(force_public=self._public_path)
        self._net = net
        where = f"{s.url.host}:{s.url.port}"
        deadline = time.monotonic() + s.connect_timeout
        try:
            net.wait_for(net.connack, deadline)
        except BaseException:
            self._teardown()
            raise
        if not net.connack.is_set():
            self._teardown()
            raise no_answer_error(where, s)
        if net.connack_code != 0:
            code, text = net.connack_code, net.connack_text
            self._teardown()
            if code in AUTH_REASON_CODES:
                hint = TOKEN_HINT if s.token is not None else PASSWORD_HINT
                raise AuthError(
                    f"authentication failed at {where} (code {code}: {text}): {hint}", reason_code=code
                )
            raise ConnectError(f"the broker at {where} refused the connection (code {code}: {text})",
                               reason_code=code)
        net.check_fast_path()
        # publish(hold=True) at QoS 0 builds packets itself: the driven fast path only.
        self._hold_fast = not self._threaded and net.fast is not None
        self._no_properties = b"\x00" if s.mqtt_version == 5 else None
        self._inflight.limit, self._inflight.limit_qos2 = inflight_limits(
            mqtt_version=s.mqtt_version, receive_maximum=net.receive_maximum, max_inflight=self._max_inflight)


    # -- the caller-driven network loop (threaded=False) ---------------------------------

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass (returns early when the interrupt is set).

        With ``threaded=False`` the time is spent serving the connection: reading
        acknowledgements, sending keepalives and reconnecting with backoff. Publishers call
        this instead of ``time.sleep``. Raises what failed on the network thread.
        """
        deadline = time.monotonic() + seconds
        while not self._interrupt.is_set():
            self.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if self._threaded or self._net is None:
                self._interrupt.wait(min(remaining, 0.1) if self._threaded else remaining)
            else:
                self._pump(remaining)

    def _pump(self, timeout: float) -> None:
        net = self._net
        if net is None:
            return
        self.check()
        self._since_pump = 0
        if self._held_count:
            self._release()
        net.pump(timeout)

    # -- subscribing ---------------------------------------------------------------

    def subscribe(self, filters: Sequence[str], *, qos: int, on_message: MessageCallback | None = None) -> None:
        """Subscribe and wait for the SUBACK; re-subscribed after every reconnect. At MQTT 5
        with Retain-As-Published (a retained message published live keeps its flag).

        ``on_message`` runs on the network thread for every message: keep it short.
        Raises :class:`AuthError` when the broker refuses a filter, :class:`ConfigError`
        for an invalid filter or QoS, or when the filters share a subscription (``$share/``)
        and an MQTT 5 broker says it has no shared subscriptions, :class:`ConnectError`
        when no SUBACK comes.
        """
        net = self._require()
        client = net.client
        if client is None:
            raise RuntimeError("session is not connected")
        if qos not in (0, 1, 2):
            raise ConfigError(f"invalid QoS {qos}: use 0, 1 or 2")
        if not filters:
            raise ConfigError("no topic filter to subscribe to")
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        shared = [f for f in filters if f.startswith("$share/")]
        if shared and net.shared_subscriptions is False:
            raise ConfigError(
                f"the broker at {self.settings.url.display()} has no shared subscriptions (its CONNACK says so): "
                f"{shared[0]} would be an ordinary topic and receive nothing; record with one worker, without "
                "--share, or use a broker that supports $share (mosquitto, EMQX, HiveMQ)")
        if on_message is not None:
            net.on_message = on_message
        net.subscriptions = [(f, qos) for f in filters]
        # Lock order, as on the network thread: io, then suback_ready. Holding io while
        # subscribing keeps the SUBACK from being handled before its mid is noted.
        with net.handoff.for_caller():
            rc, mid = client.subscribe(net.subscription_list())
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise ConnectError(f"cannot subscribe: {paho.error_string(rc)}")
            with net.suback_ready:
                net.awaited_mids.add(mid)
        # The wait starts when the SUBSCRIBE is on its way, not before the lock was had.
        deadline = time.monotonic() + self.settings.connect_timeout
        seen = self.stats.received
        while True:
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            self.check()
            remaining = deadline - time.monotonic()
            if remaining <= 0 and self.stats.received != seen:
                # The broker is busy sending us messages (a persistent session's backlog comes
                # before the SUBACK): it is alive, so the wait goes on while they keep coming.
                seen = self.stats.received
                deadline = time.monotonic() + self.settings.connect_timeout
                remaining = self.settings.connect_timeout
            with net.suback_ready:
                if mid in net.suback:
                    codes = net.suback.pop(mid)
                    break
                if remaining <= 0:
                    raise ConnectError("no answer (SUBACK) from the broker to the subscription")
                if self._threaded:
                    net.suback_ready.wait(min(remaining, 0.1))
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
        waiting, :class:`ConfigError` for an invalid topic or QoS, and what failed on the
        network thread.

        ``hold=True`` is for publishing flat out: with ``threaded=False`` on the fast path
        a QoS 0 or 1 message without properties may then be held back and written together
        with the ones after it, up to ``HOLD_BYTES`` per ``send`` (one system call per
        batch). Held messages keep their order with every other packet; they are written at
        the latest by the next :meth:`wait`, :meth:`flush`, :meth:`close` or publish
        without ``hold``. QoS 1 ones count in the window and are registered with paho, which
        handles their PUBACK and resends them after a reconnect; for QoS 0, what paho has not
        yet written is bounded to ``HOLD_QUEUED`` batches. :meth:`close` writes or counts
        every held message.
        """
        net = self._require()
        if hold and message.qos == 0 and self._hold_fast and message.properties is None:
            # The hot path of replay --speed max / simulate --interval 0: as few calls as
            # possible per message (errors from the network are raised by the next _pump).
            name = self._topic_names.get(message.topic) or self._topic_name(message.topic)
            held = self._held
            codec.append_publish(held, name, message.payload, 0, message.retain, 0, self._no_properties)
            self._held_count += 1
            self._held_qos0 += 1
            self.stats.published += 1
            if len(held) >= HOLD_BYTES:
                self._pump(0.0)  # writes the batch, reads what arrived, keeps the connection alive
            return True
        self.check()
        if message.qos == 2 and not self._qos2_public_said and self.settings.mqtt_version == 5 \
                and net.fast is None and self._on_event is not None:
            # paho's public API drops a PUBREC's reason code: a refusal of a QoS 2 message
            # (an ACL, a quota) would count as acknowledged. Said once, never silent.
            self._qos2_public_said = True
            self._on_event("warning", "on paho's public path a broker's refusal of a QoS 2 message (MQTT 5 PUBREC "
                                      "reason >= 0x80) cannot be seen: such messages count as acknowledged; use "
                                      "QoS 1 to have refusals counted")
        client = net.client
        if client is None:
            raise RuntimeError("session is not connected")
        self._topic_name(message.topic)  # one topic-name check on every path (cached): paho's lets NUL through
        fast = net.fast
        if hold and not self._threaded and fast is not None and message.properties is None:
            if message.qos == 0:
                self._append_publish(message, 0)
                return True
            if message.qos == 1 and client.socket() is not None:
                if not self._inflight.has_room(1) and not self._make_room(1, timeout):
                    self.stats.published += 1
                    self.stats.dropped += 1
                    return False
                mid = fast.claim_qos1_mid()
                if mid is not None:
                    self._append_publish(message, mid, fast)
                    return True
        if self._held_count:
            self._release()
        if message.qos and (self._backlog or not self.connected):
            # Kept here until the connection is back, then sent as the in-flight limit allows
            # (paho would send everything it holds at once after the reconnect, past the
            # broker's Receive Maximum).
            if len(self._inflight) + len(self._backlog) >= self._window and not self._make_room(message.qos, timeout):
                self.stats.published += 1
                self.stats.dropped += 1
                return False
            if message.topic not in self._topic_names:
                self._topic_name(message.topic)  # an invalid topic fails now, not after the reconnect
            self._backlog.append(message)
            self.stats.published += 1
            self._drain_backlog()
            return True
        if not self._inflight.has_room(message.qos) and not self._make_room(message.qos, timeout):
            self.stats.published += 1
            self.stats.dropped += 1
            return False
        self.stats.published += 1
        self._send(message)
        return True

    def _send(self, message: Message) -> None:
        """Hand one message to paho (counted as published by the caller)."""
        net = self._require()
        client = net.client
        if client is None:
            raise RuntimeError("session is not connected")
        properties = paho_compat.to_paho_properties(message.properties) if net.mqtt5 else None
        io = net.io
        if not io.acquire(blocking=False):  # the hot path: no context manager when the lock is free
            net.handoff.wait()
        try:
            info = client.publish(message.topic, message.payload, message.qos, message.retain,
                                  properties=properties)
        except ValueError as exc:
            self.stats.published -= 1
            raise ConfigError(f"cannot publish to {message.topic!r}: {exc}") from None
        finally:
            io.release()
        if not self._threaded:
            self._since_pump += 1
            if self._since_pump >= PUMP_EVERY:
                self._pump(0.0)  # read the acknowledgements that have arrived meanwhile
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            message.qos > 0 and info.rc in (MQTTErrorCode.MQTT_ERR_NO_CONN, MQTTErrorCode.MQTT_ERR_CONN_LOST)
        ):
            # QoS 1/2 that could not be written (the connection is just gone) stays in paho's
            # store and is sent again after the reconnect.
            self._inflight.add(info, message.qos)
        else:
            self.stats.dropped += 1

    def _drain_backlog(self) -> None:
        """Send what was kept while disconnected, as far as the in-flight limit allows."""
        backlog = self._backlog
        while backlog and self.connected and self._inflight.has_room(backlog[0].qos):
            self._send(backlog.popleft())

    def _append_publish(self, message: Message, mid: int, fast: paho_compat.FastPath | None = None) -> None:
        """One PUBLISH packet (QoS 0 with ``mid`` 0, QoS 1 with its mid, kept by ``fast``
        until its PUBACK) onto the held batch; the batch is written once it holds ``HOLD_BYTES``."""
        held = self._held
        start = len(held)
        try:
            codec.append_publish(held, self._topic_name(message.topic), message.payload, 1 if mid else 0,
                                 message.retain, mid, b"\x00" if self.settings.mqtt_version == 5 else None)
        except ConfigError as exc:
            raise ConfigError(f"cannot publish to {message.topic!r}: {exc}") from None
        if mid and fast is not None:
            self._inflight.add(fast.track_qos1(mid, bytes(held[start:])), 1)
        self._held_count += 1
        if not mid:
            self._held_qos0 += 1
        self.stats.published += 1
        if len(self._held) >= HOLD_BYTES:
            self._pump(0.0)  # writes the batch, reads what arrived, keeps the connection alive

    def _topic_name(self, topic: str) -> bytes:
        name = self._topic_names.get(topic)
        if name is None:
            name = codec.topic_name(topic)
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
        net = self._net
        client = net.client if net is not None else None
        fast = net.fast if net is not None else None
        if net is None or client is None or fast is None or client.socket() is None:
            # QoS 0 while disconnected is lost, as paho would lose it; QoS 1 stays in paho's
            # store and goes out again after the reconnect.
            self.stats.dropped += count
            return
        info = paho.MQTTMessageInfo(paho_compat.HELD_MID)
        self._held_batches.add(info, count)
        with net.handoff.for_caller():
            fast.queue_publishes(batch, info)
        while fast.unwritten_packets() > HOLD_QUEUED and client.socket() is not None:
            if self._interrupt.is_set():
                return  # what is unwritten is written by close(), or counted dropped there
            net.pump(0.005)

    def _make_room(self, qos: int, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.0002
        while True:
            self._reap()
            if self._backlog or not self.connected:
                if qos and len(self._inflight) + len(self._backlog) < self._window:
                    return True
            elif self._inflight.has_room(qos):
                return True
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            self.check()
            if deadline is not None and time.monotonic() >= deadline:
                return False
            if self._threaded:
                time.sleep(pause)
            else:
                self._pump(pause)
            pause = min(pause * 2, 0.005)

    def _done(self, info: paho.MQTTMessageInfo, qos: int) -> bool:
        net = self._net
        if net is not None and net.fast is None:
            return self._done_public(info, qos)
        return paho_compat.published(info)

    def _done_public(self, info: paho.MQTTMessageInfo, qos: int) -> bool:
        """paho's public view: is_published() raises once rc is not success, as for a
        QoS 1/2 message whose first send failed (paho resends it after the reconnect) or a
        QoS 0 one lost with the connection."""
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return info.is_published()
        if qos == 0:
            return info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST
        if info.mid in self._completed_public:
            self._completed_public.discard(info.mid)
            return True
        return False

    def _publish_done(self, mid: int, code: int, reason: str) -> None:
        """paho's on_publish (MQTT 5, or paho's public path): count it by its reason code."""
        if code >= 0x80:
            self.stats.failed += 1
            self.stats.failed_reasons[reason] += 1
        else:
            self.stats.completed += 1
        net = self._net
        if net is not None and net.fast is None:
            if len(self._completed_public) > 100_000:
                self._completed_public.clear()
            self._completed_public.add(mid)

    def _reap(self) -> None:
        if self._backlog:
            self._drain_backlog()
        for info, count in self._held_batches.reap(paho_compat.published):
            if info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                self.stats.dropped += count
            else:
                self.stats.completed += count
        net = self._net
        counted_by_callback = net is not None and (net.mqtt5 or net.fast is None)
        for info, qos in self._inflight.reap(self._done):
            if qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_CONN_LOST:
                # A QoS 0 packet still queued when the connection dropped: paho discards it.
                self.stats.dropped += 1
            elif not counted_by_callback:
                self.stats.completed += 1

    def in_flight(self) -> int:
        """Messages published but not yet completed (held ones included)."""
        self._reap()
        return len(self._inflight) + len(self._backlog) + self._held_qos0 + self._held_batches.messages

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until every published message completed.

        Returns whether all did. Raises :class:`Interrupted` on the caller's interrupt,
        and what failed on the network thread.
        """
        deadline = time.monotonic() + timeout
        if self._held_count:
            self._release()
        while self.in_flight():
            if self._interrupt.is_set():
                raise Interrupted("interrupted")
            self.check()
            if time.monotonic() >= deadline:
                return False
            if self._threaded:
                time.sleep(0.002)
            else:
                self._pump(0.002)
        return True

    # -- lifecycle -----------------------------------------------------------------

    def check(self) -> None:
        """Re-raise, on the caller's thread, an error raised by the message callback or on
        the network thread (:class:`NetworkFailure` for the latter)."""
        net = self._net or self._closed_net
        if net is not None:
            net.raise_failure()

    def close(self, *, flush_timeout: float = 5.0) -> None:
        """Write what is held and wait for in-flight publishes (up to ``flush_timeout`` s),
        then disconnect cleanly. What is still not completed after that is counted dropped."""
        net = self._net
        if net is None:
            return
        try:
            if (self.in_flight() or self._held_count) and net.connected.is_set():
                self.flush(flush_timeout)
        except Interrupted:
            pass
        self._reap()
        self.stats.dropped += self.in_flight()
        self._held_count = 0
        self._inflight.clear()
        self._backlog.clear()
        self._held_batches.clear()
        self._held, self._held_qos0 = bytearray(), 0
        self._teardown()

    def _teardown(self) -> None:
        net, self._net = self._net, None
        if net is not None:
            net.stop()
            self._closed_net = net

    def _require(self) -> Connection:
        if self._net is None:
            raise RuntimeError("session is not connected: use it as a context manager")
        return self._net
