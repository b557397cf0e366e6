"""Captures made by other tools, read as messages (``tesaiot convert --from ...``), and
recognising them when they are given where a tesaiot recording is expected.

Nothing is altered in silence: a message the capture holds exactly becomes a message; one
the capturing tool could not print exactly is left out and counted (``lost``: convert
writes the rest and exits 5); a line the tool would never write (a QoS of 7, a wildcard
topic, a payload longer than its length, an unknown field) makes the whole file refused
(:class:`RecordingError` naming the lines: nothing is written). The rules are in
docs/record.md (convert) and docs/recording-format.md.

``mosquitto-json``: the lines ``mosquitto_sub -F %j`` (or ``-F %J``) prints; mosquitto
2.0.11 writes, per message::

    {"tst":"2026-11-30T05:51:59.649597Z+0000","topic":"a/b","qos":1,"retain":0,"payloadlen":8,"mid":1,"payload":"..."}

``tst`` is the local receive time (µs) and its offset (``Z`` and all: 2.0.11 prints the local
time, then ``Z``, then the zone's offset, which applies); mosquitto 1.6 wrote whole seconds
since the epoch. ``properties`` (``-V 5``) holds the MQTT 5 properties. With ``%j`` the payload
is a JSON string of its bytes (non-UTF-8 bytes as they are: such lines are read byte for
byte; an empty payload is ``null``; a NUL byte ends it). With ``%J`` mosquitto parses the
payload as JSON (cJSON: numbers become doubles) and prints it back compactly, and a payload
that is not JSON becomes an empty line; see :func:`j_spelling_doubt`.

``mqtt-recorder-csv``: the CSV of the PyPI ``mqtt-recorder`` (1.4.0): no header; per row
topic, payload (UTF-8 text), qos, retain (``True``/``False``), receive time (seconds since
the epoch, as Python prints a float) and the time since the previous message.
``mqtt-recorder-csv-b64``: the same, recorded with ``--encode_b64`` (payload in base64).
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tesaiot_cli import __version__
from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message, PublishProperties, topic_name_problem
from tesaiot_cli.recording.files import check_regular_file
from tesaiot_cli.recording.model import RecordingMetadata

SNIFF_BYTES = 64 * 1024
SHOWN = 5  # warnings and refused lines named one by one; the rest are counted
_TST = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z)?([+-]\d\d:?\d\d)?$")
_SECONDS = re.compile(r"^(\d+)(?:\.(\d+))?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_MAX_PAYLOAD = 268_435_455  # the largest MQTT packet's payload


def parse_tst(text: str) -> int | None:
    """mosquitto_sub's ``tst`` -> ns since the epoch (None when it is not one). The offset
    applies even after a ``Z``: mosquitto 2.0.11 prints the local time, ``Z`` and the local
    offset (``TZ=Asia/Bangkok``: ``2026-12-07T18:44:54.677630Z+0700`` is 11:44:54 UTC)."""
    match = _TST.match(text)
    if match is None:
        return None
    whole, fraction, _zulu, offset = match.groups()
    zone = dt.UTC
    if offset:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            return None
        zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    try:
        moment = dt.datetime.fromisoformat(whole).replace(tzinfo=zone)
    except ValueError:
        return None
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def parse_seconds(text: str) -> int | None:
    """``1796017944.1698413`` (a float as Python prints it) -> ns, exactly as written."""
    match = _SECONDS.match(text.strip())
    if match is None:
        return None
    whole, fraction = match.groups()
    return int(whole) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


_J_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_J_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9][0-9.eE+-]*', re.DOTALL)
_J_CONTROL_ESCAPE = re.compile(r'\\[bfnrt]|\\u00[01][0-9a-fA-F]')


def j_spelling_doubt(text: str) -> str | None:
    """Why the JSON ``text`` mosquitto_sub -F %J printed may not be the payload's own spelling
    even when it has as many bytes, or None when it must be.

    cJSON re-prints what it parsed: whitespace goes, numbers are printed from the double,
    escapes are re-written; each of those only makes the print shorter than the original,
    or keeps its length, where the original could have been spelled shorter or as short:
    a number with an exponent (``1E2`` -> ``1e+02``), more than 15 significant digits (the
    digits past a double's are not kept), an exponent form as short as it (``100`` may
    have been ``1E2``, ``0.01`` ``1e-2``), a negative fraction (``-0.5`` may have been
    ``-.5``), or a control character (``\\t`` may have been a raw tab). Without any of
    those, a print as long as the payload is the payload byte for byte."""
    for token in _J_TOKEN.findall(text):
        if token.startswith('"'):
            if _J_CONTROL_ESCAPE.search(token):
                return "a control character, which the payload may have held unescaped"
            continue
        doubt = _number_doubt(token)
        if doubt is not None:
            return f"the number {token} ({doubt})"
    return None


def _number_doubt(token: str) -> str | None:
    if "e" in token or "E" in token:
        return "printed with an exponent"
    negative = token.startswith("-")
    whole, _, fraction = token.lstrip("-").partition(".")
    digits = (whole + fraction).lstrip("0")
    if not digits:
        return None  # 0 and -0: no shorter spelling
    significant = digits.rstrip("0")
    if len(significant) > 15:
        return "more digits than a double keeps"
    if negative and whole == "0":
        return f"it may have been -{token[2:]}"
    integer = whole.lstrip("0")
    exponent = len(integer) - 1 if integer else -(len(fraction) - len(fraction.lstrip("0")) + 1)
    mantissa = significant[0] + (f".{significant[1:]}" if len(significant) > 1 else "")
    shorter = f"{'-' if negative else ''}{mantissa}e{exponent}"
    if len(shorter) <= len(token):
        return f"it may have been {shorter}"
    return None


def sniff(path: Path) -> str | None:
    """The foreign format ``path`` looks like (one of FOREIGN_FORMATS), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None
    first = head.lstrip(b"\r\n").split(b"\n", 1)[0].strip()
    if first.startswith(b"{"):
        try:
            record = json.loads(first.decode("utf-8", "surrogateescape"))
        except ValueError:
            return None
        if isinstance(record, dict) and "topic" in record and "payload" in record \
                and ("tst" in record or "payloadlen" in record):
            return "mosquitto-json"
        return None
    try:
        row = next(csv.reader(io.StringIO(head.decode("utf-8", "replace"), newline="")))
    except (StopIteration, csv.Error):
        return None
    if len(row) == 6 and row[2] in ("0", "1", "2") and row[3] in ("True", "False") \
            and parse_seconds(row[4]) is not None:
        return "mqtt-recorder-csv"
    return None


