"""Recording datasets: one hive-partitioned directory of Parquet recordings, read as one table.

Layout (documented in docs/recording-format.md and docs/scaling.md)::

    DIR/
      _tesaiot/dataset.json          what this is: format, version, partitioning
      _tesaiot/README.txt
      _tesaiot/staging/              files being recorded (never a *.parquet file here)
        <name>.staged.partial/       a crash-safe recording in progress (journal + open part)
        <name>.staged                a finished one, for an instant, before it is moved
        <name>.lock                  flock'ed by the live recorder that writes <name>
      date=2026-11-22/part-<name>.parquet     sealed part files, each a complete recording

``<name>`` is ``<recorder id>-w<worker>-<seq>``, unique across processes and machines.
Every part file is an ordinary tesaiot Parquet recording (same schema, same metadata);
DuckDB, Polars, pyarrow.dataset and Spark read ``DIR`` as one table with the partition
columns added. Names starting with ``_`` or ``.`` are skipped by pyarrow.dataset and
Spark, and the staging area never holds a ``*.parquet`` file, so ``DIR/**/*.parquet``
globs (DuckDB, Polars) never see a file being written.

Sealing a staged file: when all its rows fall in one partition (the usual case with
``date`` partitioning) it is renamed into place, atomically. Otherwise it is split: each
partition's rows go to a hidden temporary file there, which is renamed when complete;
the staged file is deleted last. Until then the staged file is the truth: readers
ignore ``part-<name>.parquet`` files while ``<name>.staged`` exists, and
:func:`recover_dataset` redoes the split.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]

from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.recording import schema
from tesaiot_cli.recording.base import PARTIAL_SUFFIX, RecoverResult
from tesaiot_cli.recording.buffered import fsync_dir, os_error_text, write_file_atomic
from tesaiot_cli.recording.meta import finished_metadata, metadata_to_json, new_recording_id
from tesaiot_cli.recording.parquet import PartWriter
from tesaiot_cli.recording.parquet import recover as recover_parquet
from tesaiot_cli.recording.parquet_read import ParquetReader
from tesaiot_cli.recording.partition import (
    DEFAULT_SPEC,
    PartitionSpec,
    parse_partition,
    split_by_partition,
    time_key,
)

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: live files cannot be told apart
    fcntl = None  # type: ignore[assignment]

DATASET_FORMAT = "tesaiot-dataset"
DATASET_VERSION = 1
CONTROL_DIR = "_tesaiot"
STAGED_SUFFIX = ".staged"
PART_PREFIX = "part-"
SPLIT_PENDING_ROWS = 262_144  # splitting: write pending rows out beyond this (bounds memory)

README = """This directory is a tesaiot recording dataset: hive-partitioned Parquet files
(date=YYYY-MM-DD/part-*.parquet), each a complete tesaiot recording.

Read it as one table:
  tesaiot info {name}     tesaiot replay {name}     tesaiot convert {name} all.parquet
  duckdb:  select * from read_parquet('{name}/**/*.parquet', hive_partitioning = true)
  polars:  pl.scan_parquet('{name}/**/*.parquet', hive_partitioning=True)
  pyarrow: pyarrow.dataset.dataset('{name}', format='parquet', partitioning='hive')

