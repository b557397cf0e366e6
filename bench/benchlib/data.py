"""Test data: DPS368-like payloads with a sequence number, and the same stream as a tesaiot
recording, an mqtt-recorder CSV and a lines file for ``mosquitto_pub -l``.

The payload is the upstream DPS368 simulator's (same keys, order and separators) plus a
``"seq"`` key, about 160 bytes, like the ones bench/pacedpub.c sends.
"""

from __future__ import annotations

import csv
import random
import re
from datetime import UTC, datetime
from pathlib import Path

SEQ = re.compile(rb'"seq": (\d+)')
BASE_TIME_NS = 1_767_225_600 * 10**9  # 2026-01-01T00:00:00Z: recordings start here


def payload(seq: int, time_ns: int, *, device: str, rng: random.Random) -> bytes:
    stamp = datetime.fromtimestamp(time_ns / 1e9, tz=UTC).isoformat(timespec="microseconds")
    pressure = rng.randint(95000, 105000) / 100
    temperature = rng.randint(2000, 3500) / 100
    return (f'{{"timestamp": "{stamp}", "device_id": "{device}", "sensor_type": "DPS368", '
            f'"data": {{"pressure": {pressure:.2f}, "temperature": {temperature:.2f}}}, "seq": {seq}}}').encode()


def seq_of(data: bytes) -> int | None:
    match = SEQ.search(data)
    return int(match.group(1)) if match else None


def stream(count: int, rate_hz: float, *, device: str = "bench-rec") -> list[tuple[int, bytes]]:
    """``count`` (time_ns, payload) pairs, exactly ``1 / rate_hz`` apart, seq 0..count-1."""
    rng = random.Random(368)
    period_ns = 1e9 / rate_hz
    items = []
    for seq in range(count):
        time_ns = BASE_TIME_NS + int(round(seq * period_ns))
        items.append((time_ns, payload(seq, time_ns, device=device, rng=rng)))
    return items


def write_tesaiot_recording(path: Path, items: list[tuple[int, bytes]], *, topic: str) -> None:
    """The stream as a tesaiot recording (format from the suffix), via the project's own writer.

    Raises ImportError or the project's RecordingError when the format is not available.
    """
    from tesaiot_cli import __version__
    from tesaiot_cli.message import Message
    from tesaiot_cli.recording import RecordingMetadata, open_writer

    metadata = RecordingMetadata(tool_version=__version__, topic_filters=(topic,), source="convert")
    with open_writer(path, metadata=metadata, crash_safe=False) as writer:
        for time_ns, data in items:
            writer.write(Message(topic=topic, payload=data, qos=0, retain=False, time_ns=time_ns))


def write_mqtt_recorder_csv(path: Path, items: list[tuple[int, bytes]], *, topic: str, speed: float = 1.0) -> None:
    """The stream in mqtt-recorder 1.4.0's CSV layout: topic, payload, qos, retain, time, gap.

    mqtt-recorder replays by sleeping the recorded gap (column 6) before each message; it
    has no speed option, so ``speed`` divides the gaps (what a 5x replay would do).
    """
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        previous = items[0][0] if items else 0
        for time_ns, data in items:
            gap_s = (time_ns - previous) / 1e9 / speed
            writer.writerow([topic, data.decode(), 0, False, time_ns / 1e9, gap_s])
            previous = time_ns


def write_lines(path: Path, items: list[tuple[int, bytes]]) -> None:
    """One payload per line, for ``mosquitto_pub -l``."""
    with open(path, "wb") as handle:
        for _, data in items:
            handle.write(data + b"\n")


def count_recording(path: Path) -> int:
    """Messages in a tesaiot recording (read with the project's reader); -1 when unreadable."""
    try:
        from tesaiot_cli.recording import open_reader

        with open_reader(path) as reader:
            return int(reader.count())
    except Exception:  # noqa: BLE001 - a broken or missing output counts as nothing received
        return -1