def not_a_recording(path: Path, reason: str = "") -> RecordingError:
    """The error for a file that is not a tesaiot recording, naming the ``--from`` to use
    when the file's shape is recognised."""
    found = sniff(path) if path.is_file() else None
    text = f"{path} is not a tesaiot recording"
    if reason:
        text += f" ({reason})"
    if found == "mosquitto-json":
        text += f"; it looks like mosquitto_sub -F %j output: tesaiot convert --from mosquitto-json {path} OUT.parquet"
    elif found is not None:
        text += (f"; it looks like an mqtt-recorder CSV: tesaiot convert --from mqtt-recorder-csv {path} OUT.parquet "
                 "(--from mqtt-recorder-csv-b64 if it was recorded with --encode_b64)")
    return RecordingError(text)


class Refused(ValueError):
    """A field a capture's tool would never write (the reason is the message)."""


class ForeignReader:
    """Messages of a foreign capture, in file order; ``sealed`` is always True.

    ``lost``: messages the capture could not hold exactly, left out (described in
    ``warnings``, the first few). A line the tool would never write is refused: the
    iteration ends with :class:`RecordingError` naming them, after reading the whole file,
    so the caller writes nothing."""

    sealed = True

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in FOREIGN_FORMATS:
            raise RecordingError(f"unknown capture format {fmt!r}")
        self.path = path
        self.fmt = fmt
        self.metadata = RecordingMetadata(tool_version=__version__, source="convert",
                                          extra={"converted_from": fmt})
        self.warnings: list[str] = []
        self.lost = 0
        self.refused: list[str] = []
        self.refused_count = 0
        self.good = 0

    def open(self) -> ForeignReader:
        check_regular_file(self.path)
        return self

    def iter_labelled(self) -> Iterator[tuple[Message, str | None]]:
        """(message, None) in file order. Raises :class:`RecordingError` when the file is not
        of this format at all (its first record does not parse) or has refused lines."""
        for message in FOREIGN_FORMATS[self.fmt](self):
            if not self.refused_count:
                self.good += 1
                yield message, None
        if self.refused_count:
            more = f"; and {self.refused_count - len(self.refused):,} more" \
                if self.refused_count > len(self.refused) else ""
            lines = "line" if self.refused_count == 1 else "lines"
            raise RecordingError(f"{self.path}: {self.refused_count:,} {lines} refused, nothing written: "
                                 f"{'; '.join(self.refused)}{more} (not what {self.what()} writes)")

    def __iter__(self) -> Iterator[Message]:
        for message, _label in self.iter_labelled():
            yield message

    def what(self) -> str:
        return "mosquitto_sub -F %j/%J" if self.fmt == "mosquitto-json" else "mqtt-recorder"

    def unreadable(self, number: int, why: str) -> None:
        """A record that does not parse at all: on the first line, the file is not of this
        format (raised); later, one message left out and counted."""
        if self.first():
            raise RecordingError(f"{self.path} line {number} is not {self._shape()} ({why}): check --from")
        self.left_out(number, why)

    def left_out(self, number: int, why: str) -> None:
        """One message the capture does not hold exactly: left out, counted."""
        self.lost += 1
        if len(self.warnings) < SHOWN:
            self.warnings.append(f"{self.path} line {number}: {why}; left out")

    def wrong_shape(self, number: int, why: str) -> None:
        """A record of the wrong shape: on the first one, the file is not of this format
        (raised: check --from); later, the line is refused."""
        if self.first():
            raise RecordingError(f"{self.path} line {number} is not {self._shape()} ({why}): check --from")
        self.refuse(number, why)

    def first(self) -> bool:
        """Whether nothing has been read yet (no message, nothing left out or refused)."""
        return self.good == 0 and self.lost == 0 and not self.refused_count

    def refuse(self, number: int, why: str) -> None:
        """One line the tool would never write: the file is refused at the end."""
        self.refused_count += 1
        if len(self.refused) < SHOWN:
            self.refused.append(f"line {number}: {why}")

    def _shape(self) -> str:
        return "mosquitto_sub -F %j output" if self.fmt == "mosquitto-json" else "an mqtt-recorder CSV row"

    def close(self) -> None:
        pass

    def __enter__(self) -> ForeignReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _check_topic(topic: object) -> str:
    if not isinstance(topic, str):
        raise Refused(f"topic {_shown(topic)} is not a string")
    try:
        topic.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"topic {topic!r} is not valid UTF-8") from None
    problem = topic_name_problem(topic)
    if problem is not None:
        raise Refused(f"topic {topic!r}: {problem}")
    return topic


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, list) else "an object"
    return text if len(text) <= 40 else text[:37] + "..."


