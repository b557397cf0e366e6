"""The recording contract: metadata, writer and reader protocols, and the format registry.

A format is a module ``tesaiot_cli.recording.<name>`` with two functions,
``open_writer(path, *, metadata)`` and ``open_reader(path)``, registered in
``FORMATS`` with its file suffixes. The CLI never needs to change for a new format.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message

FORMAT_VERSION = 1

# format name -> file suffixes (lower case); the first is the canonical one.
FORMATS: dict[str, tuple[str, ...]] = {
    "parquet": (".parquet", ".pq"),
    "jsonl": (".jsonl", ".ndjson"),
}

# Labels written by `simulate --record`: "normal" or the anomaly kind.
NORMAL_LABEL = "normal"


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


@dataclass(frozen=True)
class WriteSummary:
    path: Path
    messages: int
    payload_bytes: int
    file_bytes: int
    start_ns: int | None
    end_ns: int | None


class RecordingWriter(Protocol):
    """Writes messages to one recording. A context manager; ``close`` makes it final.

    ``write`` may be called from the MQTT network thread and must stay cheap: it buffers.
    ``flush`` makes everything written so far durable (readable after a crash).
    Errors (disk full, permissions) raise :class:`RecordingError`.
    """

    path: Path
    messages: int

    def write(self, message: Message, *, label: str | None = None) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> WriteSummary: ...

    def __enter__(self) -> RecordingWriter: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RecordingReader(Protocol):
    """Reads one recording in file order (which is receive order), streaming in batches.

    Errors (missing, corrupt, unknown format version) raise :class:`RecordingError`.
    """

    path: Path
    metadata: RecordingMetadata

    def __iter__(self) -> Iterator[Message]: ...

    def iter_labelled(self) -> Iterator[tuple[Message, str | None]]: ...

    def count(self) -> int: ...

    def __enter__(self) -> RecordingReader: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


def format_for(path: Path, explicit: str | None = None) -> str:
    """The format name for ``path``: ``explicit`` if given, else from the suffix.

    Raises :class:`ConfigError` for an unknown format or suffix.
    """
    if explicit is not None:
        name = explicit.lower()
        if name not in FORMATS:
            raise ConfigError(f"unknown recording format {explicit!r}: use {' or '.join(FORMATS)}")
        return name
    suffix = path.suffix.lower()
    for name, suffixes in FORMATS.items():
        if suffix in suffixes:
            return name
    raise ConfigError(
        f"cannot tell the recording format of {str(path)!r} from its suffix: use .parquet or .jsonl, "
        "or --format"
    )


def open_writer(path: Path, *, metadata: RecordingMetadata, format: str | None = None) -> RecordingWriter:
    """Open a writer for ``path`` (format from ``format`` or the suffix)."""
    module: Any = importlib.import_module(f"tesaiot_cli.recording.{format_for(path, format)}")
    writer: RecordingWriter = module.open_writer(path, metadata=metadata)
    return writer


def open_reader(path: Path, *, format: str | None = None) -> RecordingReader:
    """Open a reader for ``path`` (format from ``format`` or the suffix)."""
    module: Any = importlib.import_module(f"tesaiot_cli.recording.{format_for(path, format)}")
    reader: RecordingReader = module.open_reader(path)
    return reader
