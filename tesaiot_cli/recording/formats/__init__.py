"""The format registry: every file format, by name, as a typed :class:`RecordingFormat`.

Each format's modules are imported only when one of its files is opened (they import
pyarrow or orjson), so choosing a format by name or suffix stays cheap. Adding a format
means its modules and one entry in :data:`REGISTRY`; the CLI needs no change.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, cast

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.model import (
    RecordingFormat,
    RecordingMetadata,
    RecordingReader,
    RecordingWriter,
    RecoverResult,
)


class LazyFormat:
    """A file format whose modules (in this package) are imported when one of its files is
    opened: ``writer`` has ``open_writer``, ``existing_outputs`` and ``remove_outputs``,
    ``reader`` has ``open_reader``, ``recoverer`` has ``recover``."""

    def __init__(self, name: str, suffixes: tuple[str, ...], *, writer: str, reader: str, recoverer: str) -> None:
        self.name = name
        self.suffixes = suffixes
        self._writer, self._reader, self._recoverer = writer, reader, recoverer

    @staticmethod
    def _module(name: str) -> Any:
        return importlib.import_module(f"{__name__}.{name}")

    def open_writer(self, path: Path, *, metadata: RecordingMetadata, crash_safe: bool) -> RecordingWriter:
        return cast(RecordingWriter,
                    self._module(self._writer).open_writer(path, metadata=metadata, crash_safe=crash_safe))

    def open_reader(self, path: Path) -> RecordingReader:
        return cast(RecordingReader, self._module(self._reader).open_reader(path))

    def existing_outputs(self, path: Path) -> list[Path]:
        return cast("list[Path]", self._module(self._writer).existing_outputs(path))

    def remove_outputs(self, path: Path) -> None:
        self._module(self._writer).remove_outputs(path)

    def recover(self, path: Path, *, output: Path | None) -> RecoverResult:
        return cast(RecoverResult, self._module(self._recoverer).recover(path, output=output))


# name -> format; the first suffix of each is the canonical one.
REGISTRY: dict[str, RecordingFormat] = {fmt.name: fmt for fmt in (
    # Parquet recordings (a crash-safe ``.partial`` directory while recording).
    LazyFormat("parquet", (".parquet", ".pq"), writer="parquet_write", reader="parquet_read",
               recoverer="parquet_recover"),
    # JSONL recordings: a metadata line, then one JSON object per message.
    LazyFormat("jsonl", (".jsonl", ".ndjson"), writer="jsonl", reader="jsonl", recoverer="jsonl"),
)}

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
