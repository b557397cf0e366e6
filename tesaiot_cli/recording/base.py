"""The recording contract: metadata, writer and reader protocols, and the format registry.

A format is a module ``tesaiot_cli.recording.<name>`` with the functions
``open_writer(path, *, metadata, crash_safe)``, ``open_reader(path)``,
``existing_outputs(path)``, ``remove_outputs(path)`` and ``recover(path, *, output)``,
registered in ``FORMATS`` with its file suffixes. The CLI never needs to change for a
new format. The file layout is documented in ``docs/recording-format.md``.
"""

from __future__ import annotations

import importlib
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol

from tesaiot_cli.errors import ConfigError, RecordingError
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
    # The distinct labels present, sorted; filled in by the writer.
    labels: tuple[str, ...] = ()
    # A random id the writer gives each recording (kept by convert); "" until written.
    recording_id: str = ""


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


# Suffix of the directory a crash-safe Parquet recording is written to until it is sealed.
PARTIAL_SUFFIX = ".partial"


def _module(path: Path, format: str | None) -> Any:
    return importlib.import_module(f"tesaiot_cli.recording.{format_for(path, format)}")


def open_writer(
    path: Path, *, metadata: RecordingMetadata, format: str | None = None, crash_safe: bool = True
) -> RecordingWriter:
    """Open a writer for ``path`` (format from ``format`` or the suffix).

    ``crash_safe`` (live recording): everything older than about a second survives a
    SIGKILL or power loss. Without it (convert) the output appears only when ``close``
    succeeds. An existing file at ``path`` is replaced when the writer closes; callers
    that must not overwrite check :func:`existing_outputs` first. Raises
    :class:`RecordingError` (cannot create, or an unsealed recording is in the way).
    """
    writer: RecordingWriter = _module(path, format).open_writer(path, metadata=metadata, crash_safe=crash_safe)
    return writer


def open_reader(path: Path, *, format: str | None = None) -> RecordingReader:
    """Open a reader for ``path`` (format from ``format`` or the suffix).

    A Parquet recording left unsealed by a crash (``path`` missing, ``path.partial/``
    present) is read transparently; the reader's ``sealed`` attribute is then False.
    A directory is read as a dataset: all its Parquet files merged by receive time
    (:class:`~tesaiot_cli.recording.dataset_read.DatasetReader`).
    Raises :class:`RecordingError` (missing, corrupt, newer format version).
    """
    path = strip_partial(path)
    if is_dataset_path(path):
        from tesaiot_cli.recording.dataset_read import DatasetReader

        return DatasetReader.open(path)
    reader: RecordingReader = _reading_module(path, format).open_reader(path)
    return reader


def _reading_module(path: Path, format: str | None) -> Any:
    """The format module for reading ``path``; a file whose suffix says nothing but whose
    content is a known foreign capture gets "not a tesaiot recording" and the ``--from``."""
    try:
        return _module(path, format)
    except ConfigError:
        if format is None and path.is_file():
            from tesaiot_cli.recording.foreign import not_a_recording, sniff

            if sniff(path) is not None:
                raise not_a_recording(path) from None
        raise


def is_dataset_path(path: Path) -> bool:
    """Whether ``path`` names a dataset: a directory (not a ``.partial`` crash leftover)
    of Parquet files, as ``record --workers`` / ``--share`` or a directory name write."""
    return path.is_dir() and path.suffix != PARTIAL_SUFFIX


def existing_outputs(path: Path, *, format: str | None = None) -> list[Path]:
    """Files or directories that writing a recording to ``path`` would replace or that
    are in its way (the file itself, an unsealed ``.partial`` leftover)."""
    found: list[Path] = _module(path, format).existing_outputs(path)
    return found


def remove_outputs(path: Path, *, format: str | None = None) -> None:
    """Delete what :func:`existing_outputs` lists (``--force``). Raises :class:`RecordingError`."""
    _module(path, format).remove_outputs(path)


def recover(path: Path, *, output: Path | None = None, format: str | None = None) -> RecoverResult:
    """Repair what a crash or damage left behind, keeping everything readable.

    Seals an unsealed Parquet recording, cuts a torn last JSONL line, or copies what is
    still readable of a damaged file to ``output``. Raises :class:`RecordingError`.
    """
    path = strip_partial(path)
    if is_dataset_path(path):
        from tesaiot_cli.recording.dataset import recover_dataset

        if output is not None:
            raise ConfigError("--output is for single files: a dataset is recovered in place")
        return recover_dataset(path)
    result: RecoverResult = _reading_module(path, format).recover(path, output=output)
    return result


def check_regular_file(path: Path) -> None:
    """Raise :class:`RecordingError` unless ``path`` is a regular file.

    A directory is not a recording, and reading a FIFO or a device (``/dev/zero``) would
    block or never end: both get a clear error instead.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise RecordingError(f"recording not found: {path}") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise RecordingError(f"{path} is a directory, not a recording")
    if not stat.S_ISREG(mode):
        raise RecordingError(f"{path} is not a regular file (a pipe or a device?): a recording is a file")


def strip_partial(path: Path) -> Path:
    """``out.parquet.partial`` (a crash leftover named directly) means ``out.parquet``."""
    if path.suffix == PARTIAL_SUFFIX:
        return path.with_suffix("")
    return path
