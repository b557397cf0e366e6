"""Kept for code written against the earlier flat layout: every name here is re-exported
from where it now lives. New code imports from :mod:`tesaiot_cli.recording` (the facade)."""

from __future__ import annotations

from tesaiot_cli.recording.api import existing_outputs, open_reader, open_writer, recover, remove_outputs
from tesaiot_cli.recording.files import check_regular_file, is_dataset_path, strip_partial
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
    WriteSummary,
)

__all__ = [
    "FORMATS",
    "FORMAT_VERSION",
    "NORMAL_LABEL",
    "PARTIAL_SUFFIX",
    "RecordingFormat",
    "RecordingMetadata",
    "RecordingReader",
    "RecordingWriter",
    "RecoverResult",
    "WriteSummary",
    "check_regular_file",
    "existing_outputs",
    "format_for",
    "is_dataset_path",
    "open_reader",
    "open_writer",
    "recover",
    "remove_outputs",
    "strip_partial",
]
