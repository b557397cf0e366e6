"""Recordings on object storage (``s3://``): writing, reading and recovering them.

Object storage has no rename and no append, so the crash-safe layout of a local recording
(``out.parquet.partial/`` sealed by a rename) becomes:

- the writer records into a local spool directory exactly as to a local disk (journal,
  parts: bounded memory), and closes a part every ``TESAIOT_S3_SEGMENT_S`` seconds (5 by
  default; when it holds messages); a background thread closes each part and uploads it as
  ``<key>.partial/part-NNNNNN.parquet`` (``metadata.json`` first), one at a time: while an
  upload is slow the recording goes on into the open part (on the local disk; memory stays
  bounded), and the next part closes when the upload is done;
- sealing writes the whole recording to ``<key>`` in one upload (an object appears only
  when its upload completes), and only then deletes ``<key>.partial/``: nothing is ever under
  the final name until the recording is sealed;
- after a SIGKILL the uploaded parts stay: ``tesaiot recover s3://.../key`` (from any
  machine) downloads them, seals them and uploads the result; ``info`` and ``replay`` read
  them as an unsealed recording. What a SIGKILL loses at most is the open segment: about
  the segment + the flush interval + one upload (docs/reliability.md);
- an upload that keeps failing (network errors are retried for ``TESAIOT_S3_RETRY_S``)
  fails the recording: ``close`` raises a :class:`RecordingError` with the count of messages
  not stored on object storage, and where the local copy is kept.

Reading: a sealed Parquet object is read through ``pyarrow.fs`` (random access: the footer
and the row groups a selection needs); a JSONL object, an unsealed recording and a dataset
prefix are copied to a temporary directory first, removed when the reader closes.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording import storage
from tesaiot_cli.recording.buffered import SealsOnExit
from tesaiot_cli.recording.files import partial_dir
from tesaiot_cli.recording.formats import FORMATS, format_for, format_of
from tesaiot_cli.recording.model import (
    PARTIAL_SUFFIX,
    RecordingMetadata,
    RecordingReader,
    RecordingWriter,
    RecoverResult,
    SelectionPlan,
    WriteSummary,
)
from tesaiot_cli.recording.storage import S3Path

POLL_S = 0.1


def partial_prefix(target: S3Path) -> S3Path:
    """Where a recording's parts wait until it is sealed: ``<key>.partial``."""
    return S3Path(f"s3:/{target.bucket}/{target.key}{PARTIAL_SUFFIX}")


# A dataset's staged parts on object storage end in this, not in .parquet: the prefix's
# `**/*.parquet` globs (DuckDB, Polars) find only sealed files, as in a local dataset.
STAGED_PART_SUFFIX = ".unsealed"


def is_dataset_key(target: S3Path) -> bool:
    """Whether ``target`` names a dataset prefix: no key, or a key without a recording suffix
    (``s3://bucket/prefix`` or ``s3://bucket/prefix/``)."""
    suffix = Path(target.key).suffix.lower() if target.key else ""
    return not any(suffix in suffixes for suffixes in FORMATS.values())


def upload_part(target: S3Path, part: Path, *, suffix: str = "") -> None:
    """Upload a closed part (or ``metadata.json``) of the unsealed recording ``target`` as
    ``<key>.partial/<name><suffix>``: what ``recover`` seals after a crash. Raises as
    :func:`storage.upload`."""
    storage.upload(part, storage.child(target, f"{partial_prefix(target).key}/{part.name}{suffix}"))


def _spool() -> Path:
    return Path(tempfile.mkdtemp(prefix="tesaiot-s3-"))


# -- writing -----------------------------------------------------------------------------


