"""Parquet recordings: the crash-safe writer, sealing, and recovery.

While recording to ``out.parquet`` everything lives in the directory
``out.parquet.partial/``:

- ``metadata.json``: the recording metadata, written first;
- ``journal-NNNNNN.arrows``: an Arrow IPC stream of every message of the open part,
  appended and fsynced every ~0.25 s. A stream needs no footer: after a SIGKILL or a
  power loss every complete batch in it is readable;
- ``part-NNNNNN.parquet.tmp``: the open part, written in row groups (no footer yet);
- ``part-NNNNNN.parquet``: closed parts (a part closes after ``PART_ROWS`` messages or
  ``PART_BYTES`` of payload; then its journal is deleted).

A clean stop seals: the last part is closed and renamed to ``out.parquet`` (when there
is one part, the usual case: instant) or the parts are merged into it (streaming, one
row group at a time), then the directory is removed. After a crash ``open_reader``
reads the parts and the journal of the open part, and :func:`recover` seals them.
Readers live in :mod:`~tesaiot_cli.recording.formats.parquet_read`, recovery in
:mod:`~tesaiot_cli.recording.formats.parquet_recover`.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording import schema
from tesaiot_cli.recording.buffered import FLUSH_INTERVAL_S, BufferedWriter, Columns
from tesaiot_cli.recording.files import (
    check_output_path,
    commit_temp,
    fsync_dir,
    os_error_text,
    partial_dir,
    remove_regular_file,
    size_or_zero,
    temp_path,
    write_file_atomic,
)
from tesaiot_cli.recording.meta import METADATA_KEY, finished_metadata, metadata_to_json
from tesaiot_cli.recording.model import RecordingMetadata

ROW_GROUP_ROWS = 32_768
ROW_GROUP_BYTES = 32 * 1024 * 1024  # payload bytes: bounds memory with large payloads
PART_ROWS = 16 * 1024 * 1024
PART_BYTES = 1024 * 1024 * 1024
COALESCE_TABLES = 64  # small batches are combined so thousands of tiny tables never pile up

README = """This directory holds a tesaiot recording that was not sealed (yet).

