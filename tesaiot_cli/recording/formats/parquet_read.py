"""Reading Parquet recordings: sealed files, and the ``.partial`` directory a crash leaves.

Both readers stream one row group (or journal batch) at a time and raise only
:class:`RecordingError`. Page checksums are verified, so a damaged page is reported
instead of read as wrong data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, TypeVar

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording import schema
from tesaiot_cli.recording.files import check_regular_file, partial_dir
from tesaiot_cli.recording.meta import METADATA_KEY, finished_metadata, metadata_from_json
from tesaiot_cli.recording.model import RecordingMetadata, TimeSpan

_NUMBERED = re.compile(r"^(part|journal)-(\d+)\.(parquet|arrows)$")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:200]


R = TypeVar("R", bound="TableReader")


class TableReader:
    """Iteration and the context manager shared by the Parquet readers (single file, unsealed
    leftover, dataset directory); subclasses provide ``iter_tables`` and ``close``."""

    path: Path
    metadata: RecordingMetadata
    sealed: bool
    warnings: list[str]

    def iter_tables(self) -> Iterator[pa.Table]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Message]:
        """Messages in file order. Raises :class:`RecordingError` on damage."""
        for table in self.iter_tables():
            yield from schema.iter_messages(table)

    def iter_labelled(self) -> Iterator[tuple[Message, str | None]]:
        """(message, label or None) in file order."""
        for table in self.iter_tables():
            yield from schema.iter_rows(table)

    def __enter__(self: R) -> R:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class ParquetReader(TableReader):
    """A sealed Parquet recording (or any Parquet file with time, topic and payload)."""

    sealed = True

    def __init__(self, path: Path, handle: BinaryIO, source: pq.ParquetFile, metadata: RecordingMetadata) -> None:
        self.path = path
        self.metadata = metadata
        self.warnings: list[str] = []
        self._handle = handle
        self._file = source

    @classmethod
    def open(cls, path: Path) -> ParquetReader:
        """Open and check the footer and metadata. Raises :class:`RecordingError`."""
        check_regular_file(path)
        try:
            handle: BinaryIO = open(path, "rb")  # noqa: SIM115 - owned by the reader
        except FileNotFoundError:
            raise RecordingError(f"recording not found: {path}") from None
        except OSError as exc:
            raise RecordingError(f"cannot open {path}: {exc.strerror or exc}") from None
        try:
            source = pq.ParquetFile(handle, page_checksum_verification=True)
            raw = (source.metadata.metadata or {}).get(METADATA_KEY.encode())
        except Exception as exc:  # noqa: BLE001 - pyarrow's errors, translated
            handle.close()
            from tesaiot_cli.recording.foreign import not_a_recording, sniff

            if sniff(path) is not None:
                raise not_a_recording(path, "not a Parquet file") from None
            hint = ""
            if partial_dir(path).is_dir():
                hint = f"; an unsealed recording is in {partial_dir(path).name}/: run 'tesaiot recover {path}'"
            raise RecordingError(
                f"{path} is not a readable Parquet file: truncated, damaged or another format "
                f"({_short(exc)}){hint}"
            ) from None
        try:
            if raw is not None:
                metadata = metadata_from_json(raw, where=str(path))
            else:
                metadata = _foreign_metadata(source, path)
        except BaseException:
            handle.close()
            raise
        return cls(path, handle, source, metadata)

    @property
    def row_groups(self) -> int:
        return int(self._file.num_row_groups)

    def row_group_rows(self, index: int) -> int:
        return int(self._file.metadata.row_group(index).num_rows)

    def count(self) -> int:
        """Messages in the file (from the footer: no scan)."""
        return int(self._file.metadata.num_rows)

    def iter_tables(self, *, skip: set[int] | None = None) -> Iterator[pa.Table]:
        """Recording-schema tables, one row group (or up to 64k rows) at a time."""
        total = self.row_groups
        for index in range(total):
            if skip and index in skip:
                continue
            try:
                batches = self._file.iter_batches(batch_size=65_536, row_groups=[index])
                for batch in batches:
                    yield schema.conform(pa.Table.from_batches([batch]), where=str(self.path))
            except RecordingError:
                raise
            except Exception as exc:  # noqa: BLE001 - translated
                raise RecordingError(
                    f"{self.path}: row group {index + 1} of {total} is damaged ({_short(exc)}); "
                    f"'tesaiot recover {self.path}' copies the readable row groups to a new file"
                ) from None

    def damaged_row_groups(self) -> list[int]:
        """Indices of the row groups that cannot be read (every page is checked)."""
        damaged = []
        for index in range(self.row_groups):
            try:
                schema.conform(self._file.read_row_group(index), where=str(self.path))
            except Exception:  # noqa: BLE001 - damaged, whatever the error
                damaged.append(index)
        return damaged

    def close(self) -> None:
        self._handle.close()


def _foreign_metadata(source: pq.ParquetFile, path: Path) -> RecordingMetadata:
    """Metadata for a Parquet file written elsewhere: only the time span, from the data."""
    if "time" not in source.schema_arrow.names:
        raise RecordingError(f"{path} is not a tesaiot recording: no column time")
    start = end = None
    if source.metadata.num_rows:
        try:
            table = schema.conform(source.read(columns=[c for c in ("time", "topic", "payload")
                                                       if c in source.schema_arrow.names]), where=str(path))
        except pa.ArrowException as exc:  # a damaged page: reported like any other damage
            raise RecordingError(f"{path} is damaged ({_short(exc)}); 'tesaiot recover {path}' copies the "
                                 "readable row groups to a new file") from None
        start, end = schema.time_span(table)
    return RecordingMetadata(source="unknown", start_ns=start, end_ns=end)


def journal_batches(path: Path, problems: list[str]) -> Iterator[pa.RecordBatch]:
    """Complete batches of a journal; a torn tail (the crash) is noted in ``problems``."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        problems.append(f"{path.name}: cannot open ({exc.strerror or exc})")
        return
    with handle:
        size = path.stat().st_size
        if size == 0:
            return
        try:
            stream = pa.ipc.open_stream(handle)
        except Exception:  # noqa: BLE001 - torn before the first batch
            problems.append(f"{path.name}: {size} bytes cut off by the crash were skipped")
            return
        good = handle.tell()
        while True:
            try:
                batch = stream.read_next_batch()
            except StopIteration:
                return
            except Exception:  # noqa: BLE001 - a torn or damaged last batch
                problems.append(f"{path.name}: the last {size - good} bytes were cut off by the crash and skipped")
                return
            good = handle.tell()
            yield batch


