"""Reading a dataset directory as one recording, merged by receive time.

Every sealed ``*.parquet`` file under the directory is a source (names starting with
``_`` or ``.`` and ``.partial`` directories are skipped, as pyarrow.dataset and Spark do),
and so is every file left in ``_tesaiot/staging/`` (being recorded, or left by a crash).
Each source is in receive order; :func:`merged_tables` merges them by ``time`` into
time-ordered tables: a k-way merge done a batch at a time with Arrow (instead of one
``heapq.merge`` step per message), opening a file only when the merge reaches its first
message, so memory holds about one batch per file whose time span is current.
"""

from __future__ import annotations

import fnmatch
import functools
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording.dataset.layout import (
    CONTROL_DIR,
    PART_PREFIX,
    STAGED_SUFFIX,
    dataset_spec,
    is_live,
    part_file_name,
    read_dataset_info,
    staged_names,
    staged_path,
)
from tesaiot_cli.recording.dataset.partition import bucket_of
from tesaiot_cli.recording.files import partial_dir
from tesaiot_cli.recording.formats.parquet_read import ParquetReader, TableReader, UnsealedParquetReader
from tesaiot_cli.recording.model import PARTIAL_SUFFIX, RecordingMetadata, SelectionPlan, TimeSpan

FORMAT_NAME = "parquet-dataset"
TableSource = Callable[[], Iterator[pa.Table]]


@dataclass
class SourceFile:
    """One file of a dataset: rows, time span (ns) and metadata, read from its footer."""

    path: Path
    rows: int
    start_ns: int | None
    metadata: RecordingMetadata
    sealed: bool = True
    live: bool = False


def find_part_files(root: Path) -> list[Path]:
    """Sealed ``*.parquet`` files under ``root``, sorted; hidden, ``_``-prefixed and
    ``.partial`` directories are skipped."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(("_", ".")) and not d.endswith(PARTIAL_SUFFIX))
        found.extend(Path(directory) / f for f in files if f.endswith(".parquet") and not f.startswith(("_", ".")))
    return sorted(found)


def _sealed_source(path: Path) -> SourceFile:
    with ParquetReader.open(path) as reader:
        return SourceFile(path, reader.count(), reader.metadata.start_ns, reader.metadata)


def _sealed_tables(path: Path, selection: Selection | None) -> Iterator[pa.Table]:
    with ParquetReader.open(path) as reader:
        yield from reader.iter_tables(selection)


def _unsealed_tables(path: Path, selection: Selection | None) -> Iterator[pa.Table]:
    with UnsealedParquetReader.open(path) as reader:
        yield from reader.iter_tables(selection)


def _partition_values(root: Path, path: Path) -> dict[str, str]:
    """The hive partition values of a file's directory (``device=a%2Fb`` -> device: a/b)."""
    values: dict[str, str] = {}
    try:
        parts = path.parent.relative_to(root).parts
    except ValueError:  # in staging: no partition yet
        return values
    for part in parts:
        key, sep, value = part.partition("=")
        if sep:
            values[key] = unquote(value)
    return values


def partition_excluded(root: Path, source: SourceFile, selection: Selection, buckets: int) -> bool:
    """Whether ``selection`` takes nothing from ``source``: its time span is outside the
    window, or its ``device=`` (or ``bucket=``) partition holds only devices that no
    ``--device`` glob matches. The partition value is the file's ``device_id``, which the
    writer takes from the topic as :func:`~tesaiot_cli.message.parse_topic` does."""
    low, high = source.start_ns, source.metadata.end_ns
    if low is not None and high is not None and selection.excludes_times(low, high):
        return True
    if not selection.devices:
        return False
    values = _partition_values(root, source.path)
    device = values.get("device")
    if device is not None:
        return not any(fnmatch.fnmatchcase(device, pattern) for pattern in selection.devices)
    bucket = values.get("bucket")
    literal = not any(c in pattern for pattern in selection.devices for c in "*?[")
    if bucket is not None and buckets and literal and bucket.isdigit():
        return int(bucket) not in {bucket_of(pattern, buckets) for pattern in selection.devices}
    return False


