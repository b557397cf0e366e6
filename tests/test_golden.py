"""Golden files: recordings written by every format version still read, exactly.

``tests/golden/v<N>.{parquet,jsonl}`` were written by ``tests/golden/make_golden.py`` when
``N`` was the current version, and are never rewritten; the shipped sample
``recordings/dps368-sample.parquet`` (format 1) is checked too. A reader change that
alters what an older recording gives back fails here.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import orjson
import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import FORMAT_VERSION, open_reader
from tests.golden.make_golden import golden_metadata, golden_rows

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
SAMPLE = ROOT / "recordings" / "dps368-sample.parquet"
SAMPLE_V1 = ROOT / "tests" / "golden" / "dps368-sample-v1.parquet"
VERSIONS = sorted({int(m.group(1)) for p in GOLDEN.iterdir() if (m := re.fullmatch(r"v(\d+)\.\w+", p.name))})


def test_every_version_up_to_the_current_one_has_golden_files() -> None:
    assert VERSIONS == list(range(1, FORMAT_VERSION + 1))
    for version in VERSIONS:
        assert (GOLDEN / f"v{version}.parquet").is_file() and (GOLDEN / f"v{version}.jsonl").is_file()


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
@pytest.mark.parametrize("version", VERSIONS)
def test_golden_file_reads_exactly(version: int, suffix: str) -> None:
    expected = golden_rows(version)
    with open_reader(GOLDEN / f"v{version}.{suffix}") as reader:
        rows = list(reader.iter_labelled())
        messages = list(reader)
        assert reader.sealed and reader.warnings == []
        assert reader.count() == len(expected)
        meta = reader.metadata
    assert rows == expected
    assert messages == [message for message, _ in expected]
    for key, value in golden_metadata(version).items():
        assert getattr(meta, key) == value, key
    assert meta.labels == tuple(sorted({label for _, label in expected if label is not None}))
    assert meta.labelled


@pytest.mark.parametrize("suffix", ["parquet", "jsonl"])
@pytest.mark.parametrize("version", VERSIONS)
def test_golden_file_tables_match_its_messages(version: int, suffix: str) -> None:
    from tesaiot_cli.recording.schema import iter_rows

    with open_reader(GOLDEN / f"v{version}.{suffix}") as reader:
        rows = [row for table in reader.iter_tables() for row in iter_rows(table)]
    assert rows == golden_rows(version)


def _digest(rows: list[tuple[Message, str | None]]) -> str:
    digest = hashlib.sha256()
    for message, label in rows:
        digest.update(repr((message.topic, message.payload, message.qos, message.retain, message.time_ns,
                            message.properties, label)).encode())
    return digest.hexdigest()


def test_the_first_shipped_sample_reads_exactly() -> None:
    """recordings/dps368-sample.parquet as first shipped (format 1), kept in tests/golden/."""
    with open_reader(SAMPLE_V1) as reader:
        rows = list(reader.iter_labelled())
        meta = reader.metadata
        assert reader.sealed and reader.count() == 300
    assert meta.format_version == 1 and meta.source == "simulate" and meta.seed == 42
    assert meta.topic_filters == ("device/infineon-sensor-01/telemetry",)
    assert meta.labels == ("both", "high_pressure", "high_temperature", "normal")
    assert (meta.start_ns, meta.end_ns) == (rows[0][0].time_ns, rows[-1][0].time_ns)
    first, label = rows[0]
    assert first.topic == "device/infineon-sensor-01/telemetry" and first.qos == 1 and not first.retain
    assert label == "normal" and first.properties is None
    assert first.payload == (b'{"timestamp": "2026-11-22T12:25:38.724357+00:00", "device_id": "infineon-sensor-01", '
                             b'"sensor_type": "DPS368", "data": {"pressure": 974.66, "temperature": 24.67}}')
    assert first.time_ns == 1_795_350_338_724_357_454
    counts: dict[str | None, int] = {}
    for _message, row_label in rows:
        counts[row_label] = counts.get(row_label, 0) + 1
    assert counts == {"normal": 270, "both": 17, "high_pressure": 8, "high_temperature": 5}
    assert _digest(rows) == SAMPLE_DIGEST


def test_the_shipped_sample_is_the_current_format_with_the_same_values() -> None:
    """The shipped sample (remade by recordings/make-sample: seed 42, so the same values and
    labels as the first one; the times are those of the run) reads as the current format,
    with the sensor type the payload names."""
    import pyarrow.parquet as pq

    with open_reader(SAMPLE) as reader:
        rows = list(reader.iter_labelled())
        meta = reader.metadata
        assert reader.sealed
    with open_reader(SAMPLE_V1) as reader:
        first_rows = list(reader.iter_labelled())
    assert meta.format_version == FORMAT_VERSION and meta.source == "simulate" and meta.seed == 42
    assert [label for _m, label in rows] == [label for _m, label in first_rows]
    strip = [(orjson.loads(m.payload)["data"], m.topic, m.qos) for m, _l in rows]
    assert strip == [(orjson.loads(m.payload)["data"], m.topic, m.qos) for m, _l in first_rows]
    assert set(pq.read_table(SAMPLE, columns=["sensor_type"]).column(0).to_pylist()) == {"DPS368"}


# sha256 of every row's (topic, payload, qos, retain, time_ns, properties, label), taken
# when the sample was first checked (format 1, tesaiot 0.1.0).
SAMPLE_DIGEST = "d9f95d98e35071c49a016715a0fa60288e29d175a9305cf5006c7933b666e62a"
