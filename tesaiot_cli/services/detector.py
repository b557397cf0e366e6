"""The live detector run (``tesaiot detect`` without a RECORDING): readings from a broker
through the detector, one alert published per flagged reading, per the alert contract.

:func:`run_live_detection` takes :class:`LiveDetectOptions` and returns a
:class:`LiveDetectResult`: readings analysed, alerts published, acknowledged, refused and
dropped, readings left unanalysed after the stop, messages that were not readings, and what
the per-device sequence numbers say the broker lost. Nothing here prints: the banner and
the periodic sequence line reach the caller through ``say``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tesaiot_cli.errors import Interrupted
from tesaiot_cli.message import Message
from tesaiot_cli.services.drain import StopFlag, drain

if TYPE_CHECKING:
    from tesaiot_cli.analysis.sequence import SequenceCounter
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.mqtt import SessionStats

INBOX_LIMIT = 100_000  # readings waiting for the detector; then the network thread waits for room
PUBLISH_TIMEOUT_S = 5.0
POLL_S = 0.1  # how long the loop waits for a reading before it checks the session and the clock


@dataclass(frozen=True)
class LiveDetectOptions:
    """The broker, the telemetry filters, where alerts go (``{device_id}`` replaced), the
    QoS of both, when to stop (``count`` readings, ``duration_s``), and the detector
    (``method``, ``field``: see :func:`~tesaiot_cli.analysis.detect_generic.make_detector`)."""

    settings: ConnectionSettings
    filters: tuple[str, ...]
    alert_topic: str
    qos: int = 1
    count: int | None = None
    duration_s: float | None = None
    method: str = "auto"
    field: str | None = None


@dataclass(frozen=True)
class LiveDetectResult:
    """How a live detection went. ``stopped_by``: ``count``, ``duration``, or the signal's
    name; ``delivery``: the alerts' counts after close; ``other``: messages that were not
    readings; ``left_over``: readings received after the stop, not analysed;
    ``sequence``: what the readings' ``seq`` numbers say."""

    stopped_by: str
    elapsed_s: float
    readings: int
    devices: int
    published: int
    delivery: SessionStats
    other: int
    left_over: int
    sequence: SequenceCounter

    @property
    def undelivered(self) -> int:
        return self.delivery.dropped + self.delivery.failed

    @property
    def lost(self) -> bool:
        """Some alerts were not delivered, or readings are missing from their sequence (exit 7)."""
        return bool(self.undelivered or self.sequence.missing)


def run_live_detection(options: LiveDetectOptions, stop: StopFlag, *,
                       on_event: Callable[[str, str], None] | None = None,
                       say: Callable[[str], None] | None = None) -> LiveDetectResult:
    """Subscribe, analyse each reading on this thread (the network thread only queues them:
    when ``INBOX_LIMIT`` wait, it waits for room and the broker holds the rest), publish the
    alerts, until the count, the duration or ``stop``; then wait (bounded) for the alerts in
    flight and close.

    Raises :class:`ConnectError` / :class:`AuthError`, :class:`ConfigError` (a refused
    subscription), and what the session raises from the network thread.
    """
    from tesaiot_cli.analysis.detect import alert_message
    from tesaiot_cli.analysis.detect_generic import make_detector
    from tesaiot_cli.analysis.sequence import LiveReport, SequenceCounter, whole_streams
    from tesaiot_cli.mqtt import Session
    from tesaiot_cli.services.inbox import Inbox

    inbox: Inbox[Message] = Inbox(INBOX_LIMIT)  # full: the network thread waits (the broker holds the rest)
    filters = list(options.filters)
    sequence = SequenceCounter()  # per-device "seq" numbers (simulate --sequence): what the broker lost
    live = LiveReport(sequence)
    counted = whole_streams(filters)  # a member of a shared subscription sees part of each stream
    detector = make_detector(options.method, options.field)
    count, qos, alert_topic = options.count, options.qos, options.alert_topic
    published = other = 0
    why = "end"
    started = time.monotonic()
    with Session(options.settings, on_event=on_event, interrupt=stop.event, on_message=inbox.put) as session:
        session.subscribe(filters, qos=qos)
        if say is not None:
            say(f"detecting on {options.settings.describe()} topics={','.join(filters)} qos={qos}; alerts to "
                f"{alert_topic}; Ctrl+C stops")
        deadline = None if options.duration_s is None else started + options.duration_s
        try:
            while True:
                if stop.event.is_set():
                    why = stop.signal_name or "signal"
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    why = "duration"
                    break
                message = inbox.get(timeout=POLL_S)
                if say is not None and (line := live.due(time.monotonic())) is not None:
                    say(line)
                if message is None:
                    session.check()
                    continue
                if counted:
                    sequence.add(message.topic, message.payload)
                alerts = detector.feed_message(message)
                if alerts is None:
                    other += 1
                    continue
                for alert in alerts:
                    published += 1
                    with inbox.publishing():
                        session.publish(alert_message(alert, topic=alert_topic, qos=qos, time_ns=time.time_ns()),
                                        timeout=PUBLISH_TIMEOUT_S)
                if count is not None and detector.readings >= count:
                    why = "count"
                    break
            inbox.close()  # the network thread no longer waits for room
        except Interrupted:
            pass
        else:
            drain(session, stop.event)  # a second Ctrl+C stops the wait for acknowledgements
        finally:
            inbox.close()
    return LiveDetectResult(why, time.monotonic() - started, detector.readings, detector.devices, published,
                            session.stats, other, len(inbox) + inbox.refused, sequence)
