"""The replay run (``tesaiot replay``): a recording's messages republished on their
schedule to a broker, or written as NDJSON lines to a stream (``--to -``).

:class:`RecordingPasses` serves the replayer one pass over the recording per loop (the
open reader first; later loops from memory when the selection is small, else from the
file again), with each message's label for ``--to -`` of a labelled recording.
:func:`replay_to_broker` and :func:`replay_to_stream` run the replayer and return a
:class:`ReplayResult`; :meth:`ReplayResult.report` is the summary the command prints or
writes as JSON. Nothing here prints: what the user sees comes through
:class:`ReplayHooks`.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from tesaiot_cli.errors import Interrupted
from tesaiot_cli.message import Message
from tesaiot_cli.playback.pacing import freeze_startup_objects
from tesaiot_cli.services.drain import drain

if TYPE_CHECKING:
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.playback.replay import Replayer, ReplayOptions, ReplayStats
    from tesaiot_cli.playback.selection import Selection
    from tesaiot_cli.recording import RecordingReader

Passes = Callable[[], Iterable[Message]]

KEEP_MESSAGES = 10_000  # a recording this small is read once, however often it loops


class ReplayPlan(NamedTuple):
    """What will be replayed, known before replaying: for the start line and progress."""

    messages: int | None  # selected (None: not known before reading, see RecordingReader.plan)
    first_ns: int | None  # the span of the selection (or of the recording cut by the window)
    last_ns: int | None
    selective: bool  # --topic/--start/--end: not every message is replayed


def plan_of(reader: RecordingReader, selection: Selection) -> ReplayPlan:
    plan = reader.plan(selection)
    return ReplayPlan(plan.messages, plan.start_ns, plan.end_ns, selection.active)


class _Labels:
    """The label (ground truth) of the message the replayer took last, for ``--to -``:
    the replayer sends each selected message before it takes the next one."""

    def __init__(self) -> None:
        self.time_ns: int | None = None
        self.label: str | None = None

    def of(self, message: Message) -> str | None:
        # A restored retained message (sent when the first selected one is reached) has none.
        return self.label if message.time_ns == self.time_ns else None


class _Cache:
    """The first loop's messages that match --topic, kept when there are at most
    ``KEEP_MESSAGES`` of them: later loops replay them without reading the file again (a
    tiny selection of a large file, looped at --speed max, spent its time re-reading)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Message, str | None]] = []
        self.complete = False
        self.excluded = 0  # what the reader left out of the first loop


class RecordingPasses:
    """One pass over the recording per call (a loop): the reader ``first`` serves the
    first; each later one opens the file again, unless the first was small enough to keep
    (a tiny selection looped at --speed max would otherwise spend its time opening and
    reading the file). With ``labelled``, :attr:`labels` knows each message's label."""

    def __init__(self, first: RecordingReader, file: Path, recording_format: str | None, selection: Selection, *,
                 labelled: bool = False) -> None:
        self._pending: list[RecordingReader] = [first]
        self._file = file
        self._format = recording_format
        self._selection = selection
        self._cache = _Cache()
        self.labels = _Labels() if labelled else None

    def __call__(self) -> Iterator[Message]:
        if self._pending:
            return self._keep_small(self._labelled(self._pending.pop()))
        if self._cache.complete:
            return self._from_cache()
        return self._read_again()

    def _read_again(self) -> Iterator[Message]:
        from tesaiot_cli.recording import open_reader

        with open_reader(self._file, format=self._format) as reader:
            yield from self._labelled(reader)

    def _labelled(self, reader: RecordingReader) -> Iterator[Message]:
        labels = self.labels
        if labels is None:
            yield from reader.iter_messages(self._selection)
            return
        for message, label in reader.iter_labelled(self._selection):
            labels.time_ns, labels.label = message.time_ns, label
            yield message

    def _from_cache(self) -> Iterator[Message]:
        labels, cache = self.labels, self._cache
        for message, label in cache.messages:
            if labels is not None:
                labels.time_ns, labels.label = message.time_ns, label
            yield message
        self._selection.excluded += cache.excluded  # what the reader left out of the pass this one repeats

    def _keep_small(self, messages: Iterator[Message]) -> Iterator[Message]:
        labels, cache = self.labels, self._cache
        kept: list[tuple[Message, str | None]] | None = []
        for message in messages:  # already cut to the selection by the reader
            if kept is not None:
                if len(kept) < KEEP_MESSAGES:
                    kept.append((message, labels.label if labels is not None else None))
                else:
                    kept = None
            yield message
        if kept is not None:
            cache.messages, cache.complete, cache.excluded = kept, True, self._selection.excluded


