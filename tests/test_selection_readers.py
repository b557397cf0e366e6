"""Readers that take the selection (issue 22 item 4): what they leave out, and what they skip.

A selection is a filter (time in the window, topic wanted). Readers skip, undecoded, what
their index proves excluded: Parquet row groups by their footer statistics, dataset files
by their span and partition. The results must equal the old post-read filter (skip before
``--start``, stop at the first message after ``--end``, window resolved against the first
message) on recordings in time order, and the plain filter on any recording.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.selection import Selection, TimeBound, parse_time_bound
from tesaiot_cli.recording import RecordingMetadata, open_reader
from tesaiot_cli.recording.formats.jsonl import JsonlWriter
from tesaiot_cli.recording.formats.parquet_read import ParquetReader
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter

T0 = 1_796_000_000_000_000_000
MS = 1_000_000
TOPICS = ["device/a/telemetry", "device/b/telemetry", "device/b/status", "devices/c/telemetry/DPS368", "other/x",
          "device/ab/telemetry"]
FILTERS = ["device/a/#", "device/+/telemetry", "other/x", "#", "device/b", "nomatch/#", "devices/+/telemetry/#"]
GLOBS = ["a", "b*", "*", "unknown", "z?", "a*", "[bc]"]


def parquet(path: Path, messages: list[Message], rows_per_group: int = 7) -> Path:
    writer = ParquetWriter(path, RecordingMetadata(source="record"), crash_safe=False,
                           row_group_rows=rows_per_group).open()
    for index, message in enumerate(messages):
        writer.write(message)
        if index % rows_per_group == rows_per_group - 1:
            writer.flush()  # a row group each flush: small ones, so there is something to skip
    writer.close()
    return path


def jsonl(path: Path, messages: list[Message]) -> Path:
    writer = JsonlWriter(path, RecordingMetadata(source="record"), crash_safe=False).open()
    for message in messages:
        writer.write(message)
    writer.close()
    return path


def dataset(root: Path, messages: list[Message]) -> Path:
    """A dataset partitioned by device (``device=<id>/``), two files per device."""
    from tesaiot_cli.message import parse_topic

    root.mkdir()
    by_device: dict[str, list[Message]] = {}
    for message in messages:
        by_device.setdefault(parse_topic(message.topic).device_id, []).append(message)
    for device, rows in by_device.items():
        (root / f"device={device}").mkdir()
        half = len(rows) // 2
        for number, part in enumerate((rows[:half], rows[half:])):
            if part:
                parquet(root / f"device={device}" / f"part-{number}.parquet", part, rows_per_group=3)
    return root


def old_filter(messages: list[Message], selection: Selection) -> list[Message]:
    """The post-read filter readers replaced: window bound to the first message, messages
    before --start skipped, reading stopped at the first message after --end."""
    kept: list[Message] = []
    if not messages:
        return kept
    start = selection.start.resolve(messages[0].time_ns) if selection.start else None
    end = selection.end.resolve(messages[0].time_ns) if selection.end else None
    for message in messages:
        if end is not None and message.time_ns > end:
            break
        if start is not None and message.time_ns < start:
            continue
        if selection.wanted(message.topic):
            kept.append(message)
    return kept


def plain_filter(messages: list[Message], selection: Selection) -> list[Message]:
    """The selection's definition: window bound to the earliest message, a filter."""
    if not messages:
        return []
    origin = min(m.time_ns for m in messages)
    start = selection.start.resolve(origin) if selection.start else -(1 << 62)
    end = selection.end.resolve(origin) if selection.end else 1 << 62
    return [m for m in messages if start <= m.time_ns <= end and selection.wanted(m.topic)]


def offset(seconds_ms: int | None) -> TimeBound | None:
    return None if seconds_ms is None else parse_time_bound(f"{seconds_ms / 1000:g}", name="--start")


@st.composite
def recordings(draw: st.DrawFn, *, ordered: bool) -> list[Message]:
    count = draw(st.integers(0, 40))
    steps = draw(st.lists(st.integers(0 if ordered else -30, 30), min_size=count, max_size=count))
    times, now = [], T0
    for step in steps:
        now += step * MS
        times.append(now)
    topics = draw(st.lists(st.sampled_from(TOPICS), min_size=count, max_size=count))
    return [Message(topic, b'{"i": %d}' % i, 0, i % 5 == 0, time_ns) for i, (topic, time_ns)
            in enumerate(zip(topics, times, strict=True))]


@st.composite
def selections(draw: st.DrawFn) -> Selection:
    filters = tuple(draw(st.lists(st.sampled_from(FILTERS), max_size=2)))
    globs = tuple(draw(st.lists(st.sampled_from(GLOBS), max_size=2)))
    start = draw(st.none() | st.integers(0, 700))
    length = draw(st.none() | st.integers(0, 700))
    end = None if length is None else (start or 0) + length
    return Selection(filters, globs, start=offset(start), end=offset(end))


