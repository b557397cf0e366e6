"""Object storage for recordings: ``s3://bucket/key`` locations through ``pyarrow.fs``.

A recording argument is a local path, or ``s3://bucket/key`` (one file: the key ends in a
recording suffix) or ``s3://bucket/prefix`` (a dataset: no suffix, or a trailing ``/``).
The CLI gets such an argument as a :class:`pathlib.Path`, which folds ``s3://`` into
``s3:/``; :func:`location` turns either spelling into an :class:`S3Path`, a ``Path`` that
prints itself as ``s3://...`` and knows its bucket and key, so the commands' messages name
it as the user wrote it.

The settings (endpoint, region, profile, retry budget) are resolved from the environment by
the CLI (:func:`resolve_options`, :func:`configure`); nothing here reads ``os.environ``.
Credentials are the AWS SDK's own chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, ``AWS_PROFILE`` and ``~/.aws``, instance roles). pyarrow's
``S3FileSystem`` does not read ``AWS_ENDPOINT_URL`` (up to 26 at least), so it is passed as
``endpoint_override``.

Errors from pyarrow are translated here, at the boundary: a refused credential is an
:class:`AuthError` (exit 4), a missing bucket or key a :class:`RecordingError` (exit 5), a
network error is retried with the reconnect backoff the MQTT session uses
(:data:`tesaiot_cli.mqtt.backoff.SESSION_BACKOFF`) until ``retry_s`` has passed, then a
:class:`RecordingError` saying what was not done. pyarrow is imported only when a remote
location is used.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PosixPath
from typing import Any, TypeVar

from tesaiot_cli.errors import AuthError, ConfigError, RecordingError

SCHEME = "s3://"
OTHER_SCHEMES = ("gs:/", "gcs:/", "abfs:/", "abfss:/", "az:/", "hdfs:/")
DEFAULT_RETRY_S = 30.0
DEFAULT_SEGMENT_S = 5.0  # a recording's open part is closed and uploaded this often
# Phrases of the AWS SDK's errors (as pyarrow words them), lower case.
_AUTH_WORDS = ("access_denied", "accessdenied", "invalidaccesskeyid", "signaturedoesnotmatch",
               "invalidclienttokenid", "expiredtoken", "invalidtoken", "forbidden", "http response code: 403",
               "the security token", "not authorized")
_MISSING_BUCKET_WORDS = ("nosuchbucket", "no_such_bucket", "bucket does not exist")
_NETWORK_WORDS = ("curlcode", "couldn't connect", "could not connect", "connection refused", "network_connection",
                  "timed out", "timeout", "connection reset", "failed to connect", "broken pipe", "unreachable",
                  "empty reply", "recv failure", "send failure", "service_unavailable", "slowdown",
                  "http response code: 5", "internalerror")

T = TypeVar("T")


class S3Path(PosixPath):
    """``s3://bucket/key`` as a :class:`~pathlib.Path`: prints itself with both slashes and
    has :attr:`bucket`, :attr:`key` and :attr:`url`. Local-disk methods (``exists``,
    ``open``) must not be used on it: the recording API routes it to :mod:`remote`."""

    def __str__(self) -> str:
        text = super().__str__()
        return SCHEME + text[len("s3:/"):] if text.startswith("s3:/") else text

    @property
    def bucket(self) -> str:
        return self.parts[1] if len(self.parts) > 1 else ""

    @property
    def key(self) -> str:
        """The object key (a dataset's prefix, without a trailing ``/``)."""
        return "/".join(self.parts[2:])

    @property
    def url(self) -> str:
        return str(self)

    @property
    def fs_path(self) -> str:
        """``bucket/key``, as pyarrow's S3 filesystem names it."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket


def is_remote(path: Path | str) -> bool:
    """Whether ``path`` names object storage (``s3://``, or ``s3:/`` as ``Path`` folds it)."""
    return isinstance(path, S3Path) or str(path).startswith("s3:/")


def location(path: Path | str) -> Path:
    """``path`` as given, or an :class:`S3Path` for ``s3://bucket/key``.

    Raises :class:`ConfigError` for an ``s3://`` URL without a bucket."""
    if isinstance(path, S3Path):
        return path
    text = str(path)
    if not text.startswith("s3:/"):
        return path if isinstance(path, Path) else Path(path)
    rest = text[len("s3://"):] if text.startswith("s3://") else text[len("s3:/"):]
    bucket = rest.split("/", 1)[0]
    if not bucket:
        raise ConfigError(f"{text}: an s3:// location needs a bucket: s3://BUCKET/KEY")
    return S3Path("s3:/" + rest.strip("/"))


def remote(path: Path) -> S3Path | None:
    """``path`` as an :class:`S3Path` when it names object storage, else None. Raises
    :class:`ConfigError` for the object-storage schemes not supported (yet): ``gs://``,
    ``abfs://``, ``hdfs://``."""
    if not is_remote(path):
        text = str(path)
        if text.startswith(OTHER_SCHEMES):
            raise ConfigError(f"{text.replace(':/', '://', 1)}: only s3:// object storage is supported (and local "
                              "paths)")
        return None
    found = location(path)
    assert isinstance(found, S3Path)
    return found


# -- settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class StorageOptions:
    """How to reach object storage. ``endpoint``: a full URL (``http://127.0.0.1:9000`` for
    MinIO, moto, Ceph, R2); ``retry_s``: how long a network error is retried."""

    endpoint: str | None = None
    region: str | None = None
    retry_s: float = DEFAULT_RETRY_S
    segment_s: float = DEFAULT_SEGMENT_S


_options = StorageOptions()
_filesystem: Any = None


def resolve_options(env: Mapping[str, str]) -> StorageOptions:
    """The settings from an environment mapping: ``AWS_ENDPOINT_URL_S3`` (else
    ``AWS_ENDPOINT_URL``), ``AWS_REGION`` (else ``AWS_DEFAULT_REGION``), ``AWS_PROFILE``,
    ``TESAIOT_S3_RETRY_S`` (seconds a network error is retried; default 30),
    ``TESAIOT_S3_SEGMENT_S`` (how often a recording's open part is uploaded; default 5).
    Raises :class:`ConfigError`."""
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
    if endpoint is not None and "://" not in endpoint:
        raise ConfigError(f"AWS_ENDPOINT_URL {endpoint!r}: give a URL, e.g. http://127.0.0.1:9000")
    retry_s = _seconds(env, "TESAIOT_S3_RETRY_S", DEFAULT_RETRY_S, zero=True)
    segment_s = _seconds(env, "TESAIOT_S3_SEGMENT_S", DEFAULT_SEGMENT_S, zero=False)
    return StorageOptions(endpoint=endpoint, region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                          retry_s=retry_s, segment_s=segment_s)


def _seconds(env: Mapping[str, str], name: str, default: float, *, zero: bool) -> float:
    text = env.get(name, "")
    try:
        value = float(text) if text else default
    except ValueError:
        raise ConfigError(f"{name} {text!r}: give a number of seconds") from None
    if not (value >= 0 if zero else value > 0) or value == float("inf"):
        raise ConfigError(f"{name} {text!r}: give a number of seconds, {'0 or more' if zero else 'more than 0'}")
    return value


_environment: dict[str, str] | None = None


def configure(settings: StorageOptions) -> None:
    """Set the process's storage settings."""
    global _options, _filesystem, _environment
    _options, _filesystem, _environment = settings, None, None


def configure_environment(env: Mapping[str, str]) -> None:
    """Keep the ``AWS_*`` and ``TESAIOT_S3_*`` variables of ``env`` (the CLI passes its
    environment, once, before a command runs): resolved by :func:`resolve_options` when
    object storage is first used, so a bad value is that command's one-line error."""
    global _environment, _filesystem
    _environment = {k: v for k, v in env.items() if k.startswith(("AWS_", "TESAIOT_S3_"))}
    _filesystem = None


def options() -> StorageOptions:
    """The settings in force (resolving the environment the CLI passed). Raises :class:`ConfigError`."""
    global _options, _environment
    if _environment is not None:
        _options, _environment = resolve_options(_environment), None
    return _options


def filesystem() -> Any:
    """The process's ``pyarrow.fs.S3FileSystem`` (made on first use)."""
    global _filesystem
    settings = options()
    if _filesystem is None:
        from pyarrow import fs  # type: ignore[import-untyped]

        kwargs: dict[str, Any] = {"retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=2),
                                  "connect_timeout": 3.0, "request_timeout": 20.0}
        if settings.endpoint:
            kwargs["endpoint_override"] = settings.endpoint
            kwargs["scheme"] = settings.endpoint.split("://", 1)[0]
            kwargs["force_virtual_addressing"] = False
        if settings.region:
            kwargs["region"] = settings.region
        _filesystem = fs.S3FileSystem(**kwargs)
    return _filesystem


# -- errors and retries ------------------------------------------------------------------


def is_network_error(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, OSError) and any(word in text for word in _NETWORK_WORDS) and not _is_auth(text)


def _is_auth(text: str) -> bool:
    return any(word in text for word in _AUTH_WORDS)


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def translate(exc: BaseException, doing: str, where: S3Path) -> Exception:
    """One of ours for a pyarrow/AWS error while ``doing`` (e.g. "write") ``where``."""
    text = str(exc).lower()
    if _is_auth(text):
        return AuthError(f"object storage refused the credentials for {where.url} ({doing}): check "
                         "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if any(word in text for word in _MISSING_BUCKET_WORDS):
        return RecordingError(f"cannot {doing} {where.url}: the bucket {where.bucket!r} does not exist")
    return RecordingError(f"cannot {doing} {where.url}: {_reason(exc)}")


def with_retries(action: Callable[[], T], *, doing: str, where: S3Path,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """Run ``action``; retry a network error with the reconnect backoff until the retry
    budget (``TESAIOT_S3_RETRY_S``) is spent. Raises :class:`AuthError` or
    :class:`RecordingError` (translated)."""
    retry_s = options().retry_s
    deadline = clock() + retry_s
    failures = 0
    while True:
        try:
            return action()
        except OSError as exc:
            if not is_network_error(exc):
                raise translate(exc, doing, where) from None
            from tesaiot_cli.mqtt.backoff import SESSION_BACKOFF

            delay = SESSION_BACKOFF.delay(failures)
            failures += 1
            if clock() + delay > deadline:
                raise RecordingError(f"cannot {doing} {where.url}: object storage unreachable "
                                     f"({failures} attempts in {retry_s:g} s): {_reason(exc)}") from None
            sleep(delay)


# -- operations ----------------------------------------------------------------------------


def object_size(where: S3Path) -> int | None:
    """The object's size in bytes, None when there is no such object. Raises as :func:`with_retries`."""
    from pyarrow import fs

    info = with_retries(lambda: filesystem().get_file_info(where.fs_path), doing="read", where=where)
    return int(info.size) if info.type == fs.FileType.File else None


def check_bucket(where: S3Path, doing: str) -> None:
    """Raise :class:`RecordingError` when the bucket does not exist (or :class:`AuthError`)."""
    from pyarrow import fs

    bucket = S3Path(f"s3:/{where.bucket}")
    info = with_retries(lambda: filesystem().get_file_info(where.bucket), doing=doing, where=bucket)
    if info.type == fs.FileType.NotFound:
        raise RecordingError(f"cannot {doing} {where.url}: the bucket {where.bucket!r} does not exist")


def list_objects(prefix: S3Path, *, uploads: bool = False) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix/``, sorted; [] when there is none. An
    upload's temporary object (:func:`upload`) is not one of them, unless ``uploads`` (for
    deleting what a killed writer left)."""
    from pyarrow import fs

    def listing() -> list[Any]:
        selector = fs.FileSelector(prefix.fs_path, recursive=True, allow_not_found=True)
        return list(filesystem().get_file_info(selector))

    infos = with_retries(listing, doing="list", where=prefix)
    cut = len(prefix.bucket) + 1
    return sorted((info.path[cut:], int(info.size)) for info in infos
                  if info.type == fs.FileType.File and (uploads or not info.base_name.startswith(UPLOADING)))


def child(prefix: S3Path, key: str) -> S3Path:
    """The object ``key`` (relative to the bucket) in ``prefix``'s bucket."""
    return S3Path(f"s3:/{prefix.bucket}/{key}")


# An upload's temporary object: _tesaiot-upload-<random>-<name>.part beside its final name,
# hidden from readers of the prefix (Hive, Spark, Athena and pyarrow.dataset skip "_" names;
# `**/*.parquet` globs do not match ".part").
UPLOADING = "_tesaiot-upload-"


# Temporary objects an upload could not delete (see upload), said by the command at its end.
_left_behind: list[str] = []


def upload(local: Path, where: S3Path, *, chunk: int = 8 * 1024 * 1024) -> int:
    """Copy the local file to ``where``: the object appears only once complete. Returns its
    size. Raises as :func:`with_retries`.

    The bytes go to a temporary object first, then a server-side copy (S3 CopyObject, all or
    nothing) makes ``where``, and the temporary object is deleted: pyarrow's output stream
    completes its upload when it is closed, also when an error or Ctrl+C interrupts the
    writing, so writing ``where`` directly could leave a part of the file under its name."""
    head, _, name = where.key.rpartition("/")
    temp = child(where, f"{head}/" * bool(head) + f"{UPLOADING}{secrets.token_hex(4)}-{name}.part")

    def put() -> int:
        size = 0
        with open(local, "rb") as source, filesystem().open_output_stream(temp.fs_path, metadata={}) as sink:
            while block := source.read(chunk):
                sink.write(block)
                size += len(block)
        return size

    try:
        size = with_retries(put, doing="write", where=where)
        with_retries(lambda: filesystem().copy_file(temp.fs_path, where.fs_path), doing="write", where=where)
    except BaseException as failure:  # not caught: the temporary object goes, then the failure goes on
        try:
            delete([temp])
        except (RecordingError, AuthError) as cleanup:
            if isinstance(failure, RecordingError):  # one line that says both
                raise RecordingError(f"{failure}; the temporary object {temp.url} may be left ({cleanup})") from None
            _left_behind.append(f"{temp.url} ({cleanup})")  # said on the way out (cli_errors)
        raise
    try:
        delete([temp])
    except (RecordingError, AuthError) as cleanup:  # AuthError: a credential that may write, not delete
        # The object is stored: failing the upload would count stored messages as lost. The
        # hidden temporary (a "_" name, no .parquet suffix) stays, and is said on the way out
        # (left_behind); the seal or recover that deletes a recording's parts deletes it too.
        _left_behind.append(f"{temp.url} ({cleanup})")
    return size



def left_behind() -> list[str]:
    """The temporary objects left on the store since the last call (each with the reason),
    for the command to say at its end; the list is emptied."""
    taken = list(_left_behind)
    _left_behind.clear()
    return taken


def output_exists(target: Path) -> bool:
    """Whether an output file is in the way: the local file, or the object on ``s3://``.
    Raises as :func:`with_retries` (a missing bucket: :class:`RecordingError`)."""
    where = remote(target)
    if where is None:
        return target.exists()
    check_bucket(where, "write")
    return object_size(where) is not None


@contextmanager
def staged_output(target: Path) -> Iterator[Path]:
    """Where a one-shot command (``export OUT``, ``plot -o``) writes its output file: the
    local ``target`` itself; for ``s3://`` a file in a local temporary directory, uploaded
    under the key by :func:`upload` when the block ends without an error, so nothing is under
    the final name unless complete. The temporary directory is removed in every case.
    Raises as :func:`with_retries`."""
    where = remote(target)
    if where is None:
        yield target
        return
    directory = Path(tempfile.mkdtemp(prefix="tesaiot-s3-"))
    try:
        local = directory / where.name
        yield local
        upload(local, where)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def download(where: S3Path, local: Path, *, chunk: int = 8 * 1024 * 1024) -> int:
    """Copy the object to a local file. Raises as :func:`with_retries` (a missing object:
    :class:`RecordingError` "recording not found")."""

    def get() -> int:
        size = 0
        with filesystem().open_input_stream(where.fs_path) as source, open(local, "wb") as sink:
            while block := source.read(chunk):
                sink.write(block)
                size += len(block)
        return size

    try:
        return with_retries(get, doing="read", where=where)
    except RecordingError as exc:
        if "not found" in str(exc).lower() or "path does not exist" in str(exc).lower():
            raise RecordingError(f"recording not found: {where.url}") from None
        raise


def delete(objects: list[S3Path]) -> None:
    """Delete the objects (a missing one is fine). Raises as :func:`with_retries`."""
    for where in objects:
        def remove(where: S3Path = where) -> None:
            try:
                filesystem().delete_file(where.fs_path)
            except FileNotFoundError:
                pass

        with_retries(remove, doing="delete", where=where)
