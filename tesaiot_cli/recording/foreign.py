"""Captures made by other tools, read as messages (``tesaiot convert --from ...``), and
recognising them when they are given where a tesaiot recording is expected.

``mosquitto-json``: the lines ``mosquitto_sub -F %j`` prints (also ``-F %J``). mosquitto
2.0.11 prints, per message::

    {"tst":"2026-11-30T05:51:59.649597Z+0000","topic":"a/b","qos":1,"retain":0,"payloadlen":8,"mid":1,"payload":"..."}

``tst`` (the receive time, microseconds; with ``Z`` and an offset, as 2.0.x prints it) becomes
the message time; ``payload`` is the payload as a JSON string (``-F %J``: the parsed JSON,
re-serialised compactly). mosquitto_sub writes non-UTF-8 bytes as they are (such lines are
not valid UTF-8; they are read byte for byte) and stops a payload at a NUL byte: when the
bytes do not add up to ``payloadlen`` the message is incomplete, left out and counted.

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
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import orjson

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording.files import check_regular_file
from tesaiot_cli.recording.model import RecordingMetadata

FOREIGN_FORMATS = ("mosquitto-json", "mqtt-recorder-csv", "mqtt-recorder-csv-b64")
SNIFF_BYTES = 64 * 1024
_TST = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z)?([+-]\d\d:?\d\d)?$")
_SECONDS = re.compile(r"^(\d+)(?:\.(\d+))?$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_tst(text: str) -> int | None:
    """mosquitto_sub's ``tst`` -> ns since the epoch (None when it is not one)."""
    match = _TST.match(text)
    if match is None:
        return None
    whole, fraction, zulu, offset = match.groups()
    zone = dt.UTC
    if offset and not zulu:
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        zone = dt.timezone(sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    moment = dt.datetime.fromisoformat(whole).replace(tzinfo=zone)
    seconds = (moment - _EPOCH) // dt.timedelta(seconds=1)
    return seconds * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


def parse_seconds(text: str) -> int | None:
    """``1796017944.1698413`` (a float as Python prints it) -> ns, exactly as written."""
    match = _SECONDS.match(text.strip())
    if match is None:
        return None
    whole, fraction = match.groups()
    return int(whole) * 1_000_000_000 + int((fraction or "0")[:9].ljust(9, "0"))


def sniff(path: Path) -> str | None:
    """The foreign format ``path`` looks like (one of FOREIGN_FORMATS), or None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
    except OSError:
        return None
    first = head.split(b"\n", 1)[0].strip()
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


class ForeignReader:
    """Messages of a foreign capture, in file order. ``lost``: messages left out (counted
    and described in ``warnings``); ``sealed`` is always True."""

    sealed = True

    def __init__(self, path: Path, fmt: str) -> None:
        if fmt not in FOREIGN_FORMATS:
            raise RecordingError(f"unknown capture format {fmt!r}")
        self.path = path
        self.fmt = fmt
        self.metadata = RecordingMetadata(source="convert", extra={"converted_from": fmt})
        self.warnings: list[str] = []
        self.lost = 0

    def open(self) -> ForeignReader:
        check_regular_file(self.path)
        return self

    def iter_labelled(self) -> Iterator[tuple[Message, str | None]]:
        """(message, None) in file order. Raises :class:`RecordingError` when the file is not
        of this format at all (its first record does not parse)."""
        rows = self._mosquitto() if self.fmt == "mosquitto-json" else self._mqtt_recorder()
        for message in rows:
            yield message, None

    def __iter__(self) -> Iterator[Message]:
        for message, _label in self.iter_labelled():
            yield message

    def _bad(self, number: int, why: str, good: int) -> None:
        if good == 0 and number == 1:
            raise RecordingError(f"{self.path} line 1 is not {self._what()} ({why}): check --from")
        self.lost += 1
        if len(self.warnings) < 5:
            self.warnings.append(f"{self.path} line {number}: {why}; left out")

    def _what(self) -> str:
        return "mosquitto_sub -F %j output" if self.fmt == "mosquitto-json" else "an mqtt-recorder CSV row"

    def _mosquitto(self) -> Iterator[Message]:
        good = 0
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            for number, raw in enumerate(handle, start=1):
                if not raw.strip():
                    continue
                try:
                    # Not orjson: mosquitto writes non-UTF-8 payload bytes as they are, and only
                    # the standard library reads those lines back byte for byte (surrogateescape).
                    record = json.loads(raw.decode("utf-8", "surrogateescape"))
                except ValueError:
                    self._bad(number, "not a JSON line" if raw.endswith(b"\n") else "an incomplete last line", good)
                    continue
                message = self._mosquitto_message(record, number, good)
                if message is not None:
                    good += 1
                    yield message

    def _mosquitto_message(self, record: object, number: int, good: int) -> Message | None:
        if not isinstance(record, dict) or not isinstance(record.get("topic"), str) or "payload" not in record:
            self._bad(number, "no topic or payload", good)
            return None
        payload = record["payload"]
        data = payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else orjson.dumps(payload)
        length = record.get("payloadlen")
        if isinstance(length, int) and length != len(data) and isinstance(payload, str):
            self._bad(number, f"payload cut short by mosquitto_sub ({len(data)} of {length} bytes: a NUL byte?)",
                      good)
            return None
        tst = record.get("tst")
        time_ns = parse_tst(tst) if isinstance(tst, str) else None
        if time_ns is None:
            self._bad(number, "no receive time (tst)", good)
            return None
        qos = record.get("qos", 0)
        return Message(record["topic"], data, qos if qos in (0, 1, 2) else 0, bool(record.get("retain", 0)), time_ns)

    def _mqtt_recorder(self) -> Iterator[Message]:
        good = 0
        try:
            handle = open(self.path, newline="", encoding="utf-8", errors="surrogateescape")  # noqa: SIM115
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            reader = csv.reader(handle)
            try:
                for row in reader:
                    number = reader.line_num
                    if not row:
                        continue
                    message = self._csv_message(row, number, good)
                    if message is not None:
                        good += 1
                        yield message
            except csv.Error as exc:
                self._bad(reader.line_num, f"not CSV ({exc})", good)

    def _csv_message(self, row: list[str], number: int, good: int) -> Message | None:
        if len(row) < 5 or row[2] not in ("0", "1", "2") or row[3] not in ("True", "False"):
            self._bad(number, "not topic,payload,qos,retain,time,delta", good)
            return None
        time_ns = parse_seconds(row[4])
        if time_ns is None:
            self._bad(number, f"the time {row[4][:30]!r} is not seconds since the epoch", good)
            return None
        if self.fmt == "mqtt-recorder-csv-b64":
            try:
                data = base64.b64decode(row[1], validate=True)
            except (binascii.Error, ValueError):
                self._bad(number, "the payload is not base64 (was it recorded without --encode_b64?)", good)
                return None
        else:
            data = row[1].encode("utf-8", "surrogateescape")
        return Message(row[0], data, int(row[2]), row[3] == "True", time_ns)

    def close(self) -> None:
        pass

    def __enter__(self) -> ForeignReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
