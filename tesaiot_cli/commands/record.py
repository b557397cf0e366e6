"""``tesaiot record``: capture MQTT messages to a Parquet or JSONL recording, safely and fast.

The receive path does the least possible work: the session's network thread builds a
``Message`` and the writer appends it to a list; the writer's flusher thread converts
and writes in batches (see :mod:`tesaiot_cli.recording.buffered`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli import __version__
from tesaiot_cli.cliutil import (
    ConnectionFlags,
    StopSignals,
    cli_errors,
    err,
    print_event,
    resolve_settings,
    stderr_is_tty,
    warn,
    with_connection_options,
)
from tesaiot_cli.commands.info import human_bytes, human_duration
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message, validate_topic_filter

DEFAULT_TOPIC = "#"
TOKEN_DEFAULT_TOPIC = "device/+/telemetry/#"
STATUS_EVERY_S = 0.5
SUMMARY_TOPICS = 10

EPILOG = """\b
Examples:
  tesaiot record out.parquet --duration 60            # everything ('#') on localhost:1883
  tesaiot record run.jsonl -t 'device/+/telemetry/#' --count 1000
  MQTT_API_TOKEN=tesa_mqtt_... tesaiot record cloud.parquet   # TESAIoT cloud, device/+/telemetry/#
  tesaiot record night.parquet --qos 1 --session night-rec    # no loss across reconnects
  tesaiot record out.parquet --force                  # overwrite out.parquet
  tesaiot info out.parquet
"""


@with_connection_options
def record(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Output file: .parquet or .jsonl (or use --format).", show_default=False)],  # noqa: E501
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Topic filter, repeatable. Env: MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC. Default '#' (everything), or device/+/telemetry/# with an API token (the only topics a token may read).", show_default=False)] = None,  # noqa: E501
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Subscription QoS: 1 (default) with --session loses nothing across reconnects; 0 is the fastest.")] = 1,  # noqa: E501
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Stop after N messages.", show_default=False)] = None,  # noqa: E501
    duration: Annotated[Optional[float], typer.Option("--duration", "-d", metavar="SECONDS", help="Stop after SECONDS.", show_default=False)] = None,  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="parquet or jsonl (default: from the suffix).", show_default=False)] = None,  # noqa: E501
    session: Annotated[Optional[str], typer.Option("--session", metavar="NAME", help="Persistent session: client id NAME and clean_session false, so the broker keeps QoS 1 messages for this recorder while it is away.", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE (and discard an unsealed FILE.partial/).")] = False,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Record MQTT messages to a Parquet or JSONL file: exact payload bytes, receive time
    (ns), topic, QoS and retain flag. Crash-safe: after a kill, all but the last ~1 s is
    readable ('tesaiot recover FILE' seals it). Stop with Ctrl+C, SIGTERM, --count or
    --duration; a summary goes to stderr."""
    from tesaiot_cli.recording.base import PARTIAL_SUFFIX, RecordingMetadata, existing_outputs, format_for

    with cli_errors():
        if count is not None and count < 1:
            raise ConfigError(f"invalid --count {count}: it must be at least 1")
        if duration is not None and duration <= 0:
            raise ConfigError(f"invalid --duration {duration}: it must be positive")
        if session is not None and not session.strip():
            raise ConfigError("invalid --session '': give a name (it becomes the MQTT client id)")
        format_name = format_for(file, fmt)
        if not file.parent.is_dir():
            raise ConfigError(f"cannot record to {str(file)!r}: the directory {str(file.parent)!r} does not exist")
        in_the_way = [] if force else existing_outputs(file, format=format_name)
        if in_the_way and in_the_way[-1].name.endswith(PARTIAL_SUFFIX):
            raise ConfigError(f"{in_the_way[-1]} holds an unsealed recording (left by a crash?): "
                              f"'tesaiot recover {file}' seals it, or --force discards it")
        if in_the_way:
            raise ConfigError(f"{in_the_way[0]} already exists: choose another file name, or --force to overwrite")
        settings = resolve_settings(conn, command="record", session=session)
        filters = topic or _env_topics(conn) or [TOKEN_DEFAULT_TOPIC if settings.token is not None
                                                  else DEFAULT_TOPIC]
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        if session is not None and qos == 0:
            warn("--session with --qos 0: brokers keep only QoS 1 and 2 messages for an absent client; "
                 "use --qos 1 to lose nothing while disconnected")
        metadata = RecordingMetadata(
            tool_version=__version__, broker=settings.url.display(), topic_filters=tuple(filters),
            source="record", extra={"qos": qos, **({"session": session} if session else {})},
        )
        _record(file, format_name, settings, filters, qos, count, duration, force, metadata)


def _env_topics(conn: ConnectionFlags) -> list[str]:
    from tesaiot_cli.cliutil import load_environment

    env = load_environment(conn.env_file)
    value = env.get("MQTT_SUBSCRIBE_TOPIC") or env.get("MQTT_TOPIC")
    return [value] if value else []