@dataclass
class ReplayHooks:
    """What the replayer shares with the user's terminal: ``should_stop`` (Ctrl+C, also
    where a pause key is read), ``clock`` (paused time left out), ``on_progress`` (the
    progress line), ``on_start(target, sleep)`` (connected, or writing: the start line;
    ``sleep`` serves the connection while paused), ``on_event`` (session events)."""

    should_stop: Callable[[], bool]
    clock: Callable[[], float] = time.perf_counter
    on_progress: Callable[[ReplayStats], object] | None = None
    on_start: Callable[[str, Callable[[float], object]], None] = lambda target, sleep: None
    on_event: Callable[[str, str], None] | None = None


@dataclass(frozen=True)
class ReplayResult:
    """How a replay went: the replayer (its options and stats), where it went (a broker's
    URL, or ``-``), and the delivery counts (for ``--to -``: lines written)."""

    replayer: Replayer
    target: str
    published: int
    acknowledged: int
    failed: int = 0
    dropped: int = 0
    failed_reasons: dict[str, int] = field(default_factory=dict)

    def report(self, *, file: Path, signal_name: str | None) -> dict[str, Any]:
        """The summary as a JSON-ready dict (``replay --json``)."""
        from tesaiot_cli.playback.replay import summary

        stats = self.replayer.stats
        report: dict[str, Any] = {"file": str(file), "target": self.target}
        report.update(summary(stats, speed=self.replayer.options.speed))
        report.update({"published": self.published, "acknowledged": self.acknowledged, "failed": self.failed,
                       "dropped": self.dropped, "failed_reasons": dict(self.failed_reasons)})
        report["stopped_by"] = signal_name if stats.stopped else None
        return report


def replay_to_broker(settings: ConnectionSettings, options: ReplayOptions, passes: Passes, hooks: ReplayHooks,
                     stop: threading.Event, *, selection: Selection | None = None,
                     max_inflight: int | None = None) -> ReplayResult:
    """Publish the passes on their schedule through one session, then wait (bounded) for
    what is in flight. Raises what connecting, reading or the session raise."""
    from tesaiot_cli.mqtt import Session
    from tesaiot_cli.playback.replay import Replayer

    # threaded=False: this thread runs the network loop, so each PUBLISH is written straight
    # to the socket; the scheduler's sleeps serve the connection (acks, keepalive, reconnect).
    with Session(settings, on_event=hooks.on_event, interrupt=stop, threaded=False,
                 max_inflight=max_inflight) as session:
        hooks.on_start(settings.url.display(), session.wait)
        # At --speed max, QoS 0 packets go out in batches (one send per ~64 KiB); on a
        # schedule each one is written at its due time.
        send = functools.partial(session.publish, hold=True) if options.speed is None else session.publish
        replayer = Replayer(options, send=send, sleep=session.wait, should_stop=hooks.should_stop, clock=hooks.clock,
                            on_progress=hooks.on_progress, selection=selection)
        try:
            freeze_startup_objects()
            replayer.run(passes)
        except Interrupted:  # Ctrl+C while waiting for room in the publish window
            replayer.stats.stopped = True
        # A first Ctrl+C/SIGTERM stops publishing; the in-flight messages may still
        # complete (a second Ctrl+C cuts the wait short).
        drain(session, stop)
    stats = session.stats
    return ReplayResult(replayer, settings.url.display(), stats.published, stats.completed, stats.failed,
                        stats.dropped, dict(stats.failed_reasons))


def replay_to_stream(options: ReplayOptions, passes: RecordingPasses, hooks: ReplayHooks, out: IO[bytes], *,
                     selection: Selection | None = None) -> ReplayResult:
    """Write the passes as ``listen --json`` lines (plus ``recorded_time_ns`` and, for a
    labelled recording, ``label``) to ``out`` on their schedule (a dry run)."""
    import orjson

    from tesaiot_cli.output.render import message_record
    from tesaiot_cli.playback.replay import Replayer

    labels = passes.labels
    written = 0

    def write(message: Message) -> None:
        # The listen --json line, as a listener would see it now, plus when it was recorded.
        nonlocal written
        record = message_record(message._replace(time_ns=time.time_ns()))
        record["recorded_time_ns"] = message.time_ns
        if labels is not None:  # the ground truth of a labelled recording (simulate --record)
            record["label"] = labels.of(message)
        out.write(orjson.dumps(record) + b"\n")
        written += 1

    hooks.on_start("stdout", time.sleep)
    replayer = Replayer(options, send=write, before_wait=out.flush, should_stop=hooks.should_stop, clock=hooks.clock,
                        on_progress=hooks.on_progress, selection=selection)
    freeze_startup_objects()
    replayer.run(passes)
    out.flush()
    return ReplayResult(replayer, "-", written, written)
