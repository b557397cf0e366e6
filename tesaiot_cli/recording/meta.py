"""File-level metadata as JSON: the one encoding both formats store, and its checks.

Parquet keeps it under the key ``tesaiot.recording`` of the file's key-value metadata;
JSONL in its first line, ``{"tesaiot_recording": {...}}``. No pyarrow here.
"""

from __future__ import annotations

import dataclasses
import secrets
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.model import FORMAT_VERSION, RecordingMetadata

METADATA_KEY = "tesaiot.recording"
JSONL_HEADER_KEY = "tesaiot_recording"
FORMAT_NAME = "tesaiot-recording"


def new_recording_id() -> str:
    """A random id for one recording (16 hex characters)."""
    return secrets.token_hex(8)


def safe_broker(url: str | None) -> str | None:
    """The broker URL without any ``user:password@`` part: metadata never holds a secret."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def metadata_to_dict(metadata: RecordingMetadata) -> dict[str, Any]:
    """The JSON object stored in a file (``format`` first, so a reader can tell what it is)."""
    data = dataclasses.asdict(metadata)
    data["topic_filters"] = list(metadata.topic_filters)
    data["labels"] = list(metadata.labels)
    data["broker"] = safe_broker(metadata.broker)
    return {"format": FORMAT_NAME, **data}


def metadata_to_json(metadata: RecordingMetadata) -> bytes:
    """JSON bytes of :func:`metadata_to_dict` as a Parquet file being written stores them:
    ``format_version`` is the current one (what is written), whatever ``metadata`` says.
    Raises :class:`RecordingError` when ``extra`` holds something JSON cannot represent."""
    try:
        return orjson.dumps(metadata_to_dict(dataclasses.replace(metadata, format_version=FORMAT_VERSION)))
    except TypeError as exc:
        raise RecordingError(f"recording metadata cannot be stored as JSON: {exc}") from None


def metadata_from_dict(data: Any, *, where: str) -> RecordingMetadata:
    """Parse stored metadata; raise :class:`RecordingError` for a newer format version or
    a malformed object. Unknown keys (from newer minor additions) are kept in ``extra``."""
    if not isinstance(data, dict):
        raise RecordingError(f"{where}: the recording metadata is not a JSON object")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordingError(f"{where}: the recording metadata has no valid format_version ({version!r})")
    if version > FORMAT_VERSION:
        raise RecordingError(
            f"{where} uses recording format version {version}, but this tesaiot reads versions up to "
            f"{FORMAT_VERSION}: upgrade tesaiot (pip install -U tesaiot-cli)"
        )
    known = {f.name for f in dataclasses.fields(RecordingMetadata)}
    extra = dict(data.get("extra") or {}) if isinstance(data.get("extra"), dict) else {}
    for key, value in data.items():
        if key not in known and key != "format":
            extra.setdefault(key, value)
    try:
        return RecordingMetadata(
            format_version=version,
            tool_version=str(data.get("tool_version") or ""),
            broker=safe_broker(_opt_str(data.get("broker"))),
            topic_filters=tuple(str(t) for t in data.get("topic_filters") or ()),
            start_ns=_opt_int(data.get("start_ns")),
            end_ns=_opt_int(data.get("end_ns")),
            source=str(data.get("source") or "record"),
            seed=_opt_int(data.get("seed")),
            labelled=bool(data.get("labelled", False)),
            extra=extra,
            labels=tuple(str(label) for label in data.get("labels") or ()),
            recording_id=str(data.get("recording_id") or ""),
        )
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"{where}: malformed recording metadata ({exc})") from None


def metadata_from_json(raw: bytes | str, *, where: str) -> RecordingMetadata:
    """Parse JSON metadata bytes; raise :class:`RecordingError`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"{where}: the recording metadata is not valid JSON ({exc})") from None
    return metadata_from_dict(data, where=where)


def finished_metadata(
    metadata: RecordingMetadata,
    *,
    start_ns: int | None,
    end_ns: int | None,
    labels: list[str] | tuple[str, ...],
    recording_id: str,
) -> RecordingMetadata:
    """``metadata`` with what the writer learned: time span, labels, id (and labelled)."""
    return dataclasses.replace(
        metadata,
        broker=safe_broker(metadata.broker),
        start_ns=start_ns,
        end_ns=end_ns,
        labels=tuple(sorted(set(labels))),
        labelled=metadata.labelled or bool(labels),
        recording_id=recording_id,
    )


def _opt_int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)
