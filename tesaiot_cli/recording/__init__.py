"""Recordings: the facade. Layers, each importing only those below it::

    model (+ meta)      constants, metadata, summaries, the Writer/Reader/Format protocols
    files               durable renames, safe removal, paths
    buffered, schema    the buffered writer; the Arrow schema
    formats/            parquet (write, read, recover), jsonl; the typed registry
    dataset/            partitioning, layout, sealing, reader, writer
    stats, dedupe       analysis over recordings
    api, this           open_reader / open_writer / recover ...

The names below are loaded on first use (PEP 562): importing one submodule (as the
commands do for a constant) does not load them all, and `tesaiot --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tesaiot_cli.recording.api import existing_outputs, open_reader, open_writer, recover, remove_outputs
    from tesaiot_cli.recording.files import is_dataset_path, strip_partial
    from tesaiot_cli.recording.formats import FORMATS, format_for
    from tesaiot_cli.recording.model import (
        FORMAT_VERSION,
        NORMAL_LABEL,
        PARTIAL_SUFFIX,
        RecordingFormat,
        RecordingMetadata,
        RecordingReader,
        RecordingWriter,
        RecoverResult,
        TimeSpan,
        WriteSummary,
        merge_summaries,
    )

_MODEL = ("FORMAT_VERSION", "NORMAL_LABEL", "PARTIAL_SUFFIX", "RecordingFormat", "RecordingMetadata",
          "RecordingReader", "RecordingWriter", "RecoverResult", "TimeSpan", "WriteSummary", "merge_summaries")
_API = ("existing_outputs", "open_reader", "open_writer", "recover", "remove_outputs")
_FILES = ("is_dataset_path", "strip_partial")
_FORMATS = ("FORMATS", "format_for")

__all__ = [
    "FORMATS", "FORMAT_VERSION", "NORMAL_LABEL", "PARTIAL_SUFFIX", "RecordingFormat", "RecordingMetadata",
    "RecordingReader", "RecordingWriter", "RecoverResult", "TimeSpan", "WriteSummary", "existing_outputs",
    "format_for", "is_dataset_path", "merge_summaries", "open_reader", "open_writer", "recover",
    "remove_outputs", "strip_partial",
]


def __getattr__(name: str) -> Any:
    if name in _MODEL:
        from tesaiot_cli.recording import model

        return getattr(model, name)
    if name in _API:
        from tesaiot_cli.recording import api

        return getattr(api, name)
    if name in _FILES:
        from tesaiot_cli.recording import files

        return getattr(files, name)
    if name in _FORMATS:
        from tesaiot_cli.recording import formats

        return getattr(formats, name)
    raise AttributeError(f"module 'tesaiot_cli.recording' has no attribute {name!r}")
