"""The recorder's writer-thread cost per message of the derived columns: Parquet's
``full_table`` (device_id, sensor_type) and JSONL's ``encode_lines``, on 32,768 DPS368
payloads on ``device/<id>/telemetry`` (no sensor segment: the payload is looked at).

Compare two code bases by running it under each, alternating:

    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/writer_cost.py
    .venv/bin/python bench/writer_cost.py
"""

from __future__ import annotations

import statistics
import time

from tesaiot_cli.recording import schema
from tesaiot_cli.recording.formats import jsonl

N = 32_768
TOPICS = ["device/bench-01/telemetry"] * N
PAYLOADS = [b'{"timestamp": "2026-11-22T08:24:56.%06d+00:00", "device_id": "bench-01", "sensor_type": "DPS368", '
            b'"data": {"pressure": 1010.%02d, "temperature": 25.%02d}}' % (i, i % 100, i % 97) for i in range(N)]
TIMES = list(range(N))
QOS = [1] * N
RETAIN = [False] * N
LABELS: list[str | None] = [None] * N
PROPERTIES: list[None] = [None] * N  # MQTT 5 properties (format version 2): none


def parquet_derived() -> float:
    base = schema.base_table(TIMES, TOPICS, PAYLOADS, QOS, RETAIN, LABELS)
    begin = time.perf_counter()
    schema.full_table(base)
    return time.perf_counter() - begin


def jsonl_lines() -> float:
    columns = (TOPICS, PAYLOADS, QOS, RETAIN, TIMES, LABELS, PROPERTIES)
    begin = time.perf_counter()
    try:
        jsonl.encode_lines(columns, {}, {})  # type: ignore[arg-type, call-arg]
    except TypeError:  # the code base before the sensor-type rule: two arguments
        jsonl.encode_lines(columns, {})  # type: ignore[arg-type, call-arg]
    return time.perf_counter() - begin


if __name__ == "__main__":
    for name, measure in (("parquet full_table", parquet_derived), ("jsonl encode_lines", jsonl_lines)):
        runs = [measure() for _ in range(15)]
        print(f"{name}: {statistics.median(runs) / N * 1e6:.3f} us/message (median of 15 batches of {N})")
