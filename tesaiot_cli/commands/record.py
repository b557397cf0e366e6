"""``tesaiot record``: capture MQTT messages to a Parquet or JSONL recording, safely and fast.

The recorder flow itself (session, writer, --count, --duration) is
:mod:`tesaiot_cli.services.recorder`, shared with the ``--workers`` processes; this module
holds the options, the checks and what is printed.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

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
from tesaiot_cli.playback.pacing import freeze_startup_objects
from tesaiot_cli.recording.storage import is_remote, location, remote
from tesaiot_cli.textfmt import human_bytes, human_duration, plural

if TYPE_CHECKING:
    from tesaiot_cli.analysis.sequence import SequenceCounter
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.recording import RecordingMetadata, RecordingWriter, WriteSummary
    from tesaiot_cli.recording.dataset.partition import PartitionSpec
    from tesaiot_cli.services.workers import WorkerPool

DEFAULT_TOPIC = "#"
TOKEN_DEFAULT_TOPIC = "device/+/telemetry/#"
STATUS_EVERY_S = 0.5
SLOW_DISK_S = 5.0  # warn when what is accepted has not been durable for this long
SUMMARY_TOPICS = 10

DEFAULT_ROLL_S = 3600.0  # --roll for a local dataset

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
        dataset = _dataset_options(file, fmt=fmt, force=force, workers=workers, share=share, partition=partition,
                                   roll=roll)
        if dataset is not None and new_directory and workers == 1 and partition is None:
            dataset["no_suffix"] = True  # said in the banner, once connected
        format_name = "parquet" if dataset is not None else format_for(file, fmt)
        if dataset is None:  # a dataset's path was checked by _dataset_options
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
        if workers > 1:
            _record_workers(file, workers, settings, filters, qos, count, duration, metadata, dataset or {})
        else:
            _record(file, format_name, settings, filters, qos, count, duration, force, metadata, dataset)


def _record(file: Path, format_name: str, settings: ConnectionSettings, filters: list[str], qos: int,
            count: int | None, duration: float | None, force: bool, metadata: RecordingMetadata,
            dataset: dict[str, Any] | None = None) -> None:
    from tesaiot_cli.analysis.sequence import SequenceCounter, whole_streams
    from tesaiot_cli.recording import open_writer, remove_outputs
    from tesaiot_cli.services.recorder import CountLimit, run_recorder

    if format_name == "parquet":
        import os

        from tesaiot_cli.recording.schema import use_lean_memory_pool

        use_lean_memory_pool(dict(os.environ))  # flat RSS over millions of messages
    kind = format_name
    discard_output: Callable[[], None] = functools.partial(remove_outputs, file, format=format_name)

    def open_output() -> RecordingWriter:
        nonlocal kind, discard_output
        if dataset is not None:
            writer, spec, discard_output = _open_dataset(file, metadata, dataset)
            kind = f"dataset, partitioned by {spec.text()}"
            if dataset.get("no_suffix"):
                kind = (f"a dataset directory, as the name has no suffix: Parquet files partitioned by "
                        f"{spec.text()}; name it {file}.parquet or {file}.jsonl for one file")
            return writer
        if force:
            remove_outputs(file, format=format_name)
        return open_writer(file, metadata=metadata, format=format_name)

    def announce(_writer: RecordingWriter) -> None:
        err(f"recording {settings.url.display()} topics={','.join(filters)} qos={qos} to {file} "
            f"({kind}); Ctrl+C stops")

    sequence = SequenceCounter()  # per-device "seq" numbers (simulate --sequence): what the broker lost
    counted = whole_streams(filters)  # not a member of a shared subscription (it sees part of each stream)
    with StopSignals() as stop:
        try:
            run = run_recorder(
                settings, open_output, filters, qos, limit=CountLimit(count) if count is not None else None,
                duration_s=duration, stop=stop.event.is_set, interrupt=stop.event, on_event=print_event,
                before_subscribe=freeze_startup_objects, on_subscribed=announce,
                on_tick=_Progress(time.monotonic(), shared=any(f.startswith("$share/") for f in filters),
                                  sequence=sequence if counted else None).tick,
                discard_output=lambda: discard_output(), kept=lambda: _what_is_kept(file, format_name),
                count_message=sequence.add if counted else None)
        finally:
            _clear_status()
    _print_summary(run.summary, run.elapsed_s, stop.signal_name or run.stopped_by)
    if run.discarded:
        warn(f"{plural(run.discarded, 'QoS 2 message')} arrived after --count was reached and were not recorded: "
             "QoS 2 hands a message over before it can be refused (use --qos 1 to leave them with the broker)")
    if run.reconnects and qos > 0 and run.summary.messages:
        err(f"the connection was lost and restored {run.reconnects} time(s): QoS {qos} is 'at least "
            f"once', so a few messages may be recorded twice; 'tesaiot info --duplicates {file}' counts them, "
            "'tesaiot convert --dedupe' removes them")
    if sequence.numbered:
        (warn if sequence.missing else err)(sequence.report().summary_line())
    exit_if_protocol_broken(run.protocol_errors, settings.url.display(), what="recorded")
    if sequence.missing:
        raise typer.Exit(EXIT_UNDELIVERED)


class _Progress:
    """What ``record`` shows while recording: the live status line, one warning when the
    disk falls behind by ``SLOW_DISK_S`` or more, and one when a shared subscription stays
    silent (``shared``)."""

    def __init__(self, started: float, *, shared: bool = False, sequence: SequenceCounter | None = None) -> None:
        self.status = _LiveStatus(started)
        self.sequence = sequence
        self.slow_warned = False
        self.silence = _ShareSilence(started) if shared else None

    def tick(self, writer: RecordingWriter, now: float) -> None:
        behind = writer.unsynced_s()
        if behind >= SLOW_DISK_S and not self.slow_warned:
            self.status.line.clear()
            warn(f"the disk is slow: the last {behind:.0f} s of messages are not on disk yet (held in memory; "
                 "a crash would lose them); recording continues")
            self.slow_warned = True
        if self.silence is not None:
            self.silence.check(now, writer.messages)
        seq = "" if self.sequence is None or not self.sequence.numbered else "  " + self.sequence.status_text()
        self.status.update(now, lambda: (writer.messages, writer.disk_bytes()), suffix=seq)


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


def _what_is_kept(file: Path, format_name: str) -> str:
    from tesaiot_cli.recording import PARTIAL_SUFFIX

    if is_remote(file):
        return ""  # the object-storage writer's error says what was stored and where the rest is
    if file.is_dir():
        return (f"what was recorded before is in {file}; 'tesaiot recover {file}' seals what is left in its "
                "staging area")
    partial = file.with_name(file.name + PARTIAL_SUFFIX)
    if partial.is_dir():
        return f"what was recorded before is in {partial}/ ('tesaiot recover {file}' seals it)"
    if file.exists():
        return f"what was recorded before is in {file}"
    return "nothing was recorded"


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


# -- datasets and workers ----------------------------------------------------------------


def _dataset_options(file: Path, *, fmt: str | None, force: bool, workers: int, share: str | None,
                     partition: str | None, roll: float) -> dict[str, Any] | None:
    """The dataset settings when FILE is a dataset (a directory, or a name without suffix), else None."""
    from tesaiot_cli.recording import is_dataset_path
    from tesaiot_cli.services.workers import MAX_WORKERS, check_share_group

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
    if is_remote(file):  # checked against the prefix's dataset.json when recording starts
        from tesaiot_cli.recording.remote_dataset import REMOTE_ROLL_S

        return {"partition": partition, "roll": REMOTE_ROLL_S if roll == DEFAULT_ROLL_S else roll}
    from tesaiot_cli.recording.dataset.layout import leftovers, prepare_dataset

    prepare_dataset(file, partition=partition, tool_version=__version__, create=False)  # ConfigError early
    left = leftovers(file)
    if left:
        warn(f"{file} holds {len(left)} unsealed file(s) left by a crash: 'tesaiot recover {file}' seals them")
    return {"partition": partition, "roll": roll}


def _open_dataset(file: Path, metadata: RecordingMetadata, dataset: dict[str, Any]
                  ) -> tuple[RecordingWriter, PartitionSpec, Callable[[], None]]:
    from tesaiot_cli.recording.dataset.layout import prepare_dataset
    from tesaiot_cli.recording.dataset.writer import DatasetWriter, new_recorder_id

    prefix = remote(file)
    if prefix is not None:
        from tesaiot_cli.recording.remote_dataset import (
            RemoteDatasetWriter,
            prepare_remote_dataset,
            remote_recorder_id,
        )

        root, spec = prepare_remote_dataset(prefix, partition=dataset["partition"], tool_version=__version__)
        remote_writer = RemoteDatasetWriter(prefix, root, metadata=metadata, spec=spec,
                                            worker_id=remote_recorder_id(), roll_interval_s=dataset["roll"]).open()
        return remote_writer, spec, _nothing
    spec, undo = prepare_dataset(file, partition=dataset["partition"], tool_version=__version__)
    writer = DatasetWriter(file, metadata=metadata, spec=spec, worker_id=new_recorder_id(),
                           roll_interval_s=dataset["roll"]).open()
    return writer, spec, undo


def _record_workers(file: Path, workers: int, settings: ConnectionSettings, filters: list[str], qos: int,
                    count: int | None, duration: float | None, metadata: RecordingMetadata,
                    dataset: dict[str, Any]) -> None:
    import os

    from tesaiot_cli.recording.dataset.layout import prepare_dataset
    from tesaiot_cli.recording.dataset.writer import new_recorder_id
    from tesaiot_cli.recording.model import merge_summaries
    from tesaiot_cli.services.workers import WorkerPlan, WorkerPool, settings_to_wire

    prefix = remote(file)
    if prefix is not None:
        from tesaiot_cli.recording import storage
        from tesaiot_cli.recording.remote_dataset import prepare_remote_dataset, remote_recorder_id

        root, spec = prepare_remote_dataset(prefix, partition=dataset.get("partition"), tool_version=__version__)
        undo: Callable[[], None] = _nothing
        recorder_id, remote_plan = remote_recorder_id(), (str(prefix), storage.options())
    else:
        spec, undo = prepare_dataset(file, partition=dataset.get("partition"), tool_version=__version__)
        root, recorder_id, remote_plan = file, new_recorder_id(), None
    _quiet_resource_tracker()
    plan = WorkerPlan(root=root, settings=settings_to_wire(settings), filters=tuple(filters), qos=qos,
                      metadata=metadata, partition=spec.text(), recorder_id=recorder_id, count=count,
                      duration_s=duration, roll_interval_s=dataset.get("roll"),
                      memory_pool=os.environ.get("ARROW_DEFAULT_MEMORY_POOL"), remote=remote_plan)
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
    if prefix is not None:
        from tesaiot_cli.recording.remote_dataset import remove_spool

        remove_spool(root)  # kept when something in it was not uploaded (the workers' errors say so)
    if pool.error is not None:
        if summary.messages == 0:
            undo()
        kept = f"; {_what_is_kept(file, 'parquet')}" if summary.messages and prefix is None else ""
        raise type(pool.error)(f"{pool.error}{kept}")
    _print_summary(summary, elapsed, stop.signal_name or why)
    typer.echo("  workers: " + ", ".join(f"{index}: {pool.summaries[index].messages:,}"
                                         for index in sorted(pool.summaries)), err=True)
    if pool.reconnects and qos > 0 and summary.messages:
        err(f"workers reconnected {pool.reconnects} time(s): QoS {qos} is 'at least once', so a few messages may "
            f"be recorded twice; 'tesaiot info --duplicates {file}' counts them")
    exit_if_protocol_broken(pool.protocol_errors, settings.url.display(), what="recorded")


def _nothing() -> None:
    """Nothing to undo (an s3:// dataset: dataset.json on the prefix is shared)."""


def _quiet_resource_tracker() -> None:
    """The worker pool's queues and events are named semaphores, registered with Python's
    resource tracker (a helper process of the parent's). When the parent is killed with
    SIGKILL the tracker unlinks them, as it should, but prints "There appear to be N leaked
    semaphore objects to clean up at shutdown": alarming, and nothing is leaked. The
    tracker starts with the parent's -W options, so this filter reaches it too. Called
    before the first semaphore is made (the tracker starts then)."""
    import warnings

    option = "ignore:resource_tracker:UserWarning"
    if option not in sys.warnoptions:
        sys.warnoptions.append(option)
    warnings.filterwarnings("ignore", message="resource_tracker", category=UserWarning)


def _wait_pool(pool: WorkerPool, stop: StopSignals, started: float) -> str:
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
