"""``tesaiot export``: a recording as a typed table (Parquet or CSV), one row per message.

Two passes, bounded memory:

1. read the recording batch by batch (any reader: Parquet, JSONL, a crash leftover, a
   dataset), keep the selected messages, parse their payloads with pyarrow's JSON reader
   (:mod:`~tesaiot_cli.analysis.flatten`), and spill each batch's columns as an Arrow IPC
   stream to a temporary file next to the output, while the field types are unified
   across batches (:class:`~tesaiot_cli.analysis.flatten.FieldTypes`);
2. read the spill back, give every batch the final schema (missing fields null, promoted
   or timestamp types), and write the output to a temporary name, renamed into place
   when complete: an error leaves nothing behind.

Payloads that are not a JSON object (binary, text, JSON arrays or scalars) are counted
and kept: their rows have null fields and the exact bytes in the ``payload`` column
(which exists only when there are such payloads).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.analysis.flatten import (
    COLLISION_MARK,
    FieldTypes,
    batch_fields,
    column_names,
    conform_fields,
    key_path,
    parse_payloads,
    path_key,
)
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import DEFAULT_SENSOR, parse_topic, topic_sensor
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording.files import os_error_text

META_COLUMNS = ("time", "topic", "device_id", "sensor_type", "qos", "retain", "label")
RAW_COLUMN = "payload"
RENAMED_PREFIX = "payload."  # a payload field named like a metadata column gets this prefix
TABLE_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}
EXPORT_SUFFIXES = (".parquet", ".pq", ".csv", ".mcap")


def export_format(path: Path) -> str:
    """``parquet``, ``csv`` or ``mcap`` from the suffix of ``path``; raises :class:`ConfigError`."""
    suffix = path.suffix.lower()
    if suffix == ".mcap":
        return "mcap"
    if suffix in TABLE_SUFFIXES:
        return TABLE_SUFFIXES[suffix]
    raise ConfigError(f"cannot tell the export format of {str(path)!r}: use a name ending in "
                      f"{', '.join(EXPORT_SUFFIXES)}")


@dataclass
class ExportReport:
    """What an export wrote. ``not_json``: payloads that are not a JSON object (kept as
    bytes in ``payload``); ``mixed``: fields whose type changed, written as strings;
    ``renamed``: payload fields (their path) that share their dotted name with another and
    got a ``~N`` suffix (:func:`~tesaiot_cli.analysis.flatten.column_names`);
    ``inexact``: fields written as text because float64 cannot hold some of their integers
    exactly (how many); ``untimed``: text fields of times without a zone offset (how many)."""

    output: Path
    format: str
    messages: int = 0
    skipped: int = 0
    not_json: int = 0
    columns: list[str] = field(default_factory=list)
    mixed: dict[str, list[str]] = field(default_factory=dict)
    renamed: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    inexact: dict[str, int] = field(default_factory=dict)
    untimed: dict[str, int] = field(default_factory=dict)
    file_bytes: int = 0
    channels: int = 0
    publish_times: int = 0
    labels: int = 0  # MCAP: messages on the labels channel


_NO_TEXT = pa.scalar("", pa.string())


# -- selection -----------------------------------------------------------------------------


def selected_tables(tables: Iterator[pa.Table], selection: Selection, counts: dict[str, int]) -> Iterator[pa.Table]:
    """Recording-schema tables cut to the selection, as replay selects: the window is
    resolved against the first message, reading stops at the first message after ``--end``,
    and topic filters / device globs are evaluated once per distinct topic. Messages left
    out are added to ``counts["skipped"]``."""
    for table in tables:
        if table.num_rows == 0:
            continue
        n = table.num_rows
        stop = False
        if selection.windowed:
            times = table.column("time").cast(pa.int64())
            start_ns, end_ns = selection.resolve(times[0].as_py())
            after = pc.indices_nonzero(pc.greater(times, pa.scalar(end_ns, pa.int64())))
            if len(after):
                cut = after[0].as_py()
                table = table.slice(0, cut)
                times = times.slice(0, cut)
                stop = True
            table = table.filter(pc.greater_equal(times, pa.scalar(start_ns, pa.int64())))
        if selection.filters_topics and table.num_rows:
            topics = table.column("topic").cast(pa.string())
            distinct = pc.unique(topics).to_pylist()
            wanted = [t for t in distinct if selection.wanted(t)]
            if len(wanted) != len(distinct):
                table = table.filter(pc.is_in(topics, value_set=pa.array(wanted, pa.string())))
        counts["skipped"] += n - table.num_rows
        if table.num_rows:
            yield table
        if stop:
            return


def prefetched(tables: Iterator[pa.Table], depth: int = 1) -> Iterator[pa.Table]:
    """The same tables, read ahead by a thread (at most ``depth`` waiting): reading and
    decoding the recording (Arrow, without the GIL) overlaps with parsing the previous batch.
    An error in the reader is raised here, in order; closing this generator stops the thread."""
    import queue
    import threading

    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for table in tables:
                if not put(("table", table)):
                    return
            put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            put(("error", exc))

    thread = threading.Thread(target=produce, name="tesaiot-export-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        thread.join()


# -- metadata columns ----------------------------------------------------------------------


def meta_columns(table: pa.Table, fields: pa.Table) -> dict[str, pa.Array]:
    """time, topic, device_id, sensor_type, qos, retain, label for a batch. device_id and
    sensor_type follow the one rule (:func:`~tesaiot_cli.message.sensor_type_of`), from the
    topic and the already parsed payload fields, whatever rule wrote the recording."""
    topics = table.column("topic").cast(pa.string()).combine_chunks()
    distinct = pc.unique(topics)
    names = distinct.to_pylist()
    position = pc.index_in(topics, value_set=distinct)
    devices = pa.array([parse_topic(t).device_id for t in names], pa.string()).take(position)
    from_topic = pa.array([topic_sensor(t) for t in names], pa.string()).take(position)
    sensor = pc.fill_null(from_topic, pa.scalar(DEFAULT_SENSOR, pa.string()))
    if _SENSOR_KEY in fields.column_names:
        payload_sensor = fields.column(_SENSOR_KEY).combine_chunks()
        if pa.types.is_string(payload_sensor.type):
            text = pc.fill_null(payload_sensor, _NO_TEXT)
            usable = pc.and_(pc.is_valid(payload_sensor), pc.not_equal(text, _NO_TEXT))
            sensor = pc.if_else(pc.and_(pc.is_null(from_topic), usable), payload_sensor, sensor)
    return {
        "time": table.column("time").combine_chunks(),
        "topic": topics,
        "device_id": devices,
        "sensor_type": sensor,
        "qos": table.column("qos").combine_chunks(),
        "retain": table.column("retain").combine_chunks(),
        "label": table.column("label").cast(pa.string()).combine_chunks(),
    }


_SENSOR_KEY = path_key(("sensor_type",))


def field_column_names(keys: list[str]) -> dict[str, str]:
    """The payload fields' column names, by key (:func:`~tesaiot_cli.analysis.flatten.path_key`):
    the dotted path, prefixed with ``payload.`` when it is a metadata column's name; unique
    (:func:`~tesaiot_cli.analysis.flatten.column_names` settles a name two paths share)."""
    paths = [key_path(key) for key in keys]
    names = column_names(paths, taken=(*META_COLUMNS, RAW_COLUMN), prefix=RENAMED_PREFIX,
                         prefixed=(*META_COLUMNS, RAW_COLUMN))
    return {key: names[path] for key, path in zip(keys, paths, strict=True)}


# -- the spill (pass 1) --------------------------------------------------------------------


class Spill:
    """Arrow IPC streams appended to one temporary file, one per batch (each with its own
    schema); read back in order. Deleted by :meth:`remove`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offsets: list[tuple[int, int]] = []
        self._handle: Any = None

    def __enter__(self) -> Spill:
        # Arrow's own file: written from C++ without the GIL, not through Python's file object.
        self._handle = pa.OSFile(str(self.path), "wb")
        return self

    def append(self, table: pa.Table) -> None:
        start = self._handle.tell()
        with pa.ipc.new_stream(self._handle, table.schema) as stream:
            stream.write_table(table)
        self.offsets.append((start, self._handle.tell() - start))

    def finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def tables(self) -> Iterator[pa.Table]:
        # Plain reads, one batch at a time: a memory map would count the whole spill in RSS.
        with open(self.path, "rb") as source:
            for start, size in self.offsets:
                source.seek(start)
                yield pa.ipc.open_stream(pa.py_buffer(source.read(size))).read_all()

    def remove(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)

    def __exit__(self, *exc: object) -> None:
        self.remove()


