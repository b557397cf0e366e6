"""File helpers every format shares: durable renames, safe removal, error texts, paths.

No pyarrow here. The one write-to-a-temporary-name-then-rename sequence lives here
(:func:`temp_path` + :func:`commit_temp`), so a file either exists complete or not at all;
and the one check of an output path every command that writes a file makes first
(:func:`check_output_path`), so a path that cannot be written gets the same one line and
exit code 5 everywhere, with the user's own path, before anything is read or connected.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from pathlib import Path

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.model import PARTIAL_SUFFIX
from tesaiot_cli.recording.storage import is_remote

# pyarrow's I/O errors: their text (their strerror too) names the (temporary) file
# and ends with the system's reason: "Failed to open local file '.o.parquet.2c06.tmp'.
# Detail: [errno 13] Permission denied".
_ARROW_ERRNO = re.compile(r"\[errno (\d+)\]", re.IGNORECASE)


def os_error_text(exc: OSError) -> str:
    """A short reason for an OSError, with a hint for the usual disk problems.

    Only the system's reason ("Permission denied"), never the file name the error came
    with: that may be an internal temporary name the user never gave."""
    found = _ARROW_ERRNO.findall(str(exc))
    if found:
        number: int | None = int(found[-1])
        reason = os.strerror(int(found[-1]))
    else:
        number = exc.errno
        reason = exc.strerror or str(exc) or type(exc).__name__
    if number in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (the disk is full)"
    if number == errno.EFBIG:
        return f"{reason} (a file size limit was reached)"
    return reason


def check_output_path(path: Path, *, directory: bool = False) -> None:
    """Raise :class:`RecordingError` (exit 5) unless ``path`` can be written: the rule for
    every output (record, simulate --record, convert, export, detect --to, plot -o,
    recover --output), checked before anything is read or connected.

    Refused, each in one line that names ``path`` as the user gave it: a parent directory
    that does not exist, a parent that is a file (or a device), a directory that cannot be
    written (permissions, read-only, immutable: found by creating and removing a hidden
    file there, since root passes every permission check), and ``path`` itself being a
    directory. ``directory``: ``path`` is a dataset directory, which may exist (it is then
    checked for writing) but not as a file. An existing device or pipe (``/dev/null``) is
    written in place and is not refused here."""
    if is_remote(path):
        return  # object storage: the bucket is checked when the writer opens
    parent = path.parent
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:  # a component of the parent is a file
        mode = None
    except OSError as exc:
        raise RecordingError(f"cannot write {path}: {os_error_text(exc)}") from None
    if mode is not None and stat.S_ISDIR(mode) and not directory:
        raise RecordingError(f"cannot write {path}: it is a directory")
    if mode is not None and not stat.S_ISDIR(mode) and directory:
        raise RecordingError(f"cannot write {path}: it is a file, and a dataset is a directory")
    if mode is not None and not stat.S_ISDIR(mode) and not stat.S_ISREG(mode):
        return  # a device or a pipe: written in place
    _check_parent(path, parent)
    _probe(path, path if mode is not None and directory else parent)


def _check_parent(path: Path, parent: Path) -> None:
    for ancestor in (parent, *parent.parents):
        try:
            mode = os.stat(ancestor).st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            raise RecordingError(f"cannot write {path}: {os_error_text(exc)}") from None
        if stat.S_ISDIR(mode):
            if ancestor != parent:
                raise RecordingError(f"cannot write {path}: the directory {parent} does not exist")
            return
        what = "a file" if stat.S_ISREG(mode) else "a device or a pipe"
        raise RecordingError(f"cannot write {path}: {ancestor} is {what}, not a directory")
    raise RecordingError(f"cannot write {path}: the directory {parent} does not exist")


def _probe(path: Path, directory: Path) -> None:
    """Create and remove a hidden file in ``directory``: the only sure test of writing."""
    probe = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise RecordingError(f"cannot write {path}: the directory {directory} is not writable "
                             f"({os_error_text(exc)})") from None
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as exc:
        raise RecordingError(f"cannot write {path}: {os_error_text(exc)}") from None


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


# The temporary names handed out in this process and not yet renamed into place: what
# remove_unfinished() deletes after an interrupt.
_UNFINISHED: set[Path] = set()


def temp_path(target: Path) -> Path:
    """A hidden temporary name next to ``target`` (``.NAME.RANDOM.tmp``): written first,
    then renamed by :func:`commit_temp`. Hidden, so dataset readers and globs skip it."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
    _UNFINISHED.add(tmp)
    return tmp


def commit_temp(tmp: Path, target: Path) -> None:
    """Rename the complete, fsynced ``tmp`` to ``target`` and make the rename durable.
    Raises OSError."""
    os.replace(tmp, target)
    _UNFINISHED.discard(tmp)
    fsync_dir(target.parent)


def remove_unfinished() -> None:
    """Delete the temporary files of :func:`temp_path` that were neither renamed into place
    nor removed: what Ctrl+C or SIGTERM can leave when it lands between a writer's making
    its file and the code that would discard it. For a one-shot command that stops
    (``cliutil.sigterm_unwinds``). Best effort: a file that cannot be removed stays."""
    for tmp in list(_UNFINISHED):
        _UNFINISHED.discard(tmp)
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass


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


def remove_tree(path: Path) -> None:
    """Delete the directory ``path`` (a crash leftover ``--force`` discards) and what it
    holds. Raises :class:`RecordingError`."""
    import shutil

    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise RecordingError(f"cannot remove {path}: {os_error_text(exc)}") from None


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
