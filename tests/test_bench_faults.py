"""The fault harness's own arithmetic (bench/faults.py): how it matches ground truth with a
recording, and how it reads the tools' summaries. The harness itself needs root and a
network namespace; it is run by hand (docs/reliability.md), not here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata
from tests.support.recordings import write_recording

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture(scope="module")
def faults() -> ModuleType:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("bench_faults", BENCH / "faults.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up while it loads
        spec.loader.exec_module(module)
        return module
    finally:
        while str(BENCH) in sys.path:  # faults.py adds it too
            sys.path.remove(str(BENCH))


def write(path: Path, messages: list[Message]) -> Path:
    return write_recording(path, messages, metadata=RecordingMetadata(), crash_safe=False)


T0 = 1_796_000_000_000_000_000


def test_delivery_counts_lost_duplicate_and_foreign_messages_by_topic_and_payload(
        faults: ModuleType, tmp_path: Path) -> None:
    sent = [Message(f"device/d{i % 3}/telemetry", b'{"n": %d}' % i, 1, False, T0 + i * 1_000_000) for i in range(10)]
    # Received: all but 3 and 7; message 5 twice; one nobody sent; one with sent bytes on another topic;
    # latencies 2 ms for the first copies.
    received = [m._replace(time_ns=m.time_ns + 2_000_000) for m in sent if m.payload not in (b'{"n": 3}', b'{"n": 7}')]
    received.append(sent[5]._replace(time_ns=sent[5].time_ns + 900_000_000))
    received.append(Message("device/d9/telemetry", b"stranger", 1, False, T0))
    received.append(sent[1]._replace(topic="device/other/telemetry"))
    delivery = faults.match_delivery(write(tmp_path / "truth.parquet", sent), write(tmp_path / "rec.jsonl", received))
    assert (delivery.truth, delivery.recorded, delivery.delivered) == (10, 11, 8)
    assert (delivery.lost, delivery.duplicates, delivery.foreign) == (2, 1, 2)
    assert delivery.latency_ms["p50"] == pytest.approx(2.0)
    assert delivery.latency_ms["max"] == pytest.approx(2.0)  # the duplicate's late copy is not a latency


def test_a_missing_recording_is_everything_lost(faults: ModuleType, tmp_path: Path) -> None:
    sent = [Message("device/d1/telemetry", b"%d" % i, 0, False, T0 + i) for i in range(4)]
    delivery = faults.match_delivery(write(tmp_path / "truth.parquet", sent), tmp_path / "never.parquet")
    assert (delivery.lost, delivery.recorded) == (4, 0)
    assert delivery.latency_ms["p50"] is None


@pytest.mark.parametrize(("line", "counts"), [
    ("tesaiot: stopped (duration) after 20.0 s: 10000 packets published (499.0 msg/s), 9,861 acknowledged by the "
     "broker, 0 failed, 139 dropped", (10000, 9861, 0, 139)),
    ("tesaiot: stopped (duration) after 20.0 s: 10000 packets published (499.7 msg/s), 6498 written to the socket "
     "(QoS 0: no acknowledgement), 0 failed, 3502 dropped", (10000, 6498, 0, 3502)),
])
def test_simulate_summaries_are_read_at_both_qos(faults: ModuleType, line: str, counts: tuple[int, ...]) -> None:
    match = faults.SIM_SUMMARY.search(line)
    assert match is not None
    assert tuple(faults.to_int(group) for group in match.groups()) == counts


def test_what_a_tool_said_leaves_out_status_lines_and_folds_repeats(faults: ModuleType) -> None:
    lines = ["tesaiot: simulating 50 DPS368 devices ...",
             "tesaiot:     5.0 s      495.7 msg/s  sent 2479  acked 0  anomalies 229  50 devices",
             "tesaiot: disconnected from mqtt://127.0.0.1:1883: Unspecified error",
             "tesaiot: disconnected from mqtt://127.0.0.1:1883: Unspecified error",
             "          60  device/infineon-sensor-01/telemetry",
             "tesaiot: recorded 10 messages"]
    assert faults.said(lines, skip=("tesaiot: simulating ",)) == [
        "tesaiot: disconnected from mqtt://127.0.0.1:1883: Unspecified error (x2)", "tesaiot: recorded 10 messages"]


def test_the_table_goes_between_the_markers_and_nowhere_else(faults: ModuleType, tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{faults.DOCS_BEGIN}\nold table\n{faults.DOCS_END}\nafter\n")
    faults.write_docs(doc, "new table\n")
    assert doc.read_text() == f"before\n{faults.DOCS_BEGIN}\nnew table\n{faults.DOCS_END}\nafter\n"
    (tmp_path / "plain.md").write_text("no markers\n")
    with pytest.raises(faults.HarnessError):
        faults.write_docs(tmp_path / "plain.md", "table\n")
    assert (tmp_path / "plain.md").read_text() == "no markers\n"


def test_score_delivery_json_is_shown_like_the_harness_columns(faults: ModuleType) -> None:
    # The shape of `tesaiot score TRUTH --received REC --json` (analysis/score.py DeliveryScore.as_dict).
    report: dict[str, Any] = {"truth": "t.parquet", "alerts": None, "received": "r.parquet", "detection": None,
              "delivery": {"sent": 10000, "received": 9893, "lost": 107, "duplicated": 1, "unexpected": 0,
                           "out_of_order": 0, "delivered": 0.9893,
                           "latency_ms": {"p50": 0.4, "p99": 6800.0, "max": 7100.0}},
              "thresholds": {"given": {}, "unmet": []}, "exit": 0}
    assert faults.score_cells(report) == "lost 107 (1.1%), 1 dup, 0 ms / 6.8 s"
    report["delivery"]["latency_ms"] = {"p50": None, "p99": None, "max": None}  # nothing arrived
    assert faults.score_cells({**report, "exit": 8}) == "lost 107 (1.1%), 1 dup, n/a / n/a, exit 8"
    assert faults.score_cells(None) == "n/a"  # a tesaiot without score
    assert faults.score_cells({"error": "exit 2: bad file"}) == "error: exit 2: bad file"


def test_live_status_lines_are_kept_apart_first_and_last(faults: ModuleType) -> None:
    lines = ["tesaiot: simulating 50 DPS368 devices ..."]
    lines += [f"tesaiot:    {5.0 * i:.1f} s      100.0 msg/s  sent {i}  acked {i}  queued 0/10,000"
              for i in range(1, 13)]
    lines.append("tesaiot: stopped (duration) after 60.0 s: 12 packets published")
    kept = faults.status_lines(lines)
    assert len(kept) == 9 and kept[2] == "... 4 more ..."
    assert "sent 1 " in kept[0] and "sent 12 " in kept[-1]
    assert faults.status_lines(lines[:4]) == lines[1:4]


def test_the_hostile_rows_name_the_line_record_closed_the_connection_with(faults: ModuleType) -> None:
    said = ["tesaiot: closed the connection to mqtt://127.0.0.1:1883: the broker sent a QoS 1 PUBLISH with "
            "packet id 0 (x3)", "tesaiot: reconnecting with backoff (1 s doubling to 30 s) (x3)",
            "tesaiot: recorded 3 messages in 5.02 s"]
    assert faults.hostile_verdict(faults.said(said)) == (
        "record closed the connection x3: the broker sent a QoS 1 PUBLISH with packet id 0")
    once = ["tesaiot: closed the connection to mqtt://127.0.0.1:1883: the broker sent a PUBLISH with QoS 3 "
            "(malformed packet)"]
    assert faults.hostile_verdict(once) == (
        "record closed the connection x1: the broker sent a PUBLISH with QoS 3 (malformed packet)")
    crash = ["tesaiot: internal error: UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff"]
    assert faults.hostile_verdict(crash).startswith("internal error: UnicodeDecodeError")
    assert faults.hostile_verdict(["tesaiot: recorded 3 messages"]) == "record did not close the connection"
