"""``tesaiot record``: capture MQTT messages to a Parquet or JSONL recording, safely and fast.

The receive path does the least possible work: the session's network thread builds a
``Message`` and the writer appends it to a list; the writer's flusher thread converts
and writes in batches (see :mod:`tesaiot_cli.recording.buffered`).
"""

from __future__ import annotations

import functools
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
    freeze_startup_objects,
    print_event,
    resolve_settings,
    stderr_is_tty,
    warn,
    with_connection_options,
)
from tesaiot_cli.commands.info import human_bytes, human_duration
from tesaiot_cli.config import check_token_topics
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message, validate_topic_filter

DEFAULT_TOPIC = "#"
TOKEN_DEFAULT_TOPIC = "device/+/telemetry/#"
STATUS_EVERY_S = 0.5
SLOW_DISK_S = 5.0  # warn when what is accepted has not been durable for this long
SUMMARY_TOPICS = 10

EPILOG = """\b
Examples:
  tesaiot record out.parquet --duration 60            # everything ('#') on localhost:1883
  tesaiot record run.jsonl -t 'device/+/telemetry/#' --count 1000
  MQTT_API_TOKEN=tesa_mqtt_... tesaiot record cloud.parquet   # TESAIoT cloud, device/+/telemetry/#
  tesaiot record night.parquet --qos 1 --session night-rec    # no loss across reconnects
  tesaiot record out.parquet --force                  # overwrite out.parquet
  tesaiot record data/ --workers 4 -t 'device/+/telemetry/#'   # 4 processes, one dataset
  tesaiot record data/ --share rec --partition date,bucket:16  # one of several recorders
  tesaiot info out.parquet
"""


