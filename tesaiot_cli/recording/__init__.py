"""Recordings: one protocol, one module per file format, chosen by suffix or ``--format``.

The names below are loaded on first use (PEP 562), so that importing a submodule (as the
commands do for a constant) does not load them all: `tesaiot --help` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("tesaiot_cli.recording.base"), name)
    raise AttributeError(f"module 'tesaiot_cli.recording' has no attribute {name!r}")
