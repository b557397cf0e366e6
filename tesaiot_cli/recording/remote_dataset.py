"""Recording a dataset to object storage: ``record s3://bucket/prefix [--workers N] [--share G]``.

Each recorder writes its dataset files locally, as to a local dataset (a spool directory:
``_tesaiot/staging/`` and the partitions), and each file, once sealed into its partition,
is uploaded to ``s3://bucket/prefix/<partition>/part-<name>.parquet`` and deleted locally:
an object appears only when its upload completes, so a reader of the prefix
(``tesaiot info``, DuckDB's ``read_parquet('s3://.../**/*.parquet')``) never sees part of one.
Files are rolled every :data:`REMOTE_ROLL_S` seconds by default (``--roll``).

The file being recorded follows the single-file writer's rule (:mod:`remote`): its parts
are closed every ``TESAIOT_S3_SEGMENT_S`` seconds and uploaded beside the dataset as
``prefix/_tesaiot/staging/<name>.staged.partial/part-NNNNNN.parquet.unsealed`` (not
``.parquet``: globs over the prefix find only sealed files; ``metadata.json`` with the first),
and deleted once the sealed file is uploaded. A SIGKILL loses the open
segment (a few seconds); ``tesaiot recover s3://bucket/prefix`` (:func:`recover_prefix`)
seals what it left into the partitions.

Names never collide between recorders, on one machine or many: the recorder id in every
file name is ``<host>_<pid>_<random>`` (:func:`remote_recorder_id`), then ``-w<worker>-<seq>``.
``_tesaiot/dataset.json`` is written to the prefix by the first recorder; the others check
their ``--partition`` against it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import secrets
import shutil
import socket
import tempfile
from pathlib import Path
from types import TracebackType

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import storage
from tesaiot_cli.recording.dataset.layout import CONTROL_DIR, info_path, prepare_dataset
from tesaiot_cli.recording.dataset.partition import PartitionSpec
from tesaiot_cli.recording.dataset.writer import DatasetWriter
from tesaiot_cli.recording.files import partial_dir
from tesaiot_cli.recording.formats.parquet_write import ParquetWriter
from tesaiot_cli.recording.model import RecordingMetadata, RecoverResult, WriteSummary
from tesaiot_cli.recording.remote import STAGED_PART_SUFFIX, download_prefix, partial_prefix, upload_part
from tesaiot_cli.recording.storage import S3Path

REMOTE_ROLL_S = 60.0


def remote_recorder_id() -> str:
    """``<host>_<pid>_<6 random hex>``: unique across machines and processes (the host name
    cut to 20 letters and digits)."""
    host = re.sub(r"[^a-z0-9]", "", socket.gethostname().lower())[:20] or "host"
    return f"{host}_{os.getpid()}_{secrets.token_hex(3)}"


def prepare_remote_dataset(prefix: S3Path, *, partition: str | None, tool_version: str) -> tuple[Path, PartitionSpec]:
    """Check the bucket, make the local spool dataset (with the prefix's ``dataset.json`` when
    it has one: the partitioning must agree) and put ``dataset.json`` on the prefix when it
    has none. Returns the spool root and the partitioning. Raises :class:`ConfigError`,
    :class:`RecordingError`, :class:`AuthError`."""
    storage.check_bucket(prefix, "write")
    root = Path(tempfile.mkdtemp(prefix="tesaiot-s3-")) / (prefix.name or prefix.bucket)
    remote_info = storage.child(prefix, f"{prefix.key}/{info_path(root).relative_to(root)}".lstrip("/"))
    try:
        existing = storage.object_size(remote_info) is not None
        if existing:
            info_path(root).parent.mkdir(parents=True)
            storage.download(remote_info, info_path(root))
        spec, _ = prepare_dataset(root, partition=partition, tool_version=tool_version)
        if not existing:
            storage.upload(info_path(root), remote_info)
    except BaseException:
        shutil.rmtree(root.parent, ignore_errors=True)
        raise
    return root, spec


def remove_spool(root: Path) -> bool:
    """Delete the local spool when everything in it was uploaded (no part file, nothing
    staged); otherwise keep it (what was not stored is there). Returns whether it went."""
    from tesaiot_cli.recording.dataset.layout import staged_names

    if staged_names(root) or any(root.rglob("*.parquet")):
        return False
    shutil.rmtree(root.parent, ignore_errors=True)
    return True


class RemoteDatasetWriter:
    """One recorder's files of a dataset on object storage: a :class:`DatasetWriter` on the
    local spool whose sealed files are uploaded (on its maintenance thread, beside the
    recording) and then deleted locally. ``close`` raises :class:`RecordingError` with the
    count of messages not stored."""

    def __init__(self, prefix: S3Path, root: Path, *, metadata: RecordingMetadata, spec: PartitionSpec,
                 worker_id: str, roll_interval_s: float | None, owns_spool: bool = True) -> None:
        self.path: Path = prefix
        self._owns_spool = owns_spool  # False in a --workers process: the parent cleans up
        self.prefix = prefix
        self.root = root
        self.stored_rows = 0
        self.stored_files = 0
        self._segment_s = storage.options().segment_s
        self._announced: set[Path] = set()  # staged files with parts on object storage
        self._inner = DatasetWriter(root, metadata=metadata, spec=spec, worker_id=worker_id,
                                    roll_interval_s=roll_interval_s, on_sealed=self._upload,
                                    on_tick=self._upload_parts)

    def open(self) -> RemoteDatasetWriter:
        self._inner.open()
        return self

    def _remote(self, path: Path) -> S3Path:
        """Where the spool's ``path`` goes on the prefix."""
        return _on_prefix(self.prefix, path.relative_to(self.root).as_posix())

    def _upload_parts(self, writer: ParquetWriter) -> None:
        """Close the open file's part every segment and upload it, as the single-file writer does."""
        closed = writer.roll_if_older(self._segment_s)
        if closed is None:
            return
        target = self._remote(writer.path)
        if writer.path not in self._announced:
            upload_part(target, partial_dir(writer.path) / "metadata.json")
            self._announced.add(writer.path)
        upload_part(target, closed[0], suffix=STAGED_PART_SUFFIX)

    def _upload(self, staged: Path, outputs: list[Path]) -> None:
        """Upload a sealed file's outputs, then delete its parts from the staging prefix."""
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        for path in outputs:
            rows = int(pq.read_metadata(path).num_rows)
            storage.upload(path, self._remote(path))
            path.unlink()
            self.stored_rows += rows
            self.stored_files += 1
        if staged in self._announced:
            parts = partial_prefix(self._remote(staged))
            storage.delete([storage.child(parts, key) for key, _ in storage.list_objects(parts, uploads=True)])
            self._announced.discard(staged)

    @property
    def messages(self) -> int:
        return self._inner.messages

    def write(self, message: Message, *, label: str | None = None) -> None:
        self._inner.write(message, label=label)

    def flush(self) -> None:
        self._inner.flush()

    def check(self) -> None:
        self._inner.check()

    def disk_bytes(self) -> int:
        return self._inner.disk_bytes()

    def unsynced_s(self) -> float:
        return self._inner.unsynced_s()

    def close(self) -> WriteSummary:
        try:
            summary = self._inner.close()
        except RecordingError as exc:
            total = self._inner.messages
            raise RecordingError(f"{total - self.stored_rows:,} of {total:,} messages not stored on object storage "
                                 f"({exc}); what was not uploaded is kept locally in {self.root}") from None
        if self._owns_spool:
            remove_spool(self.root)
        return dataclasses.replace(summary, path=self.prefix)

    def discard(self) -> None:
        self._inner.discard()

    def __enter__(self) -> RemoteDatasetWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except RecordingError:
            pass


