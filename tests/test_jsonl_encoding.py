"""The JSONL writer's fast batch encoder writes exactly what the per-line encoder writes."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.recording.formats.jsonl import FRAGMENT_CACHE_MAX, encode_line, encode_lines

texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)  # MQTT strings: UTF-8
properties = st.none() | st.builds(
    PublishProperties, st.none() | st.integers(0, 255), st.none() | st.integers(0, 2**32 - 1), st.none() | texts,
    st.none() | texts, st.none() | st.binary(max_size=8), st.lists(st.tuples(texts, texts), max_size=3).map(tuple))

rows = st.lists(
    st.tuples(
        st.sampled_from(["device/a/telemetry", "device/b/telemetry/DPS368", "x", "é/\u2603/\x00"]) | st.text(),
        st.binary(max_size=64) | st.sampled_from([b"", b'{"a": 1}', "h\u00e9\u2603".encode(), b"\xff\xfe"]),
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
    fragments: dict[tuple[str, int, bool, str | None], bytes] = {}
    assert encode_lines(columns, fragments) == expected  # type: ignore[arg-type]
    assert encode_lines(columns, fragments) == expected  # type: ignore[arg-type]  # from the cache too
    for line in expected.splitlines():
        orjson.loads(line)


def test_fragment_cache_is_bounded() -> None:
    fragments = {(f"t/{i}", 0, False, None): b"," for i in range(FRAGMENT_CACHE_MAX + 1)}
    columns = (["device/a/telemetry"], [b"x"], [1], [False], [5], [None], [None])
    assert encode_lines(columns, fragments) == encode_line(Message("device/a/telemetry", b"x", 1, False, 5), None, {})
    assert len(fragments) == 1
