"""Per-device sequence numbers in payloads: what a broker lost, repeated or reordered.

No MQTT client can see a message its broker dropped (mosquitto's ``max_queued_messages``,
a full queue on a slow link): the publisher got its PUBACK, the subscriber never hears of
it. A stream can still show it when each payload carries a number that counts up per
device: ``tesaiot simulate --sequence`` adds ``"seq"`` (1, 2, 3, ... per device and run)
and ``"boot"`` (the run's start, ms since the Unix epoch: a restarted simulator has a
new, larger one and counts from 1 again) after the payload's other keys. A payload is
numbered when its top level holds both, as non-negative integers: a ``"seq"`` alone is
too common a key (a publisher's own counter, global or wrapping) to be taken for ours.

:class:`SequenceCounter` takes messages in arrival order and counts, per device:

* **missing**: numbers never seen between two seen ones (a gap: messages lost);
* **repeated**: a number seen before (QoS 1 delivers at least once);
* **reordered**: a number that arrives after a later one, filling its gap (the gap is
  then no longer counted as missing);
* **restarts**: a new ``boot``; the first number of the new run counts the numbers
  before it (from 1) as missing, since a run starts at 1.

Only what lies between messages seen can be judged: numbers before the first message of
a device (the subscriber joined late) and after its last one (lost at the very end) are
not counted. Memory is bounded per device: the last ``WINDOW`` numbers are remembered in
a bit mask, so a number more than ``WINDOW`` behind the newest of its device cannot be
placed: it counts as reordered (``too_late``) and its gap stays missing (loss is never
under-reported). Numbers are plain JSON integers (no wrap-around); a payload without
both keys, or with a value that is not a non-negative integer, is not counted.

Pure and fast: no MQTT, no clock, no print. ``add`` is the recorder's hot path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from tesaiot_cli.message import DEVICE_ROOTS, Message, parse_topic

SEQ_KEY = "seq"
BOOT_KEY = "boot"
WINDOW = 1024  # numbers remembered behind the newest, per device (a 1024-bit mask: ~160 bytes)
_HOLES_MASK = ((1 << (WINDOW + 1)) - 1) ^ 1  # bits 1..WINDOW: bit k = number (newest - k) not seen
_MARK = b'"seq"'
_BOOT_MARK = b'"boot"'
# The tail simulate --sequence writes, matched where the last "seq" is. In valid JSON it can
# only be the top-level object's last two members: the final "}" closes the document.
_TAIL = re.compile(rb'"seq": (\d+), "boot": (\d+)\}\Z')
SHOWN_DEVICES = 3  # in the one-line summary: the devices with the most missing


def parse_sequence(payload: bytes) -> tuple[int, int] | None:
    """``(seq, boot)`` from a payload's top-level ``"seq"`` and ``"boot"``, or None.

    The payload ``simulate --sequence`` writes ends in ``, "seq": N, "boot": B}``: read
    from the end without parsing. Any other payload holding ``"seq"`` is parsed as JSON;
    one without the bytes ``"seq"`` costs one byte search (from the end).
    """
    mark = payload.rfind(_MARK)
    if mark < 0:
        return None
    tail = _TAIL.match(payload, mark)
    if tail is not None:
        return int(tail[1]), int(tail[2])
    if payload.rfind(_BOOT_MARK) < 0:  # "seq" alone (someone else's counter): not parsed
        return None
    return _parse_json(payload)


def _parse_json(payload: bytes) -> tuple[int, int] | None:
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, dict):
        return None
    seq = document.get(SEQ_KEY)
    if type(seq) is not int or seq < 0:
        return None
    boot = document.get(BOOT_KEY)
    if type(boot) is not int or boot < 0:
        return None
    return seq, boot


class _Stream:
    """One device's numbering: its boot, the newest number, the holes behind it, its counts."""

    __slots__ = ("device", "boot", "top", "holes", "missing", "repeated", "reordered", "restarts")

    def __init__(self, device: str, seq: int, boot: int) -> None:
        self.device = device
        self.boot = boot
        self.top = seq
        self.holes = 0
        self.missing = self.repeated = self.reordered = self.restarts = 0


