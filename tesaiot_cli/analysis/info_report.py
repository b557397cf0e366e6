"""What ``tesaiot info`` reports about a recording: :func:`build_report` makes the
``--json`` object from the reader's metadata and the statistics, :func:`render_report`
its human form. Pure apart from the recording's size on disk; nothing here prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tesaiot_cli.recording.storage import remote
from tesaiot_cli.textfmt import human_bytes, human_duration, iso_time

if TYPE_CHECKING:
    from tesaiot_cli.analysis.stats import RecordingStats
    from tesaiot_cli.recording import RecordingMetadata

TOP_TOPICS = 20


def iso(time_ns: int | None) -> str | None:
    """ns since the epoch -> ISO 8601 UTC with microseconds (None stays None)."""
    return None if time_ns is None else iso_time(time_ns)


def _disk_bytes(file: Path) -> int:
    from tesaiot_cli.recording import PARTIAL_SUFFIX

    where = remote(file)
    if where is not None:
        from tesaiot_cli.recording.remote import stored_bytes

        return stored_bytes(where)
    if file.is_file():
        return file.stat().st_size
    if file.is_dir():  # a dataset: every file in it, staging included
        return sum(p.stat().st_size for p in file.rglob("*") if p.is_file())
    partial = file.with_name(file.name + PARTIAL_SUFFIX)
    if partial.is_dir():
        return sum(p.stat().st_size for p in partial.iterdir() if p.is_file())
    return 0


def build_report(file: Path, metadata: RecordingMetadata, stats: RecordingStats, *, sealed: bool,
                 warnings: list[str], fmt: str | None) -> dict[str, Any]:
    """The ``--json`` object (also what the human output is rendered from)."""
    from tesaiot_cli.recording import format_for, is_dataset_path
    from tesaiot_cli.recording.meta import metadata_to_dict

    disk = _disk_bytes(file)
    topics = sorted(stats.topics.values(), key=lambda t: (-t.messages, t.topic))
    meta = metadata_to_dict(metadata)
    return {
        "file": str(file),
        "format": "parquet-dataset" if is_dataset_path(file) else format_for(file, fmt),
        "sealed": sealed,
        "file_bytes": disk,
        "bytes_per_message": round(disk / stats.messages, 2) if stats.messages else None,
        "messages": stats.messages,
        "start_ns": stats.start_ns,
        "end_ns": stats.end_ns,
        "start": iso(stats.start_ns),
        "end": iso(stats.end_ns),
        "duration_s": round(stats.duration_s, 6),
        "rate_per_s": _round(stats.rate),
        "payload_bytes": {"min": stats.payload_min, "mean": _round(stats.payload_mean), "max": stats.payload_max,
                          "total": stats.payload_total},
        "topics": [
            {
                "topic": t.topic, "device_id": t.device_id, "sensor_type": t.sensor_type,
                "messages": t.messages, "rate_per_s": _round(stats.topic_rate(t)),
                "first": iso(t.first_ns), "last": iso(t.last_ns),
                "longest_silence_s": None if t.longest_gap_ns is None else round(t.longest_gap_ns / 1e9, 6),
                "longest_silence_start": iso(t.longest_gap_start_ns),
            }
            for t in topics
        ],
        "labels": dict(sorted(stats.labels.items())) if stats.labels else None,
        "anomalies": stats.anomalies,
        "unlabelled": stats.unlabelled if stats.labels else None,
        "windows": _windows(metadata, warnings),
        "metadata": meta,
        "warnings": warnings,
    }


def _windows(metadata: RecordingMetadata, warnings: list[str]) -> dict[str, Any] | None:
    """The truth's anomaly windows (``convert --from nab``) per device, or None when it has none."""
    from tesaiot_cli.errors import RecordingError
    from tesaiot_cli.recording.truth import TruthWindows

    try:
        truth = TruthWindows.of(metadata)
    except RecordingError as exc:
        warnings.append(str(exc))
        return None
    if truth is None:
        return None
    return {"benchmark": truth.benchmark, "count": truth.count, "devices": len(truth.by_device),
            "by_device": {device: [[w.first, w.last] for w in windows] for device, windows in truth.by_device.items()}}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def render_report(report: dict[str, Any]) -> str:
    """The human form of :func:`build_report`."""
    meta = report["metadata"]
    state = "sealed" if report["sealed"] else "NOT SEALED (crash leftover or still recording)"
    lines = [f"file        {report['file']} ({report['format']}, {human_bytes(report['file_bytes'])}, {state})"]
    per = f", {report['bytes_per_message']} bytes/message on disk" if report["bytes_per_message"] else ""
    lines.append(f"messages    {report['messages']:,}{per}")
    if report["start"]:
        rate = f", {report['rate_per_s']:,.2f} msg/s" if report["rate_per_s"] else ""
        lines.append(f"time span   {report['start']} -> {report['end']} "
                     f"({human_duration(report['duration_s'])}{rate})")
    origin = meta.get("source", "unknown")
    if meta.get("broker"):
        origin += f" from {meta['broker']}"
    if meta.get("topic_filters"):
        origin += f", topics {' '.join(meta['topic_filters'])}"
    if meta.get("seed") is not None:
        origin += f", seed {meta['seed']}"
    version = f"tesaiot {meta['tool_version']}, " if meta.get("tool_version") else ""
    lines.append(f"source      {origin} ({version}format {meta.get('format_version', '?')})")
    dataset = (meta.get("extra") or {}).get("dataset") if report["format"] == "parquet-dataset" else None
    if isinstance(dataset, dict):
        lines.append(f"dataset     {dataset.get('files', 0):,} files, partitioned by {dataset.get('partitioning')}, "
                     f"{len(dataset.get('workers') or [])} recorder(s), merged by receive time")
    size = report["payload_bytes"]
    if report["messages"] and size is not None:  # None: --summary
        lines.append(f"payload     min {size['min']:,} B, mean {size['mean']:,.1f} B, max {size['max']:,} B, "
                     f"total {human_bytes(size['total'])}")
    if report["labels"]:
        counts = ", ".join(f"{label} {count:,}" for label, count in report["labels"].items())
        lines.append(f"labels      {counts}; anomalous messages {report['anomalies']:,}"
                     + (f"; unlabelled {report['unlabelled']:,}" if report["unlabelled"] else ""))
    dups = report.get("duplicates")
    if dups is not None:
        lines.append(f"duplicates  {dups['count']:,} (same topic and payload within {dups['window_s']:g} s)"
                     + ("; 'tesaiot convert --dedupe' removes them" if dups["count"] else ""))
    seq = report.get("sequence")
    if seq:
        from tesaiot_cli.analysis.sequence import SequenceReport

        lines.append("sequence    " + SequenceReport.from_dict(seq).summary_line().removeprefix("sequence numbers: "))
    lines += _render_windows(report.get("windows"))
    lines += _render_values(report.get("values"))
    topics = report["topics"]
    if topics:
        lines.append(f"topics      {len(topics)}")
        width = min(max(len(t["topic"]) for t in topics[:TOP_TOPICS]), 60)
        lines.append(f"  {'TOPIC':<{width}}  {'MESSAGES':>10}  {'MSG/S':>9}  LONGEST SILENCE")
        for t in topics[:TOP_TOPICS]:
            rate = f"{t['rate_per_s']:,.2f}" if t["rate_per_s"] is not None else "-"
            gap = "-" if t["longest_silence_s"] is None else (
                f"{human_duration(t['longest_silence_s'])} from {t['longest_silence_start']}")
            lines.append(f"  {_clip(t['topic'], width):<{width}}  {t['messages']:>10,}  {rate:>9}  {gap}")
        if len(topics) > TOP_TOPICS:
            lines.append(f"  ... and {len(topics) - TOP_TOPICS} more topics (--json lists them all)")
    return "\n".join(lines)


