"""The only module that touches paho-mqtt's private names (the fast path), behind a
capability probe; and the conversions between paho's public types and ours.

The fast path shares paho's connection: paho connects, authenticates, speaks TLS and
websockets, handles CONNACK, SUBACK, keepalive and QoS 2; we read PUBLISH packets from a
read-ahead buffer, cork acknowledgements and write batches of PUBLISH packets. For that
we need, from paho's ``Client``: the socket it reads and writes (``_sock``), its partial
packet state (``_in_packet``), its keepalive clock (``_last_bytes_received``, called
``_last_msg_in`` in 2.0), its message dispatch (``_handle_on_message``), its PUBREC and
PUBACK handlers (``_handle_pubrec``, ``_handle_pubackcomp``), its packet queue (``_packet_queue``,
``_out_packet``), its packet id generator and outgoing store (``_mid_generate``,
``_out_messages``: the ids of our QoS 1 messages come from paho's generator and must not
be in paho's store), and ``MQTTMessageInfo._published``. The QoS 1 messages we write
ourselves are kept in our own store: their PUBACKs are read from the buffer, and they are
sent again after a reconnect.

:func:`probe` checks that they are all there, with the shapes we use, on a paho version
we have tested (2.0, 2.1, 2.2); :func:`behaves` checks after CONNACK that paho really
read through our socket. When either says no, the session takes paho's public path
(``loop_read``/``loop_write``/``loop_misc``, ``on_message``): slower, never silent.
"""

from __future__ import annotations

import collections
import inspect
import struct
import time
from collections.abc import Callable
from typing import Any, cast

import paho.mqtt.client as paho
from paho.mqtt import __version__ as _paho_version
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tesaiot_cli.errors import ProtocolError
from tesaiot_cli.message import PublishProperties
from tesaiot_cli.mqtt.transport import BufferedSocket

TESTED_VERSIONS = ("2.0.", "2.1.", "2.2.")
HELD_MID = 0  # paho never gives out message id 0: it marks a batch of held packets
_CLIENT_NAMES = ("_sock", "_in_packet", "_handle_on_message", "_handle_pubrec", "_handle_pubackcomp",
                 "_packet_queue", "_out_packet", "_mid_generate", "_out_messages")
_KEEPALIVE_NAMES = ("_last_bytes_received", "_last_msg_in")  # 2.1+, 2.0

try:  # paho 2.2 raises this from its packet decoders; 2.0 and 2.1 raise struct.error
    from paho.mqtt.exception import MalformedPacket  # type: ignore[import-not-found,unused-ignore]

    MALFORMED: tuple[type[BaseException], ...] = (struct.error, MalformedPacket)
except ImportError:  # pragma: no cover - paho 2.0 / 2.1
    MALFORMED = (struct.error,)


def paho_version() -> str:
    return str(_paho_version)


def probe(client: paho.Client) -> str | None:
    """None when the fast path can run on ``client``; else why not (one phrase)."""
    version = paho_version()
    if not version.startswith(TESTED_VERSIONS):
        return f"paho-mqtt {version} is not a version this tool was tested with (2.0, 2.1, 2.2)"
    missing = [name for name in _CLIENT_NAMES if not hasattr(client, name)]
    keepalive = [name for name in _KEEPALIVE_NAMES if isinstance(getattr(client, name, None), float)]
    if not keepalive:
        missing.append("_last_bytes_received")
    if missing:
        return f"paho-mqtt {version} lacks {', '.join(missing)}"
    in_packet = client._in_packet  # noqa: SLF001
    if not isinstance(in_packet, dict) or "command" not in in_packet:
        return f"paho-mqtt {version} keeps its partial packet differently"
    if not isinstance(client._out_packet, collections.deque) or not isinstance(client._out_messages, dict):  # noqa: SLF001
        return f"paho-mqtt {version} keeps its outgoing packets differently"
    if "_published" not in getattr(paho.MQTTMessageInfo, "__slots__", ()):
        return f"paho-mqtt {version} tracks publish completion differently"
    try:
        parameters = list(inspect.signature(client._packet_queue).parameters)  # noqa: SLF001
    except (TypeError, ValueError):
        return f"paho-mqtt {version}'s packet queue cannot be inspected"
    if parameters[:5] != ["command", "packet", "mid", "qos", "info"]:
        return f"paho-mqtt {version}'s packet queue takes different arguments"
    return None