@with_connection_options
def record(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Output file: .parquet or .jsonl (or use --format); or a directory (a name without suffix) for a partitioned Parquet dataset.", show_default=False)],  # noqa: E501
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Topic filter, repeatable. Env: MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC. Default '#' (everything), or device/+/telemetry/# with an API token (the only topics a token may read).", show_default=False)] = None,  # noqa: E501
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Subscription QoS: 1 (default) with --session loses nothing across reconnects; 0 is the fastest.")] = 1,  # noqa: E501
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Stop after N messages.", show_default=False)] = None,  # noqa: E501
    duration: Annotated[Optional[float], typer.Option("--duration", "-d", metavar="SECONDS", help="Stop after SECONDS.", show_default=False)] = None,  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="parquet or jsonl (default: from the suffix).", show_default=False)] = None,  # noqa: E501
    session: Annotated[Optional[str], typer.Option("--session", metavar="NAME", help="Persistent session: client id NAME and clean_session false, so the broker keeps QoS 1 messages for this recorder while it is away.", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE (and discard an unsealed FILE.partial/).")] = False,  # noqa: E501
    workers: Annotated[int, typer.Option("--workers", metavar="N", help="Record with N processes (each sustains 80k msg/s or more on a core of its own) in one MQTT shared subscription, into the dataset directory FILE.")] = 1,  # noqa: E501
    share: Annotated[Optional[str], typer.Option("--share", metavar="GROUP", help="Subscribe as $share/GROUP/FILTER: the broker splits the messages between the members of GROUP (recorders here or on other machines). Default with --workers: a random group.", show_default=False)] = None,  # noqa: E501
    partition: Annotated[Optional[str], typer.Option("--partition", metavar="SPEC", help="Dataset directories: date (default), hour, date,device, date,bucket:N or none.", show_default=False)] = None,  # noqa: E501
    roll: Annotated[float, typer.Option("--roll", metavar="SECONDS", help="Dataset: seal the file being recorded into the dataset at least every SECONDS.")] = 3600.0,  # noqa: E501
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
        dataset = _dataset_options(file, fmt=fmt, force=force, workers=workers, share=share, partition=partition,
                                   roll=roll)
        format_name = "parquet" if dataset is not None else format_for(file, fmt)
        if not file.parent.is_dir():
            raise ConfigError(f"cannot record to {str(file)!r}: the directory {str(file.parent)!r} does not exist")
        in_the_way = [] if force or dataset is not None else existing_outputs(file, format=format_name)
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
        check_token_topics(settings, filters)  # the cloud would refuse, or silently send nothing
        if session is not None and qos == 0:
            warn("--session with --qos 0: brokers keep only QoS 1 and 2 messages for an absent client; "
                 "use --qos 1 to lose nothing while disconnected")
        import secrets

        group = share or (f"tesaiot-{secrets.token_hex(3)}" if workers > 1 else None)
        metadata = RecordingMetadata(
            tool_version=__version__, broker=settings.url.display(), topic_filters=tuple(filters),
            source="record", extra={"qos": qos, **({"session": session} if session else {}),
                                    **({"share_group": group} if group else {})},
        )
        if group is not None:
            from tesaiot_cli.recording.shared import shared_filters

            filters = shared_filters(group, filters)
        if workers > 1:
            _record_workers(file, workers, settings, filters, qos, count, duration, metadata, dataset or {})
        else:
            _record(file, format_name, settings, filters, qos, count, duration, force, metadata, dataset)


def _env_topics(conn: ConnectionFlags) -> list[str]:
    from tesaiot_cli.cliutil import load_environment

    env = load_environment(conn.env_file)
    value = env.get("MQTT_SUBSCRIBE_TOPIC") or env.get("MQTT_TOPIC")
    return [value] if value else []


def _record(file: Path, format_name: str, settings: Any, filters: list[str], qos: int, count: int | None,
            duration: float | None, force: bool, metadata: Any, dataset: dict[str, Any] | None = None) -> None:
    from tesaiot_cli.recording.base import open_writer, remove_outputs
    from tesaiot_cli.session import Session

    if format_name == "parquet":
        import os

        from tesaiot_cli.recording.schema import use_lean_memory_pool

        use_lean_memory_pool(dict(os.environ))  # flat RSS over millions of messages
    done = threading.Event()
    inbox = _Inbox(limit=count)
    with StopSignals() as stop:
        # on_message from the start: a persistent session gets its queued messages right
        # after CONNACK, before subscribe().
        session = Session(settings, on_event=print_event, interrupt=stop.event, on_message=inbox)
        session.connect()  # before touching the output: a failed connect leaves an old file alone
        writer: Any
        discard_output: Callable[[], None]
        try:
            if dataset is not None:
                writer, discard_output = _open_dataset(file, metadata, dataset)
            else:
                if force:
                    remove_outputs(file, format=format_name)
                writer = open_writer(file, metadata=metadata, format=format_name)
                discard_output = functools.partial(remove_outputs, file, format=format_name)
        except BaseException:
            session.close()
            raise
        started = time.monotonic()
        why = "end"
        try:
            sink = _sink(writer, count, done)
            inbox.attach(sink)  # from now on the inbox passes straight through to the sink
            freeze_startup_objects()
            session.subscribe(filters, qos=qos)  # messages keep going through the inbox (it counts --count)
            kind = format_name if dataset is None else f"dataset, partitioned by {writer.spec.text()}"
            err(f"recording {settings.url.display()} topics={','.join(filters)} qos={qos} to {file} "
                f"({kind}); Ctrl+C stops")
            why = _wait(session, writer, stop, done, started, duration,
                        shared=any(f.startswith("$share/") for f in filters))
        except BaseException as exc:
            session.close()
            _clear_status()
            if writer.messages == 0 and not isinstance(exc, (KeyboardInterrupt, RecordingError)):
                writer.discard()  # e.g. the subscription was refused: leave no empty file behind
                discard_output()
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
    if session.stats.discarded:
        warn(f"{session.stats.discarded} QoS 2 message(s) arrived after --count was reached and were not recorded: "
             "QoS 2 hands a message over before it can be refused (use --qos 1 to leave them with the broker)")
    if session.stats.reconnects and qos > 0 and summary.messages:
        err(f"the connection was lost and restored {session.stats.reconnects} time(s): QoS {qos} is 'at least "
            f"once', so a few messages may be recorded twice; 'tesaiot info --duplicates {file}' counts them, "
            "'tesaiot convert --dedupe' removes them")


class _Inbox:
    """The message callback: holds what arrives before the writer is attached, then hands
    everything to it in arrival order. Runs on the network thread.

    With ``limit`` (``--count``) it takes that many messages and refuses the rest (returns
    False): the session then does not acknowledge them, and the broker keeps them for a
    persistent session's next run."""

    def __init__(self, limit: int | None = None) -> None:
        self._target: Callable[[Message], None] | None = None
        self._early: list[Message] = []
        self._lock = threading.Lock()
        self._left = limit

    def __call__(self, message: Message) -> bool:
        if self._left is not None:
            if self._left <= 0:
                return False
            self._left -= 1
        target = self._target
        if target is None:
            with self._lock:
                target = self._target
                if target is None:
                    self._early.append(message)
                    return True
        target(message)
        return True

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
          duration: float | None, *, shared: bool = False) -> str:
    deadline = None if duration is None else started + duration
    status = _LiveStatus(started)
    silence = _ShareSilence(started) if shared else None
    slow_warned = False
    while not stop.event.is_set():
        if done.wait(0.1):
            return "count"
        session.check()
        writer.check()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return "duration"
        if silence is not None:
            silence.check(now, session.stats.received)
        behind = writer.unsynced_s() if hasattr(writer, "unsynced_s") else 0.0
        if behind >= SLOW_DISK_S and not slow_warned:
            _clear_status()
            warn(f"the disk is slow: the last {behind:.0f} s of messages are not on disk yet (held in memory; "
                 "a crash would lose them); recording continues")
            slow_warned = True
        status.update(now, lambda: (writer.messages, writer.disk_bytes()))
    return "signal"


class _LiveStatus:
    """The live status line on stderr (only on a TTY), at most every ``STATUS_EVERY_S``:
    messages, the rate since the last line, bytes on disk, elapsed time."""

    def __init__(self, started: float) -> None:
        self.live = stderr_is_tty()
        self.started = started
        self.last_at, self.last_count = started, 0

    def update(self, now: float, progress: Callable[[], tuple[int, int]], *, suffix: str = "") -> None:
        """``progress`` gives (messages, bytes on disk); it is called only when a line is due."""
        if not self.live or now - self.last_at < STATUS_EVERY_S:
            return
        messages, disk = progress()
        rate = (messages - self.last_count) / (now - self.last_at)
        _status(f"{messages:,} messages  {rate:,.0f} msg/s  {human_bytes(disk)}  {_clock(now - self.started)}{suffix}")
        self.last_at, self.last_count = now, messages


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

    if file.is_dir():
        return (f"what was recorded before is in {file}; 'tesaiot recover {file}' seals what is left in its "
                "staging area")
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


# -- datasets and workers ----------------------------------------------------------------


def _dataset_options(file: Path, *, fmt: str | None, force: bool, workers: int, share: str | None,
                     partition: str | None, roll: float) -> dict[str, Any] | None:
    """The dataset settings when FILE is a dataset (a directory, or a name without suffix), else None."""
    from tesaiot_cli.recording.base import is_dataset_path
    from tesaiot_cli.recording.shared import MAX_WORKERS, check_share_group

    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"invalid --workers {workers}: use 1 to {MAX_WORKERS}")
    if share is not None:
        check_share_group(share)
    if roll <= 0:
        raise ConfigError(f"invalid --roll {roll:g}: it must be a positive number of seconds")
    if not is_dataset_path(file) and file.suffix:
        if workers > 1 or partition is not None:
            what = f"--workers {workers}" if workers > 1 else "--partition"
            raise ConfigError(f"{what} writes a dataset directory, not one file: give a directory name without a "
                              f"suffix (e.g. {file.with_suffix('')})")
        return None
    if fmt is not None and fmt.lower() != "parquet":
        raise ConfigError(f"a dataset is written as Parquet: --format {fmt} is for single files")
    if force:
        raise ConfigError(f"--force is for single files: recording into the dataset {file} adds files to it "
                          "(delete the directory first to start afresh)")
    from tesaiot_cli.recording.dataset import leftovers, prepare_dataset

    prepare_dataset(file, partition=partition, tool_version=__version__, create=False)  # ConfigError early
    left = leftovers(file)
    if left:
        warn(f"{file} holds {len(left)} unsealed file(s) left by a crash: 'tesaiot recover {file}' seals them")
    return {"partition": partition, "roll": roll}