_tesaiot/staging/ holds the files being recorded. After a crash, 'tesaiot recover {name}'
seals what is left there into the partitions.
"""


def control_dir(root: Path) -> Path:
    return root / CONTROL_DIR


def staging_dir(root: Path) -> Path:
    """Where the files being recorded live until they are sealed."""
    return root / CONTROL_DIR / "staging"


def info_path(root: Path) -> Path:
    return root / CONTROL_DIR / "dataset.json"


def staged_path(root: Path, name: str) -> Path:
    return staging_dir(root) / f"{name}{STAGED_SUFFIX}"


def lock_path(root: Path, name: str) -> Path:
    return staging_dir(root) / f"{name}.lock"


def part_file_name(name: str) -> str:
    return f"{PART_PREFIX}{name}.parquet"


# -- dataset.json --------------------------------------------------------------------------


def read_dataset_info(root: Path) -> dict[str, Any] | None:
    """The dataset's ``_tesaiot/dataset.json``, or None when there is none.

    Raises :class:`RecordingError` when it is unreadable or from a newer format version.
    """
    path = info_path(root)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {os_error_text(exc)}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RecordingError(f"{path} is not valid JSON: the dataset's description is damaged") from None
    if not isinstance(data, dict) or data.get("format") != DATASET_FORMAT:
        raise RecordingError(f"{path} does not describe a tesaiot dataset")
    version = data.get("format_version")
    if not isinstance(version, int) or version > DATASET_VERSION:
        raise RecordingError(f"{root} is a dataset of format version {version!r}, but this tesaiot reads up to "
                             f"{DATASET_VERSION}: upgrade tesaiot (pip install -U tesaiot-cli)")
    return data


def dataset_spec(root: Path) -> PartitionSpec:
    """The partitioning recorded in ``dataset.json`` (``date`` when there is none)."""
    info = read_dataset_info(root)
    text = str(info.get("partitioning") or DEFAULT_SPEC) if info else DEFAULT_SPEC
    try:
        return parse_partition(text)
    except ConfigError as exc:
        raise RecordingError(f"{info_path(root)}: {exc}") from None


def prepare_dataset(root: Path, *, partition: str | None, tool_version: str,
                    create: bool = True) -> tuple[PartitionSpec, Callable[[], None]]:
    """Create the dataset directory (or check an existing one): its partitioning, and a
    function that undoes what this call created if nothing gets recorded (a failed start).
    ``create=False`` only checks.

    Recording into an existing dataset adds files to it. Raises :class:`ConfigError` when
    ``root`` is a file, a non-empty directory that is not a dataset, or a dataset with
    another partitioning than ``partition``; :class:`RecordingError` when it cannot be created.
    """
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory: a dataset is a directory")
    if not root.parent.is_dir():
        raise ConfigError(f"cannot record to {str(root)!r}: the directory {str(root.parent)!r} does not exist")
    wanted = parse_partition(partition) if partition is not None else None
    info = read_dataset_info(root) if root.is_dir() else None
    if info is not None:
        spec = dataset_spec(root)
        if wanted is not None and wanted != spec:
            raise ConfigError(f"{root} is partitioned by {spec.text()}, not {wanted.text()}: record into a new "
                              f"directory, or drop --partition")
    else:
        if root.is_dir() and any(entry for entry in root.iterdir() if entry.name != CONTROL_DIR):
            raise ConfigError(f"{root} is a directory that is not a tesaiot dataset (no {CONTROL_DIR}/dataset.json):"
                              " record into a new or empty directory")
        spec = wanted or parse_partition(DEFAULT_SPEC)
    if not create:
        return spec, lambda: None
    undo = functools.partial(_undo_prepare, root, existed=root.exists(), described=info is not None)
    try:
        staging_dir(root).mkdir(parents=True, exist_ok=True)
        if info is None:
            now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            description = {"format": DATASET_FORMAT, "format_version": DATASET_VERSION,
                           "partitioning": spec.text(), "partition_columns": spec.keys(),
                           "tool_version": tool_version, "created": now}
            write_file_atomic(info_path(root), orjson.dumps(description, option=orjson.OPT_INDENT_2) + b"\n")
            (control_dir(root) / "README.txt").write_text(README.format(name=root.name))
        fsync_dir(root)
    except OSError as exc:
        raise RecordingError(f"cannot create the dataset {root}: {os_error_text(exc)}") from None
    return spec, undo


def _undo_prepare(root: Path, *, existed: bool, described: bool) -> None:
    """Remove what :func:`prepare_dataset` created, when the dataset holds no recording at
    all (nothing sealed, nothing staged). Never raises."""
    try:
        if described or staged_names(root) or any(root.rglob("*.parquet")):
            return
    except OSError:
        return
    shutil.rmtree(root if not existed else control_dir(root), ignore_errors=True)


# -- live files ------------------------------------------------------------------------------


class StagingLock:
    """An exclusive ``flock`` on ``<name>.lock``, held while a recorder writes ``<name>``.

    The kernel drops it when the process dies, so a staged file whose lock can be taken
    is a crash leftover, and one whose lock is held is being recorded right now.
    """

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, create: bool = True) -> StagingLock | None:
        """Take the lock; None when a live process holds it. Raises OSError."""
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            fd = os.open(path, flags, 0o644)
        except FileNotFoundError:
            if create:
                raise
            return cls(path, -1)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
        return cls(path, fd)

    def release(self, *, remove: bool) -> None:
        """Drop the lock (and delete the lock file first when ``remove``). Never raises."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if remove:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
        if fd >= 0:
            os.close(fd)


def is_live(root: Path, name: str) -> bool:
    """Whether a running recorder holds the lock of staged file ``name``."""
    try:
        lock = StagingLock.acquire(lock_path(root, name), create=False)
    except OSError:
        return False
    if lock is None:
        return True
    lock.release(remove=False)
    return False


# -- sealing ---------------------------------------------------------------------------------


@dataclass
class _Sink:
    writer: PartWriter
    final: Path
    start_ns: int | None = None
    end_ns: int | None = None
    labels: set[str] = field(default_factory=set)

    def add(self, table: pa.Table) -> None:
        self.writer.add(table, schema.payload_bytes(table))
        low, high = schema.time_span(table)
        if low is not None and high is not None:
            self.start_ns = low if self.start_ns is None else min(self.start_ns, low)
            self.end_ns = high if self.end_ns is None else max(self.end_ns, high)
        self.labels.update(v for v in pc.unique(table.column("label").cast(pa.string())).to_pylist() if v)