@dataclass(frozen=True)
class SequenceReport:
    """The counts so far (see the module): totals, devices, and the devices with the most missing."""

    messages: int  # messages seen
    numbered: int  # messages that carried a sequence number
    devices: int  # devices with a sequence number
    missing: int
    repeated: int
    reordered: int
    restarts: int
    too_late: int  # reordered ones too far behind to place (their gap stays missing)
    devices_missing: int  # devices with something missing
    worst: tuple[tuple[str, int], ...]  # (device, missing), most first

    @property
    def lost(self) -> bool:
        return self.missing > 0

    def as_dict(self) -> dict[str, Any]:
        return {"messages": self.messages, "numbered": self.numbered, "devices": self.devices,
                "missing": self.missing, "repeated": self.repeated, "reordered": self.reordered,
                "restarts": self.restarts, "too_late": self.too_late, "devices_missing": self.devices_missing,
                "most_missing": [{"device": device, "missing": count} for device, count in self.worst]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SequenceReport:
        """The inverse of :meth:`as_dict`."""
        worst = tuple((entry["device"], entry["missing"]) for entry in data["most_missing"])
        return cls(**{key: value for key, value in data.items() if key != "most_missing"}, worst=worst)

    def summary_line(self) -> str:
        """The one line at the end of a run, or of ``info`` and ``score``."""
        if not self.numbered:
            return (f"sequence numbers: none of the {self.messages:,} messages carried one "
                    f"(tesaiot simulate --sequence adds them)")
        line = (f"sequence numbers: {self.numbered:,} of {self.messages:,} messages carried one, from "
                f"{self.devices:,} device{'s' if self.devices != 1 else ''}: {self.missing:,} missing")
        if self.missing:
            worst = ", ".join(f"{device} {count:,}" for device, count in self.worst)
            more = self.devices_missing - len(self.worst)
            line += f" in {self.devices_missing:,} device{'s' if self.devices_missing != 1 else ''} ({worst}"
            line += f", ... {more:,} more)" if more > 0 else ")"
        line += f", {self.repeated:,} repeated, {self.reordered:,} reordered"
        if self.too_late:
            line += f" ({self.too_late:,} more than {WINDOW} behind: their gaps stay counted as missing)"
        if self.restarts:
            line += f", {self.restarts:,} publisher restart{'s' if self.restarts != 1 else ''}"
        return line


class SequenceCounter:
    """Counts gaps, repeats, reorders and restarts per device (see the module).

    ``add(topic, payload)`` takes one message, in arrival order; a device is the topic's
    device id (``device/<id>/...``), else the topic itself. Not thread-safe: one thread
    adds; another may call :meth:`report` (it reads the totals, a moment old).
    """

    def __init__(self) -> None:
        self.messages = 0
        self.numbered = 0
        self.missing = self.repeated = self.reordered = self.restarts = self.too_late = 0
        self._by_topic: dict[str, _Stream] = {}
        self._by_device: dict[str, _Stream] = {}

    def add(self, topic: str, payload: bytes) -> None:
        """Count one message (the hot path: a byte search when it carries no number)."""
        self.messages += 1
        mark = payload.rfind(_MARK)  # (rfind: cheaper than "in", and our tail is at the end)
        if mark < 0:
            return
        # parse_sequence's fast path and add_number's in-order case, inlined: once per message.
        tail = _TAIL.match(payload, mark)
        if tail is not None:
            seq, boot = int(tail[1]), int(tail[2])
            stream = self._by_topic.get(topic)
            if stream is not None and seq == stream.top + 1 and boot == stream.boot and not stream.holes:
                self.numbered += 1
                stream.top = seq
                return
            self.add_number(topic, seq, boot)
            return
        if payload.rfind(_BOOT_MARK) < 0:  # "seq" alone (someone else's counter): not parsed
            return
        parsed = _parse_json(payload)
        if parsed is not None:
            self.add_number(topic, parsed[0], parsed[1])

    def add_number(self, topic: str, seq: int, boot: int) -> None:
        """Count a message of ``topic`` numbered ``seq`` in run ``boot`` (already counted in
        ``messages`` when it came through :meth:`add`)."""
        self.numbered += 1
        stream = self._by_topic.get(topic)
        if stream is None:
            stream = self._stream(topic, seq, boot)
            if stream is None:
                return
        if boot != stream.boot:
            self._other_boot(stream, seq, boot)
            return
        top = stream.top
        if seq == top + 1:  # in order: the common case
            stream.top = seq
            if stream.holes:
                stream.holes = (stream.holes << 1) & _HOLES_MASK
            return
        if seq > top:
            skipped = seq - top - 1
            stream.missing += skipped
            self.missing += skipped
            shift = seq - top
            if shift > WINDOW:
                stream.holes = _HOLES_MASK
            else:
                stream.holes = ((stream.holes << shift) | ((1 << shift) - 2)) & _HOLES_MASK
            stream.top = seq
            return
        behind = top - seq
        if behind > WINDOW:
            stream.reordered += 1
            self.reordered += 1
            self.too_late += 1
        elif behind and stream.holes >> behind & 1:
            stream.holes &= ~(1 << behind)
            stream.missing -= 1
            self.missing -= 1
            stream.reordered += 1
            self.reordered += 1
        else:
            stream.repeated += 1
            self.repeated += 1

    def _stream(self, topic: str, seq: int, boot: int) -> _Stream | None:
        """The stream of a topic seen for the first time; None when this message started it."""
        device = parse_topic(topic).device_id if topic.split("/", 1)[0] in DEVICE_ROOTS else topic
        stream = self._by_device.get(device)
        if stream is not None:
            self._by_topic[topic] = stream
            return stream
        stream = self._by_topic[topic] = self._by_device[device] = _Stream(device, seq, boot)
        return None

    def _other_boot(self, stream: _Stream, seq: int, boot: int) -> None:
        if boot < stream.boot:  # from a run before the current one, arriving late
            stream.reordered += 1
            self.reordered += 1
            return
        stream.restarts += 1
        self.restarts += 1
        before = max(0, seq - 1)  # a run counts from 1
        stream.missing += before
        self.missing += before
        stream.boot, stream.top = boot, seq
        stream.holes = _HOLES_MASK if before >= WINDOW else ((1 << (before + 1)) - 2)

    def counted(self, messages: Iterable[Message]) -> Iterator[Message]:
        """``messages`` unchanged, each counted as it passes (``score --received``)."""
        add = self.add
        for message in messages:
            add(message.topic, message.payload)
            yield message

    def add_table(self, table: Any) -> None:
        """Count the rows of a recording-schema Arrow table (``info``), in order; only rows
        whose payload holds ``"seq"`` are looked at one by one."""
        import pyarrow.compute as pc  # type: ignore[import-untyped]

        marked = pc.match_substring(table.column("payload"), _MARK.decode())
        numbered = pc.sum(marked).as_py() or 0
        self.messages += table.num_rows - numbered
        if numbered:
            rows = table.filter(marked)
            self.add_all(zip(rows.column("topic").to_pylist(), rows.column("payload").to_pylist(), strict=True))

    def status_text(self) -> str:
        """For a live status line (cheap: the totals only)."""
        return f"seq: {self.missing:,} missing  {self.repeated:,} repeated  {self.reordered:,} reordered"

    def add_all(self, messages: Iterable[tuple[str, bytes]]) -> None:
        """Count ``(topic, payload)`` pairs in order."""
        add = self.add
        for topic, payload in messages:
            add(topic, payload)

    def report(self) -> SequenceReport:
        """The counts so far (the per-device part is computed here, not on the hot path)."""
        streams = self._by_device.values()
        missing = [(stream.device, stream.missing) for stream in streams if stream.missing]
        missing.sort(key=lambda item: (-item[1], item[0]))
        return SequenceReport(
            messages=self.messages, numbered=self.numbered, devices=len(self._by_device), missing=self.missing,
            repeated=self.repeated, reordered=self.reordered, restarts=self.restarts, too_late=self.too_late,
            devices_missing=len(missing), worst=tuple(missing[:SHOWN_DEVICES]))

    def device_counts(self, device: str) -> dict[str, int] | None:
        """One device's counts, or None when it carried no number."""
        stream = self._by_device.get(device)
        if stream is None:
            return None
        return {"newest": stream.top, "missing": stream.missing, "repeated": stream.repeated,
                "reordered": stream.reordered, "restarts": stream.restarts}


def whole_streams(filters: Iterable[str]) -> bool:
    """Whether a subscriber with these filters sees each device's whole stream: a member of a
    shared subscription (``$share/``, ``$queue/``) gets only part of it, so its numbers
    would show gaps that are only the other members' messages (its counts are not kept)."""
    return not any(topic_filter.startswith(("$share/", "$queue/")) for topic_filter in filters)


class LiveReport:
    """When a live command (listen, detect) shows the counts again: after a change, at most
    every ``period_s`` seconds (the caller passes its monotonic clock's ``now``)."""

    def __init__(self, counter: SequenceCounter, *, period_s: float = 5.0) -> None:
        self.counter = counter
        self.period_s = period_s
        self._last_s = -period_s
        self._shown = (0, 0, 0, 0)

    def due(self, now: float) -> str | None:
        """The line to show now, or None (nothing new, or too soon)."""
        counter = self.counter
        state = (counter.missing, counter.repeated, counter.reordered, counter.restarts)
        if state == self._shown or now - self._last_s < self.period_s:
            return None
        self._shown, self._last_s = state, now
        return counter.report().summary_line() + " so far"
