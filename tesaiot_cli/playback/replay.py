"""The core of ``tesaiot replay``: option parsing, selection, rewriting and the scheduler.

Pure: no printing, no MQTT, no files. Messages come from an iterable (a recording
reader, one fresh iterable per loop) and go to a ``send`` callable (``Session.publish``
or a line writer); the clock, the sleep and the wall clock are injected, so the whole
schedule runs on a fake clock in tests. Message *i* is due at
``start + (t_i - t_0) / speed``, absolute, in file order, never earlier than the message
before it; the timing model, loops and windows are described in docs/replay.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message, validate_topic_filter, validate_topic_name
from tesaiot_cli.playback.pacing import MAX_SLEEP_S, LatenessHistogram, release_gil, wait_until
from tesaiot_cli.playback.selection import Selection, TimeBound, check_window
from tesaiot_cli.textfmt import iso_time, plural

MIN_SPEED = 1e-6
MAX_FINITE_SPEED = 1e6
SPIN_S = 0.0005  # spin (instead of sleeping) this long before a due time
PROGRESS_EVERY_S = 0.5
SINGLE_MESSAGE_PERIOD_NS = 1_000_000_000
LOOP_FOREVER = "forever"  # --loop without a count


# -- option values ---------------------------------------------------------------------


def parse_speed(text: str) -> float | None:
    """``5x``, ``5``, ``0.5x``, ``1X`` -> the factor; ``max`` -> ``None`` (no waiting).

    Raises :class:`ConfigError` for zero, negative, NaN, infinite, out-of-range or garbage.
    """
    word = text.strip().lower()
    if word == "max":
        return None
    number = word[:-1] if word.endswith("x") else word
    try:
        speed = float(number)
    except ValueError:
        raise ConfigError(f"invalid --speed {text!r}: use a factor like 5x, 0.5x or 2, or max") from None
    if not math.isfinite(speed) or speed <= 0:
        raise ConfigError(f"invalid --speed {text!r}: it must be a positive finite factor (or max)")
    if not MIN_SPEED <= speed <= MAX_FINITE_SPEED:
        raise ConfigError(
            f"invalid --speed {text!r}: use a factor from {MIN_SPEED:g} to {MAX_FINITE_SPEED:g}, or max"
        )
    return speed


def parse_loops(value: str | None) -> int | None:
    """``None`` (no --loop) -> 1; ``forever`` -> ``None``; ``N`` -> N >= 1. Raises ConfigError."""
    if value is None:
        return 1
    if value.strip().lower() == LOOP_FOREVER:
        return None
    try:
        loops = int(value)
    except ValueError:
        raise ConfigError(f"invalid --loop {value!r}: give a count (--loop 3) or none (--loop: forever)") from None
    if loops < 1:
        raise ConfigError(f"invalid --loop {loops}: it must be at least 1")
    return loops


def _check_topic_part(value: str, what: str) -> None:
    try:
        validate_topic_name(value)
    except ConfigError as exc:
        raise ConfigError(f"invalid {what}: {exc}") from None


def parse_remap(text: str) -> tuple[str, str]:
    """``old=new``: topics starting with ``old`` get ``new`` instead (``new`` may be empty).
    Raises :class:`ConfigError`."""
    old, sep, new = text.partition("=")
    if not sep or not old:
        raise ConfigError(f"invalid --remap {text!r}: use OLD=NEW, e.g. device/=lab/device/")
    for part in (old, new) if new else (old,):
        _check_topic_part(part, f"--remap {text!r}")
    return old, new


def check_topic_prefix(prefix: str) -> str:
    """A ``--topic-prefix``: a non-empty topic part without wildcards. Raises :class:`ConfigError`."""
    _check_topic_part(prefix, "--topic-prefix")
    return prefix


def restamp_payload(payload: bytes, stamp: str) -> bytes | None:
    """The payload with its top-level ``timestamp`` set to ``stamp``, or ``None`` when the
    payload is not a JSON object with a ``timestamp`` (it is then left as it is).

    Key order is kept; the rest is re-serialised compactly by orjson (same values).
    """
    if b"timestamp" not in payload:
        return None
    try:
        value = orjson.loads(payload)
        if not isinstance(value, dict) or "timestamp" not in value:
            return None
        value["timestamp"] = stamp
        return orjson.dumps(value)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None


@dataclass(frozen=True)
class ReplayOptions:
    """What to replay and how. ``speed`` ``None`` means ``max``; ``loops`` ``None`` means forever."""

    speed: float | None = 1.0
    topic_filters: tuple[str, ...] = ()
    start: TimeBound | None = None
    end: TimeBound | None = None
    topic_prefix: str = ""
    remaps: tuple[tuple[str, str], ...] = ()
    qos: int | None = None
    retain: bool | None = None
    restamp: bool = False
    restore_retained: bool = False
    loops: int | None = 1

    def __post_init__(self) -> None:
        for topic_filter in self.topic_filters:
            validate_topic_filter(topic_filter)
        if self.qos is not None and self.qos not in (0, 1, 2):
            raise ConfigError(f"invalid --qos {self.qos}: use 0, 1 or 2")
        if self.loops is not None and self.loops < 1:
            raise ConfigError(f"invalid --loop {self.loops}: it must be at least 1")
        if self.restore_retained and self.retain is False:
            raise ConfigError("--restore-retained and --no-retain contradict each other: pick one")
        check_window(self.start, self.end)

    @property
    def rewrites(self) -> bool:
        return bool(self.topic_prefix or self.remaps or self.qos is not None or self.retain is not None
                    or self.restamp)


# -- the replay ------------------------------------------------------------------------


@dataclass
class ReplayStats:
    """What a replay did so far (read it for progress, and after a stop or an error).

    Clock times are seconds on the injected monotonic clock.
    """

    sent: int = 0  # selected messages handed to ``send``, all loops
    restored: int = 0  # retained messages from before the window, sent first
    skipped: int = 0  # read but not selected (topic filter or time window), all loops
    restamped: int = 0
    not_restamped: int = 0  # --restamp, but the payload is not a JSON object with a timestamp
    clamped: int = 0  # out-of-order messages sent right after their predecessor
    loops_done: int = 0
    started_s: float | None = None  # when the first selected message was reached
    last_due_s: float | None = None
    last_sent_s: float | None = None
    first_ns: int | None = None  # recording time of the first selected message (the schedule's t_0)
    position_ns: int | None = None  # recording time of the last message sent
    window_end_ns: int | None = None  # --end, resolved (ns since the epoch)
    stopped: bool = False  # cut short by a stop request
    lateness: LatenessHistogram = field(default_factory=LatenessHistogram)

    @property
    def duration_s(self) -> float:
        """From the first to the last send."""
        if self.started_s is None or self.last_sent_s is None:
            return 0.0
        return self.last_sent_s - self.started_s

    @property
    def expected_s(self) -> float | None:
        """What ``duration_s`` should be by the schedule; ``None`` at ``max`` speed."""
        if self.started_s is None or self.last_due_s is None:
            return None if self.last_sent_s is not None else 0.0
        return self.last_due_s - self.started_s


Send = Callable[[Message], object]


class Replayer:
    """Runs one replay. ``run`` returns the stats; they are also in ``stats`` while it runs
    and after ``send`` raised (e.g. an interrupted publish).

    ``passes`` (given to ``run``) returns a fresh iterable of the recording for each loop.
    ``before_wait`` is called before each sleep (to flush a buffered output);
    ``on_progress`` about every ``PROGRESS_EVERY_S``. ``should_stop`` is polled between
    messages and sleep slices; ``sleep`` may return early (``Event.wait``).
    ``selection``: the one the messages were read with (``options``' filters and window,
    its window bound to the recording's start); by default one made from ``options``,
    bound to the first message.
    """

    def __init__(
        self,
        options: ReplayOptions,
        *,
        send: Send,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], object] = time.sleep,
        wall_ns: Callable[[], int] = time.time_ns,
        should_stop: Callable[[], bool] = lambda: False,
        before_wait: Callable[[], object] | None = None,
        on_progress: Callable[[ReplayStats], object] | None = None,
        spin_s: float = SPIN_S,
        spin: Callable[[], object] = release_gil,
        selection: Selection | None = None,
    ) -> None:
        self.options = options
        self.stats = ReplayStats()
        self._send = send
        self._clock = clock
        self._sleep = sleep
        self._wall_ns = wall_ns
        self._should_stop = should_stop
        self._before_wait = before_wait
        self._on_progress = on_progress
        self._spin_s = spin_s
        self._spin = spin
        self._next_progress = 0.0
        # The CLI's readers have already cut the messages to ``selection`` (bound to the
        # recording's start); a plain iterable is cut here, taken as in time order.
        self._selection = selection if selection is not None else Selection(options.topic_filters, start=options.start,
                                                                             end=options.end)

    # -- message rewriting ---------------------------------------------------------

    def rewrite(self, message: Message) -> Message:
        """The message as it is sent: topic remapped and prefixed, QoS/retain overridden,
        payload restamped with the wall clock now. Raises :class:`ConfigError` when a
        remap leaves an empty topic."""
        o = self.options
        topic = message.topic
        for old, new in o.remaps:
            if topic.startswith(old):
                topic = new + topic[len(old):]
                break
        if o.topic_prefix:
            topic = o.topic_prefix + topic
        if topic != message.topic:
            validate_topic_name(topic)
        payload = message.payload
        if o.restamp:
            stamped = restamp_payload(payload, iso_time(self._wall_ns()))
            if stamped is None:
                self.stats.not_restamped += 1
            else:
                self.stats.restamped += 1
                payload = stamped
        return Message(topic, payload, message.qos if o.qos is None else o.qos,
                       message.retain if o.retain is None else o.retain, message.time_ns, message.properties)

    # -- running ---------------------------------------------------------------------

    def run(self, passes: Callable[[], Iterable[Message]]) -> ReplayStats:
        """Replay every loop; returns the stats. Whatever ``send`` raises propagates."""
        stats = self.stats
        loops = self.options.loops
        offset_ns = 0
        while loops is None or stats.loops_done < loops:
            selected, span_ns = self._run_pass(passes(), offset_ns, first=stats.loops_done == 0)
            if stats.stopped or selected == 0:
                break
            stats.loops_done += 1
            gap_ns = span_ns // (selected - 1) if selected > 1 else SINGLE_MESSAGE_PERIOD_NS
            offset_ns += span_ns + gap_ns
        if self._before_wait is not None:
            self._before_wait()
        return stats

    def _wanted(self, topic: str) -> bool:
        return self._selection.wanted(topic)

    def _in_window(self, message: Message) -> int:
        """-1 before the window, 0 inside, 1 after (resolving the bounds on the first call)."""
        where = self._selection.where(message.time_ns)
        if self.options.end is not None:
            self.stats.window_end_ns = self._selection.end_ns
        return where

    def _run_pass(self, messages: Iterable[Message], offset_ns: int, *, first: bool) -> tuple[int, int]:
        """One loop over the recording: returns (messages selected, span in ns)."""
        o, stats = self.options, self.stats
        filters = bool(o.topic_filters)
        windowed = o.start is not None or o.end is not None
        restore: dict[str, Message] | None = {} if (o.restore_retained and first) else None
        rewrite = self.rewrite if o.rewrites else None
        speed_ns = None if o.speed is None else o.speed * 1e9
        clock, send, should_stop, record = self._clock, self._send, self._should_stop, stats.lateness.record
        t0_ns = None
        high_ns = 0  # the latest relative time scheduled in this pass
        selected = 0
        iterator = iter(messages)
        try:
            for message in iterator:
                if should_stop():
                    stats.stopped = True
                    break
                if windowed and (where := self._in_window(message)):
                    if where > 0:
                        break  # past --end: the rest of the file is not read
                    if restore is not None and message.retain and self._wanted(message.topic):
                        restore[message.topic] = message
                    stats.skipped += 1
                    continue
                if filters and not self._wanted(message.topic):
                    stats.skipped += 1
                    continue
                if t0_ns is None:
                    t0_ns = message.time_ns
                    stats.first_ns = t0_ns
                    if restore:
                        self._restore(restore.values(), rewrite)
                    if stats.started_s is None:
                        stats.started_s = clock()
                        self._next_progress = stats.started_s + PROGRESS_EVERY_S
                relative_ns = message.time_ns - t0_ns
                if relative_ns < high_ns:
                    relative_ns = high_ns
                    stats.clamped += 1
                high_ns = relative_ns
                selected += 1
                stats.position_ns = message.time_ns
                if speed_ns is None:
                    if not stats.sent & 1023:
                        self._progress(clock())
                    send(rewrite(message) if rewrite is not None else message)
                    stats.sent += 1
                    continue
                due = stats.started_s + (relative_ns + offset_ns) / speed_ns  # type: ignore[operator]
                if clock() < due and not self._wait_until(due):
                    stats.stopped = True
                    break
                if rewrite is not None:
                    message = rewrite(message)
                now = clock()
                record(now - due)
                stats.last_due_s = due
                stats.last_sent_s = now
                send(message)
                stats.sent += 1
                if not stats.sent & 255:  # when messages come too fast to ever sleep
                    self._progress(now)
        finally:
            if speed_ns is None and stats.sent:
                stats.last_sent_s = clock()
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
        return selected, high_ns

    def _restore(self, retained: Iterable[Message], rewrite: Callable[[Message], Message] | None) -> None:
        for message in sorted(retained, key=lambda m: m.time_ns):
            self._send(rewrite(message) if rewrite is not None else message)
            self.stats.restored += 1

    def _wait_until(self, due: float) -> bool:
        """Sleep, then spin, until ``due``; False when a stop was requested meanwhile."""
        if self._before_wait is not None:
            self._before_wait()
        return wait_until(due, clock=self._clock, sleep=self._sleep, should_stop=self._should_stop,
                          spin_s=self._spin_s, spin=self._spin, max_sleep_s=MAX_SLEEP_S, before_sleep=self._progress)

    def _progress(self, now: float) -> None:
        if self._on_progress is not None and now >= self._next_progress:
            self._next_progress = now + PROGRESS_EVERY_S
            self._on_progress(self.stats)


def summary(stats: ReplayStats, *, speed: float | None) -> dict[str, object]:
    """The replay's own numbers as a JSON-ready dict (the CLI adds the delivery counters)."""
    late = stats.lateness

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1e3, 3)

    return {
        "speed": "max" if speed is None else speed,
        "sent": stats.sent,
        "restored_retained": stats.restored,
        "skipped": stats.skipped,
        "restamped": stats.restamped,
        "not_restamped": stats.not_restamped,
        "clamped": stats.clamped,
        "loops": stats.loops_done,
        "duration_s": round(stats.duration_s, 6),
        "expected_s": None if (e := stats.expected_s) is None else round(e, 6),
        "lateness_ms": {"p50": ms(late.percentile(0.5)), "p99": ms(late.percentile(0.99)),
                        "max": ms(late.max_s if late.count else None), "mean": ms(late.mean_s)},
        "stopped": stats.stopped,
    }


