"""Recovering Parquet recordings: sealing a ``.partial`` directory a crash left, and
copying the readable row groups of a damaged file (``tesaiot recover``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.files import os_error_text, partial_dir
from tesaiot_cli.recording.formats.parquet_read import ParquetReader, UnsealedParquetReader
from tesaiot_cli.recording.formats.parquet_write import write_sealed
from tesaiot_cli.recording.meta import metadata_to_json
from tesaiot_cli.recording.model import RecoverResult


def _write_sealed(target: Path, tables: Iterable[Any], metadata_json: bytes) -> int:
    """:func:`write_sealed` with a disk error as :class:`RecordingError`."""
    try:
        return write_sealed(target, tables, metadata_json)
    except OSError as exc:
        raise RecordingError(f"cannot write {target}: {os_error_text(exc)}") from None


def recover(path: Path, *, output: Path | None = None) -> RecoverResult:
    """Seal an unsealed recording, or copy the readable row groups of a damaged file.

    Raises :class:`RecordingError` when nothing can be recovered or ``output`` exists.
    """
    partial = partial_dir(path)
    if not partial.is_dir():
        return salvage(path, output=output)
    target = output or path
    with UnsealedParquetReader.open(path) as reader:
        if target.exists():
            if target == path and _same_recording(path, reader.metadata.recording_id):
                shutil.rmtree(partial, ignore_errors=True)
                return RecoverResult(path, path, "nothing", reader.count(),
                                     detail=f"{path} was already sealed: removed the leftover {partial.name}/")
            raise RecordingError(
                f"{target} already exists and {partial.name}/ holds another recording: recover it to a new "
                "file with --output NEW.parquet"
            )
        _write_sealed(target, reader.iter_tables(), metadata_to_json(reader.metadata))
        messages, notes = reader.count(), "; ".join(reader.warnings)
    shutil.rmtree(partial, ignore_errors=True)
    return RecoverResult(path, target, "sealed", messages, detail=notes)


def _same_recording(path: Path, recording_id: str) -> bool:
    try:
        with ParquetReader.open(path) as sealed:
            return bool(recording_id) and sealed.metadata.recording_id == recording_id
    except RecordingError:
        return False


def salvage(path: Path, *, output: Path | None = None) -> RecoverResult:
    """Check every row group of a sealed file; copy the readable ones to ``output``
    (default ``<name>.recovered.parquet``) when some are damaged.

    Raises :class:`RecordingError` when the footer is unreadable (nothing can be found
    without it) or ``output`` exists.
    """
    with ParquetReader.open(path) as reader:
        damaged = reader.damaged_row_groups()
        if not damaged:
            return RecoverResult(path, path, "nothing", reader.count(), detail=f"{path} is healthy")
        if len(damaged) == reader.row_groups:
            raise RecordingError(f"nothing could be saved from {path}: all {reader.row_groups} row groups are "
                                 "damaged")
        target = output or path.with_name(f"{path.stem}.recovered{path.suffix}")
        if target.exists():
            raise RecordingError(f"{target} already exists: choose another name with --output")
        rows = _write_sealed(target, reader.iter_tables(skip=set(damaged)), metadata_to_json(reader.metadata))
        lost_rows = sum(reader.row_group_rows(i) for i in damaged)
        return RecoverResult(
            path, target, "salvaged", rows, lost=len(damaged),
            detail=f"{len(damaged)} of {reader.row_groups} row groups were damaged and left out "
                   f"({lost_rows} messages)",
        )
