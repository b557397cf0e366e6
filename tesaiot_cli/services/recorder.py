"""One recorder: an MQTT session feeding a recording writer until a stop, a count or a
duration. ``record`` runs it in its own process; ``record --workers`` runs it in each
worker process (:mod:`~tesaiot_cli.services.workers`): one flow for both.

The receive path does the least possible work: the session's network thread builds a
``Message`` and hands it to the writer, which appends it to a list; the writer's flusher
thread converts and writes in batches (:mod:`tesaiot_cli.recording.buffered`). What the
caller shows while recording (a status line, a warning) comes through ``on_tick``;
nothing here prints.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import RecordingError
from tesaiot_cli.message import Message
from tesaiot_cli.recording.model import RecordingWriter, WriteSummary

if TYPE_CHECKING:
    from tesaiot_cli.mqtt import Session

POLL_S = 0.1


class MessageLimit(Protocol):
    """``--count``: how many messages may still be kept (possibly shared by processes)."""

    def take(self) -> tuple[bool, bool]:
        """Claim one message: (keep it, it was the last one). Called on the network thread."""
        ...


class CountLimit:
    """``--count N`` in one process: only the session's network thread calls :meth:`take`."""

    def __init__(self, count: int) -> None:
        self.remaining = count

    def take(self) -> tuple[bool, bool]:
        if self.remaining <= 0:
            return False, False
        self.remaining -= 1
        return True, self.remaining == 0


class Inbox:
    """The message callback: holds what arrives before the writer is attached (a persistent
    session gets its queued messages right after CONNACK), then hands everything to it in
    arrival order. Runs on the network thread.

    With a ``limit`` (``--count``) it claims each message as it arrives, early ones too, and
    refuses the rest: it returns False, the session then does not acknowledge them, and the
    broker keeps them (a persistent session's next run gets them). ``done`` is set once the
    last message allowed has been handed over."""

    def __init__(self, limit: MessageLimit | None = None, done: threading.Event | None = None) -> None:
        self._target: Callable[[Message], None] | None = None
        self._early: list[Message] = []
        self._lock = threading.Lock()
        self._limit = limit
        self._done = done or threading.Event()

    def __call__(self, message: Message) -> bool:
        last = False
        if self._limit is not None:
            keep, last = self._limit.take()
            if not keep:
                return False
        target = self._target
        if target is None:
            with self._lock:
                target = self._target
                if target is None:
                    self._early.append(message)
                    if last:
                        self._done.set()
                    return True
        target(message)
        if last:
            self._done.set()
        return True

    def attach(self, target: Callable[[Message], None]) -> None:
        with self._lock:
            for message in self._early:
                target(message)
            self._early.clear()
            self._target = target


@dataclass(frozen=True)
class RecorderRun:
    """How a recorder ended: what it wrote, why it stopped (``count``, ``duration``,
    ``signal`` or what ``on_tick`` returned), how long it recorded (s), reconnections, and
    QoS 2 messages that arrived past ``--count`` (handed over before they could be refused),
    and packets from the broker that broke the protocol (each closed the connection)."""

    summary: WriteSummary
    stopped_by: str
    elapsed_s: float
    reconnects: int
    discarded: int = 0
    protocol_errors: int = 0


def _never() -> bool:
    return False


def run_recorder(
    settings: ConnectionSettings,
    open_writer: Callable[[], RecordingWriter],
    filters: list[str],
    qos: int,
    *,
    limit: MessageLimit | None = None,
    duration_s: float | None = None,
    stop: Callable[[], bool] = _never,
    interrupt: threading.Event | None = None,
    on_event: Callable[[str, str], None] | None = None,
    before_subscribe: Callable[[], None] | None = None,
    on_subscribed: Callable[[RecordingWriter], None] | None = None,
    on_tick: Callable[[RecordingWriter, float], str | None] | None = None,
    discard_output: Callable[[], None] | None = None,
    kept: Callable[[], str] | None = None,
    count_message: Callable[[str, bytes], None] | None = None,
) -> RecorderRun:
    """Connect, open the writer, subscribe, record until ``stop()``, ``limit`` or
    ``duration_s`` (s), then close the session and seal the recording.

    The session connects before ``open_writer`` is called, so a failed connect leaves an
    existing output alone. ``on_tick(writer, now)`` runs about every ``POLL_S`` seconds
    (``now``: ``time.monotonic()``); a string it returns stops the recorder with that
    reason. After an error, what was recorded is sealed; when nothing was and the error
    is not an interrupt or a recording error, the writer is discarded and
    ``discard_output`` removes what opening it created. A :class:`RecordingError` gets
    ``kept()`` appended (where the recorded messages are). ``count_message(topic, payload)``
    sees every message kept, in arrival order, on the network thread (the sequence counter).
    Raises what the session, the writer or the callbacks raise.
    """
    from tesaiot_cli.mqtt import Session

    done = threading.Event()
    inbox = Inbox(limit, done)
    session = Session(settings, on_event=on_event, interrupt=interrupt, on_message=inbox)
    session.connect()
    try:
        writer = open_writer()
    except BaseException:
        session.close()
        raise
    started = time.monotonic()
    try:
        write = writer.write if count_message is None else _counted(writer.write, count_message)
        inbox.attach(write)  # from now on the inbox passes straight through to the writer
        if before_subscribe is not None:
            before_subscribe()
        # Without a limit the writer takes each message directly (the hot path); with one,
        # every message goes through the inbox, which counts and refuses past the limit.
        session.subscribe(filters, qos=qos, on_message=write if limit is None else inbox)
        if on_subscribed is not None:
            on_subscribed(writer)
        why = _wait(session, writer, done=done, stop=stop, started=started, duration_s=duration_s, on_tick=on_tick)
    except BaseException as exc:
        session.close()
        if writer.messages == 0 and not isinstance(exc, (KeyboardInterrupt, RecordingError)):
            writer.discard()  # e.g. the subscription was refused: leave no empty file behind
            if discard_output is not None:
                discard_output()
            raise
        try:
            writer.close()  # seal what was recorded before the error
        except RecordingError as closing:
            if isinstance(exc, RecordingError):
                exc = closing  # the close's account is the complete one (object storage: what was not stored)
        if isinstance(exc, RecordingError) and kept is not None:
            where = kept()
            raise RecordingError(f"{exc}; {where}" if where else str(exc)) from None
        raise
    session.close()
    elapsed = time.monotonic() - started
    try:
        summary = writer.close()
    except RecordingError as exc:
        where = kept() if kept is not None else ""
        if not where:
            raise
        raise RecordingError(f"{exc}; {where}") from None
    return RecorderRun(summary, why, elapsed, session.stats.reconnects, session.stats.discarded,
                       session.stats.protocol_errors)


def _counted(write: Callable[[Message], None], count: Callable[[str, bytes], None]) -> Callable[[Message], None]:
    def counted_write(message: Message) -> None:
        count(message.topic, message.payload)
        write(message)

    return counted_write


def _wait(session: Session, writer: RecordingWriter, *, done: threading.Event, stop: Callable[[], bool],
          started: float, duration_s: float | None,
          on_tick: Callable[[RecordingWriter, float], str | None] | None) -> str:
    deadline = None if duration_s is None else started + duration_s
    while not stop():
        if done.wait(POLL_S):
            return "count"
        session.check()
        writer.check()
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return "duration"
        if on_tick is not None:
            reason = on_tick(writer, now)
            if reason is not None:
                return reason
    return "signal"