# --- mosquitto_sub -F %j / %J -----------------------------------------------------------

def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


# Objects as lists of pairs: order and repeated keys kept (mosquitto writes repeated user
# property names as repeated keys).
_DECODER = json.JSONDecoder(object_pairs_hook=list, parse_constant=_no_constant)
_SPACE = re.compile(r"[ \t\n\r]*")
_FIELDS = ("tst", "topic", "qos", "retain", "payloadlen", "mid", "properties", "payload")
_NEEDED = ("tst", "topic", "payload")


def _top_level(text: str) -> list[tuple[str, Any, str]]:
    """The fields of the JSON object ``text``: (key, value, the value's own text). Raises
    ValueError when ``text`` is not one JSON object."""
    pos = _SPACE.match(text).end()  # type: ignore[union-attr]
    if text[pos:pos + 1] != "{":
        raise ValueError("not a JSON object")
    pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
    fields: list[tuple[str, Any, str]] = []
    if text[pos:pos + 1] == "}":
        pos += 1
    else:
        while True:
            if text[pos:pos + 1] != '"':
                raise ValueError("a key is not a string")
            key, pos = _DECODER.raw_decode(text, pos)
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] != ":":
                raise ValueError("no ':' after a key")
            start = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
            value, pos = _DECODER.raw_decode(text, start)
            fields.append((key, value, text[start:pos]))
            pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]
            if text[pos:pos + 1] == ",":
                pos = _SPACE.match(text, pos + 1).end()  # type: ignore[union-attr]
                continue
            if text[pos:pos + 1] != "}":
                raise ValueError("no ',' or '}' after a value")
            pos += 1
            break
    if text[pos:].strip():
        raise ValueError("more after the object")
    return fields


