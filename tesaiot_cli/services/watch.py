"""The run loop of ``tesaiot watch``: messages from a broker (the one Session layer, with its
reconnects) or from a recording (the replay scheduler, on a thread) into the fleet model;
keys into the view state; a redraw a few times a second, never per message.

Messages reach the loop through a bounded :class:`Inbox`. Live, a message that finds the
inbox full is dropped and counted (the header shows it, and the command exits 7): a viewer
that fell behind says so rather than stalling the connection. A replay waits for room
instead, so it loses nothing. The terminal (size, drawing, keys) is the caller's: it is
handed in as a :class:`Terminal`, and nothing here prints.
"""

from __future__ import annotations

import collections
import gc
import math
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from tesaiot_cli.config import ConnectionSettings
from tesaiot_cli.errors import TesaiotError
from tesaiot_cli.message import Message, topic_matches
from tesaiot_cli.watch.model import FleetModel
from tesaiot_cli.watch.state import ViewState, decode_keys
from tesaiot_cli.watch.view import Header, draw

if TYPE_CHECKING:
    from rich.text import Text

REDRAW_S = 0.25  # a redraw at most this often (and at once after a key)
IDLE_S = 0.02  # how long the loop waits when nothing came (keys are read this often)
DRAIN_MAX = 5000  # messages taken into the model between two looks at the keys and the clock
INBOX_LIMIT = 200_000  # messages waiting for the model; live, more are dropped and counted
REDRAW_SAMPLES = 10_000
# The model's rows live as long as the view: every FREEZE_S they are taken out of the garbage
# collector's sight (gc.freeze). A full collection would otherwise walk all of them, in the
# middle of a redraw: measured with 10,000 rows, redraws of ~40 ms took up to 420 ms then.
# What they hold is acyclic (rows, deques, tuples, bytes): freed by reference counting still.
FREEZE_S = 5.0


class Terminal(Protocol):
    """Where the view is drawn and keys come from (the command's full-screen terminal)."""

    @property
    def interactive(self) -> bool:
        """Keys can be read (stdin is a terminal too)."""
        ...

    def size(self) -> tuple[int, int]:
        """(columns, lines) now."""
        ...

    def show(self, text: Text) -> None:
        """Draw one screen."""
        ...

    def keys(self) -> str:
        """What was typed since the last call ("" when nothing; never blocks)."""
        ...


TerminalFactory = Callable[[], AbstractContextManager[Terminal]]


class Inbox:
    """Messages (with their label, when the source knows it) on their way to the model.

    :meth:`offer` (live, on the network thread) drops a message that finds ``limit``
    waiting, and counts it in ``dropped``; :meth:`put` (replay) waits for room instead."""

    def __init__(self, limit: int = INBOX_LIMIT) -> None:
        self.limit = limit
        self.dropped = 0
        self._items: collections.deque[tuple[Message, str | None]] = collections.deque()
        self._room = threading.Event()

    def offer(self, message: Message) -> bool:
        if len(self._items) >= self.limit:
            self.dropped += 1
        else:
            self._items.append((message, None))
        return True  # acknowledged either way: a dropped message is counted, not redelivered

    def put(self, message: Message, label: str | None, should_stop: Callable[[], bool]) -> None:
        while len(self._items) >= self.limit and not should_stop():
            self._room.clear()
            self._room.wait(0.05)
        self._items.append((message, label))

    def take(self, most: int) -> list[tuple[Message, str | None]]:
        items = self._items
        taken = [items.popleft() for _ in range(min(most, len(items)))]
        if taken:
            self._room.set()
        return taken

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class WatchResult:
    """How a watch ended: ``stopped_by`` (``q``, a signal's name), what the model counted,
    the redraw times (ms), the session's events in order (kind, text) and, live, the packets
    that broke the protocol; for a replay, whether it reached the end."""

    stopped_by: str
    messages: int
    alerts: int
    rows: int
    dropped: int
    untracked: int
    not_parsed: int
    elapsed_s: float
    redraws: int
    redraw_median_ms: float
    redraw_max_ms: float
    events: list[tuple[str, str]] = field(default_factory=list)
    protocol_errors: int = 0
    replay_finished: bool = False


class AlertTopics:
    """Which topics carry alerts (``device/+/alerts`` by default), remembered per topic."""

    def __init__(self, filters: Sequence[str]) -> None:
        self.filters = tuple(filters)
        self._known: dict[str, bool] = {}

    def __call__(self, topic: str) -> bool:
        known = self._known.get(topic)
        if known is None:
            known = any(topic_matches(f, topic) for f in self.filters)
            if len(self._known) < 100_000:
                self._known[topic] = known
        return known