SHOWN_DEVICES = 10


def _render_windows(windows: dict[str, Any] | None) -> list[str]:
    """The anomaly windows: a count, then per device (the most windows first, up to SHOWN_DEVICES)."""
    from tesaiot_cli.recording.truth import stamp_ns

    if windows is None:
        return []
    by_device = windows["by_device"]
    without = sum(1 for spans in by_device.values() if not spans)
    bench = f" ({windows['benchmark']})" if windows["benchmark"] else ""
    lines = [f"windows     {windows['count']:,} anomaly windows{bench} on {windows['devices']:,} devices"
             + (f", {without} without any" if without else "")]
    shown = sorted((item for item in by_device.items() if item[1]), key=lambda item: (-len(item[1]), item[0]))
    for device, spans in shown[:SHOWN_DEVICES]:
        lines.append(f"  {_clip(device, 60)}: {len(spans)}")
        for first, last in spans:
            start, end = stamp_ns(first), stamp_ns(last)
            span = f" ({human_duration((end - start) / 1e9)})" if start is not None and end is not None else ""
            lines.append(f"    {_clip(first, 32)} -> {_clip(last, 32)}{span}")
    if len(shown) > SHOWN_DEVICES:
        lines.append(f"  ... and {len(shown) - SHOWN_DEVICES} more devices with windows (--json lists them all)")
    return lines


def _render_values(values: dict[str, Any] | None) -> list[str]:
    """The numeric payload fields: one line per field, then per device (up to SHOWN_DEVICES)."""
    if not values or not values["fields"]:
        return []
    lines = ["values      numeric payload fields (nulls: messages without a number there)"]
    width = min(max(len(name) for name in values["fields"]) + 2, 40)

    def row(label: str, stats: dict[str, Any]) -> str:
        cells = [_number(stats[key]) for key in ("min", "mean", "max")]
        return f"  {_clip(label, width):<{width}}  {cells[0]:>12}  {cells[1]:>12}  {cells[2]:>12}  {stats['nulls']:>9,}"

    lines.append(f"  {'FIELD':<{width}}  {'MIN':>12}  {'MEAN':>12}  {'MAX':>12}  {'NULLS':>9}")
    lines += [row(name, stats) for name, stats in values["fields"].items()]
    devices = values["devices"]
    if len(devices) > 1:
        devices = {device: fields for device, fields in devices.items() if fields}  # devices with numbers
        for device, fields in list(devices.items())[:SHOWN_DEVICES]:
            lines.append(f"  device {_clip(device, 60)}")
            lines += [row("  " + name, stats) for name, stats in fields.items()]
        more = len(devices) - SHOWN_DEVICES + values["devices_not_shown"]
        if more > 0:
            lines.append(f"  ... and {more} more devices (--json lists up to {len(devices)})")
    if values["not_json"]:
        lines.append(f"  {values['not_json']:,} payloads are not a JSON object")
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6 or (value and abs(value) < 1e-3):
        return f"{value:,.4g}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _clip(text: str, width: int) -> str:
    from tesaiot_cli.output.render import escape_control

    text = escape_control(text)
    return text if len(text) <= width else text[: width - 3] + "..."