If `tesaiot record` is still running, it will seal it into {name} when it stops.
If it was killed or the machine lost power, everything here up to about the last
second is intact: `tesaiot info {name}` and `tesaiot replay {name}` read it as it is,
and `tesaiot recover {name}` seals it into {name} and removes this directory.
"""


class PartWriter:
    """One Parquet file being written: tables accumulate into row groups, written as they
    fill, so memory stays bounded. ``close`` writes the metadata and the footer, and fsyncs."""

    def __init__(self, path: Path, *, row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_bytes: int = ROW_GROUP_BYTES) -> None:
        self.path = path
        self.rows = 0
        self.payload_bytes = 0
        self._row_group_rows = row_group_rows
        self._row_group_bytes = row_group_bytes
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0

    def add(self, table: pa.Table, payload_bytes: int) -> None:
        self._pending.append(table)
        self._pending_rows += table.num_rows
        self._pending_bytes += payload_bytes
        self.rows += table.num_rows
        self.payload_bytes += payload_bytes
        if self._pending_rows >= self._row_group_rows or self._pending_bytes >= self._row_group_bytes:
            self.write_pending()
        elif len(self._pending) >= COALESCE_TABLES:
            self._pending = [pa.concat_tables(self._pending).combine_chunks()]

    def _open(self) -> pq.ParquetWriter:
        if self._writer is None:
            self._writer = pq.ParquetWriter(str(self.path), schema.recording_schema(), write_page_checksum=True,
                                            **schema.PARQUET_OPTIONS)
        return self._writer

    def write_pending(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        # At most row_group_rows per group, however much a fast writer gathered: readers skip
        # row groups by their statistics (a selection), so a group is the unit not decoded.
        self._open().write_table(table, row_group_size=max(1, min(table.num_rows, self._row_group_rows)))

    def close(self, metadata_json: bytes) -> None:
        self.write_pending()
        writer = self._open()
        writer.add_key_value_metadata({METADATA_KEY: metadata_json.decode("utf-8")})
        writer.close()
        self._writer = None
        with open(self.path, "rb") as handle:
            os.fsync(handle.fileno())

    def abort(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except (OSError, pa.ArrowException):
                pass  # after the failure that is being reported: the file is given up (or left to recover)

    def size(self) -> int:
        return size_or_zero(self.path)


class ParquetWriter(BufferedWriter):
    """The Parquet recording writer (see the module docstring for the file layout)."""

    def __init__(self, path: Path, metadata: RecordingMetadata, *, crash_safe: bool = True,
                 flush_interval: float = FLUSH_INTERVAL_S, row_group_rows: int = ROW_GROUP_ROWS,
                 row_group_bytes: int = ROW_GROUP_BYTES, part_rows: int = PART_ROWS,
                 part_bytes: int = PART_BYTES) -> None:
        super().__init__(path, metadata, flush_interval=flush_interval)
        self.crash_safe = crash_safe
        self._partial = partial_dir(path)
        self._group_limits = {"row_group_rows": row_group_rows, "row_group_bytes": row_group_bytes}
        self._part_rows = part_rows
        self._part_bytes = part_bytes
        self._part_no = 1
        self._parts: list[Path] = []
        self._part: PartWriter | None = None
        self._journal: Any = None
        self._journal_handle: Any = None
        self._part_opened_s = time.monotonic()

    # -- opening -------------------------------------------------------------------------

    def open(self) -> ParquetWriter:
        """Create the output (the ``.partial`` directory, or a hidden temporary file) and
        start the flusher. Raises :class:`RecordingError`."""
        check_output_path(self.path)
        created = False
        try:
            if self.crash_safe:
                try:
                    self._partial.mkdir()
                except FileExistsError:
                    raise RecordingError(
                        f"{self._partial} already exists: an unsealed recording (left by a crash, or still "
                        f"being recorded); run 'tesaiot recover {self.path}' or remove it"
                    ) from None
                created = True
                (self._partial / "README.txt").write_text(README.format(name=self.path.name))
                write_file_atomic(self._partial / "metadata.json", self._metadata_json())
                fsync_dir(self.path.parent)
                self._part = self._new_part()
            else:
                self._part = PartWriter(temp_path(self.path), **self._group_limits)
        except (OSError, RecordingError) as exc:
            if created:  # a half-made directory would be in the next recording's way (disk full)
                shutil.rmtree(self._partial, ignore_errors=True)
            if isinstance(exc, RecordingError):
                raise
            raise RecordingError(f"cannot create {self.path}: {os_error_text(exc)}") from None
        self._start()
        return self

    def _new_part(self) -> PartWriter:
        self._part_opened_s = time.monotonic()
        return PartWriter(self._partial / f"part-{self._part_no:06d}.parquet.tmp", **self._group_limits)

    def _metadata_json(self) -> bytes:
        final = finished_metadata(self.metadata, start_ns=self.start_ns, end_ns=self.end_ns,
                                  labels=list(self.label_counts), recording_id=self.recording_id)
        return metadata_to_json(final)

    # -- writing (flusher thread) ----------------------------------------------------------

    def _write_batch(self, columns: Columns) -> None:
        base = schema.base_table(columns.times, columns.topics, columns.payloads, columns.qos, columns.retain,
                                 columns.labels, columns.properties)
        if self.crash_safe:
            self._journal_write(base)
        part = self._require_part()
        part.add(schema.full_table(base), sum(map(len, columns.payloads)))
        if self.crash_safe and (part.rows >= self._part_rows or part.payload_bytes >= self._part_bytes):
            self._roll_part()

    def _journal_write(self, base: pa.Table) -> None:
        if self._journal is None:
            name = self._partial / f"journal-{self._part_no:06d}.arrows"
            self._journal_handle = open(name, "wb")  # noqa: SIM115 - closed in _close_journal
            options = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
            self._journal = pa.ipc.new_stream(self._journal_handle, schema.journal_schema(), options=options)
            fsync_dir(self._partial)
        self._journal.write_table(base)

    def _sync(self) -> None:
        if self._journal_handle is not None:
            self._journal_handle.flush()
            os.fsync(self._journal_handle.fileno())

    def _close_journal(self, *, delete: bool) -> None:
        journal, handle = self._journal, self._journal_handle
        self._journal = self._journal_handle = None
        if journal is not None:
            journal.close()
        if handle is not None:
            handle.close()
            if delete:
                Path(handle.name).unlink(missing_ok=True)

    def _roll_part(self) -> None:
        # Close the open part for good; only then is its journal redundant.
        part = self._require_part()
        part.close(self._metadata_json())
        final = part.path.with_name(part.path.name.removesuffix(".tmp"))
        commit_temp(part.path, final)
        self._parts.append(final)
        self._close_journal(delete=True)
        self._part_no += 1
        self._part = self._new_part()

    def roll_if_older(self, age_s: float) -> tuple[Path, int] | None:
        """Close the open part when it holds messages and was opened ``age_s`` seconds ago
        or more (a remote writer uploads each closed part). Returns the closed part's path and
        rows, or None. Safe from any thread. Raises :class:`RecordingError`."""
        with self._io_lock:
            part = self._part
            if (self._error is not None or part is None or not self.crash_safe or not part.rows
                    or time.monotonic() - self._part_opened_s < age_s):
                return None
            rows = int(part.rows)
            try:
                self._roll_part()
            except OSError as exc:
                self._error = RecordingError(f"cannot write {self.path}: {os_error_text(exc)}")
                raise self._error from None
            except Exception as exc:  # noqa: BLE001 - pyarrow errors, translated as _drain does
                self._error = RecordingError(f"cannot write {self.path}: {type(exc).__name__}: {exc}")
                raise self._error from None
            return self._parts[-1], rows

    def _require_part(self) -> PartWriter:
        if self._part is None:
            raise RecordingError(f"{self.path}: the writer is not open")
        return self._part

    # -- finishing ---------------------------------------------------------------------------

    def _finish(self) -> int:
        part = self._require_part()
        if not self.crash_safe:
            part.close(self._metadata_json())
            commit_temp(part.path, self.path)
            return self.path.stat().st_size
        if part.rows or not self._parts:
            self._roll_part()
        self._part = None
        if len(self._parts) == 1:
            commit_temp(self._parts[0], self.path)
        else:
            merge_parts(self._parts, self.path, self._metadata_json())
        shutil.rmtree(self._partial, ignore_errors=True)
        return self.path.stat().st_size

    def _abort(self) -> None:
        part, self._part = self._part, None
        if part is not None:
            part.abort()
        try:
            self._close_journal(delete=False)
        except OSError:
            pass  # after the failure that is being reported: what was synced stays for recover
        if part is not None and not self.crash_safe:
            try:
                part.path.unlink(missing_ok=True)
            except OSError:
                pass  # a temporary (hidden) name: never taken for a recording

    def disk_bytes(self) -> int:
        if not self.crash_safe:
            return self._part.size() if self._part is not None else 0
        total = 0
        try:
            with os.scandir(self._partial) as entries:
                for entry in entries:
                    total += entry.stat().st_size
        except OSError:
            return 0
        return total


def write_sealed(target: Path, tables: Iterable[Any], metadata_json: bytes) -> int:
    """Write ``tables`` as one sealed Parquet file at ``target``: under a temporary name,
    fsynced, then renamed, so ``target`` never exists half-written. Returns the rows
    written. Raises OSError or pyarrow errors (callers translate)."""
    tmp = temp_path(target)
    sink = PartWriter(tmp)
    try:
        for table in tables:
            sink.add(table, schema.payload_bytes(table))
        sink.close(metadata_json)
        commit_temp(tmp, target)
    except BaseException:
        sink.abort()
        tmp.unlink(missing_ok=True)
        raise
    return int(sink.rows)


def _part_tables(parts: list[Path]) -> Iterator[Any]:
    """Every row group of complete Parquet files, in order (streaming)."""
    for part in parts:
        with open(part, "rb") as handle:
            source = pq.ParquetFile(handle)
            for index in range(source.num_row_groups):
                yield schema.conform(source.read_row_group(index), where=str(part))


def merge_parts(parts: list[Path], output: Path, metadata_json: bytes) -> None:
    """Concatenate complete Parquet files into ``output`` (via a temporary name, fsynced),
    streaming row group by row group. Raises OSError or pyarrow errors (callers translate)."""
    write_sealed(output, _part_tables(parts), metadata_json)


def open_writer(path: Path, *, metadata: RecordingMetadata, crash_safe: bool = True) -> ParquetWriter:
    """Open a Parquet recording writer (see :func:`tesaiot_cli.recording.open_writer`)."""
    return ParquetWriter(path, metadata, crash_safe=crash_safe).open()


def existing_outputs(path: Path) -> list[Path]:
    """The file and an unsealed ``.partial`` directory, where they exist."""
    return [p for p in (path, partial_dir(path)) if p.exists()]


def remove_outputs(path: Path) -> None:
    """Delete ``path`` and its ``.partial`` directory. Raises :class:`RecordingError`."""
    try:
        if partial_dir(path).is_dir():
            shutil.rmtree(partial_dir(path))
        remove_regular_file(path)
    except OSError as exc:
        raise RecordingError(f"cannot remove {path}: {os_error_text(exc)}") from None


