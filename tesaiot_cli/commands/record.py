"""``tesaiot record``: capture MQTT messages to a Parquet or JSONL recording, safely and fast.

The run (one recorder, or ``--workers`` processes, into a file or a dataset) is
:func:`tesaiot_cli.services.record.run_record`: :class:`RecordOptions` in, a
:class:`RecordResult` out, what the user sees while recording through :class:`Console`
(its ``RecordView``). This module holds the options, the checks, what is printed and the
exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from tesaiot_cli import __version__
from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StatusLine,
    StopSignals,
    cli_errors,
    env_topics,
    err,
    exit_if_protocol_broken,
    load_environment,
    print_event,
    resolve_settings,
    stderr_is_tty,
    warn,
    with_connection_options,
)
from tesaiot_cli.config import check_token_topics
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import validate_topic_filter
from tesaiot_cli.recording.storage import location
from tesaiot_cli.services.record import (
    DEFAULT_ROLL_S,
    RecordOptions,
    RecordResult,
    dataset_options,
    run_record,
)
from tesaiot_cli.textfmt import human_bytes, human_duration, plural

if TYPE_CHECKING:
    from tesaiot_cli.recording import WriteSummary

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
  tesaiot record data/ --workers 4 -t 'device/+/telemetry/#'   # 4 processes, one dataset
  tesaiot record data/ --share rec --partition date,bucket:16  # one of several recorders
  tesaiot info out.parquet
"""