def temporary_name(path: Path, kind: str) -> Path:
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.{kind}")


# -- the export ----------------------------------------------------------------------------


def export_table(tables: Callable[[], Iterator[pa.Table]], output: Path, *, selection: Selection,
                 labelled: bool) -> ExportReport:
    """Write the selected messages of a recording to ``output`` (Parquet or CSV by suffix).

    ``tables`` returns the reader's recording-schema tables. ``labelled``: write the
    ``label`` column (the recording has labels). Raises :class:`RecordingError` (cannot
    write, or a reader error) and :class:`ConfigError`; nothing is left at ``output`` or
    beside it on error.

    The usual case takes one pass: while the schema the batches imply stays the one the
    first batch gave, each batch is also written straight to the output by a writer thread
    (overlapping the parsing of the next). When a later batch changes it (a new field, a
    promoted type, a first non-JSON payload), that output is dropped and the second pass
    writes everything from the spill with the final schema.
    """
    fmt = export_format(output)
    report = ExportReport(output, fmt)
    counts = {"skipped": 0}
    types = FieldTypes()
    state = {"has_raw": False, "saw_label": labelled}
    spill = Spill(temporary_name(output, "spill"))
    target = temporary_name(output, "tmp")
    early: BackgroundWriter | None = None
    early_schema: pa.Schema | None = None
    try:
        with spill:
            for index, table in enumerate(_slices(selected_tables(prefetched(tables()), selection, counts))):
                stored = _parsed_batch(table, types, state, report)
                spill.append(stored)
                report.messages += table.num_rows
                if index == 0:
                    early_schema = _schema(types, state)
                    early = BackgroundWriter(_open_table_writer(target, early_schema, fmt))
                if early is not None:
                    if _schema(types, state).equals(early_schema):
                        early.write(_final_table(stored, types, early_schema))
                    else:  # the schema changed: the second pass writes it all
                        early.abandon()
                        early = None
                        target.unlink(missing_ok=True)
            spill.finish()
            report.skipped = counts["skipped"]
            names = field_column_names(list(types.types))
            report.mixed = {names[n]: sorted(kinds) for n, kinds in types.mixed.items()}
            report.inexact = {names[n]: count for n, count in types.inexact.items()}
            report.untimed = {names[n]: count for n, count in types.untimed_text().items()}
            report.renamed = [(key_path(n), name) for n, name in names.items() if COLLISION_MARK in name
                              and name != ".".join(key_path(n))]
            schema = _schema(types, state)
            report.columns = schema.names
            if early is not None:
                early.close()
            else:
                writer = BackgroundWriter(_open_table_writer(target, schema, fmt))
                try:
                    for stored in spill.tables():
                        writer.write(_final_table(stored, types, schema))
                except BaseException:
                    writer.abandon()
                    raise
                writer.close()
        publish_file(target, output)
        report.file_bytes = output.stat().st_size
        return report
    except OSError as exc:
        raise RecordingError(f"cannot write {output}: {os_error_text(exc)}") from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        raise RecordingError(f"cannot export to {output}: {str(exc).splitlines()[0][:200]}") from None
    finally:
        if early is not None:
            early.abandon()
        target.unlink(missing_ok=True)


