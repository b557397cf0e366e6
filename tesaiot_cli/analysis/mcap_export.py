"""``tesaiot export REC out.mcap``: an MCAP file for Foxglove, with the official ``mcap`` package.

One channel per topic (message encoding ``json``) with a JSON Schema inferred from that
topic's payloads (pyarrow's JSON reader infers the types; :func:`json_schema` writes them
as JSON Schema). Each message keeps its exact payload bytes; its log time is the receive
time and its publish time the payload's ``timestamp`` (ISO 8601 with a zone offset) when
it has one, else the receive time. Payloads that are not a JSON object go, unchanged, to
a second channel of the same topic with message encoding ``application/octet-stream``.
A labelled recording (the simulator's ground truth) also gets the channel
``tesaiot/labels``: for each message with a label, at the same log time, ``{"topic",
"device_id", "label"}`` — so Foxglove can show the injected anomalies beside the values.
Two passes over the recording (schemas, then messages); the file is written to a
temporary name and renamed when complete.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.analysis.export import ExportReport, publish_file, selected_tables, temporary_name
from tesaiot_cli.analysis.flatten import TIMESTAMP_TYPE, batch_fields, parse_payloads, path_key
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import parse_topic
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording.files import os_error_text

INSTALL_HINT = "pip install 'tesaiot-cli[mcap]'"
RAW_ENCODING = "application/octet-stream"
LABELS_TOPIC = "tesaiot/labels"
_TIMESTAMP_KEY = path_key(("timestamp",))
_LABEL_SCHEMA = {"title": LABELS_TOPIC, "type": "object", "properties": {
    "topic": {"type": "string"}, "device_id": {"type": ["string", "null"]}, "label": {"type": "string"}}}


def require_mcap() -> None:
    """Raise :class:`ConfigError` (one line naming the install command) without ``mcap``."""
    try:
        import mcap.writer  # noqa: F401
    except ImportError:
        raise ConfigError(f"writing .mcap needs the mcap package: {INSTALL_HINT}") from None


def json_schema(kind: pa.DataType) -> dict[str, Any]:
    """The JSON Schema of values of an Arrow type as the JSON reader infers it."""
    if pa.types.is_struct(kind):
        return {"type": "object",
                "properties": {kind.field(i).name: json_schema(kind.field(i).type) for i in range(kind.num_fields)}}
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        return {"type": "array", "items": json_schema(kind.value_type)}
    if pa.types.is_boolean(kind):
        return {"type": "boolean"}
    if pa.types.is_integer(kind):
        return {"type": "integer"}
    if pa.types.is_floating(kind):
        return {"type": "number"}
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_timestamp(kind):
        return {"type": "string"}
    return {}  # null: no value seen yet, anything goes


def _topic_schemas(tables: Iterator[pa.Table]) -> dict[str, pa.Schema | None]:
    """topic -> the unified Arrow schema of its JSON-object payloads (None: types conflict)."""
    schemas: dict[str, pa.Schema | None] = {}
    for table in tables:
        topics = table.column("topic").cast(pa.string()).combine_chunks()
        payloads = table.column("payload").combine_chunks()
        for topic in pc.unique(topics).to_pylist():
            rows = pc.indices_nonzero(pc.equal(topics, topic))
            parsed = parse_payloads(payloads.take(rows))
            known = schemas.get(topic, pa.schema([]))
            for segment in parsed.segments:
                if known is None:
                    break
                try:
                    known = pa.unify_schemas([known, segment.table.schema], promote_options="permissive")
                except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                    known = None
            schemas[topic] = known
    return schemas


def _publish_times(table: pa.Table) -> list[int | None]:
    """Per row: the payload's top-level ``timestamp`` in ns when it is an ISO 8601 time with
    a zone offset, else None."""
    fields, _types = batch_fields(parse_payloads(table.column("payload").combine_chunks()), table.num_rows)
    if _TIMESTAMP_KEY not in fields.column_names:
        return [None] * table.num_rows
    column = fields.column(_TIMESTAMP_KEY).combine_chunks()
    if not pa.types.is_string(column.type):
        return [None] * table.num_rows
    try:
        return pc.cast(pc.cast(column, TIMESTAMP_TYPE), pa.int64()).to_pylist()  # type: ignore[no-any-return]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return [_iso_ns(text) for text in column.to_pylist()]


def _iso_ns(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    delta = moment - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return (delta // dt.timedelta(microseconds=1)) * 1000


def export_mcap(tables: Callable[[], Iterator[pa.Table]], output: Path, *, selection: Selection) -> ExportReport:
    """Write the selected messages to an MCAP file (see the module). Raises
    :class:`ConfigError` without the mcap package, :class:`RecordingError` otherwise."""
    require_mcap()
    from mcap.writer import Writer

    report = ExportReport(output, "mcap")
    schemas = _topic_schemas(selected_tables(tables(), selection, {"skipped": 0}))
    counts = {"skipped": 0}
    target = temporary_name(output, "tmp")
    try:
        with open(target, "wb") as stream:
            writer = Writer(stream)
            writer.start(profile="", library="tesaiot")
            channels: dict[tuple[str, bool], int] = {}
            labels_channel: int | None = None
            devices: dict[str, str | None] = {}
            sequence = 0
            for table in selected_tables(tables(), selection, counts):
                parsed = parse_payloads(table.column("payload").combine_chunks())
                raw_rows = set(parsed.not_json.to_pylist())
                published = _publish_times(table)
                topics = table.column("topic").cast(pa.string()).to_pylist()
                payloads = table.column("payload").to_pylist()
                times = table.column("time").cast(pa.int64()).to_pylist()
                labels = table.column("label").cast(pa.string()).to_pylist()
                for row, (topic, payload, time_ns) in enumerate(zip(topics, payloads, times, strict=True)):
                    raw = row in raw_rows
                    channel = channels.get((topic, raw))
                    if channel is None:
                        channel = channels[(topic, raw)] = _channel(writer, topic, raw, schemas.get(topic))
                    if time_ns < 0:
                        raise RecordingError(f"a message at {time_ns} ns is before 1970: MCAP times are unsigned")
                    sequence += 1
                    stamp = published[row]
                    writer.add_message(channel, log_time=time_ns, data=payload,
                                       publish_time=stamp if stamp is not None and stamp >= 0 and not raw else time_ns,
                                       sequence=sequence & 0xFFFFFFFF)
                    report.publish_times += stamp is not None and not raw
                    label = labels[row]
                    if label is not None:
                        if labels_channel is None:
                            labels_channel = _labels_channel(writer, topics=set(schemas))
                        if topic not in devices:
                            devices[topic] = parse_topic(topic).device_id
                        sequence += 1
                        writer.add_message(labels_channel, log_time=time_ns, publish_time=time_ns,
                                           data=orjson.dumps({"topic": topic, "device_id": devices[topic],
                                                              "label": label}),
                                           sequence=sequence & 0xFFFFFFFF)
                        report.labels += 1
                report.messages += table.num_rows
                report.not_json += len(raw_rows)
            writer.finish()  # type: ignore[no-untyped-call]
            report.channels = len(channels) + (labels_channel is not None)
        report.skipped = counts["skipped"]
        publish_file(target, output)
        report.file_bytes = output.stat().st_size
        return report
    except OSError as exc:
        raise RecordingError(f"cannot write {output}: {os_error_text(exc)}") from None
    finally:
        target.unlink(missing_ok=True)


def _labels_channel(writer: Any, *, topics: set[str]) -> int:
    if LABELS_TOPIC in topics:
        raise ConfigError(f"the recording has a topic named {LABELS_TOPIC!r}, the channel the labels go to: "
                          "leave it out with --topic, or export to .parquet or .csv")
    schema_id = writer.register_schema(name=LABELS_TOPIC, encoding="jsonschema", data=orjson.dumps(_LABEL_SCHEMA))
    return int(writer.register_channel(topic=LABELS_TOPIC, message_encoding="json", schema_id=schema_id))


def _channel(writer: Any, topic: str, raw: bool, schema: pa.Schema | None) -> int:
    if raw:
        return int(writer.register_channel(topic=topic, message_encoding=RAW_ENCODING, schema_id=0))
    body: dict[str, Any] = {"type": "object"}
    if schema is not None:
        body = json_schema(pa.struct(list(schema)))
    body["title"] = topic
    schema_id = writer.register_schema(name=topic, encoding="jsonschema", data=orjson.dumps(body))
    return int(writer.register_channel(topic=topic, message_encoding="json", schema_id=schema_id))