class UnsealedParquetReader(TableReader):
    """The ``.partial`` directory of a recording that was not sealed (crash or running)."""

    sealed = False

    def __init__(self, path: Path, parts: list[Path], journals: list[Path], metadata: RecordingMetadata,
                 rows: int, warnings: list[str]) -> None:
        self.path = path
        self.metadata = metadata
        self.warnings = warnings
        self.parts = parts
        self.journals = journals
        self._rows = rows

    @classmethod
    def open(cls, path: Path) -> UnsealedParquetReader:
        """Scan the directory (every part and journal once). Raises :class:`RecordingError`."""
        partial = partial_dir(path)
        warnings: list[str] = []
        try:
            metadata = metadata_from_json((partial / "metadata.json").read_bytes(), where=str(partial))
        except OSError:
            warnings.append("metadata.json is missing: the recording's metadata is lost")
            metadata = RecordingMetadata(source="unknown")
        numbered: dict[str, dict[int, Path]] = {"part": {}, "journal": {}}
        for entry in partial.iterdir():
            match = _NUMBERED.match(entry.name)
            if match:
                numbered[match.group(1)][int(match.group(2))] = entry
        parts = [numbered["part"][n] for n in sorted(numbered["part"])]
        # A journal whose part was closed is redundant (a crash between rename and delete).
        journals = [numbered["journal"][n] for n in sorted(numbered["journal"]) if n not in numbered["part"]]
        reader = cls(path, parts, journals, metadata, 0, warnings)
        rows, span = 0, TimeSpan()
        labels: set[str] = set()
        for table in reader._tables(warnings):
            rows += table.num_rows
            span.include(*schema.time_span(table))
            labels.update(v for v in pc.unique(table.column("label").cast(pa.string())).to_pylist() if v is not None)
        reader._rows = rows
        reader.metadata = finished_metadata(metadata, start_ns=span.start_ns, end_ns=span.end_ns, labels=sorted(labels),
                                            recording_id=metadata.recording_id)
        return reader

    def _tables(self, problems: list[str]) -> Iterator[pa.Table]:
        for part in self.parts:
            try:
                with open(part, "rb") as handle:
                    source = pq.ParquetFile(handle, page_checksum_verification=True)
                    for index in range(source.num_row_groups):
                        yield schema.conform(source.read_row_group(index), where=str(part))
            except (RecordingError, GeneratorExit):
                raise
            except Exception as exc:  # noqa: BLE001 - translated
                raise RecordingError(f"{part} is damaged ({_short(exc)})") from None
        for journal in self.journals:
            for batch in journal_batches(journal, problems):
                try:
                    yield schema.full_table(pa.Table.from_batches([batch]))
                except pa.ArrowException as exc:
                    raise RecordingError(f"{journal} is damaged ({_short(exc)})") from None

    def iter_tables(self) -> Iterator[pa.Table]:
        """Recording-schema tables: closed parts first, then the open part's journal."""
        return self._tables([])

    def count(self) -> int:
        return self._rows

    def close(self) -> None:
        pass


def open_reader(path: Path) -> ParquetReader | UnsealedParquetReader:
    """The sealed file at ``path``, or else its unsealed ``.partial`` directory.

    Raises :class:`RecordingError` when neither exists or the file is unreadable.
    """
    if not path.exists() and partial_dir(path).is_dir():
        return UnsealedParquetReader.open(path)
    return ParquetReader.open(path)  # a clear error for a missing file, a directory or a pipe
