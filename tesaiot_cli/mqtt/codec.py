"""Pure MQTT packet encoding and parsing (3.1.1 and 5): PUBLISH, PUBACK/PUBREC/PUBREL/
PUBCOMP, the remaining length and the MQTT 5 publish properties.

No sockets, no paho, no clock: bytes in, values out (and back). The receive scanner
:func:`take_publishes` is the hot path of every subscriber: it parses the PUBLISH packets
at the head of a read buffer and queues their acknowledgements; anything it does not
handle (other packet types, QoS 2, a packet not yet complete) is left where it is.

What the broker must not send raises :class:`ProtocolError` (MQTT 3.1.1 section 4.8 and
MQTT 5 section 4.13: the receiver closes the connection): a topic name with a wildcard or
that is not UTF-8, packet id 0 at QoS > 0, QoS 3, a remaining length longer than four
bytes, malformed properties.
"""

from __future__ import annotations

from collections.abc import Callable

from tesaiot_cli.errors import ConfigError, ProtocolError
from tesaiot_cli.message import PublishProperties

PUBLISH = 0x30
PUBACK = 0x40
PUBREC = 0x50
PUBREL = 0x62  # PUBREL's fixed header carries flags 0b0010
PUBCOMP = 0x70
MAX_REMAINING_LENGTH = 268_435_455  # the largest MQTT packet body (four length bytes)
MAX_TOPIC_CACHE = 65536

# MQTT 5 property identifiers a PUBLISH may carry (MQTT 5 section 3.3.2.3).
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
TOPIC_ALIAS = 0x23
USER_PROPERTY = 0x26

# deliver(topic, payload, qos, retain, properties, packet id: 0 at QoS 0) -> whether the message
# was kept (and may be acknowledged)
Deliver = Callable[[str, bytes, int, bool, "PublishProperties | None", int], bool]
# acknowledged(packet id, reason code) -> whether that PUBACK was for one of ours (else it is left for paho)
Acknowledged = Callable[[int, int], bool]