def report_lines(report: Mapping[str, Any]) -> list[str]:
    """The summary (:func:`summary` plus the delivery counts) as the lines ``replay`` prints on stderr."""
    lines: list[str] = []
    speed = report["speed"]
    speed_text = "max speed" if speed == "max" else f"{speed:g}x"
    expected = report["expected_s"]
    timing = f"in {report['duration_s']:.3f} s" + (f" (expected {expected:.3f} s at {speed_text})"
                                                  if expected is not None else f" ({speed_text})")
    stopped = f", stopped by {report['stopped_by']}" if report["stopped_by"] else ""
    if report.get("paused_s"):
        stopped += f", paused {report['paused_s']:.1f} s"
    target = "stdout" if report["target"] == "-" else report["target"]
    lines.append(f"replayed {plural(report['sent'], 'message')} from {report['file']} to {target} {timing}{stopped}")
    restored = f" (incl. {report['restored_retained']} restored retained)" if report["restored_retained"] else ""
    if report["target"] == "-":
        lines.append(f"  written {plural(report['published'], 'line')} to stdout{restored}")
    else:
        lines.append(f"  published {report['published']}{restored}, acknowledged {report['acknowledged']}, "
            f"failed {report['failed']}, dropped {report['dropped']}")
    late = report["lateness_ms"]
    if late["max"] is not None:
        lines.append(f"  send lateness p50 {late['p50']:.3f} ms, p99 {late['p99']:.3f} ms, max {late['max']:.3f} ms")
    notes = []
    if report["skipped"]:
        notes.append(f"{report['skipped']} not selected")
    if report["clamped"]:
        notes.append(f"{report['clamped']} out of time order (sent right after their predecessor)")
    if report["not_restamped"]:
        notes.append(f"{report['not_restamped']} payloads without a JSON timestamp left as they were")
    if report["loops"] > 1:
        notes.append(f"{report['loops']} loops")
    if notes:
        lines.append("  " + "; ".join(notes))
    for reason, count in report["failed_reasons"].items():
        lines.append(f"  refused by the broker: {count} x {reason}")
    return lines
