"""Recordings: one protocol, one module per file format, chosen by suffix or ``--format``."""

from tesaiot_cli.recording.base import (
    FORMAT_VERSION,
    FORMATS,
    NORMAL_LABEL,
    RecordingMetadata,
    RecordingReader,
    RecordingWriter,
    WriteSummary,
    format_for,
    open_reader,
    open_writer,
)

__all__ = [
    "FORMAT_VERSION",
    "FORMATS",
    "NORMAL_LABEL",
    "RecordingMetadata",
    "RecordingReader",
    "RecordingWriter",
    "WriteSummary",
    "format_for",
    "open_reader",
    "open_writer",
]