class RemoteWriter(SealsOnExit):
    """A recording writer for ``s3://bucket/key`` (see the module docstring). A context
    manager, like every writer; ``close`` seals and raises :class:`RecordingError` when
    anything was not stored."""

    def __init__(self, target: S3Path, metadata: RecordingMetadata, *, format: str | None = None,
                 crash_safe: bool = True, segment_s: float | None = None) -> None:
        self.path: Path = target
        self.target = target
        self._format = format_for(target, format)
        self._segments = crash_safe and self._format == "parquet"
        self._crash_safe = crash_safe
        self._metadata = metadata
        self._segment_s = storage.options().segment_s if segment_s is None else segment_s
        self._dir: Path | None = None
        self._local: RecordingWriter | None = None
        self._uploader: threading.Thread | None = None
        self._stop = threading.Event()
        self._error: RecordingError | None = None
        self.stored_rows = 0  # messages in parts uploaded so far
        self.parts_uploaded = 0
        self._stored_at = time.monotonic()
        self._summary: WriteSummary | None = None

    def open(self) -> RemoteWriter:
        """Check the bucket, start the local spool and the uploader. Raises
        :class:`RecordingError` or :class:`AuthError`."""
        storage.check_bucket(self.target, "write")
        if self._segments and storage.list_objects(partial_prefix(self.target)):
            raise RecordingError(f"{partial_prefix(self.target).url}/ already exists: an unsealed recording (left "
                                 f"by a crash, or still being recorded); run 'tesaiot recover {self.target.url}' "
                                 "or remove it (--force)")
        self._dir = _spool()
        local_path = self._dir / self.target.name
        try:
            if self._segments:
                from tesaiot_cli.recording.formats.parquet_write import ParquetWriter

                self._local = ParquetWriter(local_path, self._metadata, crash_safe=True).open()
                upload_part(self.target, partial_dir(local_path) / "metadata.json")
                self._uploader = threading.Thread(target=self._run, name="tesaiot-s3-upload", daemon=True)
                self._uploader.start()
            else:
                self._local = format_of(local_path, self._format).open_writer(
                    local_path, metadata=self._metadata, crash_safe=self._crash_safe)
        except BaseException:
            if self._local is not None:
                self._local.discard()
            shutil.rmtree(self._dir, ignore_errors=True)
            raise
        return self

    def _require(self) -> RecordingWriter:
        if self._local is None:
            raise RecordingError(f"{self.target.url}: the writer is not open")
        return self._local

    # -- the uploader thread ------------------------------------------------------------

    def _run(self) -> None:
        from tesaiot_cli.recording.formats.parquet_write import ParquetWriter

        local = self._local
        assert isinstance(local, ParquetWriter)
        while not self._stop.wait(POLL_S):
            try:
                closed = local.roll_if_older(self._segment_s)
                if closed is not None:
                    self._upload_part(*closed)
            except RecordingError as exc:
                self._error = exc
                return

    def _upload_part(self, part: Path, rows: int) -> None:
        upload_part(self.target, part)
        self.stored_rows += rows
        self.parts_uploaded += 1
        self._stored_at = time.monotonic()

    # -- the writer protocol ----------------------------------------------------------------

    @property
    def messages(self) -> int:
        return self._require().messages

    def write(self, message: Message, *, label: str | None = None) -> None:
        if self._error is not None:
            raise self._error
        self._require().write(message, label=label)

    def flush(self) -> None:
        self.check()
        self._require().flush()

    def check(self) -> None:
        if self._error is not None:
            raise self._error
        self._require().check()

    def disk_bytes(self) -> int:
        return self._require().disk_bytes()

    def unsynced_s(self) -> float:
        """Seconds since everything accepted was last durable: on the local spool, or, when an
        upload lags, how far it is behind the ``segment_s`` every segment waits anyway."""
        local = self._require()
        if not self._segments or local.messages <= self.stored_rows:
            return local.unsynced_s()
        # A segment in the making is normal (up to segment_s): only a lagging upload counts.
        return max(local.unsynced_s(), time.monotonic() - self._stored_at - self._segment_s)

    def _stop_uploader(self) -> None:
        self._stop.set()
        if self._uploader is not None:
            self._uploader.join()

    def close(self) -> WriteSummary:
        """Seal: finish the local file, upload it to the final key, delete the parts.
        Raises :class:`RecordingError` with the count of messages not stored."""
        if self._summary is not None:
            return self._summary
        local = self._require()
        self._stop_uploader()
        summary = local.close()  # raises a local disk error as it would locally
        assert self._dir is not None
        sealed = self._dir / self.target.name
        try:
            if self._error is not None:
                raise self._error
            size = storage.upload(sealed, self.target)
        except RecordingError as exc:
            missing = summary.messages - self.stored_rows
            where = (f"; {self.stored_rows:,} are in {partial_prefix(self.target).url}/ ('tesaiot recover "
                     f"{self.target.url}' seals them)" if self.stored_rows else "")
            raise RecordingError(f"{missing:,} of {summary.messages:,} messages not stored on object storage ({exc})"
                                 f"{where}; the whole recording is kept locally in {sealed}") from None
        if self._segments:
            parts = storage.list_objects(partial_prefix(self.target), uploads=True)
            storage.delete([storage.child(self.target, key) for key, _ in parts])
        shutil.rmtree(self._dir, ignore_errors=True)
        self._summary = WriteSummary(
            path=self.target, messages=summary.messages, payload_bytes=summary.payload_bytes, file_bytes=size,
            start_ns=summary.start_ns, end_ns=summary.end_ns, topic_counts=summary.topic_counts,
            label_counts=summary.label_counts)
        return self._summary

    def discard(self) -> None:
        """Stop without sealing: the uploaded parts stay for ``recover``; the spool goes."""
        self._stop_uploader()
        if self._local is not None:
            self._local.discard()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)