def _mosquitto(reader: ForeignReader) -> Iterator[Message]:
    try:
        handle = open(reader.path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise RecordingError(f"cannot read {reader.path}: {exc.strerror or exc}") from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                # -F %J prints an empty line for each payload that is not JSON (and says so
                # on stderr): a message, left out.
                reader.left_out(number, "an empty line (mosquitto_sub -F %J prints one for a payload that is "
                                        "not JSON: capture with -F %j to keep every payload)")
                continue
            try:
                # Not orjson: mosquitto writes non-UTF-8 payload bytes as they are, and only
                # the standard library reads those lines back byte for byte (surrogateescape).
                text = raw.decode("utf-8", "surrogateescape")
                if not text.lstrip().startswith("{"):
                    raise ValueError("not a JSON object")
                fields: list[tuple[str, Any]] = _DECODER.decode(text)  # objects as lists of pairs
            except ValueError:
                reader.unreadable(number, "not a JSON line" if raw.endswith(b"\n") else "an incomplete last line")
                continue
            keys = [key for key, _value in fields]
            if any(key not in keys for key in _NEEDED):
                reader.wrong_shape(number, "no " + " or ".join(key for key in _NEEDED if key not in keys))
                continue
            try:
                message = _mosquitto_message(reader, number, fields, text)
            except Refused as why:
                reader.refuse(number, str(why))
                continue
            if message is not None:
                yield message


def _mosquitto_message(reader: ForeignReader, number: int, fields: list[tuple[str, Any]], text: str
                       ) -> Message | None:
    record: dict[str, Any] = {}
    for key, value in fields:
        if key not in _FIELDS:
            raise Refused(f"unknown field {key!r}")
        if key in record:
            raise Refused(f"the field {key!r} twice")
        record[key] = value
    tst = record["tst"]
    time_ns = parse_tst(tst) if isinstance(tst, str) else \
        tst * 1_000_000_000 if _is_int(tst) and tst >= 0 else None  # 1.6: whole seconds
    if time_ns is None:
        raise Refused(f"tst {_shown(tst)} is not a receive time")
    topic = _check_topic(record["topic"])
    qos = record.get("qos", 0)
    if not _is_int(qos) or qos not in (0, 1, 2):
        raise Refused(f"qos {_shown(qos)} is not 0, 1 or 2")
    retain = record.get("retain", 0)
    if not _is_int(retain) or retain not in (0, 1):
        raise Refused(f"retain {_shown(retain)} is not 0 or 1")
    if "mid" in record and not (_is_int(record["mid"]) and 0 <= record["mid"] <= 65535):
        raise Refused(f"mid {_shown(record['mid'])} is not a packet id")
    length = record.get("payloadlen")
    if length is not None and not (_is_int(length) and 0 <= length <= _MAX_PAYLOAD):
        raise Refused(f"payloadlen {_shown(length)} is not a payload length")
    properties = _properties(record["properties"]) if "properties" in record else None
    payload = _payload(reader, number, record["payload"], text, length)
    if payload is None:
        return None
    return Message(topic, payload, qos, bool(retain), time_ns, properties)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _payload(reader: ForeignReader, number: int, value: object, line: str, length: int | None) -> bytes | None:
    """The payload's bytes, or None when the line does not hold them exactly (counted)."""
    if value is None:  # %j and %J print an empty payload as null; %J also the payload null
        if length in (None, 0):
            return b""
        if length == 4:
            return b"null"
        reader.left_out(number, f"mosquitto_sub -F %J printed null for a {length}-byte payload "
                                "(a number beyond a double's range?)")
        return None
    if isinstance(value, str):  # %j: the bytes; or %J: a payload that is a JSON string
        try:
            data = value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise Refused("the payload holds a \\u escape of a lone surrogate") from None
        if length is None or len(data) == length:
            return data
        if len(data) > length:
            raise Refused(f"the payload has {len(data)} bytes, more than its payloadlen {length}")
    # The payload as -F %J printed it: its own text in the line (found only when needed).
    spelling = next(own for key, _value, own in _top_level(line) if key == "payload")
    printed = spelling.encode("utf-8", "surrogateescape")
    if length is None:
        reader.left_out(number, "a JSON payload (-F %J) without payloadlen: its own bytes are not known")
        return None
    if len(printed) == length:
        doubt = j_spelling_doubt(spelling)
        if doubt is None:
            return printed
        reader.left_out(number, f"mosquitto_sub -F %J re-printed this JSON payload and it holds {doubt}: "
                                "its own bytes are not certain")
        return None
    if isinstance(value, str):
        reader.left_out(number, f"payload cut short by mosquitto_sub ({len(data)} of {length} bytes: -F %j "
                                "stops a payload at a NUL byte, -F %J re-writes escapes)")
        return None
    reader.left_out(number, f"mosquitto_sub -F %J re-printed this JSON payload in {len(printed)} bytes, "
                            f"not its {length} (whitespace, numbers or escapes re-written)")
    return None


# mosquitto_sub's property names -> PublishProperties; the two that belong to one connection
# are left out, as tesaiot's own recordings do.
_PROPERTY_NAMES = {"payload-format-indicator": "payload_format_indicator",
                   "message-expiry-interval": "message_expiry_interval", "content-type": "content_type",
                   "response-topic": "response_topic", "correlation-data": "correlation_data"}
_CONNECTION_PROPERTIES = ("subscription-identifier", "topic-alias")


def _properties(value: object) -> PublishProperties | None:
    if not isinstance(value, list):
        raise Refused("properties is not an object")
    found: dict[str, Any] = {}
    users: tuple[tuple[str, str], ...] = ()
    for name, item in value:
        if name in _CONNECTION_PROPERTIES:
            continue
        if name == "user-properties":
            if not isinstance(item, list) or not all(isinstance(v, str) for _k, v in item):
                raise Refused("user-properties is not an object of strings")
            users = tuple((_utf8(k, name), _utf8(v, name)) for k, v in item)
            continue
        if name not in _PROPERTY_NAMES:
            raise Refused(f"unknown property {name!r}")
        field = _PROPERTY_NAMES[name]
        if field in ("payload_format_indicator", "message_expiry_interval"):
            if not _is_int(item) or not 0 <= item <= (1 if field == "payload_format_indicator" else 2**32 - 1):
                raise Refused(f"{name} {_shown(item)} is out of range")
            found[field] = item
        elif not isinstance(item, str):
            raise Refused(f"{name} {_shown(item)} is not a string")
        elif field == "correlation_data":
            found[field] = item.encode("utf-8", "surrogateescape")
        else:
            found[field] = _utf8(item, name)
    result = PublishProperties(**found, user_properties=users)
    return None if result == PublishProperties() else result


def _utf8(text: str, name: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refused(f"{name} is not valid UTF-8") from None
    return text


# --- mqtt-recorder CSV ---------------------------------------------------------------------

def _mqtt_recorder(reader: ForeignReader) -> Iterator[Message]:
    try:
        handle = open(reader.path, newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        with open(reader.path, "rb") as tail:
            ends_in_newline = tail.seek(0, 2) == 0 or (tail.seek(-1, 2) >= 0 and tail.read(1) in b"\r\n")
    except OSError as exc:
        raise RecordingError(f"cannot read {reader.path}: {exc.strerror or exc}") from None
    limit = csv.field_size_limit()
    csv.field_size_limit(2**31 - 1)  # mqtt-recorder writes payloads of any size; csv reads 128 KiB by default
    pending: tuple[int, str] | None = None  # a bad row that may be an incomplete last one
    try:
        with handle:
            rows = csv.reader(handle)
            while True:
                try:
                    row = next(rows)
                except StopIteration:
                    break
                except csv.Error as exc:
                    raise RecordingError(f"{reader.path} line {rows.line_num} is not CSV ({exc}): nothing written") \
                        from None
                if pending is not None:
                    reader.refuse(*pending)
                    pending = None
                if not row:
                    continue
                try:
                    message = _csv_message(reader, row, rows.line_num)
                except Refused as why:
                    if reader.first():
                        reader.wrong_shape(rows.line_num, str(why))  # raises: check --from
                    pending = (rows.line_num, str(why))
                    continue
                yield message
    finally:
        csv.field_size_limit(limit)
    if pending is not None:
        if ends_in_newline:
            reader.refuse(*pending)
        else:
            reader.left_out(pending[0], f"an incomplete last row ({pending[1]})")


def _csv_message(reader: ForeignReader, row: list[str], number: int) -> Message:
    if len(row) != 6:
        raise Refused(f"{len(row)} fields, not topic,payload,qos,retain,time,delta")
    topic, text, qos, retain, seconds, delta = row
    if qos not in ("0", "1", "2"):
        raise Refused(f"qos {qos[:20]!r} is not 0, 1 or 2")
    if retain not in ("True", "False"):
        raise Refused(f"retain {retain[:20]!r} is not True or False")
    time_ns = parse_seconds(seconds)
    if time_ns is None:
        raise Refused(f"the time {seconds[:30]!r} is not seconds since the epoch")
    try:
        float(delta)
    except ValueError:
        raise Refused(f"the delta {delta[:30]!r} is not a number of seconds") from None
    _check_topic(topic)
    if reader.fmt == "mqtt-recorder-csv-b64":
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise Refused("the payload is not base64 (was it recorded without --encode_b64?)") from None
    else:
        data = text.encode("utf-8", "surrogateescape")
    return Message(topic, data, int(qos), retain == "True", time_ns)


# --from name -> the function that reads such a capture as messages (one entry per format).
FOREIGN_FORMATS: dict[str, Callable[[ForeignReader], Iterator[Message]]] = {
    "mosquitto-json": _mosquitto,
    "mqtt-recorder-csv": _mqtt_recorder,
    "mqtt-recorder-csv-b64": _mqtt_recorder,
}
