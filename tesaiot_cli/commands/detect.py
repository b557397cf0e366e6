"""``tesaiot detect``: the reference anomaly detector, live on a broker or offline on a recording.

Live, it subscribes to telemetry and publishes one alert per flagged reading, per the
alert contract (``device/{device_id}/alerts``, JSON with the reading's ``timestamp``
copied verbatim, ``device_id``, ``kind``, ``score``), through the session's flow control:
every alert is acknowledged, or counted as dropped with exit code 7. Offline, it reads a
recording and writes the alerts as a recording, no broker needed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StopSignals,
    cli_errors,
    err,
    print_event,
    resolve_settings,
    sigterm_unwinds,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import validate_topic_filter, validate_topic_name
from tesaiot_cli.recording.storage import is_remote, location

DEFAULT_TOPIC = "device/+/telemetry/#"

EPILOG = """\b
Examples:
  tesaiot detect                                      # live: localhost:1883, alerts on device/<id>/alerts
  tesaiot detect -b mqtt://broker:1883 --qos 1 --duration 600
  tesaiot detect recordings/dps368-sample.parquet --to alerts.parquet   # offline, no broker
  tesaiot detect truth.parquet --to alerts.parquet && tesaiot score truth.parquet --alerts alerts.parquet
  tesaiot detect --alert-topic 'lab/{device_id}/anomaly' --count 1000
  tesaiot detect -t 'nab/#' --field value                # the generic detector on any numeric field
  tesaiot detect nab.parquet --to nab-alerts.parquet --field value
"""


@with_connection_options
def detect(
    recording: Annotated[Optional[Path], typer.Argument(parser=location, metavar="[RECORDING]", help="Offline: detect on this recording (file or dataset directory) and write the alerts to --to. Without it: live, on the broker.", show_default=False)] = None,  # noqa: E501
    to: Annotated[Optional[Path], typer.Option("--to", parser=location, metavar="ALERTS", help="Offline: write the alerts to this recording (.parquet or .jsonl); each alert's time is that of the reading that raised it.", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite the --to file.")] = False,
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Live: telemetry topic filter, repeatable. Default device/+/telemetry/#.", show_default=False)] = None,  # noqa: E501
    alert_topic: Annotated[str, typer.Option("--alert-topic", metavar="TOPIC", help="Where alerts go; {device_id} is replaced by the device's id.")] = "device/{device_id}/alerts",  # noqa: E501
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Live: QoS of the subscription and of the alerts.")] = 1,  # noqa: E501
    count: Annotated[Optional[int], typer.Option("--count", "-n", metavar="N", help="Live: stop after N readings.", show_default=False)] = None,  # noqa: E501
    duration: Annotated[Optional[float], typer.Option("--duration", "-d", metavar="SECONDS", help="Live: stop after SECONDS.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="No banner or summary on stderr (warnings and errors only).")] = False,  # noqa: E501
    method: Annotated[str, typer.Option("--method", metavar="METHOD", help="auto (DPS368 readings: dps368, any other payload: generic), dps368 (the reference detector) or generic (one numeric field of any payload).")] = "auto",  # noqa: E501
    field: Annotated[Optional[str], typer.Option("--field", metavar="NAME", help="The numeric payload field the generic detector watches (implies --method generic): a top-level key, one in 'data', or a dotted path. Default: 'value', else the payload's only numeric field.", show_default=False)] = None,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Detect anomalies in DPS368 telemetry with the reference detector (range, spike,
    stuck, drift, dropout), or in any numeric field with the generic one (--field), live or
    on a recording; alerts follow the alert contract.

    Exit codes: 0 done, 1 bad option, 3 broker unreachable, 4 authentication refused,
    5 recording error, 7 some alerts were not delivered, or readings missing from their sequence
    numbers (simulate --sequence).
    """
    with cli_errors():
        validate_topic_name(alert_topic.replace("{device_id}", "x"))
        from tesaiot_cli.analysis.detect_generic import make_detector

        make_detector(method, field)  # checks --method and --field
        if recording is not None:
            if to is None:
                raise ConfigError("offline detection needs --to ALERTS (the file the alerts are written to)")
            for name, value in (("--count", count), ("--duration", duration), ("--topic", topic)):
                if value is not None:
                    raise ConfigError(f"{name} is for live detection, not with a RECORDING")
            with sigterm_unwinds():  # the unfinished ALERTS is removed
                _offline(recording, to, force=force, alert_topic=alert_topic, quiet=quiet, method=method,
                         field=field)
            return
        if to is not None:
            raise ConfigError("--to is for offline detection: give the RECORDING to read (live alerts are "
                              "published; record them with 'tesaiot record alerts.parquet -t device/+/alerts')")
        if count is not None and count < 1:
            raise ConfigError(f"invalid --count {count}: it must be at least 1")
        if duration is not None and duration <= 0:
            raise ConfigError(f"invalid --duration {duration}: it must be positive")
        filters = topic or [DEFAULT_TOPIC]
        for topic_filter in filters:
            validate_topic_filter(topic_filter)
        settings = resolve_settings(conn, command="detect", allow_token=False)
        undelivered = _live(settings, filters, alert_topic=alert_topic, qos=qos, count=count, duration=duration,
                            quiet=quiet, method=method, field=field)
    if undelivered:
        raise typer.Exit(EXIT_UNDELIVERED)


