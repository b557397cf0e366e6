"""Reading Parquet recordings: sealed files, and the ``.partial`` directory a crash leaves.

Both readers stream one row group (or journal batch) at a time and raise only
:class:`RecordingError`. They take a :class:`~tesaiot_cli.playback.selection.Selection`: a sealed
file skips, unread, every row group whose footer statistics (time range, topic range,
retain) prove that the selection takes none of its rows. Page checksums are verified, so a damaged page is reported
instead of read as wrong data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, NamedTuple, TypeVar

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording import schema
from tesaiot_cli.recording.files import check_regular_file, partial_dir
from tesaiot_cli.recording.meta import METADATA_KEY, finished_metadata, metadata_from_json
from tesaiot_cli.recording.model import RecordingMetadata, SelectionPlan, TimeSpan

_NUMBERED = re.compile(r"^(part|journal)-(\d+)\.(parquet|arrows)$")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


R = TypeVar("R", bound="TableReader")


def times_ns(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A ``time`` column as int64 ns (any timestamp unit, or integers taken as ns)."""
    if pa.types.is_timestamp(column.type):
        column = column.cast(pa.timestamp("ns", tz=column.type.tz))
    return column.cast(pa.int64())


def selected_mask(table: pa.Table, selection: Selection, *, keep_retained: bool) -> pa.ChunkedArray | None:
    """Which rows of ``table`` (time, and topic when filtered, and retain for
    ``keep_retained``) ``selection`` selects; None when all are. Binds an unbound window
    to the first row."""
    mask = None
    if selection.windowed and table.num_rows:
        times = times_ns(table.column("time"))
        start, end = selection.resolve(int(times[0].as_py()))
        mask = pc.and_(pc.greater_equal(times, pa.scalar(start, pa.int64())),
                       pc.less_equal(times, pa.scalar(end, pa.int64())))
        if keep_retained and "retain" in table.column_names:
            before = pc.and_(pc.less(times, pa.scalar(start, pa.int64())), table.column("retain").cast(pa.bool_()))
            mask = pc.or_(mask, before)
    if selection.filters_topics and table.num_rows:
        topics = table.column("topic").cast(pa.string())
        wanted = [topic for topic in pc.unique(topics).to_pylist() if selection.wanted(topic)]
        in_topics = pc.is_in(topics, value_set=pa.array(wanted, pa.string()))
        mask = in_topics if mask is None else pc.and_(mask, in_topics)
    return mask


def select_rows(table: pa.Table, selection: Selection | None) -> pa.Table:
    """The rows of a recording-schema table ``selection`` selects, in order; the others are
    added to ``selection.excluded``."""
    if selection is None or not selection.active or table.num_rows == 0:
        return table
    mask = selected_mask(table, selection, keep_retained=selection.keep_retained)
    if mask is None:
        return table
    kept = table.filter(mask)
    selection.excluded += table.num_rows - kept.num_rows
    return kept


class TableReader:
    """Iteration, planning and the context manager shared by the Parquet readers (single
    file, unsealed leftover, dataset directory); subclasses provide ``iter_tables`` (which
    applies the selection), ``count`` and ``close``."""

    path: Path
    metadata: RecordingMetadata
    sealed: bool
    warnings: list[str]

    def iter_tables(self, selection: Selection | None = None) -> Iterator[pa.Table]:
        raise NotImplementedError

    def count(self) -> int:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Message]:
        """Messages in file order. Raises :class:`RecordingError` on damage."""
        return self.iter_messages()

    def iter_messages(self, selection: Selection | None = None) -> Iterator[Message]:
        """The messages ``selection`` selects, in file order."""
        for table in self.iter_tables(selection):
            yield from schema.iter_messages(table)

    def iter_labelled(self, selection: Selection | None = None) -> Iterator[tuple[Message, str | None]]:
        """(message, label or None) in file order."""
        for table in self.iter_tables(selection):
            yield from schema.iter_rows(table)

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        """Without an index: exact only for no selection (see :class:`SelectionPlan`)."""
        meta = self.metadata
        if selection is None or not selection.active:
            return SelectionPlan(self.count(), meta.start_ns, meta.end_ns)
        selection.bind(meta.start_ns)
        return SelectionPlan(None, *selection.cut(meta.start_ns, meta.end_ns))

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _Stats(NamedTuple):
    """What a row group's footer statistics say (None: not known)."""

    rows: int
    times: tuple[int, int] | None
    topics: tuple[str, str] | None
    retained: bool


_TIME_FACTORS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