class FastPath:
    """paho's internals for one client, used only after :func:`probe` said yes."""

    def __init__(self, client: paho.Client) -> None:
        self.client = client
        self._keepalive_name = next(name for name in _KEEPALIVE_NAMES
                                    if isinstance(getattr(client, name, None), float))
        self.socket: BufferedSocket | None = None
        self._qos1: dict[int, tuple[HeldQos1, bytes]] = {}  # packet id -> (token, PUBLISH packet)

    def install_socket(self, sock: Any) -> BufferedSocket | None:
        """Put a :class:`BufferedSocket` between paho and ``sock`` (from on_socket_open)."""
        client = self.client
        if client._sock is not sock:  # noqa: SLF001
            return None
        buffered = BufferedSocket(sock, raw=raw_socket(sock))
        client._sock = buffered  # noqa: SLF001 - paho reads and writes through client._sock
        self.socket = buffered
        return buffered

    def behaves(self) -> str | None:
        """After CONNACK: None when paho read it through our socket and is at a packet
        boundary; else why not."""
        client = self.client
        if self.socket is None or client._sock is not self.socket:  # noqa: SLF001
            return "paho did not keep the socket it was given"
        if client._in_packet.get("command") != 0:  # noqa: SLF001
            return "paho's packet state is not at a boundary after CONNACK"
        return None

    def watch_pubrec(self, on_refused: Callable[[int, int], None]) -> None:
        """Call ``on_refused(packet id, reason)`` for each MQTT 5 PUBREC with a reason code
        >= 0x80 (the broker refused a QoS 2 message): paho reads the reason and drops it, then
        completes the flow with PUBREL/PUBCOMP as if the message had been accepted."""
        client = self.client
        original = client._handle_pubrec  # noqa: SLF001

        def handle_pubrec() -> MQTTErrorCode:
            packet = client._in_packet["packet"]  # noqa: SLF001 - packet id (2 bytes), reason, properties
            if len(packet) >= 3 and packet[2] >= 0x80:
                on_refused((packet[0] << 8) | packet[1], packet[2])
            return original()

        client._handle_pubrec = handle_pubrec  # type: ignore[method-assign]  # noqa: SLF001

    def watch_puback(self, take: Callable[[int, int], bool], *, mqtt5: bool) -> None:
        """Hand ``take(packet id, reason code)`` the PUBACKs paho reads itself for our QoS 1
        messages (one the read-ahead buffer had cut in two; those after one of paho's own
        packets in the same ``loop_read``, which reads several): paho does not know them
        and would drop them, leaving them in flight for ever."""
        client = self.client
        original = client._handle_pubackcomp  # noqa: SLF001

        def handle_pubackcomp(cmd: str) -> MQTTErrorCode:
            packet = client._in_packet["packet"]  # noqa: SLF001 - packet id (2 bytes)[, reason, properties]
            if cmd == "PUBACK" and (len(packet) == 2 or (mqtt5 and len(packet) > 2)):
                mid = (packet[0] << 8) | packet[1]
                if mid in self._qos1 and take(mid, packet[2] if len(packet) > 2 else 0):
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            return original(cmd)  # type: ignore[arg-type,no-any-return,unused-ignore]

        client._handle_pubackcomp = handle_pubackcomp  # type: ignore[method-assign,assignment,unused-ignore]  # noqa: SLF001

    def uninstall(self) -> None:
        """Give paho its own message dispatch back (after a failed behaviour check); the
        buffered socket stays, passing reads and writes through."""
        self.client.__dict__.pop("_handle_on_message", None)
        self.client.__dict__.pop("_handle_pubrec", None)
        self.client.__dict__.pop("_handle_pubackcomp", None)

    def at_packet_boundary(self) -> bool:
        return bool(self.client._in_packet["command"] == 0)  # noqa: SLF001

    def note_bytes_received(self) -> None:
        """Tell paho's keepalive that the broker is talking (we read the bytes, not paho)."""
        setattr(self.client, self._keepalive_name, time.monotonic())  # paho's clock is time.monotonic

    def set_message_handler(self, handler: Callable[[paho.MQTTMessage], None]) -> None:
        """Each message paho reads goes straight to ``handler`` (paho's own dispatch
        matches it against per-topic callbacks, which we have none of, under two mutexes)."""
        self.client._handle_on_message = handler  # type: ignore[method-assign,assignment,unused-ignore]  # noqa: SLF001

    def queue_publishes(self, batch: bytes | bytearray, info: paho.MQTTMessageInfo) -> None:
        """Hand a batch of PUBLISH packets to paho's queue as one packet: paho keeps the
        order with its own packets and writes it through tcp, TLS or websockets."""
        # paho 2.0 and 2.1 declare bytes; every version only slices and sends it.
        self.client._packet_queue(paho.PUBLISH, cast(bytes, batch), HELD_MID, 0, info)  # noqa: SLF001

    def unwritten_packets(self) -> int:
        return len(self.client._out_packet)  # noqa: SLF001

    def claim_qos1_mid(self) -> int | None:
        """A packet id for a QoS 1 message the fast path writes itself, from paho's own
        generator (so paho's subscribes and publishes never take it while it is in flight);
        None when that id is still in use (publish it through paho instead)."""
        client = self.client
        mid = int(client._mid_generate())  # noqa: SLF001
        if mid in self._qos1 or mid in client._out_messages:  # noqa: SLF001
            return None
        return mid

    def track_qos1(self, mid: int, packet: bytes) -> HeldQos1:
        """Keep a QoS 1 PUBLISH packet we write until its PUBACK (sent again, DUP set, after
        a reconnect). Kept here rather than in paho's store: a paho MQTTMessage and the
        PUBACK paho decodes into a ReasonCode and a Properties object cost ~45 µs a message,
        ~90 % of a QoS 1 publish."""
        token = HeldQos1(mid)
        self._qos1[mid] = (token, packet)
        return token

    def complete_qos1(self, mid: int) -> bool:
        """A PUBACK read from the buffer: True when it completes one of our QoS 1 messages;
        False when ``mid`` is not ours (paho then reads the packet, for its own messages)."""
        entry = self._qos1.pop(mid, None)
        if entry is None:
            return False
        entry[0]._published = True
        return True

    def resend_qos1(self) -> int:
        """After a reconnect: queue every QoS 1 message still waiting for its PUBACK again,
        in the order first sent, with the DUP flag (MQTT 3.1.1 4.4, MQTT 5 4.4). Returns
        how many."""
        if not self._qos1:
            return 0
        batch = bytearray()
        for _, packet in self._qos1.values():
            batch.append(packet[0] | 0x08)
            batch += memoryview(packet)[1:]
        self.queue_publishes(batch, paho.MQTTMessageInfo(HELD_MID))
        return len(self._qos1)