PARSE_ROWS = 16_384  # rows parsed at a time: bounds the parser's intermediate buffers
# How long the allocator keeps freed pages (use_lean_memory_pool). The reader, parser and
# writer threads allocate and free batch after batch: given back at once (0), every page
# was faulted in again (330,000 faults, 0.9 s of system time for 1,000,000 messages);
# kept a second, 50,000 faults and 0.25 s. With 16,384 rows a parse, peak RSS stays
# 230-250 MiB (32,768 rows: 290-300 MiB). bench/run --only export measures both.
EXPORT_DECAY_MS = 1000


def _slices(tables: Iterator[pa.Table]) -> Iterator[pa.Table]:
    for table in tables:
        for start in range(0, table.num_rows, PARSE_ROWS):
            yield table.slice(start, PARSE_ROWS)


def _parsed_batch(table: pa.Table, types: FieldTypes, state: dict[str, bool], report: ExportReport) -> pa.Table:
    """One selected batch, parsed: metadata columns, ``field:<name>`` columns, and the raw
    payload of non-JSON rows. Updates ``types``, ``state`` and the not-JSON count."""
    payloads = table.column("payload").combine_chunks()
    parsed = parse_payloads(payloads)
    fields, batch_types = batch_fields(parsed, table.num_rows)
    types.merge(batch_types)
    columns = meta_columns(table, fields)
    state["saw_label"] = state["saw_label"] or columns["label"].null_count < len(columns["label"])
    arrays = list(columns.values())
    names = list(columns)
    arrays += fields.columns
    names += ["field:" + n for n in fields.column_names]
    if len(parsed.not_json):
        state["has_raw"] = True
        report.not_json += len(parsed.not_json)
        arrays.append(pc.if_else(_mask(table.num_rows, parsed.not_json), payloads, pa.nulls(1, pa.binary())[0]))
        names.append(RAW_COLUMN)
    return pa.Table.from_arrays(arrays, names=names)


