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
:func:`~tesaiot_cli.recording.dataset.seal.recover_dataset` redoes the split. This module
holds the layout: paths, ``dataset.json``, creating a dataset, the staging locks; sealing
is in :mod:`~tesaiot_cli.recording.dataset.seal`.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.recording.dataset.partition import DEFAULT_SPEC, PartitionSpec, parse_partition
from tesaiot_cli.recording.files import check_output_path, fsync_dir, os_error_text, partial_dir, write_file_atomic
from tesaiot_cli.recording.model import PARTIAL_SUFFIX

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Linux/macOS: live files cannot be told apart
    fcntl = None  # type: ignore[assignment]

DATASET_FORMAT = "tesaiot-dataset"
DATASET_VERSION = 1
CONTROL_DIR = "_tesaiot"
STAGED_SUFFIX = ".staged"
PART_PREFIX = "part-"

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
    ``root`` is a non-empty directory that is not a dataset, or a dataset with another
    partitioning than ``partition``; :class:`RecordingError` when it cannot be created or
    written (:func:`~tesaiot_cli.recording.files.check_output_path`: also a file at ``root``).
    """
    check_output_path(root, directory=True)
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
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
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


# -- staged files ----------------------------------------------------------------------------


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
    """Staged files no live recorder holds: what a crash left for ``tesaiot recover``
    (:func:`~tesaiot_cli.recording.dataset.seal.recover_dataset`)."""
    return [name for name in staged_names(root) if not is_live(root, name)]


def remove_staged(root: Path, name: str) -> None:
    """Delete a staged file and its journal (a recording that received nothing). Never raises."""
    staged = staged_path(root, name)
    shutil.rmtree(partial_dir(staged), ignore_errors=True)
    try:
        staged.unlink(missing_ok=True)
    except OSError:
        pass
