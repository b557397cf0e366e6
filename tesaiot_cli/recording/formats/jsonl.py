"""JSONL recordings: a metadata line, then one JSON object per message.

First line: ``{"tesaiot_recording": {...metadata...}}``. Then, per message::

    {"time": 1732263896055689000, "topic": "device/a/telemetry", "device_id": "a",
     "sensor_type": "default", "qos": 1, "retain": false, "payload": "..."}

``payload`` is the text when the bytes are valid UTF-8; otherwise it is base64 and the
object has ``"encoding": "base64"``. ``label`` is present for labelled messages, and
``properties`` (format version 2) for messages with MQTT 5 publish properties: an object
with the fields that are set, ``correlation_data`` in base64 and ``user_properties`` as
``[key, value]`` pairs in order. The
file is appended and fsynced every ~0.25 s while recording, so after a crash it is all
readable except perhaps a torn last line, which readers skip (and report) and
``tesaiot recover`` cuts off. The time span in the metadata comes from the first and
last message lines (the header is written before they are known).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.playback.selection import Selection
from tesaiot_cli.recording.buffered import FLUSH_INTERVAL_S, BufferedWriter, Columns
from tesaiot_cli.recording.files import (
    check_output_path,
    check_regular_file,
    commit_temp,
    fsync_dir,
    os_error_text,
    remove_regular_file,
    size_or_zero,
    temp_path,
)
from tesaiot_cli.recording.formats.jsonl_lines import FragmentKey, decode_line, encode_lines
from tesaiot_cli.recording.meta import JSONL_HEADER_KEY, finished_metadata, metadata_from_dict, metadata_to_dict
from tesaiot_cli.recording.model import RecordingMetadata, RecoverResult, SelectionPlan, TimeSpan

HEADER_ROOM = 1024  # bytes reserved for the metadata line
TAIL_SCAN_LIMIT = 64 * 1024 * 1024  # how far back to look for the last complete line
BATCH_ROWS = 32_768
COUNT_LIMIT = 256 << 20  # plan() counts the lines of a file up to this size
SCAN_LIMIT = 32 << 20  # and counts a selection by reading a file up to this size


class JsonlWriter(BufferedWriter):
    """Appends lines to the file (or, without ``crash_safe``, to a hidden temporary file
    renamed into place by ``close``)."""

    def __init__(self, path: Path, metadata: RecordingMetadata, *, crash_safe: bool = True,
                 flush_interval: float = FLUSH_INTERVAL_S) -> None:
        super().__init__(path, metadata, flush_interval=flush_interval)
        self.crash_safe = crash_safe
        self._target = path if crash_safe else temp_path(path)
        self._handle: IO[bytes] | None = None
        self._fragments: dict[FragmentKey, bytes] = {}
        self._topic_parts: dict[str, tuple[str, str | None]] = {}
        self._header_size = 0

    def open(self) -> JsonlWriter:
        """Create the file, write the metadata line, start the flusher. Raises :class:`RecordingError`."""
        check_output_path(self.path)
        created = False
        try:
            header = self._header_line(start_ns=None, end_ns=None, labels=list(self.metadata.labels))
            # Room to rewrite the line in place at close, with the time span and labels.
            header = header[:-1].ljust(max(HEADER_ROOM, len(header) + 256)) + b"\n"
            self._header_size = len(header)
            existed = os.path.lexists(self._target)
            self._handle = open(self._target, "wb")  # noqa: SIM115 - closed by close()/_abort()
            # Only a regular file this writer made may be deleted after a failure (never /dev/full).
            created = not existed and stat.S_ISREG(os.fstat(self._handle.fileno()).st_mode)
            self._handle.write(header)
            self._handle.flush()
            os.fsync(self._handle.fileno())
            fsync_dir(self.path.parent)
        except TypeError as exc:
            self._abort(created=created)
            raise RecordingError(f"recording metadata cannot be stored as JSON: {exc}") from None
        except OSError as exc:
            # A file without its complete metadata line is not a recording: leave nothing (disk full).
            self._abort(created=created)
            raise RecordingError(f"cannot create {self.path}: {os_error_text(exc)}") from None
        except BaseException:  # Ctrl+C or SIGTERM while opening: no header-only file left
            self._abort(created=created)
            raise
        self._start()
        return self

    def _header_line(self, *, start_ns: int | None, end_ns: int | None, labels: list[str]) -> bytes:
        final = finished_metadata(self.metadata, start_ns=start_ns, end_ns=end_ns, labels=labels,
                                  recording_id=self.recording_id)
        return orjson.dumps({JSONL_HEADER_KEY: metadata_to_dict(final)}, option=orjson.OPT_APPEND_NEWLINE)

    def _write_batch(self, columns: Columns) -> None:
        handle = self._require_handle()
        handle.write(encode_lines(columns, self._fragments, self._topic_parts))

    def _require_handle(self) -> IO[bytes]:
        if self._handle is None:
            raise RecordingError(f"{self.path}: the writer is not open")
        return self._handle

    def _sync(self) -> None:
        handle = self._require_handle()
        handle.flush()
        os.fsync(handle.fileno())

    def _finish(self) -> int:
        handle = self._require_handle()
        self._sync()
        labels = sorted(set(self.metadata.labels) | set(self.label_counts))
        final = finished_metadata(self.metadata, start_ns=self.start_ns, end_ns=self.end_ns, labels=labels,
                                  recording_id=self.recording_id)
        if not rewrite_header(handle.fileno(), final, self._header_size):
            self._rebuild(final)  # the labels outgrew the room left in the metadata line
        handle.close()
        self._handle = None
        if not self.crash_safe:
            commit_temp(self._target, self.path)
        return self.path.stat().st_size

    def _rebuild(self, final: RecordingMetadata) -> None:
        """Copy the message lines under a metadata line that fits, into a new file renamed
        over the old one (never left unsealed: the metadata holds every label). Raises OSError."""
        bigger = temp_path(self._target)
        try:
            with open(self._target, "rb") as source, open(bigger, "wb") as copy:
                copy.write(orjson.dumps({JSONL_HEADER_KEY: metadata_to_dict(final)},
                                        option=orjson.OPT_APPEND_NEWLINE))
                source.seek(self._header_size)
                shutil.copyfileobj(source, copy, 1 << 20)
                copy.flush()
                os.fsync(copy.fileno())
            commit_temp(bigger, self._target)
        except BaseException:
            bigger.unlink(missing_ok=True)
            raise

    def _abort(self, *, created: bool = False) -> None:
        """Close after a failure; delete the output if it is temporary, or ``created`` by this
        writer as a regular file that holds nothing useful."""
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass
        if not self.crash_safe or created:
            try:
                self._target.unlink(missing_ok=True)
            except OSError:
                pass

    def disk_bytes(self) -> int:
        return size_or_zero(self._target)


def rewrite_header(fd: int, metadata: RecordingMetadata, size: int) -> bool:
    """Overwrite the metadata line (``size`` bytes with its newline) in place, padded with
    spaces, and fsync. Returns False, changing nothing, when the new line does not fit."""
    line = orjson.dumps({JSONL_HEADER_KEY: metadata_to_dict(metadata)})
    if len(line) + 1 > size:
        return False
    os.pwrite(fd, line.ljust(size - 1) + b"\n", 0)
    os.fsync(fd)
    return True


class JsonlReader:
    """Streams a JSONL recording. ``strict`` (default): a damaged line in the middle raises
    :class:`RecordingError`; otherwise it is skipped and counted in ``skipped``. A torn
    last line (a crash while writing) is skipped either way and noted in ``warnings``."""

    def __init__(self, path: Path, *, strict: bool = True) -> None:
        self.path = path
        self.sealed = True
        self.header_size = 0
        self.strict = strict
        self.warnings: list[str] = []
        self.skipped = 0
        self.torn_bytes = 0
        self.metadata = RecordingMetadata(source="unknown")
        self._has_header = False

    def open(self) -> JsonlReader:
        """Read the metadata line and the first and last messages' times. Raises :class:`RecordingError`."""
        check_regular_file(self.path)
        try:
            with open(self.path, "rb") as handle:
                first = handle.readline()
                metadata = self._header(first)
                start: int | None
                end: int | None
                if metadata is not None and metadata.start_ns is not None:
                    start, end = metadata.start_ns, metadata.end_ns  # sealed by close()
                else:  # still being written, or left by a crash
                    start = _time_of(handle.readline() if metadata is not None else first)
                    end = _last_time(handle, self.path.stat().st_size)
        except FileNotFoundError:
            raise RecordingError(f"recording not found: {self.path}") from None
        except IsADirectoryError:
            raise RecordingError(f"{self.path} is a directory, not a recording") from None
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if metadata is None and first.endswith(b"\n") and start is None:
            from tesaiot_cli.recording.foreign import not_a_recording

            raise not_a_recording(self.path, "no metadata line, and line 1 is not a message line")
        self._has_header = metadata is not None
        self.header_size = len(first) if metadata is not None else 0
        # close() writes the time span into the metadata line: without it a writer did not finish.
        self.sealed = metadata is None or metadata.start_ns is not None or start is None
        base = metadata or RecordingMetadata(source="unknown")
        self.metadata = finished_metadata(base, start_ns=start, end_ns=end, labels=list(base.labels),
                                          recording_id=base.recording_id)
        return self

    def _header(self, line: bytes) -> RecordingMetadata | None:
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            if not line.endswith(b"\n") and line:
                return None  # a torn first line: iteration reports it
            if not line:
                raise RecordingError(f"{self.path} is empty: not a recording") from None
            raise RecordingError(f"{self.path} line 1 is not JSON: not a JSONL recording") from None
        if isinstance(data, dict) and JSONL_HEADER_KEY in data:
            return metadata_from_dict(data[JSONL_HEADER_KEY], where=str(self.path))
        return None

    def iter_labelled(self, selection: Selection | None = None) -> Iterator[tuple[Message, str | None]]:
        """(message, label or None) in file order: those ``selection`` selects (every line
        is read: JSONL has no index, and a recording in receive order may be out of time
        order, so reading does not stop at ``--end``). Raises :class:`RecordingError` on a
        damaged line (strict mode)."""
        active = selection is not None and selection.active
        if selection is not None:
            selection.bind(self.metadata.start_ns)
        try:
            handle = open(self.path, "rb")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        with handle:
            number = 0
            if self._has_header:
                handle.readline()
                number = 1
            for raw in handle:
                number += 1
                if not raw.strip():
                    continue
                try:
                    row = decode_line(raw)
                except ValueError as exc:
                    if not raw.endswith(b"\n"):
                        self.torn_bytes = len(raw)
                        self.warnings.append(f"the last line ({len(raw)} bytes) is incomplete (a crash while "
                                             f"writing?) and was skipped: 'tesaiot recover {self.path}' removes it")
                        return
                    if self.strict:
                        raise RecordingError(
                            f"{self.path} line {number} is damaged ({exc}); 'tesaiot recover {self.path}' "
                            "copies the readable lines to a new file"
                        ) from None
                    self.skipped += 1
                    continue
                if active:
                    assert selection is not None
                    message = row[0]
                    if not selection.selects(message.topic, message.time_ns, message.retain):
                        selection.excluded += 1
                        continue
                yield row

    def __iter__(self) -> Iterator[Message]:
        return self.iter_messages()

    def iter_messages(self, selection: Selection | None = None) -> Iterator[Message]:
        for message, _label in self.iter_labelled(selection):
            yield message

    def iter_tables(self, selection: Selection | None = None) -> Iterator[Any]:
        """Recording-schema Arrow tables of up to 32k selected messages (imports pyarrow)."""
        from tesaiot_cli.recording import schema

        rows: list[tuple[Message, str | None]] = []
        for row in self.iter_labelled(selection):
            rows.append(row)
            if len(rows) >= BATCH_ROWS:
                yield _table(rows, schema)
                rows = []
        if rows:
            yield _table(rows, schema)

    def plan(self, selection: Selection | None = None) -> SelectionPlan:
        """JSONL has no index. Without a selection: the count of lines (no parsing) of a file
        of at most ``COUNT_LIMIT`` bytes; with one, the selection counted by reading a file
        of at most ``SCAN_LIMIT`` bytes (a second read, bounded); else not known."""
        meta = self.metadata
        size = self.path.stat().st_size
        if selection is None or not selection.active:
            return SelectionPlan(self.count() if size <= COUNT_LIMIT else None, meta.start_ns, meta.end_ns)
        selection.bind(meta.start_ns)
        if size > SCAN_LIMIT:
            return SelectionPlan(None, *selection.cut(meta.start_ns, meta.end_ns))
        excluded, warnings = selection.excluded, list(self.warnings)
        messages, span = 0, TimeSpan()
        for message, _label in self.iter_labelled(selection):
            if selection.where(message.time_ns) == 0:  # not a retained one kept from before
                messages += 1
                span.include(message.time_ns, message.time_ns)
        selection.excluded, self.warnings = excluded, warnings  # the replay reads it again
        return SelectionPlan(messages, span.start_ns, span.end_ns)

    def count(self) -> int:
        """Complete, non-empty lines after the metadata line (no parsing: fast)."""
        total = 0
        try:
            with open(self.path, "rb") as handle:
                for raw in handle:
                    if raw.endswith(b"\n") and raw.strip():
                        total += 1
        except OSError as exc:
            raise RecordingError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        return total - (1 if self._has_header else 0)

    def close(self) -> None:
        pass

    def __enter__(self) -> JsonlReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _table(rows: list[tuple[Message, str | None]], schema: Any) -> Any:
    messages = [m for m, _ in rows]
    topics, payloads, qos, retain, times, properties, _mids = zip(*messages, strict=True)
    return schema.full_table(schema.base_table(times, topics, payloads, qos, retain, [lab for _, lab in rows],
                                               properties))