class FooterIndex:
    """What a Parquet file's footer says of each row group: its time range in ns (when the
    time column is int64 ns or a timestamp), its topic range (UTF-8) and whether it may hold
    a retained message."""

    def __init__(self, source: pq.ParquetFile) -> None:
        self._meta = source.metadata
        columns = self._meta.schema
        leaves = [columns.column(i).path for i in range(len(columns))]
        self._time, self._topic, self._retain = (leaves.index(n) if n in leaves else None
                                                 for n in ("time", "topic", "retain"))
        fields = source.schema_arrow
        time_type = fields.field("time").type if "time" in fields.names else None
        self._factor = None
        if time_type is not None and pa.types.is_timestamp(time_type):
            self._factor = _TIME_FACTORS.get(time_type.unit)
        elif time_type is not None and pa.types.is_integer(time_type):
            self._factor = 1

    def stats(self, index: int) -> _Stats:
        group = self._meta.row_group(index)
        times = topics = None
        retained = True
        if self._factor is not None and self._time is not None:
            chunk = group.column(self._time).statistics
            if chunk is not None and chunk.has_min_max and chunk.physical_type == "INT64":
                times = (int(chunk.min_raw) * self._factor, int(chunk.max_raw) * self._factor)
        if self._topic is not None:
            chunk = group.column(self._topic).statistics
            if chunk is not None and chunk.has_min_max and chunk.physical_type == "BYTE_ARRAY":
                try:
                    topics = (bytes(chunk.min_raw).decode("utf-8"), bytes(chunk.max_raw).decode("utf-8"))
                except UnicodeDecodeError:
                    topics = None
        if self._retain is None:
            retained = False  # read as retain false
        else:
            chunk = group.column(self._retain).statistics
            if chunk is not None and chunk.has_min_max and chunk.physical_type == "BOOLEAN":
                retained = bool(chunk.max_raw)
        return _Stats(int(group.num_rows), times, topics, retained)


def excluded_by_stats(stats: _Stats, selection: Selection) -> bool:
    """Whether a row group's statistics prove that ``selection`` selects none of its rows."""
    if stats.rows == 0:
        return True
    if stats.times is not None and selection.excludes_times(*stats.times, retained=stats.retained):
        return True
    return stats.topics is not None and selection.filters_topics and not selection.may_want_topics(*stats.topics)