def _open_dataset(file: Path, metadata: Any, dataset: dict[str, Any]) -> tuple[Any, Callable[[], None]]:
    from tesaiot_cli.recording.dataset import prepare_dataset
    from tesaiot_cli.recording.dataset_writer import DatasetWriter, new_recorder_id

    spec, undo = prepare_dataset(file, partition=dataset["partition"], tool_version=__version__)
    writer = DatasetWriter(file, metadata=metadata, spec=spec, worker_id=new_recorder_id(),
                           roll_interval_s=dataset["roll"]).open()
    return writer, undo


def _record_workers(file: Path, workers: int, settings: Any, filters: list[str], qos: int, count: int | None,
                    duration: float | None, metadata: Any, dataset: dict[str, Any]) -> None:
    import os

    from tesaiot_cli.recording.dataset import prepare_dataset
    from tesaiot_cli.recording.dataset_writer import merge_summaries, new_recorder_id
    from tesaiot_cli.recording.shared import WorkerPlan, WorkerPool, settings_to_wire

    spec, undo = prepare_dataset(file, partition=dataset.get("partition"), tool_version=__version__)
    plan = WorkerPlan(root=file, settings=settings_to_wire(settings), filters=tuple(filters), qos=qos,
                      metadata=metadata, partition=spec.text(), recorder_id=new_recorder_id(), count=count,
                      duration_s=duration, roll_interval_s=dataset.get("roll"),
                      memory_pool=os.environ.get("ARROW_DEFAULT_MEMORY_POOL"))
    pool = WorkerPool(workers, plan, on_event=lambda index, kind, text: print_event(kind, f"worker {index}: {text}"))
    why = "end"
    with StopSignals() as stop:
        started = time.monotonic()
        try:
            pool.start(interrupt=stop.event, timeout=settings.connect_timeout)
            if pool.error is None and not stop.event.is_set():
                err(f"recording {settings.url.display()} topics={','.join(filters)} qos={qos} to {file} "
                    f"(dataset, partitioned by {spec.text()}, {workers} workers); Ctrl+C stops")
                started = time.monotonic()
                why = _wait_pool(pool, stop, started)
        finally:
            pool.stop()
            _clear_status()
        elapsed = time.monotonic() - started
    summary = merge_summaries(file, list(pool.summaries.values()))
    if pool.error is not None:
        if summary.messages == 0:
            undo()
        kept = f"; {_what_is_kept(file, 'parquet')}" if summary.messages else ""
        raise type(pool.error)(f"{pool.error}{kept}")
    _print_summary(summary, elapsed, stop.signal_name or why)
    typer.echo("  workers: " + ", ".join(f"{index}: {pool.summaries[index].messages:,}"
                                         for index in sorted(pool.summaries)), err=True)
    if pool.reconnects and qos > 0 and summary.messages:
        err(f"workers reconnected {pool.reconnects} time(s): QoS {qos} is 'at least once', so a few messages may "
            f"be recorded twice; 'tesaiot info --duplicates {file}' counts them")


