"""``tesaiot record``'s run: :class:`RecordOptions` -> :class:`RecordResult`.

One recorder in this process (the flow of :func:`~tesaiot_cli.services.recorder.run_recorder`
into one file or a dataset), or ``--workers N`` processes in one shared subscription
(:class:`~tesaiot_cli.services.workers.WorkerPool`), into a dataset on disk or on object
storage. What the user sees (session events, the banner, the live status line, the
warnings for a slow disk and a silent shared subscription) comes through a
:class:`RecordView` the CLI implements; nothing here prints. Errors are raised as the
project's own (:mod:`tesaiot_cli.errors`), with where the recorded messages are.

This module sits above ``recorder.py`` and ``workers.py`` (a worker process runs the
recorder flow: neither of them may import the other's run).
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tesaiot_cli import __version__
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import is_remote, remote

if TYPE_CHECKING:
    from tesaiot_cli.analysis.sequence import SequenceCounter
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.recording import RecordingMetadata, RecordingWriter, WriteSummary
    from tesaiot_cli.recording.dataset.partition import PartitionSpec
    from tesaiot_cli.services.workers import WorkerPool

SLOW_DISK_S = 5.0  # warn when what is accepted has not been durable for this long
SHARE_SILENCE_S = 5.0  # warn when a shared subscription has received nothing for this long
DEFAULT_ROLL_S = 3600.0  # --roll for a local dataset
POOL_POLL_S = 0.05


@dataclass(frozen=True)
class DatasetOptions:
    """A dataset's settings: the partitioning (None: the dataset's own, or by date), how
    often the file being recorded is sealed into it (s), and the unsealed files a crash
    left in it when it was checked (the CLI says so; ``tesaiot recover`` seals them)."""

    partition: str | None
    roll_s: float
    leftovers: int = 0


@dataclass(frozen=True)
class RecordOptions:
    """One run. ``filters`` are the ones subscribed (``$share/GROUP/...`` when shared);
    ``dataset`` is None for one file; ``memory_pool`` the ``ARROW_DEFAULT_MEMORY_POOL``
    the CLI was started with, if any. The two waits before a warning are read from
    :data:`SLOW_DISK_S` and :data:`SHARE_SILENCE_S` when the options are made (a test may
    set either, or the module constant)."""

    file: Path
    format_name: str
    settings: ConnectionSettings
    filters: tuple[str, ...]
    qos: int
    metadata: RecordingMetadata
    count: int | None = None
    duration_s: float | None = None
    force: bool = False  # one file: replace what is there
    dataset: DatasetOptions | None = None
    workers: int = 1
    memory_pool: str | None = None
    slow_disk_s: float = field(default_factory=lambda: SLOW_DISK_S)
    share_silence_s: float = field(default_factory=lambda: SHARE_SILENCE_S)

    @property
    def shared(self) -> bool:
        return any(f.startswith("$share/") for f in self.filters)


@dataclass(frozen=True)
class RecordResult:
    """How a run went: what was written (merged over the workers), how long it recorded
    (s), why it stopped (``count``, ``duration``, ``signal``, ``end``...), reconnections
    (summed over the workers), QoS 2 messages that arrived past ``--count``, packets that
    broke the protocol; the ``seq`` numbers seen (one recorder that sees whole streams,
    else None) and the messages per worker (``--workers``, else None)."""

    summary: WriteSummary
    elapsed_s: float
    stopped_by: str
    reconnects: int
    protocol_errors: int
    discarded: int = 0
    sequence: SequenceCounter | None = None
    per_worker: dict[int, int] | None = None


class RecordView(Protocol):
    """What the user sees of a run (the CLI's console)."""

    def event(self, kind: str, text: str) -> None:
        """A session event (disconnected, reconnecting, warning...); a worker's says ``worker N: ``."""

    def recording(self, options: RecordOptions, partition: str | None) -> None:
        """Subscribed: recording has begun (``partition``: the dataset's, None for one file)."""

    def begin(self, started: float) -> None:
        """The status line's clock starts at ``started`` (``time.monotonic()``)."""

    def status(self, now: float, counts: Callable[[], tuple[int, int]], suffix: str) -> None:
        """While recording: ``counts()`` gives (messages, bytes on disk), called only when a line is due."""

    def slow_disk(self, behind_s: float) -> None:
        """Once: the last ``behind_s`` seconds of messages are not on disk yet."""

    def share_silent(self, waited_s: float) -> None:
        """Once: a shared subscription received nothing in ``waited_s`` seconds."""

    def clear(self) -> None:
        """Take the status line away (the run is over)."""


def dataset_options(file: Path, *, fmt: str | None, force: bool, workers: int, share: str | None,
                    partition: str | None, roll: float) -> DatasetOptions | None:
    """The dataset settings when FILE is a dataset (a directory, or a name without suffix),
    else None. Checks ``--workers``, ``--share``, ``--roll`` and a local dataset's
    ``dataset.json``. Raises :class:`ConfigError`."""
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

        return DatasetOptions(partition, REMOTE_ROLL_S if roll == DEFAULT_ROLL_S else roll)
    from tesaiot_cli.recording.dataset.layout import leftovers, prepare_dataset

    prepare_dataset(file, partition=partition, tool_version=__version__, create=False)  # ConfigError early
    return DatasetOptions(partition, roll, leftovers=len(leftovers(file)))


def run_record(options: RecordOptions, view: RecordView, stop: threading.Event) -> RecordResult:
    """Record until ``stop`` is set (a signal), ``--count`` or ``--duration``; one recorder
    here, or ``options.workers`` processes. Raises what the session, the writers or the
    workers raise (:class:`TesaiotError` subclasses), with where the recorded messages are."""
    if options.workers > 1:
        return _record_workers(options, view, stop)
    return _record_one(options, view, stop)


class RecordProgress:
    """The recorder's ``on_tick``: the live status, one warning when the disk falls behind
    by ``slow_disk_s`` or more, and one when a shared subscription (``shared``) stays
    silent for ``share_silence_s``."""

    def __init__(self, started: float, view: RecordView, *, shared: bool = False,
                 sequence: SequenceCounter | None = None, slow_disk_s: float | None = None,
                 share_silence_s: float | None = None) -> None:
        self.view = view
        self.sequence = sequence
        self.slow_disk_s = SLOW_DISK_S if slow_disk_s is None else slow_disk_s
        self.slow_warned = False
        self.silence = ShareSilence(started, view, share_silence_s) if shared else None
        view.begin(started)

    def tick(self, writer: RecordingWriter, now: float) -> None:
        behind = writer.unsynced_s()
        if behind >= self.slow_disk_s and not self.slow_warned:
            self.view.slow_disk(behind)
            self.slow_warned = True
        if self.silence is not None:
            self.silence.check(now, writer.messages)
        seq = "" if self.sequence is None or not self.sequence.numbered else "  " + self.sequence.status_text()
        self.view.status(now, lambda: (writer.messages, writer.disk_bytes()), seq)


class ShareSilence:
    """Warns once when a shared subscription (--workers, --share) has received nothing after
    ``after_s`` (default :data:`SHARE_SILENCE_S`, read now): a broker without shared
    subscriptions takes ``$share/...`` as an ordinary topic and delivers nothing, and at
    MQTT 3.1.1 it cannot say so."""

    def __init__(self, started: float, view: RecordView, after_s: float | None = None) -> None:
        self.started = started
        self.view = view
        self.after_s = SHARE_SILENCE_S if after_s is None else after_s
        self.warned = False

    def check(self, now: float, messages: int) -> None:
        if self.warned or messages or now - self.started < self.after_s:
            return
        self.warned = True
        self.view.share_silent(self.after_s)


def what_is_kept(file: Path, format_name: str) -> str:
    """Where what was recorded is, after an error (empty for object storage: its writer's
    error says what was stored and where the rest is)."""
    from tesaiot_cli.recording import PARTIAL_SUFFIX

    if is_remote(file):
        return ""
    if file.is_dir():
        return (f"what was recorded before is in {file}; 'tesaiot recover {file}' seals what is left in its "
                "staging area")
    partial = file.with_name(file.name + PARTIAL_SUFFIX)
    if partial.is_dir():
        return f"what was recorded before is in {partial}/ ('tesaiot recover {file}' seals it)"
    if file.exists():
        return f"what was recorded before is in {file}"
    return "nothing was recorded"


# -- one recorder ------------------------------------------------------------------------


def _record_one(options: RecordOptions, view: RecordView, stop: threading.Event) -> RecordResult:
    from tesaiot_cli.analysis.sequence import SequenceCounter, whole_streams
    from tesaiot_cli.playback.pacing import freeze_startup_objects
    from tesaiot_cli.recording import open_writer, remove_outputs
    from tesaiot_cli.services.recorder import CountLimit, run_recorder

    file, format_name, dataset = options.file, options.format_name, options.dataset
    if format_name == "parquet":
        from tesaiot_cli.recording.schema import use_lean_memory_pool

        # flat RSS over millions of messages
        use_lean_memory_pool({"ARROW_DEFAULT_MEMORY_POOL": options.memory_pool} if options.memory_pool else {})
    partition: str | None = None
    discard_output: Callable[[], None] = functools.partial(remove_outputs, file, format=format_name)

    def open_output() -> RecordingWriter:
        nonlocal partition, discard_output
        if dataset is not None:
            writer, spec, discard_output = _open_dataset(file, options.metadata, dataset)
            partition = spec.text()
            return writer
        if options.force:
            remove_outputs(file, format=format_name)
        return open_writer(file, metadata=options.metadata, format=format_name)

    filters = list(options.filters)
    counted = whole_streams(filters)  # not a member of a shared subscription (it sees part of each stream)
    sequence = SequenceCounter() if counted else None  # per-device "seq" numbers: what the broker lost
    try:
        progress = RecordProgress(time.monotonic(), view, shared=options.shared, sequence=sequence,
                                  slow_disk_s=options.slow_disk_s, share_silence_s=options.share_silence_s)
        run = run_recorder(
            options.settings, open_output, filters, options.qos,
            limit=CountLimit(options.count) if options.count is not None else None,
            duration_s=options.duration_s, stop=stop.is_set, interrupt=stop, on_event=view.event,
            before_subscribe=freeze_startup_objects, on_subscribed=lambda _writer: view.recording(options, partition),
            on_tick=progress.tick, discard_output=lambda: discard_output(),
            kept=lambda: what_is_kept(file, format_name),
            count_message=sequence.add if sequence is not None else None)
    finally:
        view.clear()
    return RecordResult(run.summary, run.elapsed_s, run.stopped_by, run.reconnects, run.protocol_errors,
                        discarded=run.discarded, sequence=sequence)


def _open_dataset(file: Path, metadata: RecordingMetadata, dataset: DatasetOptions
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

        root, spec = prepare_remote_dataset(prefix, partition=dataset.partition, tool_version=__version__)
        remote_writer = RemoteDatasetWriter(prefix, root, metadata=metadata, spec=spec,
                                            worker_id=remote_recorder_id(), roll_interval_s=dataset.roll_s).open()
        return remote_writer, spec, _nothing
    spec, undo = prepare_dataset(file, partition=dataset.partition, tool_version=__version__)
    writer = DatasetWriter(file, metadata=metadata, spec=spec, worker_id=new_recorder_id(),
                           roll_interval_s=dataset.roll_s).open()
    return writer, spec, undo


def _nothing() -> None:
    """Nothing to undo (an s3:// dataset: dataset.json on the prefix is shared)."""


# -- worker processes --------------------------------------------------------------------


def _record_workers(options: RecordOptions, view: RecordView, stop: threading.Event) -> RecordResult:
    from tesaiot_cli.recording.dataset.layout import prepare_dataset
    from tesaiot_cli.recording.dataset.writer import new_recorder_id
    from tesaiot_cli.recording.model import merge_summaries
    from tesaiot_cli.services.workers import WorkerPlan, WorkerPool, quiet_resource_tracker, settings_to_wire

    file, settings = options.file, options.settings
    dataset = options.dataset or DatasetOptions(None, DEFAULT_ROLL_S)
    prefix = remote(file)
    if prefix is not None:
        from tesaiot_cli.recording import storage
        from tesaiot_cli.recording.remote_dataset import prepare_remote_dataset, remote_recorder_id

        root, spec = prepare_remote_dataset(prefix, partition=dataset.partition, tool_version=__version__)
        undo: Callable[[], None] = _nothing
        recorder_id, remote_plan = remote_recorder_id(), (str(prefix), storage.options())
    else:
        spec, undo = prepare_dataset(file, partition=dataset.partition, tool_version=__version__)
        root, recorder_id, remote_plan = file, new_recorder_id(), None
    quiet_resource_tracker()
    plan = WorkerPlan(root=root, settings=settings_to_wire(settings), filters=options.filters, qos=options.qos,
                      metadata=options.metadata, partition=spec.text(), recorder_id=recorder_id, count=options.count,
                      duration_s=options.duration_s, roll_interval_s=dataset.roll_s,
                      memory_pool=options.memory_pool, remote=remote_plan)
    pool = WorkerPool(options.workers, plan,
                      on_event=lambda index, kind, text: view.event(kind, f"worker {index}: {text}"))
    why = "end"
    started = time.monotonic()
    try:
        pool.start(interrupt=stop, timeout=settings.connect_timeout)
        if pool.error is None and not stop.is_set():
            view.recording(options, spec.text())
            started = time.monotonic()
            why = _wait_pool(pool, stop, started, view, options.share_silence_s)
    finally:
        pool.stop()
        view.clear()
    elapsed = time.monotonic() - started
    summary = merge_summaries(file, list(pool.summaries.values()))
    if prefix is not None:
        from tesaiot_cli.recording.remote_dataset import remove_spool

        remove_spool(root)  # kept when something in it was not uploaded (the workers' errors say so)
    if pool.error is not None:
        if summary.messages == 0:
            undo()
        kept = f"; {what_is_kept(file, 'parquet')}" if summary.messages and prefix is None else ""
        raise type(pool.error)(f"{pool.error}{kept}")
    return RecordResult(summary, elapsed, why, pool.reconnects, pool.protocol_errors,
                        per_worker={index: pool.summaries[index].messages for index in sorted(pool.summaries)})


def _wait_pool(pool: WorkerPool, stop: threading.Event, started: float, view: RecordView,
               share_silence_s: float) -> str:
    view.begin(started)
    silence = ShareSilence(started, view, share_silence_s)
    while not stop.wait(POOL_POLL_S):
        pool.poll()
        if pool.error is not None:
            return "error"
        if pool.finished:  # the workers stop by themselves at --count and --duration
            return "count" if pool.counted_out else "duration"
        now = time.monotonic()
        silence.check(now, pool.messages)
        view.status(now, lambda: (pool.messages, pool.disk_bytes), f"  {pool.workers} workers")
    return "signal"