class ParquetReader(TableReader):
    """A sealed Parquet recording (or any Parquet file with time, topic and payload)."""

    sealed = True

    def __init__(self, path: Path, handle: BinaryIO, source: pq.ParquetFile, metadata: RecordingMetadata) -> None:
        self.path = path
        self.metadata = metadata
        self.warnings: list[str] = []
        self._handle = handle
        self._file = source
        self._index: FooterIndex | None = None
        self.row_groups_read: list[int] = []  # the row groups the last iter_tables decoded

    @classmethod
    def open(cls, path: Path) -> ParquetReader:
        """Open and check the footer and metadata. Raises :class:`RecordingError`."""
        check_regular_file(path)
        try:
            handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - owned by the reader
        except FileNotFoundError:
            raise RecordingError(f"recording not found: {path}") from None
        except OSError as exc:
            raise RecordingError(f"cannot open {path}: {exc.strerror or exc}") from None
        return cls.open_handle(path, handle)

    @classmethod
    def open_handle(cls, path: Path, handle: BinaryIO, *, local: bool = True) -> ParquetReader:
        """Read from an open random-access ``handle`` (a local file, or a ``pyarrow.fs``
        input file on object storage: ``local`` False), which the reader owns. Raises
        :class:`RecordingError`."""
        try:
            source = pq.ParquetFile(handle, page_checksum_verification=True)
            raw = (source.metadata.metadata or {}).get(METADATA_KEY.encode())
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors, translated
            handle.close()
            from tesaiot_cli.recording.foreign import not_a_recording, sniff

            if local and sniff(path) is not None:
                raise not_a_recording(path, "not a Parquet file") from None
            hint = ""
            if local and partial_dir(path).is_dir():
                hint = f"; an unsealed recording is in {partial_dir(path).name}/: run 'tesaiot recover {path}'"
            raise RecordingError(
                f"{path} is not a readable Parquet file: truncated, damaged or another format "
                f"({_short(exc)}){hint}"
            ) from None
        try:
            if raw is not None:
                metadata = metadata_from_json(raw, where=str(path))
            else:
                metadata = _foreign_metadata(source, path)
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, source, metadata)

    @property
    def row_groups(self) -> int:
        return int(self._file.num_row_groups)

    def row_group_rows(self, index: int) -> int:
        return int(self._file.metadata.row_group(index).num_rows)

    def count(self) -> int:
        """Messages in the file (from the footer: no scan)."""
        return int(self._file.metadata.num_rows)

    def stats(self, index: int) -> _Stats:
        """Row group ``index``'s footer statistics (see :class:`FooterIndex`)."""
        if self._index is None:
            self._index = FooterIndex(self._file)
        return self._index.stats(index)

    def excluded_by_stats(self, stats: _Stats, selection: Selection) -> bool:
        return excluded_by_stats(stats, selection)

    def iter_tables(self, selection: Selection | None = None, *, skip: set[int] | None = None) -> Iterator[pa.Table]:
        """Recording-schema tables, one row group (or up to 64k rows) at a time: only the
        rows ``selection`` selects; a row group its statistics exclude is not read (it is
        added to ``selection.excluded``; ``row_groups_read`` lists the ones read)."""
        total = self.row_groups
        active = selection is not None and selection.active
        if selection is not None:
            selection.bind(self.metadata.start_ns)
        self.row_groups_read = []
        for index in range(total):
            if skip and index in skip:
                continue
            if active:
                assert selection is not None
                stats = self.stats(index)
                if self.excluded_by_stats(stats, selection):
                    selection.excluded += stats.rows
                    continue
            self.row_groups_read.append(index)
            try:
                batches = self._file.iter_batches(batch_size=65_536, row_groups=[index])
                for batch in batches:
                    table = schema.conform(pa.Table.from_batches([batch]), where=str(self.path))
                    if active:
                        table = select_rows(table, selection)
                        if not table.num_rows:
                            continue
                    yield table
            except RecordingError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated
                raise self._damaged(index, exc) from None

    def _damaged(self, index: int, exc: BaseException) -> RecordingError:
        return RecordingError(
            f"{self.path}: row group {index + 1} of {self.row_groups} is damaged ({_short(exc)}); "
            f"'tesaiot recover {self.path}' copies the readable row groups to a new file")

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        """The count and span of ``selection``, exact: from the footer's statistics for the
        row groups they decide (wholly out of it, or wholly in its window with no topic
        filter), else from the group's time (and topic) column alone."""
        meta = self.metadata
        if selection is None or not selection.active:
            return SelectionPlan(self.count(), meta.start_ns, meta.end_ns)
        selection.bind(meta.start_ns)
        messages, span = 0, TimeSpan()
        for index in range(self.row_groups):
            stats = self.stats(index)
            if self.excluded_by_stats(stats, selection):
                continue
            if stats.times is not None and not selection.filters_topics and selection.within_times(*stats.times):
                messages += stats.rows
                span.include(*stats.times)
                continue
            columns = ["time", "topic"] if selection.filters_topics else ["time"]
            try:
                table = self._file.read_row_group(index, columns=columns)
            except Exception as exc:  # noqa: BLE001 - translated
                raise self._damaged(index, exc) from None
            mask = selected_mask(table, selection, keep_retained=False)
            times = times_ns(table.column("time"))
            if mask is not None:
                times = times.filter(mask)
            if len(times):
                messages += len(times)
                bounds = pc.min_max(times).as_py()
                span.include(bounds["min"], bounds["max"])
        return SelectionPlan(messages, span.start_ns, span.end_ns)

    def damaged_row_groups(self) -> list[int]:
        """Indices of the row groups that cannot be read (every page is checked)."""
        damaged = []
        for index in range(self.row_groups):
            try:
                schema.conform(self._file.read_row_group(index), where=str(self.path))
            except (pa.ArrowException, OSError, RecordingError):  # a damaged page, or not our schema
                damaged.append(index)
        return damaged

    def close(self) -> None:
        self._handle.close()


def _foreign_metadata(source: pq.ParquetFile, path: Path) -> RecordingMetadata:
    """Metadata for a Parquet file written elsewhere: only the time span, from the data."""
    if "time" not in source.schema_arrow.names:
        raise RecordingError(f"{path} is not a tesaiot recording: no column time")
    start = end = None
    if source.metadata.num_rows:
        try:
            table = schema.conform(source.read(columns=[c for c in ("time", "topic", "payload")
                                                       if c in source.schema_arrow.names]), where=str(path))
        except pa.ArrowException as exc:  # a damaged page: reported like any other damage
            raise RecordingError(f"{path} is damaged ({_short(exc)}); 'tesaiot recover {path}' copies the "
                                 "readable row groups to a new file") from None
        start, end = schema.time_span(table)
    return RecordingMetadata(source="unknown", start_ns=start, end_ns=end)


