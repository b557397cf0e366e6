"""JSON payloads -> typed Arrow columns, with pyarrow's JSON reader doing the parsing.

A batch's payloads are parsed in one ``pyarrow.json.read_json`` call (C++, multi-threaded).
Rows that are not a JSON object, and batches whose fields change type from one message to
the next (the reader refuses both), are found by bisection: the failing batch is split in
halves until each part parses, so a clean batch costs one parse and a bad row costs about
log2(batch) small parses. The parts keep their own schemas; :class:`FieldTypes` unifies
them (within a batch and across the whole recording) by these rules:

- a field missing in some messages is null there;
- integers are int64; integers and floats together become float64 (Arrow's permissive
  promotion) -- unless an integer would not survive it: a field holding an integer that
  neither int64 nor float64 holds exactly (beyond +-2**63, or beyond +-2**53 next to
  fractions) becomes a text column, every value its JSON number text, and the integers are
  counted in :attr:`FieldTypes.inexact` so the command can say so;
- a string field whose every value is an ISO 8601 date and time with a zone offset
  (``...Z``, ``...+07:00``, ``...+0700``) becomes ``timestamp[ns, UTC]``, the offset
  applied. A time without an offset does not say which zone it is in: its field stays
  text, as written, and such values are counted in :attr:`FieldTypes.naive_times`. (The
  reader would turn times without fractions into zone-less ``timestamp[s]`` on its own:
  such a part is parsed again with those fields as strings, so the rule is this one.)
- a field whose type still differs between messages (a number here, a string there)
  becomes a string column: text as it is, other values as their JSON text. Such fields
  are listed in :attr:`FieldTypes.mixed` so the command can say so.

Nested objects become one field per leaf, keyed by their path (:func:`path_key`); arrays
stay lists. The column names (``data.pressure``) are given by :func:`column_names`, unique
even when a key holds a dot.
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
    payloads: pa.Array | None = None  # the batch parsed (segment rows are positions in it)


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
    return ParsedPayloads(segments, bad_rows.take(pc.sort_indices(bad_rows)), payloads)


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
    if table.num_rows != len(payloads):
        return None  # '{}{}' in one payload: not one object
    untimed = _without_timestamps(table.schema)
    if untimed is None:
        return table
    options = _PARSE_LINES if lines else _PARSE_VALUES
    try:
        return pa_json.read_json(pa.BufferReader(_joined(payloads)),
                                 read_options=_READ_LINES if lines else _READ_VALUES,
                                 parse_options=pa_json.ParseOptions(explicit_schema=untimed,
                                                                    newlines_in_values=options.newlines_in_values))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _untimed(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(kind):
        return pa.string()
    if pa.types.is_struct(kind):
        return pa.struct([pa.field(kind.field(i).name, _untimed(kind.field(i).type)) for i in range(kind.num_fields)])
    if pa.types.is_list(kind):
        return pa.list_(_untimed(kind.value_type))
    return kind


def _has_timestamp(kind: pa.DataType) -> bool:
    if pa.types.is_timestamp(kind):
        return True
    if pa.types.is_struct(kind):
        return any(_has_timestamp(kind.field(i).type) for i in range(kind.num_fields))
    return pa.types.is_list(kind) and _has_timestamp(kind.value_type)


def _without_timestamps(schema: pa.Schema) -> pa.Schema | None:
    """The schema with every timestamp the reader inferred (from a time string without
    fractions) as a string again; None when it inferred none (the usual case)."""
    if not any(_has_timestamp(f.type) for f in schema):
        return None
    return pa.schema([pa.field(f.name, _untimed(f.type)) for f in schema])


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


def path_key(path: tuple[str, ...]) -> str:
    """The one key of a field's path (JSON text of its keys): distinct for ``{"a.b": 1}``
    and ``{"a": {"b": 1}}``, which a dotted name would not tell apart."""
    return orjson.dumps(path).decode()


def key_path(key: str) -> tuple[str, ...]:
    return tuple(orjson.loads(key))


def leaves(table: pa.Table) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf column of a table, with its path; a struct's nulls carry into its children."""
    pending: list[tuple[tuple[str, ...], Any]] = [((name,), table.column(name)) for name in table.column_names]
    pending.reverse()
    while pending:
        path, column = pending.pop()
        if pa.types.is_struct(column.type):
            kind = column.type
            children = column.flatten()
            pending.extend(reversed([(path + (kind.field(i).name,), child) for i, child in enumerate(children)]))
        else:
            yield path, column


def keyed(table: pa.Table) -> pa.Table:
    """Struct columns -> one column per leaf, named by :func:`path_key`."""
    pairs = list(leaves(table))
    return pa.Table.from_arrays([c for _, c in pairs], names=[path_key(p) for p, _ in pairs]) if pairs \
        else pa.table({})


def flatten(table: pa.Table) -> pa.Table:
    """Struct columns -> one column per leaf, named by path (``data.pressure``), unique as
    :func:`column_names` makes them."""
    pairs = list(leaves(table))
    names = column_names([p for p, _ in pairs])
    return pa.Table.from_arrays([c for _, c in pairs], names=[names[p] for p, _ in pairs]) if pairs \
        else pa.table({})


