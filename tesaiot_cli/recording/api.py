"""The recording API: open, find, remove and recover recordings of any format.

The one place that picks an implementation: a directory is a dataset, anything else
goes to the format the suffix (or ``--format``) names in the registry
(:mod:`~tesaiot_cli.recording.formats`). Import these from :mod:`tesaiot_cli.recording`.
"""

from __future__ import annotations

from pathlib import Path

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording import storage
from tesaiot_cli.recording.files import is_dataset_path, strip_partial
from tesaiot_cli.recording.formats import format_of
from tesaiot_cli.recording.model import (
    RecordingFormat,
    RecordingMetadata,
    RecordingReader,
    RecordingWriter,
    RecoverResult,
)


def open_writer(
    path: Path, *, metadata: RecordingMetadata, format: str | None = None, crash_safe: bool = True
) -> RecordingWriter:
    """Open a writer for ``path`` (format from ``format`` or the suffix).

    ``crash_safe`` (live recording): everything older than about a second survives a
    SIGKILL or power loss. Without it (convert) the output appears only when ``close``
    succeeds. An existing file at ``path`` is replaced when the writer closes; callers
    that must not overwrite check :func:`existing_outputs` first. Raises
    :class:`RecordingError` (cannot create, or an unsealed recording is in the way),
    :class:`ConfigError` (unknown format). ``s3://bucket/key`` writes to object storage
    (:mod:`~tesaiot_cli.recording.remote`).
    """
    target = storage.remote(path)
    if target is not None:
        from tesaiot_cli.recording import remote

        return remote.open_writer(target, metadata=metadata, format=format, crash_safe=crash_safe)
    return format_of(path, format).open_writer(path, metadata=metadata, crash_safe=crash_safe)


def open_reader(path: Path, *, format: str | None = None) -> RecordingReader:
    """Open a reader for ``path`` (format from ``format`` or the suffix).

    A Parquet recording left unsealed by a crash (``path`` missing, ``path.partial/``
    present) is read transparently; the reader's ``sealed`` attribute is then False.
    A directory is read as a dataset: all its Parquet files merged by receive time
    (:class:`~tesaiot_cli.recording.dataset.reader.DatasetReader`).
    ``s3://bucket/key`` (a file) and ``s3://bucket/prefix`` (a dataset) read from object storage.
    Raises :class:`RecordingError` (missing, corrupt, newer format version).
    """
    path = strip_partial(path)
    source = storage.remote(path)
    if source is not None:
        from tesaiot_cli.recording import remote

        return remote.open_reader(source, format=format)
    if is_dataset_path(path):
        from tesaiot_cli.recording.dataset.reader import DatasetReader

        return DatasetReader.open(path)
    return _reading_format(path, format).open_reader(path)


def existing_outputs(path: Path, *, format: str | None = None) -> list[Path]:
    """Files or directories that writing a recording to ``path`` would replace or that
    are in its way (the file itself, an unsealed ``.partial`` leftover)."""
    target = storage.remote(path)
    if target is not None:
        from tesaiot_cli.recording import remote

        format_of(path, format)  # ConfigError for an unknown suffix, as for a local path
        return remote.existing_outputs(target)
    return format_of(path, format).existing_outputs(path)


def remove_outputs(path: Path, *, format: str | None = None) -> None:
    """Delete what :func:`existing_outputs` lists (``--force``). Raises :class:`RecordingError`."""
    target = storage.remote(path)
    if target is not None:
        from tesaiot_cli.recording import remote

        remote.remove_outputs(target)
        return
    format_of(path, format).remove_outputs(path)


def recover(path: Path, *, output: Path | None = None, format: str | None = None) -> RecoverResult:
    """Repair what a crash or damage left behind, keeping everything readable.

    Seals an unsealed Parquet recording, cuts a torn last JSONL line, or copies what is
    still readable of a damaged file to ``output``. Raises :class:`RecordingError`.
    """
    path = strip_partial(path)
    source = storage.remote(path)
    if source is not None:
        from tesaiot_cli.recording import remote

        if remote.is_dataset_key(source) and output is None:
            from tesaiot_cli.recording.remote_dataset import recover_prefix

            storage.check_bucket(source, "recover")
            return recover_prefix(source)
        return remote.recover(source, output=output, format=format)
    if is_dataset_path(path):
        from tesaiot_cli.recording.dataset.seal import recover_dataset

        if output is not None:
            raise ConfigError("--output is for single files: a dataset is recovered in place")
        return recover_dataset(path)
    return _reading_format(path, format).recover(path, output=output)


def _reading_format(path: Path, format: str | None) -> RecordingFormat:
    """The format for reading ``path``; a file whose suffix says nothing but whose content
    is a known foreign capture gets "not a tesaiot recording" and the ``--from`` to use."""
    try:
        return format_of(path, format)
    except ConfigError:
        if format is None and path.is_file():
            from tesaiot_cli.recording.foreign import not_a_recording, sniff

            if sniff(path) is not None:
                raise not_a_recording(path) from None
        raise
