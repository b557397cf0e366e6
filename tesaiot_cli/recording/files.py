"""File helpers every format shares: durable renames, safe removal, error texts, paths.

No pyarrow here. The one write-to-a-temporary-name-then-rename sequence lives here
(:func:`temp_path` + :func:`commit_temp`), so a file either exists complete or not at all.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.model import PARTIAL_SUFFIX
from tesaiot_cli.recording.storage import is_remote


def os_error_text(exc: OSError) -> str:
    """A short reason for an OSError, with a hint for the usual disk problems."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (the disk is full)"
    if exc.errno == errno.EFBIG:
        return f"{reason} (a file size limit was reached)"
    return reason


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in ``directory`` durable (best effort where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def size_or_zero(path: Path) -> int:
    """The size of ``path`` in bytes; 0 while it does not exist (yet), or cannot be read."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def temp_path(target: Path) -> Path:
    """A hidden temporary name next to ``target`` (``.NAME.RANDOM.tmp``): written first,
    then renamed by :func:`commit_temp`. Hidden, so dataset readers and globs skip it."""
    return target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")


def commit_temp(tmp: Path, target: Path) -> None:
    """Rename the complete, fsynced ``tmp`` to ``target`` and make the rename durable.
    Raises OSError."""
    os.replace(tmp, target)
    fsync_dir(target.parent)


def write_file_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary name, fsync, rename. Raises OSError."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        commit_temp(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_regular_file(path: Path) -> None:
    """Delete ``path`` if it exists, but only a regular file (or a link): never a directory,
    a device or a pipe that happens to be named as an output (as root, ``record /dev/null
    --force`` must not delete the device). Raises :class:`RecordingError` or OSError."""
    if path.is_dir():
        raise RecordingError(f"{path} is a directory: not removing it")
    if path.exists() and not path.is_symlink() and not path.is_file():
        raise RecordingError(f"{path} is not a regular file (a device or a pipe?): not removing it")
    path.unlink(missing_ok=True)


def check_regular_file(path: Path) -> None:
    """Raise :class:`RecordingError` unless ``path`` is a regular file.

    A directory is not a recording, and reading a FIFO or a device (``/dev/zero``) would
    block or never end: both get a clear error instead.
    """
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise RecordingError(f"recording not found: {path}") from None
    except OSError as exc:
        raise RecordingError(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise RecordingError(f"{path} is a directory, not a recording")
    if not stat.S_ISREG(mode):
        raise RecordingError(f"{path} is not a regular file (a pipe or a device?): a recording is a file")


def partial_dir(path: Path) -> Path:
    """Where the crash-safe writer keeps ``path`` until it is sealed."""
    return path.with_name(path.name + PARTIAL_SUFFIX)


def strip_partial(path: Path) -> Path:
    """``out.parquet.partial`` (a crash leftover named directly) means ``out.parquet``."""
    if path.suffix == PARTIAL_SUFFIX:
        return path.with_suffix("")
    return path


def is_dataset_path(path: Path) -> bool:
    """Whether ``path`` names a dataset: a directory (not a ``.partial`` crash leftover)
    of Parquet files, as ``record --workers`` / ``--share`` or a directory name write.
    On object storage, ``s3://bucket/prefix`` (a key without a suffix) names one."""
    if is_remote(path):
        return not path.suffix
    return path.is_dir() and path.suffix != PARTIAL_SUFFIX