class HeldQos1:
    """The completion token of a QoS 1 message the fast path wrote itself: read by
    :func:`published` as a paho ``MQTTMessageInfo`` is."""

    __slots__ = ("mid", "_published", "rc")

    def __init__(self, mid: int) -> None:
        self.mid = mid
        self._published = False
        self.rc = MQTTErrorCode.MQTT_ERR_SUCCESS


def published(info: paho.MQTTMessageInfo) -> bool:
    """Whether paho is done with ``info`` (written at QoS 0, acknowledged at QoS 1/2, or
    dropped with the connection). ``is_published()`` raises for a message queued while
    disconnected, which is not done yet."""
    return bool(info._published)  # noqa: SLF001


def raw_socket(sock: Any) -> Any:
    """The TCP socket under paho's websocket wrapper (``sock`` itself otherwise)."""
    return getattr(sock, "_socket", sock)


def malformed(exc: BaseException) -> ProtocolError:
    """The project's error for a packet paho's decoder could not parse."""
    return ProtocolError(f"the broker sent a malformed packet ({type(exc).__name__}: {exc})")


# -- public paho types <-> ours (no private names) ------------------------------------


def to_paho_properties(properties: PublishProperties | None) -> Properties | None:
    """Our publish properties as paho's (for ``Client.publish`` at MQTT 5)."""
    if properties is None:
        return None
    result = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if properties.payload_format_indicator is not None:
        result.PayloadFormatIndicator = properties.payload_format_indicator
    if properties.message_expiry_interval is not None:
        result.MessageExpiryInterval = properties.message_expiry_interval
    if properties.content_type is not None:
        result.ContentType = properties.content_type
    if properties.response_topic is not None:
        result.ResponseTopic = properties.response_topic
    if properties.correlation_data is not None:
        result.CorrelationData = properties.correlation_data
    if properties.user_properties:
        result.UserProperty = list(properties.user_properties)
    return result


def from_paho_properties(properties: Any) -> PublishProperties | None:
    """paho's properties of a received PUBLISH as ours (None when it carries none we keep)."""
    if properties is None:
        return None
    def get(name: str) -> Any:
        return getattr(properties, name, None)

    user = get("UserProperty")
    correlation = get("CorrelationData")
    result = PublishProperties(
        payload_format_indicator=get("PayloadFormatIndicator"),
        message_expiry_interval=get("MessageExpiryInterval"),
        content_type=get("ContentType"),
        response_topic=get("ResponseTopic"),
        correlation_data=bytes(correlation) if correlation is not None else None,
        user_properties=tuple((str(k), str(v)) for k, v in user) if user else (),
    )
    return None if result == PublishProperties() else result