def _not_reading(method: str, field: str | None) -> str:
    if field:
        return f"(no number at {field!r})"
    return "(not DPS368)" if method == "dps368" else "(no DPS368 fields, no 'value' or single numeric field)"


def _detector_name(method: str, field: str | None) -> str:
    return "tesaiot generic" + (f" ({field})" if field else "") if field or method == "generic" else (
        "tesaiot reference" if method == "dps368" else "tesaiot auto")


def _offline(recording: Path, to: Path, *, force: bool, alert_topic: str, quiet: bool, method: str,
             field: str | None) -> None:
    from tesaiot_cli import __version__
    from tesaiot_cli.analysis.detect import alert_message
    from tesaiot_cli.analysis.detect_generic import make_detector
    from tesaiot_cli.recording import (
        RecordingMetadata,
        existing_outputs,
        format_for,
        open_reader,
        open_writer,
    )
    from tesaiot_cli.recording.files import check_output_path, remove_tree

    format_for(to)
    check_output_path(to)
    if str(to) == str(recording) or (not is_remote(to) and to.resolve() == recording.resolve()):
        raise ConfigError("--to must not be the RECORDING itself")
    in_the_way = existing_outputs(to)
    if in_the_way and not force:
        raise ConfigError(f"{in_the_way[0]} already exists: choose another file name, or --force to overwrite")
    started = time.monotonic()
    detector = make_detector(method, field)
    with open_reader(recording) as reader:
        metadata = RecordingMetadata(tool_version=__version__, source="detect",
                                     extra={"detector": _detector_name(method, field), "input": str(recording),
                                            "alert_topic": alert_topic})
        if force:  # only an unsealed ALERTS.partial/ goes now; ALERTS is replaced once the new one is whole
            for leftover in in_the_way:
                if leftover != to:
                    remove_tree(leftover)
        # Not crash-safe: the file appears only when complete; a reading error discards it.
        with open_writer(to, metadata=metadata, crash_safe=False) as writer:
            other = 0
            for message in reader:
                alerts = detector.feed_message(message)
                if alerts is None:
                    other += 1
                for alert in alerts or ():
                    writer.write(alert_message(alert, topic=alert_topic))
            summary = writer.close()
    if not quiet:
        elapsed = time.monotonic() - started
        err(f"detect: {detector.readings} readings from {detector.devices} devices in {elapsed:.1f} s, "
            f"{summary.messages} alerts written to {to}"
            + (f"; {other} messages were not readings {_not_reading(method, field)} (skipped)" if other else ""))


def _live(settings: Any, filters: list[str], *, alert_topic: str, qos: int, count: int | None,
          duration: float | None, quiet: bool, method: str, field: str | None) -> bool:
    """Run the live detector (services/detector.py); print the summary; return whether
    something was not delivered or is missing from its sequence."""
    from tesaiot_cli.services.detector import LiveDetectOptions, run_live_detection

    options = LiveDetectOptions(settings, tuple(filters), alert_topic, qos=qos, count=count, duration_s=duration,
                                method=method, field=field)
    with StopSignals() as stop:
        result = run_live_detection(options, stop, on_event=print_event, say=None if quiet else err)
    stats = result.delivery
    if not quiet:
        err(f"detect: stopped ({result.stopped_by}) after {result.elapsed_s:.1f} s: {result.readings} readings from "
            f"{result.devices} devices analysed, {result.published} alerts published, {stats.completed} acknowledged, "
            f"{stats.failed} refused, {stats.dropped} dropped"
            + (f"; {result.other} messages were not readings {_not_reading(method, field)} (skipped)"
               if result.other else ""))
    if result.undelivered:
        warn(f"{result.undelivered} alerts were not delivered ({stats.dropped} dropped, {stats.failed} refused)")
    if result.left_over:
        warn(f"{result.left_over} readings received after the stop were not analysed")
    sequence = result.sequence
    if sequence.numbered and (sequence.missing or not quiet):
        (warn if sequence.missing else err)(sequence.report().summary_line())
    return result.lost
