"""The dataset writer: one recorder's files in a hive-partitioned dataset (see ``layout.py``).

It behaves like a recording writer (``write`` on the network thread, ``check``,
``messages``, ``close`` returning a :class:`WriteSummary`) and writes through the crash-safe
Parquet writer: each file is recorded in ``_tesaiot/staging/`` and, when it is rolled over
or closed, sealed into its partition. A maintenance thread rolls the file over when it
holds ``roll_rows`` messages or ``roll_bytes`` of payload, every ``roll_interval_s``
seconds (so the dataset fills up while recording), and when the UTC date (or hour)
changes. Rolling swaps in a new staged file under a lock, so no message is lost or
written twice, and seals the old one on the maintenance thread.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording.buffered import SealsOnExit
from tesaiot_cli.recording.dataset.layout import StagingLock, lock_path, remove_staged, staged_path
from tesaiot_cli.recording.dataset.partition import PartitionSpec, time_key
from tesaiot_cli.recording.dataset.seal import seal_staged
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter
from tesaiot_cli.recording.model import RecordingMetadata, WriteSummary, merge_summaries

# Rolled before the Parquet writer's own part limits (16 M rows, 1 GiB), so a staging
# directory never holds a closed *.parquet part; ~120 MiB files for DPS368 payloads.
ROLL_ROWS = 8 * 1024 * 1024
ROLL_BYTES = 512 * 1024 * 1024
ROLL_INTERVAL_S = 3600.0
CHECK_EVERY_S = 0.1


def new_recorder_id() -> str:
    """A random id for one recorder process (8 hex characters), part of its file names."""
    return secrets.token_hex(4)


@dataclass
class _Open:
    writer: ParquetWriter
    name: str
    lock: StagingLock
    opened_s: float  # monotonic
    key: str  # the time partition when opened


class DatasetWriter(SealsOnExit):
    """Writes one recorder's messages into the dataset at ``root`` (created beforehand by
    :func:`tesaiot_cli.recording.dataset.layout.prepare_dataset`). A context manager.

    ``worker_id`` makes the file names unique: ``part-<worker_id>-<seq>.parquet``.
    Errors raise :class:`RecordingError`; what was sealed or journalled stays readable.
    """

    def __init__(self, root: Path, *, metadata: RecordingMetadata, spec: PartitionSpec, worker_id: str,
                 roll_rows: int = ROLL_ROWS, roll_bytes: int = ROLL_BYTES,
                 roll_interval_s: float | None = ROLL_INTERVAL_S, check_every_s: float = CHECK_EVERY_S,
                 on_sealed: Callable[[Path, list[Path]], None] | None = None,
                 on_tick: Callable[[ParquetWriter], None] | None = None) -> None:
        self.path = root
        # Object storage: on_sealed(staged, outputs) with each sealed file's staged path and part
        # files (uploaded); on_tick(writer) with the open file's writer on every check (its
        # flushed parts uploaded). Both on the maintenance thread (on_sealed also in close).
        self._on_sealed = on_sealed
        self._on_tick = on_tick
        self.metadata = metadata
        self.spec = spec
        self.worker_id = worker_id
        self.files: list[Path] = []
        self._roll_rows = roll_rows
        self._roll_bytes = roll_bytes
        self._roll_interval_s = roll_interval_s
        self._check_every_s = check_every_s
        self._swap = threading.Lock()
        self._open: _Open | None = None
        self._seq = 0
        self._summaries: list[WriteSummary] = []
        self._file_bytes = 0
        self._error: RecordingError | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: WriteSummary | None = None

    # -- opening and the hot path ----------------------------------------------------------

    def open(self) -> DatasetWriter:
        """Open the first staged file and start the maintenance thread. Raises :class:`RecordingError`."""
        self._set_open(self._new_file())
        self._thread = threading.Thread(target=self._run, name="tesaiot-dataset-roller", daemon=True)
        self._thread.start()
        return self

    def _new_file(self) -> _Open:
        self._seq += 1
        name = f"{self.worker_id}-{self._seq:06d}"
        try:
            lock = StagingLock.acquire(lock_path(self.path, name))
        except OSError as exc:
            raise RecordingError(f"cannot create files in {self.path}: {exc.strerror or exc}") from None
        if lock is None:
            raise RecordingError(f"{name} in {self.path} is being written by another recorder")
        extra = {**self.metadata.extra,
                 "dataset": {"worker": self.worker_id, "file": name, "partitioning": self.spec.text()}}
        metadata = dataclasses.replace(self.metadata, extra=extra, recording_id="")
        try:
            writer = ParquetWriter(staged_path(self.path, name), metadata).open()
        except BaseException:
            lock.release(remove=True)
            raise
        return _Open(writer, name, lock, time.monotonic(), time_key(time.time_ns(), self.spec))

    def write(self, message: Message, *, label: str | None = None) -> None:
        """Buffer one message (cheap; any thread). Raises :class:`RecordingError`."""
        with self._swap:  # held while roll() swaps files: no message goes to a closed one
            self._write(message, label=label)

    def _write(self, message: Message, *, label: str | None = None) -> None:
        raise RecordingError(f"{self.path}: the dataset writer is not open")

    def _set_open(self, current: _Open | None) -> None:
        self._open = current
        if current is None:
            self.__dict__.pop("_write", None)  # back to the class's: "not open"
        else:
            self._write = current.writer.write  # type: ignore[method-assign]

    def _current(self) -> _Open:
        if self._open is None:
            raise RecordingError(f"{self.path}: the dataset writer is not open")
        return self._open

    @property
    def messages(self) -> int:
        """Messages accepted so far."""
        current = self._open
        return sum(s.messages for s in self._summaries) + (current.writer.messages if current else 0)

    def disk_bytes(self) -> int:
        """Bytes on disk: sealed part files plus the file being recorded."""
        current = self._open
        return self._file_bytes + (current.writer.disk_bytes() if current else 0)

    def unsynced_s(self) -> float:
        """Seconds since everything accepted was last durable (see the file writer's)."""
        current = self._open
        return current.writer.unsynced_s() if current is not None else 0.0

    def check(self) -> None:
        """Raise the maintenance thread's or the file writer's :class:`RecordingError`."""
        if self._error is not None:
            raise self._error
        current = self._open
        if current is not None:
            current.writer.check()

    def flush(self) -> None:
        """Make everything written so far durable. Raises :class:`RecordingError`."""
        self._current().writer.flush()

    # -- rolling over -------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self._check_every_s):
            try:
                if self._roll_due():
                    self.roll()
                current = self._open
                if self._on_tick is not None and current is not None:
                    self._on_tick(current.writer)
            except RecordingError as exc:
                self._error = exc
                return

    def _roll_due(self) -> bool:
        current = self._current()
        key = time_key(time.time_ns(), self.spec)
        if current.writer.messages == 0:
            current.key, current.opened_s = key, time.monotonic()  # nothing to seal yet
            return False
        if current.writer.messages >= self._roll_rows or current.writer.payload_bytes >= self._roll_bytes:
            return True
        if key != current.key:
            return True
        interval = self._roll_interval_s
        return interval is not None and time.monotonic() - current.opened_s >= interval

    def roll(self) -> None:
        """Seal the current file into the dataset and continue in a new one."""
        fresh = self._new_file()
        with self._swap:
            old = self._current()
            self._set_open(fresh)
        self._seal(old)

    def _seal(self, old: _Open) -> None:
        try:
            summary = old.writer.close()
            outputs = seal_staged(self.path, old.writer.path, self.spec)
        except BaseException:
            old.lock.release(remove=False)  # the leftover is for 'tesaiot recover'
            raise
        old.lock.release(remove=True)
        self._summaries.append(summary)
        self.files.extend(outputs)
        self._file_bytes += sum(p.stat().st_size for p in outputs if p.exists())
        if self._on_sealed is not None:
            self._on_sealed(old.writer.path, outputs)

    # -- finishing ---------------------------------------------------------------------------

    def _stop_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def close(self) -> WriteSummary:
        """Seal the last file and return what was written in all. Idempotent.

        Raises :class:`RecordingError`; what was written stays in the dataset or its staging area.
        """
        if self._summary is not None:
            return self._summary
        self._stop_thread()
        with self._swap:
            current = self._open
            self._set_open(None)
        if current is not None:
            self._seal(current)
        if self._error is not None:
            raise self._error
        merged = merge_summaries(self.path, self._summaries)
        self._summary = dataclasses.replace(merged, file_bytes=self._file_bytes)
        return self._summary

    def discard(self) -> None:
        """Stop without sealing: the file being recorded stays in staging for
        ``tesaiot recover`` (or is deleted when it holds nothing). Never raises."""
        self._stop_thread()
        with self._swap:
            current = self._open
            self._set_open(None)
        if current is None:
            return
        empty = current.writer.messages == 0
        current.writer.discard()
        if empty:
            remove_staged(self.path, current.name)
        current.lock.release(remove=empty)