def _time_of(line: bytes) -> int | None:
    try:
        return decode_line(line)[0].time_ns
    except ValueError:
        return None


def _last_time(handle: IO[bytes], size: int) -> int | None:
    """The time of the last complete message line, reading backwards from the end."""
    data = b""
    position = size
    while position > 0 and len(data) <= TAIL_SCAN_LIMIT:
        step = min(65_536, position)
        position -= step
        handle.seek(position)
        data = handle.read(step) + data
        end = data.rfind(b"\n")
        while end >= 0:
            start = data.rfind(b"\n", 0, end)
            if start < 0 and position > 0:
                break  # the line starts further back: read more
            found = _time_of(data[start + 1:end + 1])
            if found is not None:
                return found
            if start < 0:
                return None
            end = start
    return None


def open_writer(path: Path, *, metadata: RecordingMetadata, crash_safe: bool = True) -> JsonlWriter:
    """Open a JSONL recording writer (see :func:`tesaiot_cli.recording.open_writer`)."""
    return JsonlWriter(path, metadata, crash_safe=crash_safe).open()


def open_reader(path: Path) -> JsonlReader:
    """Open a JSONL recording (strict: damage in the middle raises). Raises :class:`RecordingError`."""
    return JsonlReader(path).open()


def existing_outputs(path: Path) -> list[Path]:
    return [path] if path.exists() else []


