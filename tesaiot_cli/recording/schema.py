"""The recording schema, in one place, and the conversions between messages and Arrow.

Columns (one row per message, in receive order):

========== ================================ =================================================
column     Arrow type                       meaning
========== ================================ =================================================
time       timestamp[ns, tz=UTC]            receive time; physically int64 ns since the epoch
topic      dictionary<int32, string>        MQTT topic
payload    binary                           the exact payload bytes
qos        int8                             0, 1 or 2
retain     bool                             the retain flag as received
device_id  dictionary<int32, string>        from the topic (``parse_topic``)
sensor_type dictionary<int32, string>       topic, else payload (``sensor_type_of``)
label      dictionary<int32, string>, null  ground truth from ``simulate``; null otherwise
properties struct (:data:`PROPERTIES_TYPE`),    MQTT 5 publish properties (format version 2);
           null                             null when the message had none
========== ================================ =================================================

The crash journal of a Parquet recording stores only the first five columns, the label
and the properties, as plain types (:func:`journal_schema`); the rest is derived when
reading. Recordings of format version 1 have no ``properties`` column: readers add it,
all null (:func:`conform`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import (
    DEFAULT_SENSOR,
    SENSOR_KEY,
    Message,
    PublishProperties,
    parse_topic,
    payload_sensor_type,
    topic_sensor,
)

TIME_TYPE = pa.timestamp("ns", tz="UTC")
DICT_STRING = pa.dictionary(pa.int32(), pa.string())
# One MQTT 5 user property; a list keeps their order and repeated keys, as MQTT does.
USER_PROPERTY_TYPE = pa.struct([pa.field("key", pa.string(), nullable=False),
                                pa.field("value", pa.string(), nullable=False)])
# The fields of PublishProperties, in its order, with the wire's widths (a byte, a four-byte
# integer in seconds, UTF-8 strings, binary data).
PROPERTIES_TYPE = pa.struct([
    pa.field("payload_format_indicator", pa.uint8()),
    pa.field("message_expiry_interval", pa.uint32()),
    pa.field("content_type", pa.string()),
    pa.field("response_topic", pa.string()),
    pa.field("correlation_data", pa.binary()),
    # "element": the list item's name Parquet gives back (its spec), so the schema read equals this one.
    pa.field("user_properties", pa.list_(pa.field("element", USER_PROPERTY_TYPE))),
])
PROPERTIES_FIELD = pa.field("properties", PROPERTIES_TYPE, nullable=True)
DICTIONARY_COLUMNS = ["topic", "device_id", "sensor_type", "label"]

# Measured on DPS368 payloads (see docs/recording-format.md): DELTA_BYTE_ARRAY shares the
# long common prefix of JSON payloads, DELTA_BINARY_PACKED the slowly growing times;
# zstd level 3 gives ~15.7 B/message at ~2 M rows/s.
PARQUET_OPTIONS: dict[str, Any] = {
    "compression": "zstd",
    "compression_level": 3,
    "use_dictionary": DICTIONARY_COLUMNS,
    "write_statistics": ["time", "topic", "qos", "retain", "device_id", "sensor_type", "label"],
    "column_encoding": {"time": "DELTA_BINARY_PACKED", "payload": "DELTA_BYTE_ARRAY"},
}


def use_lean_memory_pool(env: dict[str, str] | None = None, *, decay_ms: int = 0) -> str:
    """Switch Arrow to an allocator that returns memory to the system (jemalloc, else the
    system one), unless ``ARROW_DEFAULT_MEMORY_POOL`` in ``env`` chose one. Returns the name.

    For long recordings: Arrow's default mimalloc pool keeps freed batches, and RSS rose
    to ~160 MiB while recording at 40k msg/s; with jemalloc it stays around 120 MiB.
    ``decay_ms``: how long jemalloc keeps freed pages before it gives them back. 0 (the
    recorder: one batch is freed before the next) keeps RSS lowest; a batch pipeline that
    allocates and frees on several threads at once (export) would fault every page in
    again, so it keeps them a second.
    """
    if env is not None and env.get("ARROW_DEFAULT_MEMORY_POOL"):
        return str(pa.default_memory_pool().backend_name)
    try:
        pool = pa.jemalloc_memory_pool()
        pa.jemalloc_set_decay_ms(decay_ms)
    except NotImplementedError:
        pool = pa.system_memory_pool()
    pa.set_memory_pool(pool)
    return str(pool.backend_name)


def recording_schema() -> pa.Schema:
    """The Arrow schema of a recording (Parquet files and :func:`full_table`)."""
    return _SCHEMA


def _v1_schema() -> pa.Schema:
    """The schema of format version 1 (no ``properties`` column)."""
    return pa.schema([
        pa.field("time", TIME_TYPE, nullable=False),
        pa.field("topic", DICT_STRING, nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("qos", pa.int8(), nullable=False),
        pa.field("retain", pa.bool_(), nullable=False),
        pa.field("device_id", DICT_STRING, nullable=False),
        pa.field("sensor_type", DICT_STRING, nullable=False),
        pa.field("label", DICT_STRING, nullable=True),
    ])


_V1_SCHEMA = _v1_schema()
_SCHEMA = _V1_SCHEMA.append(PROPERTIES_FIELD)


def journal_schema() -> pa.Schema:
    """The plain schema of the crash journal (Arrow IPC stream)."""
    return pa.schema([
        pa.field("time", pa.int64(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("payload", pa.binary(), nullable=False),
        pa.field("qos", pa.int8(), nullable=False),
        pa.field("retain", pa.bool_(), nullable=False),
        pa.field("label", pa.string(), nullable=True),
        PROPERTIES_FIELD,
    ])


def properties_array(properties: Sequence[PublishProperties | None] | None, rows: int) -> pa.Array:
    """The ``properties`` column. All null (the usual case: MQTT 3.1.1, or no properties)
    costs one pass of ``count`` in C and no conversion."""
    if properties is None or properties.count(None) == rows:
        return pa.nulls(rows, PROPERTIES_TYPE)
    return pa.array(properties, PROPERTIES_TYPE)  # NamedTuples convert as structs, field by field


def properties_list(column: pa.Array | pa.ChunkedArray) -> list[PublishProperties | None] | None:
    """The ``properties`` column as Python values, or None when every row is null (the
    caller then leaves ``Message.properties`` at its default)."""
    if column.null_count == len(column):
        return None
    return [None if value is None else _properties_from_dict(value) for value in column.to_pylist()]


def _properties_from_dict(value: dict[str, Any]) -> PublishProperties:
    pairs = value.get("user_properties") or ()
    return PublishProperties(value["payload_format_indicator"], value["message_expiry_interval"],
                             value["content_type"], value["response_topic"], value["correlation_data"],
                             tuple((pair["key"], pair["value"]) for pair in pairs))


def base_table(
    times: Sequence[int],
    topics: Sequence[str],
    payloads: Sequence[bytes],
    qos: Sequence[int],
    retain: Sequence[bool],
    labels: Sequence[str | None],
    properties: Sequence[PublishProperties | None] | None = None,
) -> pa.Table:
    """Columns from Python sequences, converted in one go each (journal schema).
    ``properties`` None: all null."""
    return pa.Table.from_arrays(
        [
            pa.array(times, pa.int64()),
            pa.array(topics, pa.string()),
            pa.array(payloads, pa.binary()),
            pa.array(qos, pa.int8()),
            pa.array(retain, pa.bool_()),
            pa.array(labels, pa.string()),
            properties_array(properties, len(times)),
        ],
        schema=journal_schema(),
    )


def _derived(topic_chunk: pa.DictionaryArray, payload_chunk: pa.Array) -> tuple[pa.DictionaryArray, pa.DictionaryArray]:
    # Parse each distinct topic once, then map the row indices through. The payload is
    # looked at only for rows whose topic has no sensor segment and whose bytes contain
    # "sensor_type" (one vectorised byte search), so the common cases cost no JSON parsing.
    names = topic_chunk.dictionary.to_pylist()
    parts = [parse_topic(t) for t in names]
    devices = pa.array([p.device_id for p in parts], pa.string()).dictionary_encode()
    device = pa.DictionaryArray.from_arrays(pc.take(devices.indices, topic_chunk.indices), devices.dictionary)
    codes: dict[str, int] = {}  # the sensor column's dictionary: value -> code
    for part in parts:
        codes.setdefault(part.sensor_type, len(codes))
    values = list(codes)
    indices = pc.take(pa.array([codes[part.sensor_type] for part in parts], pa.int32()), topic_chunk.indices)
    without = [index for index, name in enumerate(names) if topic_sensor(name) is None]
    if without and len(topic_chunk):
        rows = pc.and_(pc.is_in(topic_chunk.indices, value_set=pa.array(without, topic_chunk.indices.type)),
                       pc.match_substring(payload_chunk, SENSOR_KEY.decode()))
        rows = pc.fill_null(rows, False)
        if pc.any(rows).as_py():
            found = []
            for payload in payload_chunk.filter(rows).to_pylist():
                value = payload_sensor_type(payload) or DEFAULT_SENSOR
                code = codes.get(value)
                if code is None:
                    code = codes[value] = len(values)
                    values.append(value)
                found.append(code)
            indices = pc.replace_with_mask(indices, rows, pa.array(found, pa.int32()))
    return device, pa.DictionaryArray.from_arrays(indices, pa.array(values, pa.string()))


def full_table(base: pa.Table) -> pa.Table:
    """Journal-schema table -> recording-schema table (dictionaries, derived columns).

    ``sensor_type`` follows :func:`~tesaiot_cli.message.sensor_type_of`: the topic's sensor
    segment, else the JSON payload's top-level ``sensor_type``, else ``default``. A journal
    of format version 1 (no ``properties``) gets the column, all null.
    """
    topic = pc.dictionary_encode(base.column("topic"))
    if topic.type != DICT_STRING:
        topic = topic.cast(DICT_STRING)
    devices: list[pa.Array] = []
    sensors: list[pa.Array] = []
    aligned = pa.Table.from_arrays([topic, base.column("payload")], names=["topic", "payload"])
    for batch in aligned.to_batches():
        device, sensor = _derived(batch.column(0), batch.column(1))
        devices.append(device)
        sensors.append(sensor)
    label = pc.dictionary_encode(base.column("label"))
    if label.type != DICT_STRING:
        label = label.cast(DICT_STRING)
    return pa.Table.from_arrays(
        [
            base.column("time").cast(TIME_TYPE),
            topic,
            base.column("payload"),
            base.column("qos"),
            base.column("retain"),
            pa.chunked_array(devices, DICT_STRING),
            pa.chunked_array(sensors, DICT_STRING),
            label,
            _properties_of(base),
        ],
        schema=recording_schema(),
    )


def _properties_of(table: pa.Table) -> pa.ChunkedArray:
    if "properties" not in table.column_names:
        return pa.chunked_array([pa.nulls(table.num_rows, PROPERTIES_TYPE)], PROPERTIES_TYPE)
    column = table.column("properties")
    return column if column.type.equals(PROPERTIES_TYPE) else column.cast(PROPERTIES_TYPE)


def conform(table: pa.Table, *, where: str) -> pa.Table:
    """Any table with at least time, topic and payload -> the recording schema.

    Lets ``info`` and ``replay`` read Parquet files made elsewhere (pandas, DuckDB): time
    as an integer (ns) or any timestamp, topic and payload as strings or binary; qos and
    retain default to 0 and false. A recording of format version 1 gets an all-null
    ``properties`` column. Raises :class:`RecordingError` for missing columns, nulls where
    a value is required, or a column of an unusable type.
    """
    schema = recording_schema()
    if table.schema.equals(schema):
        return table
    if table.schema.equals(_V1_SCHEMA):
        return table.append_column(PROPERTIES_FIELD, pa.nulls(table.num_rows, PROPERTIES_TYPE))
    missing = [c for c in ("time", "topic", "payload") if c not in table.column_names]
    if missing:
        raise RecordingError(f"{where} is not a tesaiot recording: no column {', '.join(missing)}")
    n = table.num_rows
    try:
        time = table.column("time")
        if pa.types.is_floating(time.type):  # seconds, most likely: cast to ns they would be 1e9 times off
            raise RecordingError(f"{where}: column time holds floats ({time.type}); give it as an integer "
                                 "(ns since the epoch) or a timestamp")
        if pa.types.is_timestamp(time.type):
            time = time.cast(pa.timestamp("ns", tz=time.type.tz)).cast(pa.int64())
        time = time.cast(pa.int64())
        topic = table.column("topic")
        if pa.types.is_dictionary(topic.type):
            topic = topic.cast(pa.string())
        payload = table.column("payload").cast(pa.binary())
        qos = table.column("qos").cast(pa.int8()) if "qos" in table.column_names else pa.array([0] * n, pa.int8())
        retain = (table.column("retain").cast(pa.bool_()) if "retain" in table.column_names
                  else pa.array([False] * n, pa.bool_()))
        label = (table.column("label").cast(pa.string()) if "label" in table.column_names
                 else pa.nulls(n, pa.string()))
        for name, column in (("time", time), ("topic", topic), ("payload", payload), ("qos", qos),
                             ("retain", retain)):
            if column.null_count:
                raise RecordingError(f"{where}: column {name} has {column.null_count} empty values")
        bad_qos = n - pc.sum(pc.is_in(qos, value_set=pa.array([0, 1, 2], pa.int8()))).as_py() if n else 0
        if bad_qos:  # no MQTT message has another QoS (and no JSONL line may hold one)
            raise RecordingError(f"{where}: column qos has {bad_qos} values that are not 0, 1 or 2")
        base = pa.Table.from_arrays([time, topic.cast(pa.string()), payload, qos, retain, label,
                                     _properties_of(table)], schema=journal_schema())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise RecordingError(f"{where}: a column has an unusable type ({exc})") from None
    return full_table(base)


def _message_columns(table: pa.Table | pa.RecordBatch) -> Iterator[tuple[pa.RecordBatch, list[list[Any]]]]:
    """Per batch: the batch, and its Message fields as Python lists in Message's order
    (topic, payload, qos, retain, time in ns, and properties unless all are null)."""
    batches = table.to_batches() if isinstance(table, pa.Table) else [table]
    for batch in batches:
        fields = [batch.column("topic").to_pylist(), batch.column("payload").to_pylist(),
                  batch.column("qos").to_pylist(), batch.column("retain").to_pylist(),
                  batch.column("time").cast(pa.int64()).to_pylist()]
        properties = properties_list(batch.column("properties"))
        if properties is not None:
            fields.append(properties)
        yield batch, fields


def iter_rows(table: pa.Table | pa.RecordBatch) -> Iterator[tuple[Message, str | None]]:
    """Messages and labels of a recording-schema table, in order."""
    for batch, fields in _message_columns(table):
        yield from zip(map(Message, *fields), batch.column("label").to_pylist(), strict=True)


def iter_messages(table: pa.Table | pa.RecordBatch) -> Iterator[Message]:
    """Messages of a recording-schema table, in order (no labels: a bit faster)."""
    for _batch, fields in _message_columns(table):
        yield from map(Message, *fields)


def payload_bytes(table: pa.Table) -> int:
    """Sum of payload sizes in bytes."""
    if table.num_rows == 0:
        return 0
    total = pc.sum(pc.binary_length(table.column("payload"))).as_py()
    return int(total or 0)


def time_span(table: pa.Table) -> tuple[int | None, int | None]:
    """(min, max) of the time column in ns, or (None, None) when empty."""
    if table.num_rows == 0:
        return None, None
    bounds = pc.min_max(table.column("time").cast(pa.int64())).as_py()
    return bounds["min"], bounds["max"]
