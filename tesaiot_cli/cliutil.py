"""Shared pieces of the CLI layer: exit codes, error reporting, signals, console output,
and the connection options every networked command takes.

Only the CLI layer (this module, ``cli.py`` and ``commands/``) prints or exits.
"""

from __future__ import annotations

import functools
import inspect
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, Optional, TypeVar

import typer

from tesaiot_cli.errors import (
    AuthError,
    ConfigError,
    ConnectError,
    EmptySelection,
    Interrupted,
    RecordingError,
    TesaiotError,
)
from tesaiot_cli.textfmt import plural

# Exit codes, documented in the README ("Exit codes").
EXIT_OK = 0
EXIT_CONFIG = 1  # invalid option value, URL, token, topic filter
EXIT_CONNECT = 3  # broker unreachable: refused, DNS, TLS, timeout
EXIT_AUTH = 4  # authentication or authorization refused
EXIT_RECORDING = 5  # recording missing, unreadable, corrupt, disk full
EXIT_TIMEOUT = 6  # listen/record --timeout ran out before --count messages
EXIT_UNDELIVERED = 7  # some published messages were not delivered
EXIT_THRESHOLD = 8  # score --fail-under: a threshold was not met
EXIT_EMPTY_SELECTION = 9  # no message matches --topic/--device/--start/--end
EXIT_INTERNAL = 70  # a bug: please report it

EXIT_CODES: list[tuple[type[TesaiotError], int]] = [
    (AuthError, EXIT_AUTH),
    (ConnectError, EXIT_CONNECT),
    (RecordingError, EXIT_RECORDING),
    (ConfigError, EXIT_CONFIG),
    (EmptySelection, EXIT_EMPTY_SELECTION),
    (TesaiotError, EXIT_CONFIG),
]

SECRET_ENV_WORDS = ("TOKEN", "PASSWORD", "SECRET", "KEY")


def exit_code_for(error: TesaiotError) -> int:
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return EXIT_CONFIG


def err(text: str) -> None:
    """One line on stderr, prefixed with the program name."""
    typer.echo(f"tesaiot: {text}", err=True)


def warn(text: str) -> None:
    err(f"warning: {text}")


def exit_if_protocol_broken(count: int, broker: str, *, what: str) -> None:
    """End a receiving run in which the broker broke the MQTT protocol ``count`` times (each
    closed the connection, said when it happened): one line with the count, exit
    ``EXIT_CONNECT``. ``what`` is what did not happen to the broken packets ("recorded")."""
    if count:
        err(f"the broker at {broker} broke the MQTT protocol {plural(count, 'time')}: each time the connection was "
            f"closed (the lines above say why) and what that packet carried was not {what}")
        raise typer.Exit(EXIT_CONNECT)


@contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the core's exceptions into one stderr line and a documented exit code. On the
    way out, however the command ended, it says which temporary objects an upload to
    ``s3://`` could not delete (the recording is whole; they only cost storage)."""
    try:
        try:
            yield
        finally:
            _say_left_behind()
    except Interrupted:
        raise typer.Exit(EXIT_OK) from None
    except TesaiotError as exc:
        err(f"error: {exc}")
        raise typer.Exit(exit_code_for(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_OK) from None
    except BrokenPipeError:
        _silence_broken_stdout()
        raise typer.Exit(EXIT_OK) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # noqa: BLE001 - the last line of defence: no traceback
        err(f"internal error: {type(exc).__name__}: {exc} (please report this)")
        raise typer.Exit(EXIT_INTERNAL) from None


def _say_left_behind() -> None:
    storage = sys.modules.get("tesaiot_cli.recording.storage")  # not imported: nothing was uploaded
    if storage is None:
        return
    for leftover in storage.left_behind():
        warn(f"could not delete the temporary upload {leftover}: the recording is whole; that hidden "
             "object only costs storage: delete it")


@contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """For a command that writes one file and then ends (convert, export, detect RECORDING,
    plot, recover): inside, SIGTERM raises ``SystemExit(143)`` in the main thread instead
    of killing the process where it stands, so the clean-up on the way out runs (the
    temporary and spill files of the unfinished output are removed) and the exit status
    is what the signal's default gives, 128 + 15. After SIGTERM or Ctrl+C, a temporary
    file the interrupt caught before its writer could discard it is removed too."""
    from tesaiot_cli.recording.files import remove_unfinished

    def unwind(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, unwind) if main else None
    try:
        yield
    except (SystemExit, KeyboardInterrupt):
        remove_unfinished()
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _silence_broken_stdout() -> None:
    # The reader went away (`| head`): point stdout at /dev/null so the final flush is quiet.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


class StopSignals:
    """SIGINT and SIGTERM set ``event`` instead of raising, while inside the ``with``.

    A second Ctrl+C while stopping raises KeyboardInterrupt, for a user in a hurry.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        self.event.set()

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def stderr_is_tty() -> bool:
    return sys.stderr.isatty()


def use_color(stream: Any, env: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if env.get("NO_COLOR"):
        return False
    if env.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def check_recording_path(path: Path) -> None:
    """A directory given as a recording must be a tesaiot dataset (``_tesaiot/dataset.json``):
    say it is not one, instead of "partitioned by None" or an error about one random file.
    Raises :class:`RecordingError`."""
    from tesaiot_cli.recording import is_dataset_path
    from tesaiot_cli.recording.storage import is_remote

    if is_remote(path) or not is_dataset_path(path):  # object storage: the reader checks its copy
        return
    from tesaiot_cli.recording.dataset.layout import CONTROL_DIR, read_dataset_info

    if read_dataset_info(path) is None:
        raise RecordingError(f"{path} is a directory but not a tesaiot dataset (no {CONTROL_DIR}/dataset.json): "
                             "give a recording file (.parquet, .jsonl), or a directory written by "
                             "'tesaiot record DIR'")


class StatusLine:
    """One live status line on stderr, shared by every command that shows progress.

    On a terminal the line is rewritten in place (``\\r``, cut to the terminal's width so
    it never wraps) at most every ``tty_period_s``; off a terminal (a log file, a pipe)
    it is printed as a plain ``tesaiot: LABEL: ...`` line every ``plain_period_s``, or not
    at all when that is None. Other output goes through :meth:`say` (or call
    :meth:`clear` first) so that it never lands in the middle of the line. A context
    manager: leaving it clears the line.

    Typical use::

        with StatusLine("recording") as status:
            while running:
                status.update(lambda: f"{count:,} messages")   # called only when due
    """

    def __init__(self, label: str = "", *, tty_period_s: float = 1.0, plain_period_s: float | None = None,
                 enabled: bool = True, stream: Any = None, clock: Callable[[], float] | None = None) -> None:
        import time

        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False
        self.period_s = tty_period_s if self.tty else plain_period_s
        self.enabled = enabled and self.period_s is not None
        self._clock = clock or time.monotonic
        self.started = self._clock()
        self._next = self.started + (self.period_s or 0.0)
        self._drawn = ""  # what is on the terminal now
        self._last = ""  # the last text shown

    def due(self) -> bool:
        """Whether a line is due now."""
        return self.enabled and self._clock() >= self._next

    def update(self, render: Callable[[], str]) -> bool:
        """Show ``render()`` if a line is due (``render`` is called only then). Returns whether it showed."""
        if not self.due():
            return False
        self.show(render())
        return True

    def show(self, text: str) -> None:
        """Show ``text`` now, and start the next period."""
        if not self.enabled:
            return
        self._next = self._clock() + (self.period_s or 0.0)
        self._last = text
        prefix = f"{self.label}: " if self.label else ""
        if self.tty:
            import shutil

            width = shutil.get_terminal_size((100, 24)).columns - 1
            line = (prefix + text)[:max(width, 20)]
            self._write(f"\r{line}\x1b[K")
            self._drawn = line
        else:
            self._write(f"tesaiot: {prefix}{text}\n")

    def clear(self) -> None:
        """Erase the line on a terminal (before other output)."""
        if self._drawn:
            self._write("\r\x1b[K")
            self._drawn = ""

    def redraw(self, text: str | None = None) -> None:
        """Draw the last line again (or ``text``) after other output cleared it."""
        if self.tty and self.enabled and (text or self._last):
            self.show(text or self._last)

    def say(self, text: str) -> None:
        """A ``tesaiot: TEXT`` line on stderr without breaking the status line."""
        self.clear()
        err(text)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            self.enabled = False  # stderr went away: the command goes on without a status line

    def __enter__(self) -> StatusLine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.clear()


class KeyPresses:
    """Single key presses from the terminal while inside the ``with`` (e.g. space to pause).

    When stdin is a terminal it is put in cbreak mode (keys arrive one by one, unechoed;
    Ctrl+C still signals) and restored on leaving; otherwise :meth:`read` always returns
    ``""``. Reading never blocks.
    """

    def __init__(self, stream: Any = None) -> None:
        self._stream = stream if stream is not None else sys.stdin
        self._fd: int | None = None
        self._saved: Any = None

    @property
    def active(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> KeyPresses:
        try:
            if not self._stream.isatty():
                return self
            import termios
            import tty

            fd = self._stream.fileno()
            if _in_background(fd):
                return self  # changing the terminal from the background would stop us (SIGTTOU)
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
            self._fd = fd
        except (AttributeError, ValueError, OSError, ImportError):
            self._fd = None  # no terminal control here: no keys, and nothing to restore
        return self

    def read(self) -> str:
        """The keys pressed since the last call (``""`` when none)."""
        if self._fd is None:
            return ""
        import select

        try:
            if not select.select([self._fd], [], [], 0)[0]:
                return ""
            return os.read(self._fd, 64).decode("utf-8", "replace")
        except OSError:
            return ""

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            import termios

            try:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            except (OSError, termios.error):
                pass
            self._fd = None


def _in_background(fd: int) -> bool:
    """Whether this process runs in the background of the terminal ``fd`` (``cmd &``)."""
    try:
        return os.tcgetpgrp(fd) != os.getpgrp()
    except OSError:
        return False  # not our controlling terminal: no job control on it, nothing to fear


def clock_text(seconds: float) -> str:
    """``0:07``, ``12:34``, ``1:02:03``: elapsed times and ETAs in status lines."""
    minutes, secs = divmod(int(max(seconds, 0.0) + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def print_event(kind: str, text: str) -> None:
    """Session events (disconnected / reconnecting / reconnected / warning) on stderr."""
    err(text if kind != "warning" else f"warning: {text}")


# -- environment ---------------------------------------------------------------------


def load_environment(env_file: Path | None) -> dict[str, str]:
    """``.env`` values under the real environment (environment wins); ``os.environ`` untouched.

    Warns when a ``.env`` holding secrets is readable by other users.
    """
    from dotenv import dotenv_values

    path = env_file if env_file is not None else Path(".env")
    values: dict[str, str] = {}
    if path.is_file():
        try:
            raw = dotenv_values(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read {path}: {exc}") from None
        values = {k: v for k, v in raw.items() if v is not None}
        _warn_if_exposed(path, values)
    elif env_file is not None:
        raise ConfigError(f"env file not found: {env_file}")
    values.update(os.environ)
    return values


def _warn_if_exposed(path: Path, values: Mapping[str, str]) -> None:
    if not any(word in key.upper() for key in values for word in SECRET_ENV_WORDS):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warn(f"{path} holds secrets and other users can read it: run 'chmod 600 {path}'")


# -- connection options shared by listen, simulate, record, replay ---------------------


@dataclass(frozen=True)
class ConnectionFlags:
    """The connection options as given on the command line (None: not given)."""

    broker: str | None = None
    host: str | None = None
    port: int | None = None
    tls: bool | None = None
    token: str | None = None
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    mqtt_version: str | None = None
    client_id: str | None = None
    keepalive: int | None = None
    connect_timeout: float | None = None
    env_file: Path | None = None

    def as_mapping(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "env_file"}


CONN = "Connection"
_CONNECTION_PARAMS: list[tuple[str, Any]] = [
    ("broker", Annotated[Optional[str], typer.Option("--broker", "-b", metavar="URL", help="Broker URL: mqtt://, mqtts://, ws:// or wss://host[:port][/path]. Env: MQTT_BROKER_URL. Default mqtt://localhost:1883, or the TESAIoT cloud when a token is set.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("host", Annotated[Optional[str], typer.Option("--host", metavar="HOST", help="Broker host (instead of, or overriding, the URL's). Env: MQTT_BROKER_HOST.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("port", Annotated[Optional[int], typer.Option("--port", "-p", metavar="PORT", help="Broker port. Env: MQTT_BROKER_PORT.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("tls", Annotated[Optional[bool], typer.Option("--tls/--no-tls", help="Use TLS with --host (mqtts). Env: MQTT_USE_TLS.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("token", Annotated[Optional[str], typer.Option("--token", metavar="TOKEN", help="TESAIoT API token (tesa_mqtt_...), sent as username and password. Prefer the env MQTT_API_TOKEN: a flag is visible to other users in the process list.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("username", Annotated[Optional[str], typer.Option("--username", "-u", metavar="USER", help="Username for brokers with password auth. Env: MQTT_USERNAME.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("password", Annotated[Optional[str], typer.Option("--password", metavar="PASSWORD", help="Password. Prefer the env MQTT_PASSWORD or .env; asked for on a terminal when --username is given without one.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("ca_file", Annotated[Optional[str], typer.Option("--ca-file", metavar="PEM", help="CA certificate (PEM) to verify the broker. Env: CA_CERT_PATH or MQTT_CA_CERT. Default: the system CAs.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("cert_file", Annotated[Optional[str], typer.Option("--cert-file", metavar="PEM", help="Client certificate (PEM) for mutual TLS.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("key_file", Annotated[Optional[str], typer.Option("--key-file", metavar="PEM", help="Client private key (PEM) for mutual TLS.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("insecure", Annotated[bool, typer.Option("--insecure", help="Do NOT verify the broker's TLS certificate (testing only; prints a warning).", rich_help_panel=CONN)]),  # noqa: E501
    ("mqtt_version", Annotated[Optional[str], typer.Option("--mqtt-version", metavar="VERSION", help="3.1.1 (default) or 5.", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("client_id", Annotated[Optional[str], typer.Option("--client-id", metavar="ID", help="MQTT client id. Env: MQTT_CLIENT_ID. Default: a unique id (tesaiot-<command>-<random>).", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("keepalive", Annotated[Optional[int], typer.Option("--keepalive", metavar="SECONDS", help="Keepalive in seconds (default 60).", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("connect_timeout", Annotated[Optional[float], typer.Option("--connect-timeout", metavar="SECONDS", help="Seconds to wait for the broker when connecting (default 10).", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
    ("env_file", Annotated[Optional[Path], typer.Option("--env-file", metavar="PATH", help="Read variables from this file (default: ./.env when present).", rich_help_panel=CONN, show_default=False)]),  # noqa: E501
]

F = TypeVar("F", bound=Callable[..., Any])


def with_connection_options(func: F) -> F:
    """Add the shared connection options to a Typer command.

    The command receives them bundled as one ``conn: ConnectionFlags`` argument, so the
    option definitions live here once instead of in every command.
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "conn"]
    names = [name for name, _ in _CONNECTION_PARAMS]
    extra = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=False if name == "insecure" else None,
                          annotation=annotation)
        for name, annotation in _CONNECTION_PARAMS
    ]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = ConnectionFlags(**{name: kwargs.pop(name, None) for name in names})
        return func(*args, conn=flags, **kwargs)

    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.default is not inspect.Parameter.empty else p for p in own]  # noqa: E501
    wrapper.__signature__ = signature.replace(parameters=params + extra)  # type: ignore[attr-defined]
    annotations = dict(getattr(func, "__annotations__", {}))
    annotations.pop("conn", None)
    annotations.update(dict(_CONNECTION_PARAMS))
    wrapper.__annotations__ = annotations
    return wrapper  # type: ignore[return-value]