def remove_outputs(path: Path) -> None:
    """Delete ``path``. Raises :class:`RecordingError`."""
    try:
        remove_regular_file(path)
    except OSError as exc:
        raise RecordingError(f"cannot remove {path}: {os_error_text(exc)}") from None


def recover(path: Path, *, output: Path | None = None) -> RecoverResult:
    """Cut a torn last line in place; copy a file with damaged lines, without them, to
    ``output`` (default ``<name>.recovered.jsonl``). Raises :class:`RecordingError`."""
    reader = JsonlReader(path, strict=False).open()
    messages, span, labels = 0, TimeSpan(), set()
    for message, label in reader.iter_labelled():
        messages += 1
        span.include(message.time_ns, message.time_ns)
        if label is not None:
            labels.add(label)
    if reader.skipped == 0:
        if reader.torn_bytes == 0 and reader.sealed:
            return RecoverResult(path, path, "nothing", messages, detail=f"{path} is healthy")
        done = []
        try:
            with open(path, "r+b") as handle:
                if reader.torn_bytes:
                    handle.truncate(path.stat().st_size - reader.torn_bytes)
                    handle.flush()
                    os.fsync(handle.fileno())
                    done.append(f"removed the incomplete last line ({reader.torn_bytes} bytes)")
                final = finished_metadata(reader.metadata, start_ns=span.start_ns, end_ns=span.end_ns,
                                          labels=sorted(labels | set(reader.metadata.labels)),
                                          recording_id=reader.metadata.recording_id)
                if not reader.sealed and rewrite_header(handle.fileno(), final, reader.header_size):
                    done.append("wrote the time span into the metadata line")
        except OSError as exc:
            raise RecordingError(f"cannot repair {path}: {os_error_text(exc)}") from None
        return RecoverResult(path, path, "truncated" if reader.torn_bytes else "sealed", messages,
                             lost=reader.torn_bytes, detail="; ".join(done))
    target = output or path.with_name(f"{path.stem}.recovered{path.suffix}")
    if target.exists():
        raise RecordingError(f"{target} already exists: choose another name with --output")
    copy = JsonlReader(path, strict=False).open()
    writer = JsonlWriter(target, copy.metadata, crash_safe=False).open()
    try:
        for message, label in copy.iter_labelled():
            writer.write(message, label=label)
    except BaseException:
        writer.discard()
        raise
    if writer.messages == 0:
        writer.discard()
        raise RecordingError(f"nothing could be saved from {path}: none of its {copy.skipped} message lines is "
                             "readable")
    summary = writer.close()
    return RecoverResult(path, target, "salvaged", summary.messages, lost=copy.skipped,
                         detail=f"{copy.skipped} damaged lines were left out")
