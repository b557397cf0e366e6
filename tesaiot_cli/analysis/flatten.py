"""JSON payloads -> typed Arrow columns, with pyarrow's JSON reader doing the parsing.

A batch's payloads are parsed in one ``pyarrow.json.read_json`` call (C++, multi-threaded).
Rows that are not a JSON object, and batches whose fields change type from one message to
the next (the reader refuses both), are found by bisection: the failing batch is split in
halves until each part parses, so a clean batch costs one parse and a bad row costs about
log2(batch) small parses. The parts keep their own schemas; :class:`FieldTypes` unifies
them (within a batch and across the whole recording) by these rules:

- a field missing in some messages is null there;
- integers and floats together become float64 (Arrow's permissive promotion);
- a string field whose every value is an ISO 8601 time with a zone offset (``...+00:00``,
  ``...Z``) becomes ``timestamp[ns, UTC]``;
- a field whose type still differs between messages (a number here, a string there)
  becomes a string column: text as it is, other values as their JSON text. Such fields
  are listed in :attr:`FieldTypes.mixed` so the command can say so.

Nested objects become columns named by their path (``data.pressure``); arrays stay lists.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.json as pa_json  # type: ignore[import-untyped]

TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
# A batch whose payloads hold no line break is one object per line: the reader then cuts it
# into blocks at line ends and parses the blocks on its threads (2.1x faster here on 2
# cores, 32,768 DPS368 payloads: 13 ms against 28 ms). A payload with a line break (pretty-
# printed JSON) needs the reader's value-aware cutting, which parses its batch in one block.
_PARSE_LINES = pa_json.ParseOptions(newlines_in_values=False)
_PARSE_VALUES = pa_json.ParseOptions(newlines_in_values=True)
_READ_LINES = pa_json.ReadOptions(use_threads=True, block_size=256 << 10)
_READ_VALUES = pa_json.ReadOptions(use_threads=True, block_size=8 << 20)
_EMPTY = pa.scalar(b"", pa.binary())
_NEWLINE = pa.scalar(b"\n", pa.binary())
_FALSE = pa.scalar(False, pa.bool_())


@dataclass
class Segment:
    """Rows ``rows`` (positions in the batch, ascending) parsed into ``table`` (unflattened)."""

    rows: pa.Array
    table: pa.Table


@dataclass
class ParsedPayloads:
    """The JSON-object payloads of a batch, as parsed segments, and the rows that are not."""

    segments: list[Segment]
    not_json: pa.Array  # positions of the payloads that are not a JSON object (ascending)


def parse_payloads(payloads: pa.Array) -> ParsedPayloads:
    """Parse a binary array of payloads. Never raises for bad payloads: they are listed."""
    n = len(payloads)
    if n == 0:
        return ParsedPayloads([], pa.array([], pa.int64()))
    # Only payloads that start with '{' can be objects; the rest is not looked at.
    candidate = pc.fill_null(pc.starts_with(payloads, "{"), _FALSE)
    if not pc.all(candidate).as_py():  # leading white space: rare, so the regex only runs then
        candidate = pc.or_(candidate, pc.fill_null(pc.match_substring_regex(payloads, r"^\s+\{"), _FALSE))
    rows = pc.indices_nonzero(candidate)
    not_json = pc.indices_nonzero(pc.invert(candidate))
    segments: list[Segment] = []
    bad: list[pa.Array] = [not_json]
    if len(rows):
        chosen = payloads if len(rows) == n else payloads.take(rows)
        _bisect(chosen, rows, segments, bad)
    bad_rows = pa.concat_arrays([b.cast(pa.int64()) for b in bad])
    return ParsedPayloads(segments, bad_rows.take(pc.sort_indices(bad_rows)))


def _data(array: pa.Array) -> pa.Buffer:
    """The bytes of a binary array's values, end to end (a slice of its data buffer)."""
    offsets = pa.Array.from_buffers(pa.int32(), len(array) + 1, [None, array.buffers()[1]], offset=array.offset)
    start, end = offsets[0].as_py(), offsets[len(array)].as_py()
    return array.buffers()[2].slice(start, end - start)