def _record(file: Path, format_name: str, settings: Any, filters: list[str], qos: int, count: int | None,
            duration: float | None, force: bool, metadata: Any) -> None:
    from tesaiot_cli.recording.base import open_writer, remove_outputs
    from tesaiot_cli.session import Session

    if format_name == "parquet":
        import os

        from tesaiot_cli.recording.schema import use_lean_memory_pool

        use_lean_memory_pool(dict(os.environ))  # flat RSS over millions of messages
    done = threading.Event()
    inbox = _Inbox()
    with StopSignals() as stop:
        # on_message from the start: a persistent session gets its queued messages right
        # after CONNACK, before subscribe().
        session = Session(settings, on_event=print_event, interrupt=stop.event, on_message=inbox)
        session.connect()  # before touching the output: a failed connect leaves an old file alone
        try:
            if force:
                remove_outputs(file, format=format_name)
            writer: Any = open_writer(file, metadata=metadata, format=format_name)
        except BaseException:
            session.close()
            raise
        started = time.monotonic()
        why = "end"
        try:
            sink = _sink(writer, count, done)
            inbox.attach(sink)  # from now on the inbox passes straight through to the sink
            session.subscribe(filters, qos=qos, on_message=sink)
            err(f"recording {settings.url.display()} topics={','.join(filters)} qos={qos} to {file} "
                f"({format_name}); Ctrl+C stops")
            why = _wait(session, writer, stop, done, started, duration)
        except BaseException as exc:
            session.close()
            _clear_status()
            if writer.messages == 0 and not isinstance(exc, (KeyboardInterrupt, RecordingError)):
                writer.discard()  # e.g. the subscription was refused: leave no empty file behind
                remove_outputs(file, format=format_name)
                raise
            try:
                writer.close()  # seal what was recorded before the error
            except RecordingError:
                pass
            if isinstance(exc, RecordingError):
                raise RecordingError(f"{exc}; {_what_is_kept(file, format_name)}") from None
            raise
        session.close()
        _clear_status()
        elapsed = time.monotonic() - started
        try:
            summary = writer.close()
        except RecordingError as exc:
            raise RecordingError(f"{exc}; {_what_is_kept(file, format_name)}") from None
    _print_summary(summary, elapsed, stop.signal_name or why)


class _Inbox:
    """The message callback: holds what arrives before the writer is attached, then hands
    everything to it in arrival order. Runs on the network thread."""

    def __init__(self) -> None:
        self._target: Callable[[Message], None] | None = None
        self._early: list[Message] = []
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        target = self._target
        if target is None:
            with self._lock:
                target = self._target
                if target is None:
                    self._early.append(message)
                    return
        target(message)

    def attach(self, target: Callable[[Message], None]) -> None:
        with self._lock:
            for message in self._early:
                target(message)
            self._early.clear()
            self._target = target


def _sink(writer: Any, count: int | None, done: threading.Event) -> Callable[[Message], None]:
    if count is None:
        return writer.write  # type: ignore[no-any-return]
    remaining = count

    def take(message: Message) -> None:
        nonlocal remaining  # only the network thread calls this
        if remaining > 0:
            writer.write(message)
            remaining -= 1
            if remaining == 0:
                done.set()

    return take


def _wait(session: Any, writer: Any, stop: StopSignals, done: threading.Event, started: float,
          duration: float | None) -> str:
    deadline = None if duration is None else started + duration
    live = stderr_is_tty()
    last_status, last_count = started, 0
    while not stop.event.is_set():
        if done.wait(0.1):
            return "count"
        session.check()
        writer.check()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return "duration"
        if live and now - last_status >= STATUS_EVERY_S:
            messages = writer.messages
            rate = (messages - last_count) / (now - last_status)
            _status(f"{messages:,} messages  {rate:,.0f} msg/s  {human_bytes(writer.disk_bytes())}  "
                    f"{_clock(now - started)}")
            last_status, last_count = now, messages
    return "signal"


def _status(text: str) -> None:
    typer.echo(f"\r\x1b[Krecording: {text}", err=True, nl=False)


def _clear_status() -> None:
    if stderr_is_tty():
        typer.echo("\r\x1b[K", err=True, nl=False)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _what_is_kept(file: Path, format_name: str) -> str:
    from tesaiot_cli.recording.base import PARTIAL_SUFFIX

    partial = file.with_name(file.name + PARTIAL_SUFFIX)
    if partial.is_dir():
        return f"what was recorded before is in {partial}/ ('tesaiot recover {file}' seals it)"
    if file.exists():
        return f"what was recorded before is in {file}"
    return "nothing was recorded"


def _print_summary(summary: Any, elapsed: float, why: str) -> None:
    rate = summary.messages / elapsed if elapsed > 0 else 0.0
    per = f", {summary.file_bytes / summary.messages:.1f} B/message" if summary.messages else ""
    err(f"recorded {summary.messages:,} messages in {human_duration(elapsed)} ({rate:,.1f} msg/s), "
        f"{human_bytes(summary.payload_bytes)} of payload, to {summary.path} "
        f"({human_bytes(summary.file_bytes)}{per}); stopped by {why}")
    ranked = sorted(summary.topic_counts.items(), key=lambda item: (-item[1], item[0]))
    from tesaiot_cli.render import escape_control

    for topic, messages in ranked[:SUMMARY_TOPICS]:
        typer.echo(f"  {messages:>10,}  {escape_control(topic)}", err=True)
    if len(ranked) > SUMMARY_TOPICS:
        typer.echo(f"  ... and {len(ranked) - SUMMARY_TOPICS} more topics ('tesaiot info {summary.path}')",
                   err=True)