def env_topics(env: Mapping[str, str]) -> list[str]:
    """The topic filter from MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC (listen, record), if set."""
    value = env.get("MQTT_SUBSCRIBE_TOPIC") or env.get("MQTT_TOPIC")
    return [value] if value else []


def resolve_settings(conn: ConnectionFlags, *, command: str, allow_token: bool = True,
                     session: str | None = None, env: Mapping[str, str] | None = None) -> Any:
    """Resolve the connection settings for ``command``; prompt for a password on a TTY.

    ``session``: a persistent session name (client id NAME, clean_session false).
    ``env``: the environment from :func:`load_environment`, when the command loaded it
    already (loading it again would repeat its warnings).
    Returns :class:`tesaiot_cli.config.ConnectionSettings`. Raises :class:`ConfigError`.
    """
    from dataclasses import replace

    from tesaiot_cli.config import Secret, resolve_connection

    if env is None:
        env = load_environment(conn.env_file)
    flags = conn.as_mapping()
    if session is not None:
        flags["session"] = session
    settings = resolve_connection(flags, env, client_prefix=f"tesaiot-{command}")
    if settings.token is not None and not allow_token:
        raise ConfigError(
            f"a TESAIoT API token may only subscribe, so '{command}' cannot publish with it: "
            "use device credentials (--username/--password or --cert-file/--key-file)"
        )
    if settings.username is not None and settings.password is None and sys.stdin.isatty():
        password = typer.prompt(f"Password for {settings.username}", hide_input=True, default="",
                                show_default=False)
        if password:
            settings = replace(settings, password=Secret(password))
    if settings.insecure:  # (on a plain URL --insecure is refused by resolve_connection)
        warn("TLS certificate verification is OFF (--insecure): the connection can be intercepted")
    for text in settings.unused:
        warn(text)
    return settings