def fresh(selection: Selection) -> Selection:
    return Selection(selection.topic_filters, selection.devices, start=selection.start, end=selection.end)


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- identical to the old post-read filter ----------------------------------------------------


@SETTINGS
@given(messages=recordings(ordered=True), selection=selections())
def test_parquet_and_jsonl_select_as_the_old_filter(tmp_path_factory: pytest.TempPathFactory,
                                                    messages: list[Message], selection: Selection) -> None:
    directory = tmp_path_factory.mktemp("rec")
    expected = old_filter(messages, selection)
    for path in (parquet(directory / "r.parquet", messages), jsonl(directory / "r.jsonl", messages)):
        chosen = fresh(selection)
        with open_reader(path) as reader:
            assert list(reader.iter_messages(chosen)) == expected, path.suffix
            assert chosen.excluded == len(messages) - len(expected)
            plan = reader.plan(fresh(selection))
        assert plan.messages == len(expected)
        if expected:
            assert (plan.start_ns, plan.end_ns) == (min(m.time_ns for m in expected),
                                                    max(m.time_ns for m in expected))


@SETTINGS
@given(messages=recordings(ordered=True), selection=selections())
def test_a_dataset_selects_as_the_old_filter_over_its_merged_stream(
        tmp_path_factory: pytest.TempPathFactory, messages: list[Message], selection: Selection) -> None:
    root = dataset(tmp_path_factory.mktemp("ds") / "data", messages)
    if not messages:
        return
    with open_reader(root) as reader:
        merged = list(reader)
        expected = old_filter(merged, selection)
        chosen = fresh(selection)
        assert list(reader.iter_messages(chosen)) == expected
        assert chosen.excluded == len(merged) - len(expected)
        assert reader.plan(fresh(selection)).messages == len(expected)


@SETTINGS
@given(messages=recordings(ordered=False), selection=selections())
def test_out_of_time_order_recordings_are_filtered_not_cut_at_the_end(
        tmp_path_factory: pytest.TempPathFactory, messages: list[Message], selection: Selection) -> None:
    """A clock step back puts a recording out of time order: every message in the window is
    selected, also after one past --end (the old filter stopped there)."""
    directory = tmp_path_factory.mktemp("rec")
    expected = plain_filter(messages, selection)
    for path in (parquet(directory / "r.parquet", messages), jsonl(directory / "r.jsonl", messages)):
        with open_reader(path) as reader:
            assert list(reader.iter_messages(fresh(selection))) == expected, path.suffix
            assert reader.plan(fresh(selection)).messages == len(expected)


# -- skipped row groups are not decoded --------------------------------------------------------


def spread(count: int = 1000) -> list[Message]:
    return [Message(TOPICS[i % 3], b'{"seq": %d}' % i, 0, False, T0 + i * MS) for i in range(count)]


def damage_row_group(path: Path, index: int) -> None:
    """Overwrite the payload column chunk of row group ``index`` with garbage."""
    chunk = pq.ParquetFile(path).metadata.row_group(index).column(2)
    with open(path, "r+b") as handle:
        handle.seek(chunk.data_page_offset)
        handle.write(b"\xa5" * chunk.total_compressed_size)


def test_row_groups_outside_the_window_are_not_read(tmp_path: Path) -> None:
    path = parquet(tmp_path / "r.parquet", spread(), rows_per_group=100)
    with ParquetReader.open(path) as reader:
        groups = reader.row_groups
        assert groups >= 10
        selection = Selection(start=parse_time_bound("0.85", name="--start"))
        selected = list(reader.iter_messages(selection))
        assert [m.time_ns for m in selected] == [T0 + i * MS for i in range(850, 1000)]
        assert len(reader.row_groups_read) <= 3 and reader.row_groups_read[-1] == groups - 1
        assert selection.excluded == 850
        assert reader.plan(Selection(start=parse_time_bound("0.85", name="--start"))).messages == 150


def test_a_damaged_row_group_outside_the_selection_is_never_decoded(tmp_path: Path) -> None:
    """Pages are checksummed: decoding the damaged group raises, so a read that succeeds
    never decoded it."""
    path = parquet(tmp_path / "r.parquet", spread(), rows_per_group=100)
    damage_row_group(path, 0)
    with ParquetReader.open(path) as reader:
        with pytest.raises(RecordingError, match="row group 1 of"):
            list(reader)
        late = Selection(start=parse_time_bound("0.5", name="--start"))
        assert len(list(reader.iter_messages(late))) == 500
        assert 0 not in reader.row_groups_read
        other_topics = Selection(("other/#",))
        assert list(reader.iter_messages(other_topics)) == []  # every group excluded by its topic range
        assert reader.row_groups_read == [] and other_topics.excluded == 1000