class _Cursor:
    """One source in the merge: its current table and how far into it the merge is."""

    def __init__(self, tables: Iterator[pa.Table]) -> None:
        self._tables = tables
        self.table: pa.Table | None = None
        self.times: pa.Array | None = None

    def load(self) -> bool:
        """Move to the next non-empty table; False at the end."""
        for table in self._tables:
            if table.num_rows:
                self.table = table
                self.times = table.column("time").cast(pa.int64()).combine_chunks()
                return True
        self.table = self.times = None
        return False

    @property
    def last(self) -> int:
        assert self.times is not None
        return int(self.times[-1].as_py())

    def take_until(self, horizon: int) -> pa.Table:
        """The leading rows with time <= ``horizon``: a row is never taken before the rows
        ahead of it in its file, even when a clock step put them out of time order."""
        assert self.table is not None and self.times is not None
        first_after = pc.index(pc.greater(self.times, horizon), True).as_py()
        return self.take(len(self.times) if first_after < 0 else first_after)

    def take(self, count: int) -> pa.Table:
        assert self.table is not None and self.times is not None
        head = self.table.slice(0, count)
        self.table, self.times = self.table.slice(count), self.times.slice(count)
        if not self.table.num_rows:
            self.load()
        return head


def merged_tables(sources: list[tuple[int | None, TableSource]]) -> Iterator[pa.Table]:
    """Recording-schema tables of all ``sources`` merged by time (stable: ties keep the
    sources' order). ``sources``: (first time in ns or None, a function opening it).

    A source joins the merge when the merge reaches its first time, so files that follow
    each other in time are never open together.
    """
    pending = deque(sorted(sources, key=lambda item: (item[0] is not None, item[0] or 0)))
    active: list[_Cursor] = []

    def activate() -> None:
        cursor = _Cursor(pending.popleft()[1]())
        if cursor.load():
            active.append(cursor)

    while active or pending:
        if not active:
            activate()
            continue
        horizon = min(c.last for c in active)
        while pending and (pending[0][0] is None or pending[0][0] <= horizon):
            activate()
            horizon = min(c.last for c in active) if active else horizon
        pieces = [c.take_until(horizon) for c in active]
        pieces = [p for p in pieces if p.num_rows]
        if not pieces:  # out-of-order rows: take the lagging source's table as it is
            lagging = min(active, key=lambda c: c.last)
            assert lagging.table is not None
            pieces = [lagging.take(lagging.table.num_rows)]
        active = [c for c in active if c.table is not None]
        merged = pa.concat_tables(pieces)
        if len(pieces) > 1:
            merged = merged.take(pc.sort_indices(merged.column("time")))
        yield merged


