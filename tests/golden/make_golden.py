"""Write the golden recordings of the current recording format version into this directory.

    .venv/bin/python tests/golden/make_golden.py

Each format version gets its files once, committed and never rewritten:
``v<N>.parquet`` and ``v<N>.jsonl``. ``tests/test_golden.py`` reads every committed
version and checks its exact content against :func:`golden_rows` (what the files were
made from), so a reader change that breaks old recordings fails there. The script
refuses to overwrite an existing version's files.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent.parent))

from tesaiot_cli.message import Message, PublishProperties  # noqa: E402

RECORDING_ID = "901dc0ffee000001"
START_NS = 1_795_335_896_055_689_123  # 2026-11-22T08:24:56.055689123Z


def golden_rows(version: int) -> list[tuple[Message, str | None]]:
    """The messages (and labels) the golden files of format ``version`` hold, in order:
    text, JSON, binary, empty and non-UTF-8 payloads, QoS 0-2, retain, a multi-level
    sensor type, a non-ASCII topic, labels and no label; from version 2 also MQTT 5
    properties (all fields, some fields, none)."""
    rows: list[tuple[Message, str | None]] = [
        (Message("device/d1/telemetry", b'{"pressure":1013.25,"temperature":25.1}', 0, False, START_NS), "normal"),
        (Message("device/d1/telemetry", b'{"pressure":1200.5,"temperature":25.2}', 1, False, START_NS + 1),
         "high_pressure"),
        (Message("device/d2/telemetry/raw/adc", b"\x00\xff\xfe\x80binary", 2, True, START_NS + 1_000_000_000),
         None),
        (Message("device/d2/status", b"", 1, True, START_NS + 2_000_000_000), None),
        (Message("sensors/\u00e9t\u00e9/\u2603", "caf\u00e9 \u2603".encode(), 0, False, START_NS + 3_000_000_007),
         None),
        (Message("x", b"\xc3\x28 not utf-8", 0, False, START_NS + 3_000_000_008), "both"),
    ]
    if version >= 2:
        full = PublishProperties(payload_format_indicator=1, message_expiry_interval=3600,
                                 content_type="application/json", response_topic="device/d1/reply",
                                 correlation_data=b"\x00\x01corr\xff",
                                 user_properties=(("site", "lab-1"), ("k", "v1"), ("k", "v2"), ("\u00e9", "")))
        some = PublishProperties(payload_format_indicator=0, user_properties=(("only", "one"),))
        empty = PublishProperties()
        rows += [
            (Message("device/d3/telemetry", b'{"pressure":990.0}', 1, False, START_NS + 4_000_000_000, full), None),
            (Message("device/d3/telemetry", b"\x01\x02", 0, False, START_NS + 4_000_000_001, some), "normal"),
            (Message("device/d3/telemetry", b"plain", 2, True, START_NS + 4_000_000_002, empty), None),
            (Message("device/d3/telemetry", b"none", 0, False, START_NS + 4_000_000_003, None), None),
        ]
    return rows


def golden_metadata(version: int) -> dict[str, object]:
    """The metadata fields every golden file of ``version`` holds."""
    return {"format_version": version, "tool_version": "golden", "broker": "mqtt://broker.example:1883",
            "topic_filters": ("#",), "source": "record", "seed": 7, "recording_id": RECORDING_ID,
            "start_ns": START_NS, "end_ns": golden_rows(version)[-1][0].time_ns}


def main() -> None:
    from tesaiot_cli.recording import FORMAT_VERSION, RecordingMetadata, open_writer

    version = FORMAT_VERSION
    for suffix in ("parquet", "jsonl"):
        target = HERE / f"v{version}.{suffix}"
        if target.exists():
            print(f"{target.name} exists: golden files are never rewritten", file=sys.stderr)
            continue
        meta = golden_metadata(version)
        metadata = RecordingMetadata(tool_version=str(meta["tool_version"]), broker=str(meta["broker"]),
                                     topic_filters=("#",), source="record", seed=7, recording_id=RECORDING_ID)
        with open_writer(target, metadata=metadata, crash_safe=False) as writer:
            for message, label in golden_rows(version):
                writer.write(message, label=label)
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