def test_topic_statistics_skip_row_groups_of_other_topics(tmp_path: Path) -> None:
    messages = [Message("device/a/telemetry" if i < 500 else "other/x", b"{}", 0, False, T0 + i * MS)
                for i in range(1000)]
    path = parquet(tmp_path / "r.parquet", messages, rows_per_group=100)
    with ParquetReader.open(path) as reader:
        for chosen, wanted in ((Selection(("other/#",)), "other/x"), (Selection((), ("a",)), "device/a/telemetry")):
            got = list(reader.iter_messages(chosen))
            assert len(got) == 500 and {m.topic for m in got} == {wanted}
            assert len(reader.row_groups_read) <= 6
            assert chosen.excluded == 500


def test_retained_messages_before_the_window_are_kept_when_asked(tmp_path: Path) -> None:
    messages = spread(300)
    messages[5] = messages[5]._replace(retain=True)
    path = parquet(tmp_path / "r.parquet", messages, rows_per_group=50)
    with ParquetReader.open(path) as reader:
        chosen = Selection(start=parse_time_bound("0.2", name="--start"), keep_retained=True)
        got = list(reader.iter_messages(chosen))
        assert got[0] == messages[5] and len(got) == 101
        assert 0 in reader.row_groups_read and 1 not in reader.row_groups_read  # no retained message in 1


def test_dataset_files_outside_the_selection_are_not_opened(tmp_path: Path) -> None:
    root = dataset(tmp_path / "data", spread(600))
    damage_row_group(root / "device=a" / "part-0.parquet", 0)
    with open_reader(root) as reader:
        with pytest.raises(RecordingError):
            list(reader)
        chosen = Selection((), ("b",))
        got = list(reader.iter_messages(chosen))
        assert got and {m.topic for m in got} == {"device/b/telemetry", "device/b/status"}
        late = Selection(start=parse_time_bound("0.4", name="--start"))
        assert len(list(reader.iter_messages(late))) == 200


@SETTINGS
@given(messages=recordings(ordered=False), selection=selections())
def test_an_unsealed_parquet_leftover_is_filtered_too(tmp_path_factory: pytest.TempPathFactory,
                                                      messages: list[Message], selection: Selection) -> None:
    path = tmp_path_factory.mktemp("rec") / "r.parquet"
    # closed parts of 10 rows (row groups of 5, skipped by their statistics) and a journal
    writer = ParquetWriter(path, RecordingMetadata(source="record"), crash_safe=True, row_group_rows=5,
                           part_rows=10).open()
    for index, message in enumerate(messages):
        writer.write(message)
        if index % 5 == 4:
            writer.flush()
    writer.flush()
    writer.discard()  # left for 'tesaiot recover', as a crash leaves it
    with open_reader(path) as reader:
        assert not reader.sealed
        chosen = fresh(selection)
        expected = plain_filter(messages, selection)
        assert list(reader.iter_messages(chosen)) == expected
        assert chosen.excluded == len(messages) - len(expected)


def test_a_fast_writer_still_writes_row_groups_of_at_most_row_group_rows(tmp_path: Path) -> None:
    """A writer that gathers many rows before a flush (convert, simulate --record) used to
    write them as one row group: nothing to skip. Groups are cut at ``row_group_rows``."""
    path = tmp_path / "r.parquet"
    writer = ParquetWriter(path, RecordingMetadata(source="convert"), crash_safe=False, row_group_rows=100).open()
    for message in spread(1000):
        writer.write(message)
    writer.close()
    meta = pq.ParquetFile(path).metadata
    assert meta.num_rows == 1000 and meta.num_row_groups >= 10
    assert max(meta.row_group(i).num_rows for i in range(meta.num_row_groups)) <= 100


def test_a_literal_device_reads_only_its_bucket(tmp_path: Path) -> None:
    from tesaiot_cli.message import parse_topic
    from tesaiot_cli.recording.dataset.layout import prepare_dataset
    from tesaiot_cli.recording.dataset.partition import bucket_of

    root = tmp_path / "data"
    prepare_dataset(root, partition="date,bucket:4", tool_version="test")
    devices = ["a", "b", "c", "d", "e", "f"]
    messages = [Message(f"device/{devices[i % 6]}/telemetry", b"{}", 0, False, T0 + i * MS) for i in range(120)]
    buckets: dict[int, list[Message]] = {}
    for message in messages:
        buckets.setdefault(bucket_of(parse_topic(message.topic).device_id, 4), []).append(message)
    wanted = bucket_of("a", 4)
    for bucket, rows in buckets.items():
        directory = root / "date=2026-12-01" / f"bucket={bucket}"
        directory.mkdir(parents=True)
        parquet(directory / "part-x.parquet", rows, rows_per_group=1000)
        if bucket != wanted:
            damage_row_group(directory / "part-x.parquet", 0)  # never decoded, or the read fails
    with open_reader(root) as reader:
        chosen = Selection((), ("a",))
        got = list(reader.iter_messages(chosen))
    assert got == [m for m in messages if m.topic == "device/a/telemetry"]
    assert chosen.excluded == 100