def _schema(types: FieldTypes, state: dict[str, bool]) -> pa.Schema:
    meta = [c for c in META_COLUMNS if c != "label" or state["saw_label"]]
    return pa.schema([_meta_field(name) for name in meta]
                     + [pa.field(name, types.final_type(key))
                        for key, name in field_column_names(list(types.types)).items()]
                     + ([pa.field(RAW_COLUMN, pa.binary())] if state["has_raw"] else []))


def _final_table(stored: pa.Table, types: FieldTypes, schema: pa.Schema) -> pa.Table:
    """A parsed batch (from :func:`_parsed_batch`) in the output schema."""
    names = stored.column_names
    fields = pa.Table.from_arrays([stored.column(n) for n in names if n.startswith("field:")],
                                  names=[n[len("field:"):] for n in names if n.startswith("field:")])
    meta = [c for c in META_COLUMNS if c in schema.names]
    arrays = [stored.column(n).combine_chunks().cast(schema.field(n).type) for n in meta]
    arrays += list(conform_fields(fields, types, list(types.types)))
    if RAW_COLUMN in schema.names:
        arrays.append(stored.column(RAW_COLUMN).combine_chunks() if RAW_COLUMN in names
                      else pa.nulls(stored.num_rows, pa.binary()))
    return pa.Table.from_arrays(arrays, schema=schema)


class BackgroundWriter:
    """Writes tables on a thread of its own (at most one waiting), so that encoding and
    compressing the output overlaps with parsing. ``close`` waits and raises the writer's
    error if it had one; ``abandon`` stops it and drops what is queued."""

    def __init__(self, writer: _TableWriter) -> None:
        import queue
        import threading

        self._writer = writer
        self._queue: queue.Queue[pa.Table | None] = queue.Queue(maxsize=1)
        self._error: BaseException | None = None
        self._abandoned = False
        self._thread = threading.Thread(target=self._run, name="tesaiot-export-writer", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while True:
                table = self._queue.get()
                if table is None or self._abandoned:
                    break
                if self._error is None:
                    self._writer.write(table)
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread by write/close
            self._error = exc
            while self._queue.get() is not None:  # drain until the caller stops
                pass
        finally:
            try:
                self._writer.close()
            except BaseException as exc:  # noqa: BLE001 - as above
                self._error = self._error or exc

    def write(self, table: pa.Table) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(table)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        if not self._thread.is_alive():
            return
        self._abandoned = True
        self._queue.put(None)
        self._thread.join()


def _mask(n: int, positions: pa.Array) -> pa.Array:
    """A boolean array of ``n`` rows, true at ``positions``."""
    flags = [False] * n
    for position in positions.to_pylist():
        flags[position] = True
    return pa.array(flags, pa.bool_())


def _meta_field(name: str) -> pa.Field:
    kinds = {"time": pa.timestamp("ns", tz="UTC"), "qos": pa.int8(), "retain": pa.bool_()}
    return pa.field(name, kinds.get(name, pa.string()), nullable=name == "label")


class _TableWriter:
    def __init__(self, write: Callable[[pa.Table], None], close: Callable[[], None]) -> None:
        self.write = write
        self.close = close


def _open_table_writer(path: Path, schema: pa.Schema, fmt: str) -> _TableWriter:
    if fmt == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        writer = pq.ParquetWriter(str(path), schema, compression="zstd", compression_level=3)
        return _TableWriter(writer.write_table, writer.close)
    import pyarrow.csv as pa_csv  # type: ignore[import-untyped]

    csv_schema = pa.schema([pa.field(f.name, _csv_type(f.type)) for f in schema])
    csv_writer = pa_csv.CSVWriter(str(path), csv_schema)

    def write(table: pa.Table) -> None:
        csv_writer.write_table(pa.Table.from_arrays([_csv_column(c) for c in table.columns], schema=csv_schema))

    return _TableWriter(write, csv_writer.close)


def _csv_type(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind) \
            or pa.types.is_boolean(kind):
        return kind
    return pa.string()


def _csv_column(column: Any) -> pa.Array:
    """CSV holds text: lists become their JSON text, bytes base64, null columns empty."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if _csv_type(kind) == kind:
        return column
    if pa.types.is_string(kind):
        return column
    if pa.types.is_null(kind) or pa.types.is_dictionary(kind):
        return column.cast(pa.string())
    if pa.types.is_binary(kind):
        import base64

        return pa.array([None if v is None else base64.b64encode(v).decode("ascii") for v in column.to_pylist()],
                        pa.string())
    import orjson

    return pa.array([None if v is None else orjson.dumps(v, default=str).decode() for v in column.to_pylist()],
                    pa.string())


def publish_file(temporary: Path, output: Path) -> None:
    """fsync, then rename into place (atomic), then fsync the directory."""
    with open(temporary, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, output)
    directory = os.open(output.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