def open_writer(target: S3Path, *, metadata: RecordingMetadata, format: str | None = None,
                crash_safe: bool = True) -> RecordingWriter:
    """A writer for one recording on object storage (see :class:`RemoteWriter`)."""
    if is_dataset_key(target):
        raise ConfigError(f"{target.url} names a dataset prefix: give a key ending in .parquet or .jsonl")
    return RemoteWriter(target, metadata, format=format, crash_safe=crash_safe).open()


def existing_outputs(target: S3Path) -> list[Path]:
    """The object and an unsealed ``.partial/`` prefix, where they exist."""
    found: list[Path] = []
    if storage.object_size(target) is not None:
        found.append(target)
    if storage.list_objects(partial_prefix(target)):
        found.append(partial_prefix(target))
    return found


def remove_outputs(target: S3Path) -> None:
    """Delete the object and its ``.partial/`` parts (``--force``)."""
    parts = storage.list_objects(partial_prefix(target), uploads=True)
    storage.delete([target, *(storage.child(target, key) for key, _ in parts)])


# -- reading -----------------------------------------------------------------------------


class StagedReader:
    """A reader of a local copy (in a temporary directory, removed on close) that names
    the remote location as its path."""

    def __init__(self, path: Path, inner: RecordingReader, directory: Path, *, local: Path | None = None) -> None:
        self.path = path
        self._inner = inner
        self._dir = directory
        self.metadata = inner.metadata
        self.sealed = inner.sealed
        # Named as the user gave it: the local copy's name (``local``) replaced by the remote one.
        self.warnings = [text.replace(str(local), str(path)) for text in inner.warnings] if local else inner.warnings

    def __iter__(self) -> Iterator[Message]:
        return iter(self._inner)

    def iter_messages(self, selection: Selection | None = None) -> Iterator[Message]:
        return self._inner.iter_messages(selection)

    def iter_labelled(self, selection: Selection | None = None) -> Iterator[tuple[Message, str | None]]:
        return self._inner.iter_labelled(selection)

    def iter_tables(self, selection: Selection | None = None) -> Iterator[Any]:
        return self._inner.iter_tables(selection)

    def count(self) -> int:
        return self._inner.count()

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        return self._inner.plan(selection)

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> StagedReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def download_prefix(prefix: S3Path, into: Path) -> int:
    """Copy every object under ``prefix/`` into the local directory ``into`` (keys made
    relative, a dataset's staged parts named back without :data:`STAGED_PART_SUFFIX`).
    Returns how many."""
    objects = storage.list_objects(prefix)
    cut = len(prefix.key) + 1 if prefix.key else 0
    for key, _ in objects:
        local = into / key[cut:].removesuffix(STAGED_PART_SUFFIX)
        local.parent.mkdir(parents=True, exist_ok=True)
        storage.download(storage.child(prefix, key), local)
    return len(objects)


