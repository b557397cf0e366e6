"""Recordings for tests: writing one, reading one back, waiting for one being written."""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Iterable
from pathlib import Path

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_reader, open_writer

_ODD_T0 = 1_763_800_000_123_456_789


def write_recording(path: Path, messages: Iterable[Message | tuple[Message, str | None]], *,
                    metadata: RecordingMetadata | None = None, crash_safe: bool = True,
                    format: str | None = None) -> Path:
    """Write ``messages`` (each a Message, or a (Message, label) pair) to ``path``, sealed;
    ``metadata`` defaults to a recording made by ``record``."""
    with open_writer(path, metadata=metadata or RecordingMetadata(source="record"), crash_safe=crash_safe,
                     format=format) as writer:
        for item in messages:
            if isinstance(item, Message):
                writer.write(item)
            else:
                writer.write(item[0], label=item[1])
    return path


def recorded(path: Path) -> list[Message]:
    with open_reader(path) as reader:
        return list(reader)


def count_recorded(path: Path) -> int:
    """How many messages ``path`` holds (0 while it does not exist yet)."""
    try:
        with open_reader(path) as reader:
            return reader.count()
    except Exception:  # noqa: BLE001 - not created yet
        return 0


def wait_recorded(path: Path, count: int, timeout: float = 20) -> int:
    """Poll a recording (unsealed while it is being written) until it holds ``count``
    messages, at most ``timeout`` s; how many it held last."""
    deadline = time.monotonic() + timeout
    seen = count_recorded(path)
    while seen < count and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = count_recorded(path)
    return seen


def device_readings(*paths: Path) -> dict[str, list[tuple[float, float, str | None]]]:
    """Per device, in order: (pressure, temperature, label) of every DPS368 packet in ``paths``."""
    per_device: dict[str, list[tuple[float, float, str | None]]] = collections.defaultdict(list)
    for path in paths:
        with open_reader(path) as reader:
            for message, label in reader.iter_labelled():
                data = json.loads(message.payload)
                per_device[data["device_id"]].append((data["data"]["pressure"], data["data"]["temperature"], label))
    return dict(per_device)


def odd_messages() -> list[tuple[Message, str | None]]:
    """Payloads and topics that tend to break recorders."""
    big = bytes((i * 7 + 3) % 256 for i in range(1 << 20))
    t0 = _ODD_T0
    return [
        (Message("device/infineon-sensor-01/telemetry/DPS368", b'{"data": {"pressure": 1000.5}}', 1, False, t0),
         "normal"),
        (Message("device/dev/telemetry", b"", 0, False, t0 + 1), None),
        (Message("bin/all-bytes", bytes(range(256)), 2, False, t0 + 2), "high_temperature"),
        (Message("ünïcødé/tøpic/😀", "héllo wörld".encode("latin-1"), 1, True, t0 + 3), None),
        (Message("big/one-megabyte", big, 0, False, t0 + 4), None),
        (Message("text/tricky", b'line1\nline2\r\n"quoted" \\ \x00 nul \xe2\x82\xac', 1, True, t0 + 5), None),
        (Message("bom", b"\xef\xbb\xbfstarts with a BOM", 0, False, t0 + 6), None),
        (Message("b64-lookalike", b"aGVsbG8=", 0, False, t0 + 7), None),
        (Message("a", b"\xff", 1, False, 0), None),
    ]