def _joined(payloads: pa.Array) -> pa.Buffer:
    """The payloads, each followed by a newline, as one buffer (built by Arrow, no copies in Python)."""
    return _data(pc.binary_join_element_wise(payloads, _EMPTY, _NEWLINE))


def _has_line_break(payloads: pa.Array) -> bool:
    """Whether a payload holds a CR or LF (the reader's strict line cutting splits at both)."""
    data: bytes = _data(payloads).to_pybytes()  # a copy, but find() is memchr: ~1 ms for 3 MiB
    return data.find(b"\n") >= 0 or data.find(b"\r") >= 0


def _read(payloads: pa.Array) -> pa.Table | None:
    lines = not _has_line_break(payloads)
    try:
        table = pa_json.read_json(pa.BufferReader(_joined(payloads)),
                                  read_options=_READ_LINES if lines else _READ_VALUES,
                                  parse_options=_PARSE_LINES if lines else _PARSE_VALUES)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None
    return table if table.num_rows == len(payloads) else None  # '{}{}' in one payload: not one object


def _bisect(payloads: pa.Array, rows: pa.Array, segments: list[Segment], bad: list[pa.Array]) -> None:
    table = _read(payloads)
    if table is not None:
        segments.append(Segment(rows, table))
        return
    if len(payloads) == 1:
        bad.append(rows)
        return
    half = len(payloads) // 2
    _bisect(payloads.slice(0, half), rows.slice(0, half), segments, bad)
    _bisect(payloads.slice(half), rows.slice(half), segments, bad)


def flatten(table: pa.Table) -> pa.Table:
    """Struct columns -> one column per leaf, named by path (``data.pressure``)."""
    while any(pa.types.is_struct(f.type) for f in table.schema):
        table = table.flatten()
    return table