def encode_remaining_length(length: int) -> bytes:
    """The variable byte integer for ``length`` (0 .. 268,435,455); raises ValueError beyond."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_remaining_length(data: bytes, pos: int) -> tuple[int, int] | None:
    """The variable byte integer starting at ``data[pos]``: ``(value, position after it)``,
    or None when it is not complete yet. Raises :class:`ProtocolError` when it runs past
    four bytes."""
    value = 0
    shift = 0
    end = len(data)
    for count in range(4):
        index = pos + count
        if index >= end:
            return None
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    raise ProtocolError("the broker sent a packet whose remaining length runs past four bytes (malformed packet)")


def topic_name(topic: str) -> bytes:
    """``topic`` as a PUBLISH packet's topic name: two length bytes, then UTF-8.

    Raises :class:`ConfigError` for an empty topic, a wildcard, NUL, or more than 65535 bytes.
    """
    encoded = topic.encode("utf-8")
    if not encoded or b"+" in encoded or b"#" in encoded or b"\x00" in encoded or len(encoded) > 0xFFFF:
        raise ConfigError(
            f"cannot publish to {topic!r}: a topic name must be 1 to 65535 bytes without wildcards or NUL"
        )
    return len(encoded).to_bytes(2, "big") + encoded


def check_topic_name(raw: bytes) -> str:
    """The topic of a received PUBLISH; raises :class:`ProtocolError` when a broker could
    not have sent it (not UTF-8, a wildcard, NUL)."""
    try:
        topic = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("the broker sent a PUBLISH whose topic is not valid UTF-8") from None
    if "+" in topic or "#" in topic:
        raise ProtocolError(f"the broker sent a PUBLISH with a wildcard in its topic {topic!r}")
    if "\x00" in topic:
        raise ProtocolError("the broker sent a PUBLISH whose topic contains NUL")
    return topic


def check_packet_id(packet_id: int, qos: int) -> None:
    """Raises :class:`ProtocolError` for packet id 0 at QoS > 0 (MQTT 2.3.1) or QoS 3."""
    if qos == 3:
        raise ProtocolError("the broker sent a PUBLISH with QoS 3 (malformed packet)")
    if qos and packet_id == 0:
        raise ProtocolError(f"the broker sent a QoS {qos} PUBLISH with packet id 0")


# -- MQTT 5 properties ---------------------------------------------------------------


def _utf8(text: str) -> bytes:
    encoded = text.encode("utf-8")
    return len(encoded).to_bytes(2, "big") + encoded


def encode_properties(properties: PublishProperties | None) -> bytes:
    """The property section of an MQTT 5 PUBLISH (its length, then the properties)."""
    if properties is None:
        return b"\x00"
    body = bytearray()
    if properties.payload_format_indicator is not None:
        body.append(PAYLOAD_FORMAT_INDICATOR)
        body.append(properties.payload_format_indicator)
    if properties.message_expiry_interval is not None:
        body.append(MESSAGE_EXPIRY_INTERVAL)
        body += properties.message_expiry_interval.to_bytes(4, "big")
    if properties.content_type is not None:
        body.append(CONTENT_TYPE)
        body += _utf8(properties.content_type)
    if properties.response_topic is not None:
        body.append(RESPONSE_TOPIC)
        body += _utf8(properties.response_topic)
    if properties.correlation_data is not None:
        body.append(CORRELATION_DATA)
        body += len(properties.correlation_data).to_bytes(2, "big") + properties.correlation_data
    for key, value in properties.user_properties:
        body.append(USER_PROPERTY)
        body += _utf8(key) + _utf8(value)
    return encode_remaining_length(len(body)) + bytes(body)


def _read_utf8(data: bytes, pos: int, end: int) -> tuple[str, int]:
    if pos + 2 > end:
        raise ProtocolError("the broker sent a PUBLISH with malformed properties (a string runs past the end)")
    size = (data[pos] << 8) | data[pos + 1]
    stop = pos + 2 + size
    if stop > end:
        raise ProtocolError("the broker sent a PUBLISH with malformed properties (a string runs past the end)")
    try:
        return bytes(data[pos + 2:stop]).decode("utf-8"), stop
    except UnicodeDecodeError:
        raise ProtocolError("the broker sent a PUBLISH property that is not valid UTF-8") from None


def decode_properties(data: bytes, pos: int, end: int) -> tuple[PublishProperties | None, int]:
    """The property section of an MQTT 5 PUBLISH at ``data[pos:end]``: the properties
    (None when there are none) and the position after them.

    Subscription identifiers are skipped (they belong to this connection). A topic alias is
    a protocol error: this client never allows one (its CONNECT sets no Topic Alias Maximum).
    Raises :class:`ProtocolError` for anything malformed or unknown.
    """
    header = decode_remaining_length(data, pos)
    if header is None:
        raise ProtocolError("the broker sent a PUBLISH with malformed properties (truncated length)")
    length, pos = header
    stop = pos + length
    if stop > end:
        raise ProtocolError("the broker sent a PUBLISH whose properties run past the packet")
    if length == 0:
        return None, stop
    payload_format: int | None = None
    expiry: int | None = None
    content_type: str | None = None
    response_topic: str | None = None
    correlation: bytes | None = None
    user: list[tuple[str, str]] = []
    seen = False
    while pos < stop:
        ident = data[pos]
        pos += 1
        if ident == PAYLOAD_FORMAT_INDICATOR and pos + 1 <= stop:
            payload_format = data[pos]
            pos += 1
            seen = True
        elif ident == MESSAGE_EXPIRY_INTERVAL and pos + 4 <= stop:
            expiry = int.from_bytes(data[pos:pos + 4], "big")
            pos += 4
            seen = True
        elif ident == CONTENT_TYPE:
            content_type, pos = _read_utf8(data, pos, stop)
            seen = True
        elif ident == RESPONSE_TOPIC:
            response_topic, pos = _read_utf8(data, pos, stop)
            seen = True
        elif ident == CORRELATION_DATA and pos + 2 <= stop:
            size = (data[pos] << 8) | data[pos + 1]
            if pos + 2 + size > stop:
                raise ProtocolError("the broker sent a PUBLISH with malformed correlation data")
            correlation = bytes(data[pos + 2:pos + 2 + size])
            pos += 2 + size
            seen = True
        elif ident == USER_PROPERTY:
            key, pos = _read_utf8(data, pos, stop)
            value, pos = _read_utf8(data, pos, stop)
            user.append((key, value))
            seen = True
        elif ident == SUBSCRIPTION_IDENTIFIER:
            sub = decode_remaining_length(data, pos)
            if sub is None or sub[1] > stop:
                raise ProtocolError("the broker sent a PUBLISH with a malformed subscription identifier")
            pos = sub[1]
        elif ident == TOPIC_ALIAS:
            raise ProtocolError("the broker sent a topic alias, which this client never allowed")
        else:
            raise ProtocolError(f"the broker sent a PUBLISH with an unknown or malformed property 0x{ident:02x}")
    if not seen:
        return None, stop
    return PublishProperties(payload_format, expiry, content_type, response_topic, correlation, tuple(user)), stop


# -- PUBLISH -------------------------------------------------------------------------


def append_publish(out: bytearray, name: bytes, payload: bytes, qos: int, retain: bool, packet_id: int,
                   properties: bytes | None, *, dup: bool = False) -> None:
    """One PUBLISH packet onto ``out``: ``name`` from :func:`topic_name`, ``packet_id``
    used at QoS > 0, ``properties`` from :func:`encode_properties` at MQTT 5 (None at 3.1.1).

    Raises :class:`ConfigError` when the packet would exceed MQTT's maximum size.
    """
    size = len(name) + len(payload) + (2 if qos else 0) + (len(properties) if properties is not None else 0)
    if size > MAX_REMAINING_LENGTH:
        raise ConfigError("cannot publish: the payload is too large for MQTT")
    out.append(PUBLISH | (qos << 1) | (0x08 if dup else 0) | (0x01 if retain else 0))
    while size > 0x7F:  # 7 bits a byte, least significant first
        out.append((size & 0x7F) | 0x80)
        size >>= 7
    out.append(size)
    out += name
    if qos:
        out += packet_id.to_bytes(2, "big")
    if properties is not None:
        out += properties
    out += payload


def encode_publish(topic: str, payload: bytes, *, qos: int = 0, retain: bool = False, packet_id: int = 0,
                   mqtt5: bool = False, properties: PublishProperties | None = None, dup: bool = False) -> bytes:
    """A whole PUBLISH packet (for tests and one-off sends; the hot path uses :func:`append_publish`)."""
    out = bytearray()
    append_publish(out, topic_name(topic), payload, qos, retain, packet_id,
                   encode_properties(properties) if mqtt5 else None, dup=dup)
    return bytes(out)


def encode_ack(packet_type: int, packet_id: int, reason: int = 0, *, mqtt5: bool = False) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP for ``packet_id``; at MQTT 5 a non-zero ``reason``
    is sent (success is left implicit, as MQTT 5 allows)."""
    if mqtt5 and reason:
        return bytes((packet_type, 3)) + packet_id.to_bytes(2, "big") + bytes((reason,))
    return bytes((packet_type, 2)) + packet_id.to_bytes(2, "big")