def _on_prefix(prefix: S3Path, relative: str) -> S3Path:
    return storage.child(prefix, f"{prefix.key}/{relative}".lstrip("/"))


def recover_prefix(prefix: S3Path) -> RecoverResult:
    """Seal the files killed recorders left in ``prefix/_tesaiot/staging/`` (their uploaded
    parts) into the partitions on the prefix: download ``_tesaiot/``, recover it as a local
    dataset, upload each sealed file not already there, delete the staged parts. For a prefix
    whose recorders have stopped. Raises :class:`RecordingError` or :class:`AuthError`."""
    from tesaiot_cli.recording.dataset.seal import recover_dataset

    control = _on_prefix(prefix, CONTROL_DIR)
    staged = [key for key, _ in storage.list_objects(_on_prefix(prefix, f"{CONTROL_DIR}/staging"))]
    if not staged:
        if not storage.list_objects(prefix):
            raise RecordingError(f"recording not found: {prefix.url}/ holds no object")
        return RecoverResult(prefix, prefix, "nothing", 0, detail=f"{prefix.url} has nothing unsealed")
    root = Path(tempfile.mkdtemp(prefix="tesaiot-s3-")) / (prefix.name or prefix.bucket)
    try:
        download_prefix(control, root / CONTROL_DIR)
        result = recover_dataset(root)
        for path in sorted(root.rglob("*.parquet")):
            relative = path.relative_to(root).as_posix()
            target = _on_prefix(prefix, relative)
            # Already there: the recorder uploaded it and was killed before deleting the parts.
            if not relative.startswith(f"{CONTROL_DIR}/") and storage.object_size(target) is None:
                storage.upload(path, target)
        leftovers = storage.list_objects(_on_prefix(prefix, f"{CONTROL_DIR}/staging"), uploads=True)
        storage.delete([storage.child(prefix, key) for key, _ in leftovers])  # the parts and any upload cut short
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    detail = result.detail if result.action != "nothing" else f"{prefix.url} has nothing unsealed"
    return RecoverResult(prefix, prefix, result.action, result.messages, lost=result.lost, detail=detail)