class _Loop:
    """Messages into the model, keys into the state, and a redraw at most every ``REDRAW_S``."""

    def __init__(self, model: FleetModel, header: Header, inbox: Inbox, is_alert: AlertTopics,
                 stop: threading.Event, check: Callable[[], None],
                 events: queue.SimpleQueue[tuple[str, str]] | None = None,
                 before: Callable[[Message], object] | None = None) -> None:
        self.model, self.header, self.inbox, self.is_alert = model, header, inbox, is_alert
        self.before = before
        self.stop, self.check = stop, check
        self.events = events
        self.state = ViewState()
        self.event_log: list[tuple[str, str]] = []
        self.durations: collections.deque[float] = collections.deque(maxlen=REDRAW_SAMPLES)
        self.longest = 0.0
        self.redraws = 0
        self.started = time.monotonic()

    def run(self, terminal: Terminal) -> str:
        model, state = self.model, self.state
        self.header.keys = terminal.interactive
        frozen: list[Text] | None = None
        keys: list[str] = []
        page = 1
        next_draw = 0.0
        next_freeze = time.monotonic() + FREEZE_S
        while True:
            if self.stop.is_set():
                return "signal"
            if state.quit:
                return "q"
            self.check()
            self._take_events()
            taken = self.take(DRAIN_MAX)
            typed = terminal.keys()
            dirty = False
            if typed:
                for key in decode_keys(typed):
                    state.handle(key, fields=model.fields, rows=keys, page=page)
                if state.detail != model.focused:
                    model.focus(state.detail)
                dirty, frozen = True, None
            now = time.perf_counter()
            if dirty or now >= next_draw:
                width, height = terminal.size()
                screen, table = draw(model, state, self.header, width=width, height=height,
                                     frozen=frozen if state.paused else None)
                frozen = table if state.paused else None
                keys, page = screen.keys, screen.page
                terminal.show(screen.text)
                took = time.perf_counter() - now
                self.durations.append(took)
                self.longest = max(self.longest, took)
                self.redraws += 1
                next_draw = now + REDRAW_S
                if time.monotonic() >= next_freeze:
                    gc.freeze()
                    next_freeze = time.monotonic() + FREEZE_S
            if len(taken) < DRAIN_MAX:
                self.stop.wait(max(0.0, min(IDLE_S, next_draw - time.perf_counter())))

    def take(self, most: int) -> list[tuple[Message, str | None]]:
        """Up to ``most`` waiting messages into the model; what was taken."""
        model = self.model
        taken = self.inbox.take(most)
        model.totals.dropped = self.inbox.dropped
        for message, label in taken:
            if self.before is not None:
                self.before(message)
            if self.is_alert(message.topic):
                model.ingest_alert(message)
            else:
                model.ingest(message, label)
        return taken

    def take_rest(self) -> None:
        """What still waits when the view closes is counted too (not drawn)."""
        while self.take(DRAIN_MAX):
            pass

    def _take_events(self) -> None:
        if self.events is None:
            return
        while True:
            try:
                kind, text = self.events.get_nowait()
            except queue.Empty:
                return
            self.model.event(kind, text)
            self.event_log.append((kind, text))

    def result(self, stopped_by: str, **extra: object) -> WatchResult:
        ordered = sorted(self.durations)
        median = ordered[len(ordered) // 2] * 1e3 if ordered else math.nan
        totals = self.model.totals
        return WatchResult(
            stopped_by=stopped_by, messages=totals.messages, alerts=totals.alerts, rows=len(self.model.rows),
            dropped=self.inbox.dropped, untracked=totals.untracked, not_parsed=totals.not_parsed,
            elapsed_s=time.monotonic() - self.started, redraws=self.redraws, redraw_median_ms=median,
            redraw_max_ms=self.longest * 1e3, events=self.event_log, **extra)  # type: ignore[arg-type]


def watch_live(settings: ConnectionSettings, filters: Sequence[str], alert_filters: Sequence[str], *, qos: int,
               terminal: TerminalFactory, stop: threading.Event, stale_after: float | None = None) -> WatchResult:
    """Watch what a broker delivers on ``filters`` and ``alert_filters`` until ``q`` or ``stop``.

    Connects before the screen opens (a broker that cannot be reached is the Session's
    :class:`ConnectError` / :class:`AuthError`); after that, outages are shown in the header
    and the Session reconnects. Raises what the network thread raised.
    """
    from tesaiot_cli.mqtt import Session

    model = FleetModel(time.monotonic, stale_after=stale_after)
    inbox = Inbox()
    events: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
    header = Header(settings.url.display(), _topics_text(filters, alert_filters), alerts=bool(alert_filters))

    def on_event(kind: str, text: str) -> None:  # on the network thread: to the loop's thread
        events.put((kind, text))

    with Session(settings, on_event=on_event, interrupt=stop, on_message=inbox.offer) as session:
        session.subscribe([*filters, *alert_filters], qos=qos)
        model.connection = "connected"
        loop = _Loop(model, header, inbox, AlertTopics(alert_filters), stop, session.check, events)
        with terminal() as screen:
            stopped_by = loop.run(screen)
    loop._take_events()
    loop.take_rest()  # the session is closed: nothing more comes
    return loop.result(stopped_by, protocol_errors=session.stats.protocol_errors)


class ReplayClock:
    """The model's clock during a replay: the recording's time (s), so rates and ages are the
    fleet's own at any ``--speed``. Between messages it runs at ``speed`` times the monotonic
    clock (at ``max`` it stands at the last message); it never goes back; ``end()`` stops it
    at the last message (the recording is over: nothing is late after it)."""

    def __init__(self, speed: float | None, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.speed = speed
        self._monotonic = monotonic
        self._anchor_s: float | None = None
        self._anchor_at = 0.0
        self._now = 0.0
        self._ended = False

    def reached(self, time_ns: int) -> None:
        """A message of time ``time_ns`` (ns since the epoch) is taken into the model."""
        at = time_ns / 1e9
        if self._anchor_s is None or at >= self.__call__():
            self._anchor_s, self._anchor_at = at, self._monotonic()

    def end(self) -> None:
        self._now = self()
        self._ended = True

    def __call__(self) -> float:
        if self._anchor_s is None:
            return self._now
        if self._ended:
            return self._now
        now = self._anchor_s
        if self.speed is not None:
            now += (self._monotonic() - self._anchor_at) * self.speed
        self._now = max(self._now, now)
        return self._now


def watch_replay(path: Path, *, recording_format: str | None, speed: float | None, filters: Sequence[str],
                 alert_filters: Sequence[str], terminal: TerminalFactory, stop: threading.Event,
                 stale_after: float | None = None) -> WatchResult:
    """The same view over a recording, at its own timing times ``speed`` (``None``: as fast
    as the view takes them), through the replay scheduler; no broker. ``filters`` select
    topics (none: every message). The view stays after the end until ``q``. Raises
    :class:`RecordingError` (also from the reading thread, on this one)."""
    from tesaiot_cli.playback.replay import Replayer, ReplayOptions
    from tesaiot_cli.recording import open_reader

    clock = ReplayClock(speed)
    model = FleetModel(clock, stale_after=stale_after)
    model.connection = "replay"
    inbox = Inbox()
    options = ReplayOptions(speed=speed, topic_filters=tuple(filters))
    failure: list[BaseException] = []
    done = threading.Event()
    with open_reader(path, format=recording_format) as reader:
        label: list[str | None] = [None]

        def passes() -> Iterator[Message]:
            # The scheduler sends each message it takes before taking the next: the label
            # held is the one of the message being sent.
            for message, kind in reader.iter_labelled():
                label[0] = kind
                yield message

        def send(message: Message) -> None:
            inbox.put(message, label[0], stop.is_set)

        replayer = Replayer(options, send=send, should_stop=stop.is_set, sleep=stop.wait)

        def read() -> None:
            try:
                replayer.run(passes)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread, raised there
                failure.append(exc)
            finally:
                done.set()

        where = f"replay of {path.name}" + (f" at {speed:g}x" if speed is not None else " at max speed")

        def progress() -> str:
            state = "finished" if done.is_set() and not len(inbox) else "playing"
            return f"{state}: {replayer.stats.sent:,} messages"

        topics = _topics_text(filters, alert_filters) if filters else "topics: all" + (
            "  alerts: " + ", ".join(alert_filters) if alert_filters else "")
        header = Header(where, topics, progress=progress, live=False, alerts=bool(alert_filters))

        def check() -> None:
            if failure:
                error = failure[0]
                if isinstance(error, TesaiotError):
                    raise error
                raise RuntimeError(f"reading {path} failed: {type(error).__name__}: {error}") from error
            if done.is_set() and not len(inbox):
                clock.end()

        loop = _Loop(model, header, inbox, AlertTopics(alert_filters), stop, check,
                     before=lambda message: clock.reached(message.time_ns))
        thread = threading.Thread(target=read, name="tesaiot-watch-replay", daemon=True)
        thread.start()
        try:
            with terminal() as screen:
                stopped_by = loop.run(screen)
        finally:
            stop.set()  # the reading thread ends at its next message or wait
            thread.join(timeout=5)
        loop.take_rest()
    return loop.result(stopped_by, replay_finished=done.is_set() and not failure)


def _topics_text(filters: Sequence[str], alert_filters: Sequence[str]) -> str:
    text = "topics: " + ", ".join(filters)
    return text + ("  alerts: " + ", ".join(alert_filters) if alert_filters else "")