class DatasetReader(TableReader):
    """A dataset directory read as one recording, in receive-time order (see the module doc).

    ``sealed`` is False while files are being recorded or a crash left some in staging
    (``warnings`` says which); those are read too. Raises :class:`RecordingError`.
    """

    format_name = FORMAT_NAME

    def __init__(self, path: Path, sources: list[SourceFile], warnings: list[str], info: dict[str, Any] | None
                 ) -> None:
        self.path = path
        self.sources = sources
        self.warnings = warnings
        self.info = info
        self.live = sum(1 for s in sources if s.live)
        self.leftovers = sum(1 for s in sources if not s.sealed and not s.live)
        self.sealed = not any(not s.sealed for s in sources)
        self.metadata = combined_metadata(sources, info)

    @classmethod
    def open(cls, path: Path) -> DatasetReader:
        """Scan the directory: every file's footer (no data is read yet)."""
        if not path.is_dir():
            raise RecordingError(f"dataset not found: {path}")
        info = read_dataset_info(path)
        staged = staged_names(path)
        in_staging = {part_file_name(name) for name in staged}
        sources: list[SourceFile] = []
        for part in find_part_files(path):
            # While <name>.staged exists, its split may be half done: the staged file counts.
            if part.name.startswith(PART_PREFIX) and part.name in in_staging:
                continue
            sources.append(_sealed_source(part))
        warnings: list[str] = []
        live = leftover = 0
        for name in staged:
            staged_file = staged_path(path, name)
            alive = is_live(path, name)
            if staged_file.is_file():  # finished (its .partial/ may linger after a crash): it has it all
                source = _sealed_source(staged_file)
                source.sealed, source.live = False, alive
                sources.append(source)
            elif partial_dir(staged_file).is_dir():
                reader = UnsealedParquetReader.open(staged_file)
                sources.append(SourceFile(staged_file, reader.count(), reader.metadata.start_ns, reader.metadata,
                                          sealed=False, live=alive))
                warnings.extend(f"{CONTROL_DIR}/staging/{name}: {text}" for text in reader.warnings if not alive)
            else:
                continue
            live += alive
            leftover += not alive
        if live:
            warnings.append(f"{live} file(s) are being recorded right now: read as far as they are journalled")
        if leftover:
            warnings.append(f"{leftover} file(s) in {path}/{CONTROL_DIR}/staging/ were left unsealed (by a crash?): "
                            f"'tesaiot recover {path}' seals them into the dataset")
        if not sources and info is None:  # an empty dataset (nothing recorded yet) is fine
            raise RecordingError(f"{path} holds no recording: no *.parquet file and nothing in {CONTROL_DIR}/staging/")
        return cls(path, sources, warnings, info)

    def count(self) -> int:
        """Messages in all files (from the footers and journals)."""
        return sum(s.rows for s in self.sources)

    def _selected_sources(self, selection: Selection | None, *, count: bool = True) -> list[SourceFile]:
        """The files ``selection`` may take rows from (``count``: the others are added to
        ``selection.excluded``)."""
        if selection is None or not selection.active:
            return list(self.sources)
        selection.bind(self.metadata.start_ns)
        buckets = dataset_spec(self.path).buckets if selection.devices else 0
        kept = []
        for source in self.sources:
            if partition_excluded(self.path, source, selection, buckets):
                selection.excluded += source.rows if count else 0
            else:
                kept.append(source)
        return kept

    def iter_tables(self, selection: Selection | None = None) -> Iterator[pa.Table]:
        """Recording-schema tables of every file, merged by time: the rows ``selection``
        selects, from the files it may take rows from (each skipping row groups by its
        statistics)."""
        entries: list[tuple[int | None, TableSource]] = []
        for source in self._selected_sources(selection):
            if source.sealed or source.path.suffix != STAGED_SUFFIX or source.path.is_file():
                entries.append((source.start_ns, functools.partial(_sealed_tables, source.path, selection)))
            else:
                entries.append((source.start_ns, functools.partial(_unsealed_tables, source.path, selection)))
        return merged_tables(entries)

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        """The sum of the files' plans (sealed files: exact, from their footers)."""
        if selection is None or not selection.active:
            return super().plan(selection)
        messages: int | None = 0
        span = TimeSpan()
        for source in self._selected_sources(selection, count=False):
            if not (source.sealed or source.path.is_file()):
                return super().plan(selection)
            with ParquetReader.open(source.path) as reader:
                part = reader.plan(selection)
            if part.messages is None or messages is None:
                messages = None
            else:
                messages += part.messages
            if part.messages:
                span.include(part.start_ns, part.end_ns)
        return SelectionPlan(messages, span.start_ns, span.end_ns)

    def close(self) -> None:
        pass


def _common(values: list[Any]) -> Any:
    distinct = {repr(v) for v in values}
    return values[0] if values and len(distinct) == 1 else None


def combined_metadata(sources: list[SourceFile], info: dict[str, Any] | None) -> RecordingMetadata:
    """One metadata for the whole dataset: spans and labels combined, values all files
    share kept (source, broker, seed, qos), topic filters united."""
    metas = [s.metadata for s in sources]
    span = TimeSpan.of((m.start_ns, m.end_ns) for m in metas)
    filters: list[str] = []
    for meta in metas:
        filters.extend(f for f in meta.topic_filters if f not in filters)
    workers = sorted({str(m.extra.get("dataset", {}).get("worker")) for m in metas
                      if isinstance(m.extra.get("dataset"), dict)})
    extra: dict[str, Any] = {"dataset": {"files": len(sources), "workers": workers,
                                         "partitioning": (info or {}).get("partitioning")}}
    for key in ("qos", "share_group"):
        value = _common([m.extra.get(key) for m in metas])
        if value is not None:
            extra[key] = value
    return RecordingMetadata(
        format_version=max((m.format_version for m in metas), default=1),
        tool_version=_common([m.tool_version for m in metas]) or "",
        broker=_common([m.broker for m in metas]),
        topic_filters=tuple(filters),
        start_ns=span.start_ns,
        end_ns=span.end_ns,
        source=_common([m.source for m in metas]) or ("mixed" if metas else "unknown"),
        seed=_common([m.seed for m in metas]),
        labelled=any(m.labelled for m in metas),
        labels=tuple(sorted({label for m in metas for label in m.labels})),
        extra=extra,
    )