def seal_staged(root: Path, staged: Path, spec: PartitionSpec) -> list[Path]:
    """Move a finished staged file into its partition (or split it over several), then
    delete it. Returns the part files written. Raises :class:`RecordingError`."""
    name = staged.name.removesuffix(STAGED_SUFFIX)
    try:
        with ParquetReader.open(staged) as reader:
            meta = reader.metadata
            if reader.count() == 0:
                outputs: list[Path] = []
            elif spec.time_only and meta.start_ns is not None and meta.end_ns is not None \
                    and time_key(meta.start_ns, spec) == time_key(meta.end_ns, spec):
                target = root / time_key(meta.start_ns, spec) / part_file_name(name)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, target)
                fsync_dir(target.parent)
                fsync_dir(staged.parent)
                return [target]
            else:
                outputs = _split(reader, root, name, spec)
        staged.unlink(missing_ok=True)
        fsync_dir(staged.parent)
    except OSError as exc:
        raise RecordingError(f"cannot seal {staged} into {root}: {os_error_text(exc)}; it stays in "
                             f"{staging_dir(root)} and 'tesaiot recover {root}' seals it") from None
    return outputs


def _split(reader: ParquetReader, root: Path, name: str, spec: PartitionSpec) -> list[Path]:
    sinks: dict[str, _Sink] = {}
    pending = 0
    try:
        for table in reader.iter_tables():
            for key, rows in split_by_partition(table, spec):
                sink = sinks.get(key)
                if sink is None:
                    directory = root / key if key else root
                    directory.mkdir(parents=True, exist_ok=True)
                    final = directory / part_file_name(name)
                    sink = sinks[key] = _Sink(PartWriter(directory / f".{final.name}.tmp"), final)
                sink.add(rows)
                pending += rows.num_rows
            if pending >= SPLIT_PENDING_ROWS:
                for sink in sinks.values():
                    sink.writer.write_pending()
                pending = 0
        for sink in sinks.values():
            final_meta = finished_metadata(reader.metadata, start_ns=sink.start_ns, end_ns=sink.end_ns,
                                           labels=sorted(sink.labels), recording_id=new_recording_id())
            sink.writer.close(metadata_to_json(final_meta))
    except BaseException:
        for sink in sinks.values():
            sink.writer.abort()
            sink.writer.path.unlink(missing_ok=True)
        raise
    for sink in sinks.values():
        os.replace(sink.writer.path, sink.final)
        fsync_dir(sink.final.parent)
    return [sink.final for sink in sinks.values()]


# -- recovery ----------------------------------------------------------------------------------


def staged_names(root: Path) -> list[str]:
    """Names of every staged file, sealed or not (live ones included), sorted."""
    staging = staging_dir(root)
    if not staging.is_dir():
        return []
    names = set()
    for entry in staging.iterdir():
        text = entry.name.removesuffix(PARTIAL_SUFFIX)
        if text.endswith(STAGED_SUFFIX) and not text.startswith("."):
            names.add(text.removesuffix(STAGED_SUFFIX))
    return sorted(names)


def leftovers(root: Path) -> list[str]:
    """Staged files no live recorder holds: what a crash left for :func:`recover_dataset`."""
    return [name for name in staged_names(root) if not is_live(root, name)]


def recover_dataset(root: Path) -> RecoverResult:
    """Seal every staged file a crash left in ``_tesaiot/staging/`` into its partitions.

    Files a live recorder is writing are left alone. Raises :class:`RecordingError`.
    """
    spec = dataset_spec(root)
    sealed = live = messages = 0
    for name in staged_names(root):
        try:
            lock = StagingLock.acquire(lock_path(root, name))
        except OSError as exc:
            raise RecordingError(f"cannot lock {lock_path(root, name)}: {os_error_text(exc)}") from None
        if lock is None:
            live += 1
            continue
        try:
            staged = staged_path(root, name)
            partial = staged.with_name(staged.name + PARTIAL_SUFFIX)
            if partial.is_dir():
                recover_parquet(staged)
            if staged.exists():
                with ParquetReader.open(staged) as reader:
                    rows = reader.count()
                seal_staged(root, staged, spec)
                messages += rows
                sealed += 1
        finally:
            lock.release(remove=True)
    notes = []
    if sealed:
        notes.append(f"{sealed} file(s) left in {CONTROL_DIR}/staging/ sealed into their partitions")
    if live:
        notes.append(f"{live} file(s) still being recorded, left alone")
    if not sealed:
        return RecoverResult(root, root, "nothing", 0, detail="; ".join(notes) or f"{root} has nothing unsealed")
    return RecoverResult(root, root, "sealed", messages, detail="; ".join(notes))


def remove_staged(root: Path, name: str) -> None:
    """Delete a staged file and its journal (a recording that received nothing). Never raises."""
    staged = staged_path(root, name)
    shutil.rmtree(staged.with_name(staged.name + PARTIAL_SUFFIX), ignore_errors=True)
    try:
        staged.unlink(missing_ok=True)
    except OSError:
        pass
