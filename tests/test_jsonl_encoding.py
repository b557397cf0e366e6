"""The JSONL writer's fast batch encoder writes exactly what the per-line encoder writes."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.recording.formats.jsonl_lines import FRAGMENT_CACHE_MAX, FragmentKey, encode_line, encode_lines

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)  # MQTT strings: UTF-8
properties = st.none() | st.builds(
    PublishProperties, st.none() | st.integers(0, 255), st.none() | st.integers(0, 2**32 - 1), st.none() | texts,
    st.none() | texts, st.none() | st.binary(max_size=8), st.lists(st.tuples(texts, texts), max_size=3).map(tuple))

rows = st.lists(
    st.tuples(
        st.sampled_from(["device/a/telemetry", "device/b/telemetry/DPS368", "x", "é/\u2603/\x00"]) | st.text(),
        st.binary(max_size=64) | st.sampled_from([b"", b'{"a": 1}', "h\u00e9\u2603".encode(), b"\xff\xfe",
                                                  b'{"sensor_type": "DPS368"}', b'{"data": {"sensor_type": "x"}}',
                                                  b'{"sensor_type": 5}']),
        st.integers(0, 2),
        st.booleans(),
        st.integers(0, 2**63 - 1),
        st.none() | st.sampled_from(["normal", "spike"]) | st.text(max_size=5),
        properties,
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(rows)
def test_batch_encoder_equals_line_encoder(
        batch: list[tuple[str, bytes, int, bool, int, str | None, PublishProperties | None]]) -> None:
    columns = tuple(list(column) for column in zip(*batch, strict=True)) if batch else ([], [], [], [], [], [], [])
    expected = b"".join(encode_line(Message(t, p, q, r, ns, props), label, {})
                        for t, p, q, r, ns, label, props in batch)
    fragments: dict[FragmentKey, bytes] = {}
    parts: dict[str, tuple[str, str | None]] = {}
    assert encode_lines(columns, fragments, parts) == expected  # type: ignore[arg-type]
    assert encode_lines(columns, fragments, parts) == expected  # type: ignore[arg-type]  # from the cache too
    for line in expected.splitlines():
        orjson.loads(line)


def test_fragment_cache_is_bounded() -> None:
    fragments: dict[FragmentKey, bytes] = {(f"t/{i}", 0, False, None, "default"): b","
                                           for i in range(FRAGMENT_CACHE_MAX + 1)}
    columns = (["device/a/telemetry"], [b"x"], [1], [False], [5], [None], [None])
    expected = encode_line(Message("device/a/telemetry", b"x", 1, False, 5), None, {})
    assert encode_lines(columns, fragments, {}) == expected
    assert len(fragments) == 1


def test_sensor_type_comes_from_the_payload_when_the_topic_has_none() -> None:
    columns = (["device/a/telemetry", "device/a/telemetry/BMP", "device/a/telemetry", "raw/x"],
               [b'{"sensor_type": "DPS368"}', b'{"sensor_type": "DPS368"}', b'{"data": {"sensor_type": "x"}}',
                b'{"sensor_type": "S"}'],
               [0] * 4, [False] * 4, [1, 2, 3, 4], [None] * 4, [None] * 4)
    lines = [orjson.loads(line) for line in encode_lines(columns, {}, {}).splitlines()]  # type: ignore[arg-type]
    assert [(line["device_id"], line["sensor_type"]) for line in lines] == [
        ("a", "DPS368"), ("a", "BMP"), ("a", "default"), ("unknown", "S")]