def open_reader(source: S3Path, *, format: str | None = None) -> RecordingReader:
    """A reader for ``s3://bucket/key`` (a file, sealed or not) or ``s3://bucket/prefix``
    (a dataset). Raises :class:`RecordingError` (missing, unreadable) or :class:`AuthError`."""
    storage.check_bucket(source, "read")
    if is_dataset_key(source):
        return _open_dataset(source)
    name = format_for(source, format)
    size = storage.object_size(source)
    if size is None:
        if name == "parquet" and storage.list_objects(partial_prefix(source)):
            return _open_unsealed(source)
        raise RecordingError(f"recording not found: {source.url}")
    if name == "parquet":
        from tesaiot_cli.recording.formats.parquet_read import ParquetReader

        handle = storage.with_retries(lambda: storage.filesystem().open_input_file(source.fs_path),
                                      doing="read", where=source)
        return ParquetReader.open_handle(source, handle, local=False)
    directory = _spool()
    try:
        local = directory / source.name
        storage.download(source, local)
        return StagedReader(source, format_of(local, name).open_reader(local), directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _open_unsealed(source: S3Path) -> RecordingReader:
    from tesaiot_cli.recording.formats.parquet_read import UnsealedParquetReader

    directory = _spool()
    try:
        local = directory / source.name
        download_prefix(partial_prefix(source), partial_dir(local))
        return StagedReader(source, UnsealedParquetReader.open(local), directory)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _open_dataset(prefix: S3Path) -> RecordingReader:
    from tesaiot_cli.recording.dataset.reader import DatasetReader

    directory = _spool()
    try:
        local = directory / (prefix.name or prefix.bucket)
        local.mkdir()
        if not download_prefix(prefix, local):
            raise RecordingError(f"recording not found: {prefix.url}/ holds no object")
        return StagedReader(prefix, DatasetReader.open(local), directory, local=local)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def stored_bytes(where: S3Path) -> int:
    """Bytes on object storage: the object, else its unsealed parts, or a dataset prefix's objects."""
    if is_dataset_key(where):
        return sum(size for _, size in storage.list_objects(where))
    size = storage.object_size(where)
    if size is not None:
        return size
    return sum(size for _, size in storage.list_objects(partial_prefix(where)))


# -- recovering ----------------------------------------------------------------------------


def recover(source: S3Path, *, output: Path | None = None, format: str | None = None) -> RecoverResult:
    """Seal the parts a killed recorder left in ``<key>.partial/``: download, seal, upload
    the sealed object, delete the parts. Raises :class:`RecordingError` (nothing to recover,
    an output in the way) or :class:`AuthError`."""
    if output is not None:
        raise ConfigError("--output is for local recordings: an s3:// recording is recovered in place")
    storage.check_bucket(source, "recover")
    if is_dataset_key(source) or format_for(source, format) != "parquet":
        raise RecordingError(f"nothing to recover in {source.url}: recover seals Parquet recordings left unsealed "
                             "on object storage")
    prefix = partial_prefix(source)
    parts = storage.list_objects(prefix)
    if not parts:
        if storage.object_size(source) is None:
            raise RecordingError(f"recording not found: {source.url}")
        return RecoverResult(source, source, "nothing", 0, detail=f"{source.url} is sealed: nothing to recover")
    from tesaiot_cli.recording.formats.parquet_recover import recover as recover_local

    directory = _spool()
    try:
        local = directory / source.name
        download_prefix(prefix, partial_dir(local))
        result = recover_local(local)
        storage.upload(local, source)
        leftovers = storage.list_objects(prefix, uploads=True)  # the parts and any upload cut short
        storage.delete([storage.child(source, key) for key, _ in leftovers])
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return RecoverResult(source, source, result.action, result.messages, lost=result.lost, detail=result.detail)
