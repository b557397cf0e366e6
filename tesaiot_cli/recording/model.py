"""The recording model: constants, metadata, summaries and the complete protocols.

The leaf of ``tesaiot_cli.recording``: it imports nothing from the package, so every
other layer (files, buffered writer, formats, datasets, analysis, the facade) can use
it. A format implements :class:`RecordingFormat`; its writers and readers implement
:class:`RecordingWriter` and :class:`RecordingReader`, completely, so callers never
need ``Any``, ``getattr`` or ``hasattr``. The file layout is documented in
``docs/recording-format.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tesaiot_cli.message import Message
from tesaiot_cli.playback.selection import Selection

# 1: the first layout. 2: adds the nullable ``properties`` column (MQTT 5 publish
# properties); every version-1 recording still reads (tests/golden/).
FORMAT_VERSION = 2

# Labels written by `simulate --record`: "normal" or the anomaly kind.
NORMAL_LABEL = "normal"

# Suffix of the directory a crash-safe Parquet recording is written to until it is sealed.
PARTIAL_SUFFIX = ".partial"


@dataclass(frozen=True)
class RecordingMetadata:
    """File-level metadata. Never holds a secret: ``broker`` is a URL without credentials.

    Times are ns since the Unix epoch, UTC; ``start_ns``/``end_ns`` are filled in by the
    writer from the messages it wrote.
    """

    format_version: int = FORMAT_VERSION
    tool_version: str = ""
    broker: str | None = None
    topic_filters: tuple[str, ...] = ()
    start_ns: int | None = None
    end_ns: int | None = None
    source: str = "record"  # "record", "simulate", "convert"
    seed: int | None = None
    labelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    # The distinct labels present, sorted; filled in by the writer.
    labels: tuple[str, ...] = ()
    # A random id the writer gives each recording (kept by convert); "" until written.
    recording_id: str = ""


@dataclass
class TimeSpan:
    """The earliest and latest time (ns) seen so far: the one fold every writer, reader
    and summary uses. ``None`` until a time is included."""

    start_ns: int | None = None
    end_ns: int | None = None

    def include(self, low: int | None, high: int | None) -> None:
        """Widen the span to cover ``low`` and ``high`` (each ignored when None)."""
        if low is not None:
            self.start_ns = low if self.start_ns is None or low < self.start_ns else self.start_ns
        if high is not None:
            self.end_ns = high if self.end_ns is None or high > self.end_ns else self.end_ns

    @classmethod
    def of(cls, spans: Iterable[tuple[int | None, int | None]]) -> TimeSpan:
        """The span covering every (start, end) pair of ``spans``."""
        span = cls()
        for low, high in spans:
            span.include(low, high)
        return span


@dataclass(frozen=True)
class WriteSummary:
    """What a writer wrote: counts, bytes (payload and on disk) and the time span (ns)."""

    path: Path
    messages: int
    payload_bytes: int
    file_bytes: int
    start_ns: int | None
    end_ns: int | None
    topic_counts: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, int] = field(default_factory=dict)


def merge_summaries(path: Path, summaries: list[WriteSummary]) -> WriteSummary:
    """One summary for several files (or workers): counts and bytes added, spans joined."""
    topics: dict[str, int] = {}
    labels: dict[str, int] = {}
    for summary in summaries:
        for topic, count in summary.topic_counts.items():
            topics[topic] = topics.get(topic, 0) + count
        for label, count in summary.label_counts.items():
            labels[label] = labels.get(label, 0) + count
    span = TimeSpan.of((s.start_ns, s.end_ns) for s in summaries)
    return WriteSummary(
        path=path, messages=sum(s.messages for s in summaries),
        payload_bytes=sum(s.payload_bytes for s in summaries), file_bytes=sum(s.file_bytes for s in summaries),
        start_ns=span.start_ns, end_ns=span.end_ns, topic_counts=topics, label_counts=labels,
    )


@dataclass(frozen=True)
class SelectionPlan:
    """What a selection of a recording holds, known before it is read (``replay``'s start
    line, ``info``): ``messages`` in it, or None when the reader cannot tell without reading
    the messages (JSONL has no index, an unsealed file); ``start_ns``/``end_ns``: the span
    of those messages when ``messages`` is known, else the recording's span cut by the
    window. Retained messages kept from before the window (``keep_retained``) are not
    counted."""

    messages: int | None
    start_ns: int | None
    end_ns: int | None


@dataclass(frozen=True)
class RecoverResult:
    """What ``recover`` did. ``action``: ``sealed``, ``truncated``, ``salvaged`` or ``nothing``.

    ``messages``: messages in ``output`` afterwards; ``lost``: damaged lines, row groups or
    bytes left out (see ``detail``).
    """

    path: Path
    output: Path
    action: str
    messages: int
    lost: int = 0
    detail: str = ""


class RecordingWriter(Protocol):
    """Writes messages to one recording (or one recorder's files of a dataset).

    A context manager; ``close`` makes it final. ``write`` may be called from the MQTT
    network thread and must stay cheap: it buffers. ``flush`` makes everything written
    so far durable (readable after a crash). Errors (disk full, permissions) raise
    :class:`~tesaiot_cli.errors.RecordingError`.
    """

    path: Path

    @property
    def messages(self) -> int:
        """Messages accepted so far (written or still buffered)."""
        ...

    def write(self, message: Message, *, label: str | None = None) -> None: ...

    def flush(self) -> None: ...

    def check(self) -> None:
        """Raise the background writer's :class:`RecordingError`, if it failed."""
        ...

    def disk_bytes(self) -> int:
        """Bytes on disk so far (for a live status)."""
        ...

    def unsynced_s(self) -> float:
        """Seconds since everything accepted was last durable (what a crash would lose)."""
        ...

    def close(self) -> WriteSummary: ...

    def discard(self) -> None:
        """Stop without finishing: a temporary output is deleted, a crash-safe one is left
        for ``tesaiot recover``. Never raises."""
        ...

    def __enter__(self) -> RecordingWriter: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RecordingReader(Protocol):
    """Reads one recording in file order (which is receive order), streaming in batches.

    ``sealed`` is False for a recording still being written or left by a crash;
    ``warnings`` says what was skipped or is unsealed. Errors (missing, corrupt, unknown
    format version) raise :class:`~tesaiot_cli.errors.RecordingError`.

    The iterators take a :class:`~tesaiot_cli.playback.selection.Selection` (None: everything):
    they yield only the messages it selects, bind its window to the recording's start,
    add the messages they leave out to ``selection.excluded``, and skip undecoded what the
    reader's index proves excluded (Parquet row groups by their statistics, dataset files
    by their span and partition).
    """

    path: Path
    metadata: RecordingMetadata
    sealed: bool
    warnings: list[str]

    def __iter__(self) -> Iterator[Message]: ...

    def iter_messages(self, selection: Selection | None = None) -> Iterator[Message]: ...

    def iter_labelled(self, selection: Selection | None = None) -> Iterator[tuple[Message, str | None]]: ...

    def iter_tables(self, selection: Selection | None = None) -> Iterator[Any]:
        """Recording-schema Arrow tables (``pyarrow.Table``) in file order; imports pyarrow."""
        ...

    def count(self) -> int: ...

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        """The count and span of what ``selection`` selects, from the index where the format
        has one (see :class:`SelectionPlan`)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> RecordingReader: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RecordingFormat(Protocol):
    """One file format: its name, file suffixes (lower case, the canonical one first) and
    how to write, read, find, remove and recover its files."""

    name: str
    suffixes: tuple[str, ...]

    def open_writer(self, path: Path, *, metadata: RecordingMetadata, crash_safe: bool) -> RecordingWriter: ...

    def open_reader(self, path: Path) -> RecordingReader: ...

    def existing_outputs(self, path: Path) -> list[Path]: ...

    def remove_outputs(self, path: Path) -> None: ...

    def recover(self, path: Path, *, output: Path | None) -> RecoverResult: ...