@dataclass
class FieldTypes:
    """The unified type of every flattened field seen so far (in first-seen order)."""

    types: dict[str, pa.DataType] = field(default_factory=dict)
    # fields that were strings everywhere and, so far, always ISO 8601 times with an offset
    times: dict[str, bool] = field(default_factory=dict)
    mixed: dict[str, set[str]] = field(default_factory=dict)

    def add(self, table: pa.Table) -> None:
        """Take in a flattened table's columns."""
        for name, column in zip(table.column_names, table.columns, strict=True):
            kind = column.type
            is_text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
            self.add_field(name, pa.string() if is_text else kind, _all_times(column) if is_text else None)

    def add_field(self, name: str, kind: pa.DataType, looks_like_time: bool | None) -> None:
        """Take in one field's type; ``looks_like_time``: for a string field, whether its values
        all parse as times (None: no values to judge, e.g. a null field)."""
        if looks_like_time is not None or not pa.types.is_null(kind):
            self.times[name] = self.times.get(name, True) and bool(looks_like_time)
        known = self.types.get(name)
        if known is None or known == kind:
            self.types[name] = kind
            return
        merged = _merge(known, kind)
        if merged is None:
            self.mixed.setdefault(name, set()).update({str(known), str(kind)})
            merged = pa.string()
        self.types[name] = merged

    def merge(self, other: FieldTypes) -> None:
        """Take in another FieldTypes (a batch's), keeping first-seen order."""
        for name, kind in other.types.items():
            self.add_field(name, kind, other.times.get(name))
            if name in other.mixed:
                self.mixed.setdefault(name, set()).update(other.mixed[name])

    def final_type(self, name: str) -> pa.DataType:
        """The column type written: times become ``timestamp[ns, UTC]``."""
        kind = self.types[name]
        if pa.types.is_string(kind) and self.times.get(name) and name not in self.mixed:
            return TIMESTAMP_TYPE
        return kind

    def schema(self, names: list[str] | None = None) -> pa.Schema:
        return pa.schema([pa.field(n, self.final_type(n)) for n in (names or list(self.types))])


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The type both fit in (Arrow's permissive promotion), or None when they conflict."""
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    if pa.types.is_boolean(a) != pa.types.is_boolean(b):
        return None  # permissive promotion would turn true into 1.0: keep the JSON text instead
    try:
        merged = pa.unify_schemas([pa.schema([("v", a)]), pa.schema([("v", b)])], promote_options="permissive")
    except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
    kind: pa.DataType = merged.field("v").type
    if pa.types.is_dictionary(kind) or pa.types.is_decimal(kind):
        return None
    return kind


def _all_times(column: Any) -> bool:
    """Whether every non-null value parses as a time with a zone offset. The first value is
    tried alone first: a failed cast of a whole column costs far more than a successful one."""
    values = column.drop_null()
    if len(values) == 0:
        return False
    try:
        pc.cast(values.slice(0, 1), TIMESTAMP_TYPE)
        pc.cast(values, TIMESTAMP_TYPE)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False
    return True


def conform_column(column: Any, kind: pa.DataType, target: pa.DataType, mixed: bool) -> pa.Array:
    """A column of type ``kind`` as ``target`` (see the module's rules)."""
    if kind == target:
        return column
    if pa.types.is_null(kind):
        return pa.nulls(len(column), target)
    if mixed and pa.types.is_string(target):
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return pc.cast(column, pa.string())
        if pa.types.is_boolean(kind) or pa.types.is_integer(kind) or pa.types.is_floating(kind):
            return pc.cast(column, pa.string())
        return pa.array([None if v is None else orjson.dumps(v).decode() for v in column.to_pylist()], pa.string())
    return pc.cast(column, target)


def batch_fields(parsed: ParsedPayloads, rows: int) -> tuple[pa.Table, FieldTypes]:
    """The batch's flattened fields as one table of ``rows`` rows (null where a message has
    no such field or is not a JSON object), and their types."""
    flat = [flatten(s.table) for s in parsed.segments]
    types = FieldTypes()
    for table in flat:
        types.add(table)
    names = list(types.types)
    if len(flat) == 1 and flat[0].num_rows == rows and not types.mixed:
        table = flat[0]
        return table.select(names) if table.column_names != names else table, types
    columns: dict[str, list[pa.Array]] = {name: [] for name in names}
    positions: list[pa.Array] = []
    for segment, table in zip(parsed.segments, flat, strict=True):
        positions.append(segment.rows.cast(pa.int64()))
        for name in names:
            if name in table.column_names:
                column = table.column(name).combine_chunks()
                columns[name].append(conform_column(column, column.type, types.types[name], name in types.mixed))
            else:
                columns[name].append(pa.nulls(table.num_rows, types.types[name]))
    if len(parsed.not_json):
        positions.append(parsed.not_json)
        for name in names:
            columns[name].append(pa.nulls(len(parsed.not_json), types.types[name]))
    order = pc.sort_indices(pa.concat_arrays(positions)) if positions else pa.array([], pa.int64())
    arrays = [pa.concat_arrays(columns[name]).take(order) for name in names]
    return pa.Table.from_arrays(arrays, names=names) if names else pa.table({}), types


def conform_fields(table: pa.Table, final: FieldTypes, names: list[str]) -> Iterator[pa.Array]:
    """A batch's field columns (from :func:`batch_fields`) in the final schema's order and types."""
    n = table.num_rows
    present = set(table.column_names)
    for name in names:
        target = final.final_type(name)
        if name not in present:
            yield pa.nulls(n, target)
            continue
        column = table.column(name).combine_chunks()
        unified = final.types[name]
        column = conform_column(column, column.type, unified, name in final.mixed)
        if target != unified:
            column = pc.cast(column, target)
        yield column
