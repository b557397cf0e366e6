"""The format registry: every file format, by name, as a typed :class:`RecordingFormat`.

Each format's modules are imported only when one of its files is opened (they import
pyarrow or orjson), so choosing a format by name or suffix stays cheap. Adding a format
means one class here and one entry in :data:`REGISTRY`; the CLI needs no change.
"""

from __future__ import annotations

from pathlib import Path

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.model import (
    RecordingFormat,
    RecordingMetadata,
    RecordingReader,
    RecordingWriter,
    RecoverResult,
)


class ParquetFormat:
    """Parquet recordings (crash-safe ``.partial`` directory while recording)."""

    name: str = "parquet"
    suffixes: tuple[str, ...] = (".parquet", ".pq")

    def open_writer(self, path: Path, *, metadata: RecordingMetadata, crash_safe: bool) -> RecordingWriter:
        from tesaiot_cli.recording.formats.parquet_write import open_writer

        return open_writer(path, metadata=metadata, crash_safe=crash_safe)

    def open_reader(self, path: Path) -> RecordingReader:
        from tesaiot_cli.recording.formats.parquet_read import open_reader

        return open_reader(path)

    def existing_outputs(self, path: Path) -> list[Path]:
        from tesaiot_cli.recording.formats.parquet_write import existing_outputs

        return existing_outputs(path)

    def remove_outputs(self, path: Path) -> None:
        from tesaiot_cli.recording.formats.parquet_write import remove_outputs

        remove_outputs(path)

    def recover(self, path: Path, *, output: Path | None) -> RecoverResult:
        from tesaiot_cli.recording.formats.parquet_recover import recover

        return recover(path, output=output)


class JsonlFormat:
    """JSONL recordings: a metadata line, then one JSON object per message."""

    name: str = "jsonl"
    suffixes: tuple[str, ...] = (".jsonl", ".ndjson")

    def open_writer(self, path: Path, *, metadata: RecordingMetadata, crash_safe: bool) -> RecordingWriter:
        from tesaiot_cli.recording.formats.jsonl import open_writer

        return open_writer(path, metadata=metadata, crash_safe=crash_safe)

    def open_reader(self, path: Path) -> RecordingReader:
        from tesaiot_cli.recording.formats.jsonl import open_reader

        return open_reader(path)

    def existing_outputs(self, path: Path) -> list[Path]:
        from tesaiot_cli.recording.formats.jsonl import existing_outputs

        return existing_outputs(path)

    def remove_outputs(self, path: Path) -> None:
        from tesaiot_cli.recording.formats.jsonl import remove_outputs

        remove_outputs(path)

    def recover(self, path: Path, *, output: Path | None) -> RecoverResult:
        from tesaiot_cli.recording.formats.jsonl import recover

        return recover(path, output=output)


# name -> format; the first suffix of each is the canonical one.
REGISTRY: dict[str, RecordingFormat] = {fmt.name: fmt for fmt in (ParquetFormat(), JsonlFormat())}

# name -> file suffixes (lower case), as the CLI and older callers know them.
FORMATS: dict[str, tuple[str, ...]] = {name: fmt.suffixes for name, fmt in REGISTRY.items()}


def format_for(path: Path, explicit: str | None = None) -> str:
    """The format name for ``path``: ``explicit`` if given, else from the suffix.

    Raises :class:`ConfigError` for an unknown format or suffix.
    """
    if explicit is not None:
        name = explicit.lower()
        if name not in REGISTRY:
            raise ConfigError(f"unknown recording format {explicit!r}: use {' or '.join(REGISTRY)}")
        return name
    suffix = path.suffix.lower()
    for name, fmt in REGISTRY.items():
        if suffix in fmt.suffixes:
            return name
    raise ConfigError(
        f"cannot tell the recording format of {str(path)!r} from its suffix: use .parquet or .jsonl, "
        "or --format"
    )


def format_of(path: Path, explicit: str | None = None) -> RecordingFormat:
    """The :class:`RecordingFormat` for ``path`` (see :func:`format_for`). Raises :class:`ConfigError`."""
    return REGISTRY[format_for(path, explicit)]
