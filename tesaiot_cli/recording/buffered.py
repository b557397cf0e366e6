"""What every writer shares: a cheap ``write`` and a background flusher.

``write`` runs on the MQTT network thread for every message, so it only appends to a
list under a lock. A flusher thread swaps the list out every ``flush_interval`` seconds
(0.25 s by default), turns it into columns in one go and hands them to the format
(:meth:`BufferedWriter._write_batch`), then makes them durable (``_sync``: fsync).
So a SIGKILL or power loss loses at most the last ~``flush_interval`` + the time of
one batch, and memory holds at most one interval of messages.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import NamedTuple, TypeVar

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message, PublishProperties
from tesaiot_cli.recording.files import os_error_text
from tesaiot_cli.recording.meta import new_recording_id
from tesaiot_cli.recording.model import FORMAT_VERSION, RecordingMetadata, TimeSpan, WriteSummary

FLUSH_INTERVAL_S = 0.25


def _library_error(exc: BaseException) -> bool:
    """Whether ``exc`` is pyarrow's word on the data or the file (translated to a
    :class:`RecordingError`, exit 5), rather than a bug of ours (left as it is: exit 70)."""
    return type(exc).__module__.split(".")[0] == "pyarrow"


class Columns(NamedTuple):
    """One batch of messages, column-wise (tuples, as ``zip(*messages)`` makes them)."""

    topics: tuple[str, ...]
    payloads: tuple[bytes, ...]
    qos: tuple[int, ...]
    retain: tuple[bool, ...]
    times: tuple[int, ...]
    labels: list[str | None]
    properties: tuple[PublishProperties | None, ...]


W = TypeVar("W", bound="SealsOnExit")


class SealsOnExit:
    """The writers' context manager: ``close`` (seal) on the way out. After an error (a
    reader that failed, Ctrl+C) a crash-safe writer (a live recording) still seals what it
    holds, without masking that error with a second one; one that is not (``crash_safe``
    False: convert, detect --to, recover) is discarded, so no sealed but incomplete file
    is left that a later command would take for a whole one."""

    crash_safe = True

    def close(self) -> WriteSummary:
        raise NotImplementedError

    def discard(self) -> None:
        raise NotImplementedError

    def __enter__(self: W) -> W:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        if not self.crash_safe:
            self.discard()
            return
        try:
            self.close()
        except RecordingError:
            pass


class BufferedWriter(SealsOnExit):
    """Base class of the format writers: buffering, the flusher thread, bookkeeping and
    error handling. Subclasses implement ``_write_batch``, ``_sync``, ``_finish``,
    ``_abort`` and ``disk_bytes``; :meth:`_start` launches the flusher.

    After the first I/O error every call raises that :class:`RecordingError`; what was
    made durable before stays readable.
    """

    def __init__(self, path: Path, metadata: RecordingMetadata, *, flush_interval: float = FLUSH_INTERVAL_S) -> None:
        self.path = path
        # What this writer writes is the current format version, whatever the source was (convert).
        self.metadata = dataclasses.replace(metadata, format_version=FORMAT_VERSION)
        self.recording_id = metadata.recording_id or new_recording_id()
        self._flush_interval = flush_interval
        self._lock = threading.Lock()  # guards the two buffer lists
        self._io_lock = threading.Lock()  # one drain at a time (flusher, flush(), close())
        self._buffer: list[Message] = []
        self._labels: list[str | None] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None  # a RecordingError, or a bug kept for the caller (exit 70)
        self._closed = False
        self._summary: WriteSummary | None = None
        self._dirty = False
        self._synced_at = time.monotonic()  # when everything accepted so far was last durable
        self.written = 0
        self.payload_bytes = 0
        self.span = TimeSpan()
        self.topic_counts: collections.Counter[str] = collections.Counter()
        self.label_counts: collections.Counter[str] = collections.Counter()

    # -- the hot path ----------------------------------------------------------------

    def write(self, message: Message, *, label: str | None = None) -> None:
        """Buffer one message (cheap; safe from any thread). Raises :class:`RecordingError`
        after a write error or once closed."""
        if self._error is not None:
            raise self._error
        if self._closed:
            raise RecordingError(f"{self.path}: write after close")
        with self._lock:
            self._buffer.append(message)
            self._labels.append(label)

    @property
    def messages(self) -> int:
        """Messages accepted so far (written or still buffered)."""
        return self.written + len(self._buffer)

    @property
    def start_ns(self) -> int | None:
        """The earliest receive time written (ns), None before the first batch."""
        return self.span.start_ns

    @property
    def end_ns(self) -> int | None:
        """The latest receive time written (ns), None before the first batch."""
        return self.span.end_ns

    # -- flushing --------------------------------------------------------------------

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tesaiot-recording-flusher", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._flush_interval):
            try:
                self._drain(sync=True)
            except Exception:  # noqa: BLE001 - kept in self._error; the next write/flush/close raises it
                return

    def _drain(self, *, sync: bool) -> None:
        started = time.monotonic()
        with self._io_lock:
            if self._error is not None:
                raise self._error
            with self._lock:
                batch, self._buffer = self._buffer, []
                labels, self._labels = self._labels, []
            try:
                if batch:
                    topics, payloads, qos, retain, times, properties, _mids = zip(*batch, strict=True)
                    columns = Columns(topics, payloads, qos, retain, times, labels, properties)
                    self._account(columns)
                    self._write_batch(columns)
                    self._dirty = True
                if sync and self._dirty:
                    self._sync()
                    self._dirty = False
                if sync:
                    self._synced_at = started
            except RecordingError as exc:
                self._error = exc
                raise
            except OSError as exc:
                self._error = RecordingError(f"cannot write {self.path}: {os_error_text(exc)}")
                raise self._error from None
            except Exception as exc:
                if not _library_error(exc):
                    self._error = exc  # a bug, not the file: it reaches the user as one (exit 70) line
                    raise
                self._error = RecordingError(f"cannot write {self.path}: {type(exc).__name__}: {exc}")
                raise self._error from None

    def _account(self, columns: Columns) -> None:
        self.written += len(columns.times)
        self.payload_bytes += sum(map(len, columns.payloads))
        self.span.include(min(columns.times), max(columns.times))
        self.topic_counts.update(columns.topics)
        if any(label is not None for label in columns.labels):
            self.label_counts.update(label for label in columns.labels if label is not None)

    def unsynced_s(self) -> float:
        """Seconds since everything accepted was last durable: about ``flush_interval`` on a
        healthy disk; more when the disk is slow (what a crash would lose, held in memory)."""
        return time.monotonic() - self._synced_at

    def check(self) -> None:
        """Raise the flusher's :class:`RecordingError`, if it failed."""
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Write what is buffered and make it durable now. Raises :class:`RecordingError`."""
        if self._closed:
            return
        self._drain(sync=True)

    def close(self) -> WriteSummary:
        """Stop the flusher, write the rest and finish the file. Idempotent.

        Raises :class:`RecordingError` if anything failed; what was durable stays readable.
        """
        if self._summary is not None:
            return self._summary
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._drain(sync=False)
            with self._io_lock:
                file_bytes = self._finish()
        except RecordingError:
            self._abort()
            raise
        except OSError as exc:
            self._abort()
            raise RecordingError(f"cannot finish {self.path}: {os_error_text(exc)}") from None
        except Exception as exc:
            self._abort()
            if not _library_error(exc):
                raise
            raise RecordingError(f"cannot finish {self.path}: {type(exc).__name__}: {exc}") from None
        self._summary = WriteSummary(
            path=self.path,
            messages=self.written,
            payload_bytes=self.payload_bytes,
            file_bytes=file_bytes,
            start_ns=self.start_ns,
            end_ns=self.end_ns,
            topic_counts=dict(self.topic_counts),
            label_counts=dict(self.label_counts),
        )
        return self._summary

    def discard(self) -> None:
        """Stop without finishing: a temporary output is deleted, a crash-safe one is left
        for ``tesaiot recover``. Raises nothing a disk can cause (each ``_abort`` takes its
        own OSError and format errors): only a bug, which the CLI says as one (exit 70)."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._io_lock:
            self._abort()

    # -- for subclasses ----------------------------------------------------------------

    def _write_batch(self, columns: Columns) -> None:
        raise NotImplementedError

    def _sync(self) -> None:
        raise NotImplementedError

    def _finish(self) -> int:
        """Finish the file; return its size in bytes."""
        raise NotImplementedError

    def _abort(self) -> None:
        """Release handles after a failure, leaving what is durable in place; raises no
        OSError or format error (the failure before it is the one reported)."""
        raise NotImplementedError

    def disk_bytes(self) -> int:
        """Bytes on disk so far (for the live status)."""
        raise NotImplementedError