PAUSE_KEY = " "
KEY_POLL_S = 0.05  # how often keys are read while a run can be paused


class Pause:
    """Space pauses and resumes a timed run on a terminal (``replay``, as ``ros2 bag play``).

    The replayer's clock leaves paused time out, so the schedule carries on where it was;
    while paused the connection is still served (``sleep`` is the session's wait).
    """

    def __init__(self, keys: KeyPresses, stop: StopSignals, status: StatusLine) -> None:
        self.keys = keys
        self.stop = stop
        self.status = status
        self.sleep: Callable[[float], object] = time.sleep
        self.paused_s = 0.0
        self.pauses = 0
        self._next_poll = 0.0

    def clock(self) -> float:
        return time.perf_counter() - self.paused_s

    def should_stop(self) -> bool:
        if self.keys.active:
            now = time.monotonic()
            if now >= self._next_poll:
                self._next_poll = now + KEY_POLL_S
                if PAUSE_KEY in self.keys.read():
                    self._pause()
        return self.stop.event.is_set()

    def _pause(self) -> None:
        began = time.perf_counter()
        self.pauses += 1
        self.status.show("PAUSED: space resumes, Ctrl+C stops")
        while not self.stop.event.is_set():
            self.sleep(0.1)
            if PAUSE_KEY in self.keys.read():
                break
        self.paused_s += time.perf_counter() - began
        self.status.show("resumed")
