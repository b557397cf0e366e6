"""Sealing a dataset's staged files into their partitions, and recovering after a crash.

See :mod:`~tesaiot_cli.recording.dataset.layout` for the layout and the rules a reader
relies on while a staged file is split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording import schema
from tesaiot_cli.recording.dataset.layout import (
    CONTROL_DIR,
    STAGED_SUFFIX,
    StagingLock,
    dataset_spec,
    lock_path,
    part_file_name,
    staged_names,
    staged_path,
    staging_dir,
)
from tesaiot_cli.recording.dataset.partition import PartitionSpec, split_by_partition, time_key
from tesaiot_cli.recording.files import commit_temp, fsync_dir, os_error_text, partial_dir, temp_path
from tesaiot_cli.recording.formats.parquet_read import ParquetReader
from tesaiot_cli.recording.formats.parquet_recover import recover as recover_parquet
from tesaiot_cli.recording.formats.parquet_write import PartWriter
from tesaiot_cli.recording.meta import finished_metadata, metadata_to_json, new_recording_id
from tesaiot_cli.recording.model import RecoverResult, TimeSpan

SPLIT_PENDING_ROWS = 262_144  # splitting: write pending rows out beyond this (bounds memory)

@dataclass
class _Sink:
    writer: PartWriter
    final: Path
    span: TimeSpan = field(default_factory=TimeSpan)
    labels: set[str] = field(default_factory=set)

    def add(self, table: pa.Table) -> None:
        self.writer.add(table, schema.payload_bytes(table))
        self.span.include(*schema.time_span(table))
        self.labels.update(v for v in pc.unique(table.column("label").cast(pa.string())).to_pylist() if v)


def seal_staged(root: Path, staged: Path, spec: PartitionSpec) -> list[Path]:
    """Move a finished staged file into its partition (or split it over several), then
    delete it. Returns the part files written. Raises :class:`RecordingError`."""
    name = staged.name.removesuffix(STAGED_SUFFIX)
    try:
        with ParquetReader.open(staged) as reader:
            meta = reader.metadata
            if reader.count() == 0:
                outputs: list[Path] = []
            elif spec.time_only and meta.start_ns is not None and meta.end_ns is not None \
                    and time_key(meta.start_ns, spec) == time_key(meta.end_ns, spec):
                target = root / time_key(meta.start_ns, spec) / part_file_name(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
                fsync_dir(target.parent)
                fsync_dir(staged.parent)
                return [target]
            else:
                outputs = _split(reader, root, name, spec)
        staged.unlink(missing_ok=True)
        fsync_dir(staged.parent)
    except OSError as exc:
        raise RecordingError(f"cannot seal {staged} into {root}: {os_error_text(exc)}; it stays in "
                             f"{staging_dir(root)} and 'tesaiot recover {root}' seals it") from None
    return outputs


def _split(reader: ParquetReader, root: Path, name: str, spec: PartitionSpec) -> list[Path]:
    sinks: dict[str, _Sink] = {}
    pending = 0
    try:
        for table in reader.iter_tables():
            for key, rows in split_by_partition(table, spec):
                sink = sinks.get(key)
                if sink is None:
                    directory = root / key if key else root
                    directory.mkdir(parents=True, exist_ok=True)
                    final = directory / part_file_name(name)
                    sink = sinks[key] = _Sink(PartWriter(temp_path(final)), final)
                sink.add(rows)
                pending += rows.num_rows
            if pending >= SPLIT_PENDING_ROWS:
                for sink in sinks.values():
                    sink.writer.write_pending()
                pending = 0
        for sink in sinks.values():
            final_meta = finished_metadata(reader.metadata, start_ns=sink.span.start_ns, end_ns=sink.span.end_ns,
                                           labels=sorted(sink.labels), recording_id=new_recording_id())
            sink.writer.close(metadata_to_json(final_meta))
    except BaseException:
        for sink in sinks.values():
            sink.writer.abort()
            sink.writer.path.unlink(missing_ok=True)
        raise
    for sink in sinks.values():
        commit_temp(sink.writer.path, sink.final)
    return [sink.final for sink in sinks.values()]


def recover_dataset(root: Path) -> RecoverResult:
    """Seal every staged file a crash left in ``_tesaiot/staging/`` into its partitions.

    Files a live recorder is writing are left alone. Raises :class:`RecordingError`.
    """
    spec = dataset_spec(root)
    sealed = live = messages = 0
    for name in staged_names(root):
        try:
            lock = StagingLock.acquire(lock_path(root, name))
        except OSError as exc:
            raise RecordingError(f"cannot lock {lock_path(root, name)}: {os_error_text(exc)}") from None
        if lock is None:
            live += 1
            continue
        try:
            staged = staged_path(root, name)
            if partial_dir(staged).is_dir():
                recover_parquet(staged)
            if staged.exists():
                with ParquetReader.open(staged) as reader:
                    rows = reader.count()
                seal_staged(root, staged, spec)
                messages += rows
                sealed += 1
        finally:
            lock.release(remove=True)
    notes = []
    if sealed:
        notes.append(f"{sealed} file(s) left in {CONTROL_DIR}/staging/ sealed into their partitions")
    if live:
        notes.append(f"{live} file(s) still being recorded, left alone")
    if not sealed:
        return RecoverResult(root, root, "nothing", 0, detail="; ".join(notes) or f"{root} has nothing unsealed")
    return RecoverResult(root, root, "sealed", messages, detail="; ".join(notes))