@with_connection_options
def record(
    file: Annotated[Path, typer.Argument(parser=location, metavar="FILE", help="Output file: .parquet or .jsonl (or use --format); or a directory (a name without suffix) for a partitioned Parquet dataset.", show_default=False)],  # noqa: E501
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
    roll: Annotated[float, typer.Option("--roll", metavar="SECONDS", help="Dataset: seal the file being recorded into the dataset at least every SECONDS (an s3:// dataset: 60 unless given).")] = DEFAULT_ROLL_S,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Record MQTT messages to a Parquet or JSONL file: exact payload bytes, receive time
    (ns), topic, QoS and retain flag. Crash-safe: after a kill, all but the last ~1 s is
    readable ('tesaiot recover FILE' seals it). Stop with Ctrl+C, SIGTERM, --count or
    --duration; a summary goes to stderr."""
    from tesaiot_cli.recording import PARTIAL_SUFFIX, RecordingMetadata, existing_outputs, format_for
    from tesaiot_cli.recording.files import check_output_path

    with cli_errors():
        if count is not None and count < 1:
            raise ConfigError(f"invalid --count {count}: it must be at least 1")
        if duration is not None and duration <= 0:
            raise ConfigError(f"invalid --duration {duration}: it must be positive")
        if session is not None and not session.strip():
            raise ConfigError("invalid --session '': give a name (it becomes the MQTT client id)")
        new_directory = not file.exists() and not file.suffix
        dataset = dataset_options(file, fmt=fmt, force=force, workers=workers, share=share, partition=partition,
                                  roll=roll)
        if dataset is not None and dataset.leftovers:
            warn(f"{file} holds {dataset.leftovers} unsealed file(s) left by a crash: "
                 f"'tesaiot recover {file}' seals them")
        # said in the banner, once connected
        no_suffix = dataset is not None and new_directory and workers == 1 and partition is None
        format_name = "parquet" if dataset is not None else format_for(file, fmt)
        if dataset is None:  # a dataset's path was checked by dataset_options
            check_output_path(file)
        in_the_way = [] if force or dataset is not None else existing_outputs(file, format=format_name)
        if in_the_way and in_the_way[-1].name.endswith(PARTIAL_SUFFIX):
            raise ConfigError(f"{in_the_way[-1]} holds an unsealed recording (left by a crash?): "
                              f"'tesaiot recover {file}' seals it, or --force discards it")
        if in_the_way:
            raise ConfigError(f"{in_the_way[0]} already exists: choose another file name, or --force to overwrite")
        env = load_environment(conn.env_file)
        settings = resolve_settings(conn, command="record", session=session, env=env)
        filters = topic or env_topics(env) or [TOKEN_DEFAULT_TOPIC if settings.token is not None
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
            from tesaiot_cli.services.workers import shared_filters

            filters = shared_filters(group, filters)
        import os

        options = RecordOptions(file=file, format_name=format_name, settings=settings, filters=tuple(filters),
                                qos=qos, metadata=metadata, count=count, duration_s=duration, force=force,
                                dataset=dataset, workers=workers,
                                memory_pool=os.environ.get("ARROW_DEFAULT_MEMORY_POOL") or None)
        with StopSignals() as stop:
            run = run_record(options, Console(no_suffix=no_suffix), stop.event)
        _report(run, options, stop.signal_name)


def _report(run: RecordResult, options: RecordOptions, signal_name: str | None) -> None:
    """What is printed after a run, and the exit code."""
    file, qos = options.file, options.qos
    _print_summary(run.summary, run.elapsed_s, signal_name or run.stopped_by)
    if run.per_worker is not None:
        typer.echo("  workers: " + ", ".join(f"{index}: {messages:,}" for index, messages in run.per_worker.items()),
                   err=True)
        if run.reconnects and qos > 0 and run.summary.messages:
            err(f"workers reconnected {run.reconnects} time(s): QoS {qos} is 'at least once', so a few messages "
                f"may be recorded twice; 'tesaiot info --duplicates {file}' counts them")
        exit_if_protocol_broken(run.protocol_errors, options.settings.url.display(), what="recorded")
        return
    if run.discarded:
        warn(f"{plural(run.discarded, 'QoS 2 message')} arrived after --count was reached and were not recorded: "
             "QoS 2 hands a message over before it can be refused (use --qos 1 to leave them with the broker)")
    if run.reconnects and qos > 0 and run.summary.messages:
        err(f"the connection was lost and restored {run.reconnects} time(s): QoS {qos} is 'at least "
            f"once', so a few messages may be recorded twice; 'tesaiot info --duplicates {file}' counts them, "
            "'tesaiot convert --dedupe' removes them")
    sequence = run.sequence
    if sequence is not None and sequence.numbered:
        (warn if sequence.missing else err)(sequence.report().summary_line())
    exit_if_protocol_broken(run.protocol_errors, options.settings.url.display(), what="recorded")
    if sequence is not None and sequence.missing:
        raise typer.Exit(EXIT_UNDELIVERED)


class Console:
    """What ``record`` shows while recording (a :class:`~tesaiot_cli.services.record.RecordView`):
    session events, the banner once subscribed, the live status line, the warnings.
    ``no_suffix``: the banner says that a name without suffix made a dataset."""

    def __init__(self, *, no_suffix: bool = False) -> None:
        self.no_suffix = no_suffix
        self.live: _LiveStatus | None = None

    def event(self, kind: str, text: str) -> None:
        print_event(kind, text)

    def recording(self, options: RecordOptions, partition: str | None) -> None:
        if partition is None:
            kind = options.format_name
        elif options.workers > 1:
            kind = f"dataset, partitioned by {partition}, {options.workers} workers"
        elif self.no_suffix:
            kind = (f"a dataset directory, as the name has no suffix: Parquet files partitioned by "
                    f"{partition}; name it {options.file}.parquet or {options.file}.jsonl for one file")
        else:
            kind = f"dataset, partitioned by {partition}"
        err(f"recording {options.settings.url.display()} topics={','.join(options.filters)} qos={options.qos} "
            f"to {options.file} ({kind}); Ctrl+C stops")

    def begin(self, started: float) -> None:
        self.live = _LiveStatus(started)

    def status(self, now: float, counts: Callable[[], tuple[int, int]], suffix: str) -> None:
        if self.live is None:
            self.begin(now)
        assert self.live is not None
        self.live.update(now, counts, suffix=suffix)

    def slow_disk(self, behind_s: float) -> None:
        if self.live is not None:
            self.live.line.clear()
        warn(f"the disk is slow: the last {behind_s:.0f} s of messages are not on disk yet (held in memory; "
             "a crash would lose them); recording continues")

    def share_silent(self, waited_s: float) -> None:
        _clear_status()
        warn(f"nothing received in {waited_s:g} s on a shared subscription ($share/...): if the broker "
             "does not support shared subscriptions (amqtt, which 'tesaiot broker' runs, and aedes do not), it "
             "takes $share/... as an ordinary topic and delivers nothing; record with one worker and without "
             "--share there (docs/scaling.md lists the brokers)")

    def clear(self) -> None:
        _clear_status()


class _LiveStatus:
    """record's live status line (only on a TTY), at most every ``STATUS_EVERY_S``:
    messages, the rate since the last line, bytes on disk, elapsed time."""

    def __init__(self, started: float) -> None:
        self.line = StatusLine("recording", tty_period_s=STATUS_EVERY_S)
        self.started = started
        self.last_at, self.last_count = started, 0

    def update(self, now: float, progress: Callable[[], tuple[int, int]], *, suffix: str = "") -> None:
        """``progress`` gives (messages, bytes on disk); it is called only when a line is due."""
        self.line.update(lambda: self._text(now, *progress(), suffix))

    def _text(self, now: float, messages: int, disk: int, suffix: str) -> str:
        rate = (messages - self.last_count) / max(now - self.last_at, 1e-9)
        self.last_at, self.last_count = now, messages
        return f"{messages:,} messages  {rate:,.0f} msg/s  {human_bytes(disk)}  {_clock(now - self.started)}{suffix}"


def _clear_status() -> None:
    if stderr_is_tty():
        typer.echo("\r\x1b[K", err=True, nl=False)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _rate_text(summary: WriteSummary) -> str:
    """The rate while messages came: from the first message to the last (the wait for the
    first one, and the quiet after the last, left out)."""
    if summary.messages < 2 or summary.start_ns is None or summary.end_ns is None or summary.end_ns <= summary.start_ns:
        return ""
    span_s = (summary.end_ns - summary.start_ns) / 1e9
    return f" ({(summary.messages - 1) / span_s:,.1f} msg/s from the first message to the last)"


def _print_summary(summary: WriteSummary, elapsed: float, why: str) -> None:
    per = f", {summary.file_bytes / summary.messages:.1f} B/message" if summary.messages else ""
    err(f"recorded {plural(summary.messages, 'message')} in {human_duration(elapsed)}{_rate_text(summary)}, "
        f"{human_bytes(summary.payload_bytes)} of payload, to {summary.path} "
        f"({human_bytes(summary.file_bytes)}{per}); stopped by {why}")
    ranked = sorted(summary.topic_counts.items(), key=lambda item: (-item[1], item[0]))
    from tesaiot_cli.output.render import escape_control

    for topic, messages in ranked[:SUMMARY_TOPICS]:
        typer.echo(f"  {messages:>10,}  {escape_control(topic)}", err=True)
    if len(ranked) > SUMMARY_TOPICS:
        typer.echo(f"  ... and {len(ranked) - SUMMARY_TOPICS} more topics ('tesaiot info {summary.path}')",
                   err=True)