def parse_ack(packet: bytes) -> tuple[int, int, int]:
    """``(packet type, packet id, reason code)`` of a whole PUBACK/PUBREC/PUBREL/PUBCOMP
    packet (reason 0 when absent). Raises :class:`ProtocolError` when malformed."""
    header = decode_remaining_length(packet, 1)
    if header is None:
        raise ProtocolError("truncated acknowledgement")
    length, pos = header
    if length < 2 or pos + length != len(packet):
        raise ProtocolError("the broker sent a malformed acknowledgement")
    packet_id = (packet[pos] << 8) | packet[pos + 1]
    reason = packet[pos + 2] if length > 2 else 0
    return packet[0] & 0xF0, packet_id, reason


def take_publishes(data: bytes, pos: int, *, mqtt5: bool, topics: dict[bytes, str], deliver: Deliver,
                   acks: bytearray, acknowledged: Acknowledged | None = None) -> int:
    """Parse the complete QoS 0 and QoS 1 PUBLISH packets at ``data[pos:]``; hand each to
    ``deliver``; append a PUBACK for each QoS 1 one ``deliver`` kept (one it did not keep is
    left unacknowledged: the broker keeps it for a persistent session). With
    ``acknowledged``, a well-formed PUBACK is handed to it too (packet id, reason code: 0
    when the packet has none) and taken when it says the packet id was one of its own.

    Stops at anything else (another packet type, QoS 2, a PUBACK not taken, a packet not
    complete yet) and returns the position reached. ``topics`` caches decoded topic names
    (bounded). Raises :class:`ProtocolError` for what a broker must not send (see the
    module doc); what was delivered before it keeps its acknowledgement.
    """
    end = len(data)
    while pos < end:
        first = data[pos]
        if first & 0xF0 != PUBLISH:
            if first == PUBACK and acknowledged is not None:
                taken = _take_puback(data, pos, end, mqtt5, acknowledged)
                if taken:
                    pos = taken
                    continue
            decode_remaining_length(data, pos + 1)  # raises for a length past four bytes; paho reads the rest
            break
        qos = (first >> 1) & 0x03
        index, length, shift = pos + 1, 0, 0
        while True:
            if index >= end:
                return pos  # the remaining length is not complete yet
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
            if shift > 21:
                raise ProtocolError(
                    "the broker sent a packet whose remaining length runs past four bytes (malformed packet)")
        if qos == 3:
            raise ProtocolError("the broker sent a PUBLISH with QoS 3 (malformed packet)")
        if qos == 2:
            break  # QoS 2's handshake stays with paho
        body_end = index + length
        if body_end > end:
            break
        if length < 2:
            raise ProtocolError("the broker sent a PUBLISH too short to hold a topic")
        name_end = index + 2 + ((data[index] << 8) | data[index + 1])
        payload_start = name_end + 2 if qos else name_end
        if payload_start > body_end:
            raise ProtocolError("the broker sent a PUBLISH whose topic runs past the packet")
        name = data[index + 2:name_end]
        topic = topics.get(name)
        if topic is None:
            topic = check_topic_name(name)
            if len(topics) < MAX_TOPIC_CACHE:
                topics[name] = topic
        packet_id = 0
        if qos:
            packet_id = (data[name_end] << 8) | data[name_end + 1]
            if packet_id == 0:
                raise ProtocolError("the broker sent a QoS 1 PUBLISH with packet id 0")
        properties = None
        if mqtt5:
            if payload_start >= body_end:
                raise ProtocolError("the broker sent an MQTT 5 PUBLISH without its property length")
            if data[payload_start] == 0:
                payload_start += 1
            else:
                properties, payload_start = decode_properties(data, payload_start, body_end)
        pos = body_end
        if deliver(topic, data[payload_start:body_end], qos, bool(first & 0x01), properties, packet_id) and qos:
            acks += b"\x40\x02" + data[name_end:name_end + 2]
    return pos


def _take_puback(data: bytes, pos: int, end: int, mqtt5: bool, acknowledged: Acknowledged) -> int:
    """The end of the PUBACK at ``data[pos]`` when ``acknowledged`` took it, else 0 (not
    complete, not the shape its protocol version allows, or not one of ours: paho reads it,
    and judges it)."""
    if pos + 2 > end:
        return 0
    length = data[pos + 1]
    if length & 0x80 or length < 2 or (length != 2 and not mqtt5) or pos + 2 + length > end:
        return 0  # MQTT 3.1.1: exactly 2; MQTT 5: id, reason, properties (always < 128 bytes here)
    body = pos + 2
    reason = data[body + 2] if length > 2 else 0
    if length > 3 and data[body + 3] != length - 4:
        return 0  # the property length does not fill the packet: paho reports it
    if acknowledged((data[body] << 8) | data[body + 1], reason):
        return body + length
    return 0