def _wait_pool(pool: Any, stop: StopSignals, started: float) -> str:
    status = _LiveStatus(started)
    silence = _ShareSilence(started)
    while not stop.event.wait(0.05):
        pool.poll()
        if pool.error is not None:
            return "error"
        if pool.finished:  # the workers stop by themselves at --count and --duration
            return "count" if pool.counted_out else "duration"
        now = time.monotonic()
        silence.check(now, pool.messages)
        status.update(now, lambda: (pool.messages, pool.disk_bytes), suffix=f"  {pool.workers} workers")
    return "signal"


SHARE_SILENCE_S = 5.0


class _ShareSilence:
    """Warns once when a shared subscription (--workers, --share) has received nothing after
    ``SHARE_SILENCE_S``: a broker without shared subscriptions takes ``$share/...`` as an
    ordinary topic and delivers nothing, and at MQTT 3.1.1 it cannot say so."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.warned = False

    def check(self, now: float, messages: int) -> None:
        if self.warned or messages or now - self.started < SHARE_SILENCE_S:
            return
        self.warned = True
        _clear_status()
        warn(f"nothing received in {SHARE_SILENCE_S:g} s on a shared subscription ($share/...): if the broker "
             "does not support shared subscriptions (amqtt, which 'tesaiot broker' runs, and aedes do not), it "
             "takes $share/... as an ordinary topic and delivers nothing; record with one worker and without "
             "--share there (docs/scaling.md lists the brokers)")