COLLISION_MARK = "~"


def column_names(paths: list[tuple[str, ...]], *, taken: tuple[str, ...] = (), prefix: str = "",
                 prefixed: tuple[str, ...] = ()) -> dict[tuple[str, ...], str]:
    """A unique column name for every path, by one rule that does not depend on the order the
    fields were seen in: the name is the path's keys joined by dots, ``prefix`` + that when it
    is one of ``prefixed``. When several paths give one name, it goes to the prefixed one, else
    to the one with the most levels (``data.pressure`` is data -> pressure, not the key
    "data.pressure"), else to the first by its keys; the others get ``~2``, ``~3`` ... (the
    first number whose name is free). Names in ``taken`` are never given."""
    def base(path: tuple[str, ...]) -> str:
        name = ".".join(path)
        return prefix + name if name in prefixed else name

    def rank(path: tuple[str, ...]) -> tuple[bool, int, tuple[str, ...]]:
        return ".".join(path) not in prefixed, -len(path), path

    groups: dict[str, list[tuple[str, ...]]] = {}
    for path in paths:
        groups.setdefault(base(path), []).append(path)
    used = set(taken)
    names: dict[tuple[str, ...], str] = {}
    losers: list[tuple[str, tuple[str, ...]]] = []
    for name, group in groups.items():
        ordered = sorted(group, key=rank)
        if name in used:
            losers.extend((name, path) for path in ordered)
            continue
        used.add(name)
        names[ordered[0]] = name
        losers.extend((name, path) for path in ordered[1:])
    for name, path in sorted(losers, key=lambda item: (item[0], rank(item[1]))):
        number = 2
        while f"{name}{COLLISION_MARK}{number}" in used:
            number += 1
        names[path] = f"{name}{COLLISION_MARK}{number}"
        used.add(names[path])
    return {path: names[path] for path in paths}


@dataclass
class FieldTypes:
    """The unified type of every field seen so far (in first-seen order), by :func:`path_key`."""

    types: dict[str, pa.DataType] = field(default_factory=dict)
    # fields that were strings everywhere and, so far, always ISO 8601 times with an offset
    times: dict[str, bool] = field(default_factory=dict)
    mixed: dict[str, set[str]] = field(default_factory=dict)
    # values that are times without a zone offset (in parts where all values were such times)
    naive_times: dict[str, int] = field(default_factory=dict)
    # integers float64 cannot hold exactly: beyond +-2**53 in int64 parts (a problem only if
    # the field also has fractions), and those the reader already rounded (see batch_fields)
    wide_integers: dict[str, int] = field(default_factory=dict)
    rounded_integers: dict[str, int] = field(default_factory=dict)

    def add(self, table: pa.Table, *, kinds: dict[str, pa.DataType] | None = None) -> None:
        """Take in a keyed table's columns (``kinds``: a column's type as parsed, when the
        column was changed since, see :func:`batch_fields`)."""
        for name, column in zip(table.column_names, table.columns, strict=True):
            kind = (kinds or {}).get(name, column.type)
            is_text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
            time_kind = _time_kind(column) if is_text else None
            if time_kind == "naive":
                self.naive_times[name] = self.naive_times.get(name, 0) + len(column) - column.null_count
            if pa.types.is_integer(kind):
                wide = _wide_integers(column)
                if wide:
                    self.wide_integers[name] = self.wide_integers.get(name, 0) + wide
            self.add_field(name, pa.string() if is_text else kind,
                           None if not is_text else time_kind == "zoned")

    def add_field(self, name: str, kind: pa.DataType, looks_like_time: bool | None) -> None:
        """Take in one field's type; ``looks_like_time``: for a string field, whether its values
        all parse as times with an offset (None: no values to judge, e.g. a null field)."""
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
        for mine, theirs in ((self.naive_times, other.naive_times), (self.wide_integers, other.wide_integers),
                             (self.rounded_integers, other.rounded_integers)):
            for name, count in theirs.items():
                mine[name] = mine.get(name, 0) + count

    @property
    def inexact(self) -> dict[str, int]:
        """Fields written as text because float64 cannot hold some of their integers exactly:
        how many such integers each holds."""
        found: dict[str, int] = {}
        for name, kind in self.types.items():
            count = self.rounded_integers.get(name, 0)
            if pa.types.is_floating(kind):
                count += self.wide_integers.get(name, 0)
            if count:
                found[name] = count
        return found

    def is_text(self, name: str) -> bool:
        """Whether the field is written as text: its type changes, or float64 would round it."""
        if name in self.mixed or self.rounded_integers.get(name):
            return True
        return bool(self.wide_integers.get(name)) and pa.types.is_floating(self.types[name])

    def final_type(self, name: str) -> pa.DataType:
        """The column type written: times with an offset become ``timestamp[ns, UTC]``."""
        kind = self.types[name]
        if self.is_text(name):
            return pa.string()
        if pa.types.is_string(kind) and self.times.get(name):
            return TIMESTAMP_TYPE
        return kind

    def untimed_text(self) -> dict[str, int]:
        """Text fields holding times without a zone offset: how many such values each has."""
        return {name: count for name, count in self.naive_times.items()
                if count and pa.types.is_string(self.final_type(name))}


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


