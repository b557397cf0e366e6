"""Plain alert files: what a user's own detector writes most easily, read as alert messages
(``tesaiot score --alerts FILE``).

- **NDJSON** (``.ndjson``, or ``.jsonl`` that is not a tesaiot recording): one alert object
  per line, as the alert contract says (``timestamp`` and ``device_id`` required here, since
  there is no topic to take the device from; ``kind``, ``score`` and more optional). The line
  is the payload, byte for byte.
- **CSV** (``.csv``): rows ``timestamp,device_id[,kind,score]``, an optional header naming
  those columns; each row becomes the payload ``{"timestamp": ..., "device_id": ...,
  "kind": ..., "score": ...}`` (an empty kind or score is left out; score is a number).

Each alert's topic is ``device/<device_id>/alerts`` and its time that of its ``timestamp``
(a plain file says nothing of when an alert arrived; an unparseable timestamp gives 0).
Empty lines are skipped; an empty file is a detector that found nothing. Anything else
raises :class:`RecordingError` naming the line.
"""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import orjson

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording.files import check_regular_file
from tesaiot_cli.recording.meta import JSONL_HEADER_KEY
from tesaiot_cli.recording.truth import stamp_ns

CSV_COLUMNS = ("timestamp", "device_id", "kind", "score")


def is_plain_alert_file(path: Path) -> bool:
    """Whether ``path`` is a plain alert file rather than a recording (by suffix, and for
    ``.jsonl`` by its first line not being a tesaiot recording's header)."""
    suffix = path.suffix.lower()
    if suffix in (".ndjson", ".csv"):
        return True
    if suffix != ".jsonl" or not path.is_file():
        return False
    try:
        with open(path, "rb") as handle:
            for raw in handle:
                if raw.strip():
                    return not raw.lstrip().startswith(b'{"' + JSONL_HEADER_KEY.encode() + b'"')
    except OSError:
        return False
    return True  # empty: no alerts


def _time_ns(stamp: str) -> int:
    time_ns = stamp_ns(stamp)
    if time_ns is not None:
        return time_ns
    try:
        parsed = dt.datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def _message(device_id: str, stamp: str, payload: bytes) -> Message:
    return Message(f"device/{device_id}/alerts", payload, 0, False, _time_ns(stamp))


def read_alert_file(path: Path) -> list[Message]:
    """The alerts of a plain alert file, in file order. Raises :class:`RecordingError`
    (unreadable; a line that is not an alert: its number and why)."""
    check_regular_file(path)
    try:
        return _read_csv(path) if path.suffix.lower() == ".csv" else _read_ndjson(path)
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecordingError(f"{path} is not UTF-8 text") from None


def _read_ndjson(path: Path) -> list[Message]:
    alerts: list[Message] = []
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise RecordingError(f"{path} line {number}: not a JSON object") from None
            if not isinstance(data, dict):
                raise RecordingError(f"{path} line {number}: not a JSON object")
            stamp, device_id = data.get("timestamp"), data.get("device_id")
            if not isinstance(stamp, str) or not isinstance(device_id, str) or not device_id:
                raise RecordingError(f"{path} line {number}: an alert needs \"timestamp\" and \"device_id\" strings")
            alerts.append(_message(device_id, stamp, line))
    return alerts


def _read_csv(path: Path) -> list[Message]:
    alerts: list[Message] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        try:
            for row in reader:
                number = reader.line_num
                cells = [cell.strip() for cell in row]
                if not any(cells):
                    continue
                if not alerts and number == 1 and cells[0].lower() == "timestamp":
                    if tuple(c.lower() for c in cells) != CSV_COLUMNS[:len(cells)]:
                        raise RecordingError(f"{path} line 1: the header is not timestamp,device_id[,kind,score]")
                    continue
                alerts.append(_csv_alert(path, number, cells))
        except csv.Error as exc:
            raise RecordingError(f"{path} line {reader.line_num}: not CSV ({exc})") from None
    return alerts


def _csv_alert(path: Path, number: int, cells: list[str]) -> Message:
    if not 2 <= len(cells) <= 4 or not cells[0] or not cells[1]:
        raise RecordingError(f"{path} line {number}: not timestamp,device_id[,kind,score]")
    record: dict[str, object] = {"timestamp": cells[0], "device_id": cells[1]}
    if len(cells) > 2 and cells[2]:
        record["kind"] = cells[2]
    if len(cells) > 3 and cells[3]:
        try:
            record["score"] = float(cells[3])
        except ValueError:
            raise RecordingError(f"{path} line {number}: the score {cells[3][:30]!r} is not a number") from None
    return _message(cells[1], cells[0], orjson.dumps(record))