def journal_batches(path: Path, problems: list[str]) -> Iterator[pa.RecordBatch]:
    """Complete batches of a journal; a torn tail (the crash) is noted in ``problems``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        problems.append(f"{path.name}: cannot open ({exc.strerror or exc})")
        return
    with handle:
        size = path.stat().st_size
        if size == 0:
            return
        try:
            stream = pa.ipc.open_stream(handle)
        except (pa.ArrowException, OSError):  # torn before the first batch
            problems.append(f"{path.name}: {size} bytes cut off by the crash were skipped")
            return
        good = handle.tell()
        while True:
            try:
                batch = stream.read_next_batch()
            except StopIteration:
                return
            except (pa.ArrowException, OSError):  # a torn or damaged last batch
                problems.append(f"{path.name}: the last {size - good} bytes were cut off by the crash and skipped")
                return
            good = handle.tell()
            yield batch


class UnsealedParquetReader(TableReader):
    """The ``.partial`` directory of a recording that was not sealed (crash or running)."""

    sealed = False

    def __init__(self, path: Path, parts: list[Path], journals: list[Path], metadata: RecordingMetadata,
                 rows: int, warnings: list[str]) -> None:
        self.path = path
        self.metadata = metadata
        self.warnings = warnings
        self.parts = parts
        self.journals = journals
        self._rows = rows

    @classmethod
    def open(cls, path: Path) -> UnsealedParquetReader:
        """Scan the directory (every part and journal once). Raises :class:`RecordingError`."""
        partial = partial_dir(path)
        warnings: list[str] = []
        try:
            metadata = metadata_from_json((partial / "metadata.json").read_bytes(), where=str(partial))
        except OSError:
            warnings.append("metadata.json is missing: the recording's metadata is lost")
            metadata = RecordingMetadata(source="unknown")
        numbered: dict[str, dict[int, Path]] = {"part": {}, "journal": {}}
        for entry in partial.iterdir():
            match = _NUMBERED.match(entry.name)
            if match:
                numbered[match.group(1)][int(match.group(2))] = entry
        parts = [numbered["part"][n] for n in sorted(numbered["part"])]
        # A journal whose part was closed is redundant (a crash between rename and delete).
        journals = [numbered["journal"][n] for n in sorted(numbered["journal"]) if n not in numbered["part"]]
        reader = cls(path, parts, journals, metadata, 0, warnings)
        rows, span = 0, TimeSpan()
        labels: set[str] = set()
        for table in reader._tables(warnings):
            rows += table.num_rows
            span.include(*schema.time_span(table))
            labels.update(v for v in pc.unique(table.column("label").cast(pa.string())).to_pylist() if v is not None)
        reader._rows = rows
        reader.metadata = finished_metadata(metadata, start_ns=span.start_ns, end_ns=span.end_ns, labels=sorted(labels),
                                            recording_id=metadata.recording_id)
        return reader

    def _tables(self, problems: list[str], selection: Selection | None = None) -> Iterator[pa.Table]:
        """Closed parts' row groups (those ``selection`` may take rows from: the others are
        counted in it, unread), then the journals' batches."""
        active = selection is not None and selection.active
        for part in self.parts:
            try:
                with open(part, "rb") as handle:
                    source = pq.ParquetFile(handle, page_checksum_verification=True)
                    index = FooterIndex(source) if active else None
                    for group in range(source.num_row_groups):
                        if index is not None and selection is not None:
                            stats = index.stats(group)
                            if excluded_by_stats(stats, selection):
                                selection.excluded += stats.rows
                                continue
                        yield schema.conform(source.read_row_group(group), where=str(part))
            except (RecordingError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - translated
                raise RecordingError(f"{part} is damaged ({_short(exc)})") from None
        for journal in self.journals:
            for batch in journal_batches(journal, problems):
                try:
                    yield schema.full_table(pa.Table.from_batches([batch]))
                except pa.ArrowException as exc:
                    raise RecordingError(f"{journal} is damaged ({_short(exc)})") from None

    def iter_tables(self, selection: Selection | None = None) -> Iterator[pa.Table]:
        """Recording-schema tables (the rows ``selection`` selects): closed parts first,
        then the open part's journal."""
        if selection is not None:
            selection.bind(self.metadata.start_ns)
        for table in self._tables([], selection):
            table = select_rows(table, selection)
            if table.num_rows:
                yield table

    def count(self) -> int:
        return self._rows

    def close(self) -> None:
        pass


def open_reader(path: Path) -> ParquetReader | UnsealedParquetReader:
    """The sealed file at ``path``, or else its unsealed ``.partial`` directory.

    Raises :class:`RecordingError` when neither exists or the file is unreadable.
    """
    if not path.exists() and partial_dir(path).is_dir():
        return UnsealedParquetReader.open(path)
    return ParquetReader.open(path)  # a clear error for a missing file, a directory or a pipe