def _time_kind(column: Any) -> str | None:
    """``zoned`` when every non-null value parses as a time with a zone offset, ``naive`` when
    every one parses as a time without one, else None. The first value is tried alone first:
    a failed cast of a whole column costs far more than a successful one."""
    values = column.drop_null()
    if len(values) == 0:
        return None
    for kind, target in (("zoned", TIMESTAMP_TYPE), ("naive", _NAIVE_TIME)):
        try:
            pc.cast(values.slice(0, 1), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            continue
        try:
            pc.cast(values, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            return None
        return kind
    return None


_NAIVE_TIME = pa.timestamp("ns")
FLOAT_EXACT = 2**53  # float64 holds every integer up to this, not all beyond


def _wide_integers(column: Any) -> int:
    """How many integers float64 cannot hold exactly (checked by bounds first: cheap)."""
    bounds = pc.min_max(column).as_py()
    if bounds["min"] is None or (-FLOAT_EXACT <= bounds["min"] and bounds["max"] <= FLOAT_EXACT):
        return 0
    return int(pc.sum(pc.greater(pc.abs(column), FLOAT_EXACT)).as_py() or 0)


def _exact_integers(column: Any, rows: pa.Array, payloads: pa.Array | None,
                    path: tuple[str, ...]) -> tuple[pa.Array, int] | None:
    """For a float64 column the reader made: its JSON text, with the exact digits of the
    integers it rounded (a 23-digit integer, or one beyond 2**53 next to fractions), and how
    many, when it rounded any; None otherwise (the usual case: checked by bounds first)."""
    bounds = pc.min_max(column).as_py()  # 2**53 itself may be 2**53 + 1 rounded: suspect from there
    if payloads is None or bounds["min"] is None or (-FLOAT_EXACT < bounds["min"] and bounds["max"] < FLOAT_EXACT):
        return None
    import json

    values = column.to_pylist()
    suspects = [i for i, v in enumerate(values) if v is not None and abs(v) >= FLOAT_EXACT and v == int(v)]
    positions = rows.to_pylist()
    exact: dict[int, str] = {}
    for i in suspects:
        value: Any = json.loads(payloads[positions[i]].as_py())  # Python's json keeps any integer exactly
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and float(value) != value:
            exact[i] = str(value)
    if not exact:
        return None
    text = pc.cast(column, pa.string()).to_pylist()
    return pa.array([exact.get(i, v) for i, v in enumerate(text)], pa.string()), len(exact)


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
    """The batch's fields as one table of ``rows`` rows, one column per leaf named by
    :func:`path_key` (null where a message has no such field or is not a JSON object), and
    their types. A float64 column in which the reader rounded integers is text here, with
    their exact digits (counted in ``rounded_integers``)."""
    flat = [keyed(s.table) for s in parsed.segments]
    types = FieldTypes()
    for index, (segment, table) in enumerate(zip(parsed.segments, flat, strict=True)):
        kinds: dict[str, pa.DataType] = {}
        for position, (name, column) in enumerate(zip(table.column_names, table.columns, strict=True)):
            if not pa.types.is_floating(column.type):
                continue
            exact = _exact_integers(column.combine_chunks(), segment.rows, parsed.payloads, key_path(name))
            if exact is not None:
                kinds[name] = column.type
                table = table.set_column(position, name, exact[0])
                types.rounded_integers[name] = types.rounded_integers.get(name, 0) + exact[1]
        flat[index] = table
        types.add(table, kinds=kinds)
    names = list(types.types)
    text = {name for name in names if types.is_text(name)}
    if len(flat) == 1 and flat[0].num_rows == rows and not text:
        table = flat[0]
        return table.select(names) if table.column_names != names else table, types
    columns: dict[str, list[pa.Array]] = {name: [] for name in names}
    positions: list[pa.Array] = []
    for segment, table in zip(parsed.segments, flat, strict=True):
        positions.append(segment.rows.cast(pa.int64()))
        for name in names:
            target = pa.string() if name in text else types.types[name]
            if name in table.column_names:
                column = table.column(name).combine_chunks()
                columns[name].append(conform_column(column, column.type, target, name in text))
            else:
                columns[name].append(pa.nulls(table.num_rows, target))
    if len(parsed.not_json):
        positions.append(parsed.not_json)
        for name in names:
            columns[name].append(pa.nulls(len(parsed.not_json), pa.string() if name in text else types.types[name]))
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
        if final.is_text(name):
            yield conform_column(column, column.type, pa.string(), True)
            continue
        unified = final.types[name]
        column = conform_column(column, column.type, unified, False)
        if target != unified:
            column = pc.cast(column, target)
        yield column
