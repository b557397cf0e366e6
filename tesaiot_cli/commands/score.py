"""``tesaiot score``: how well a detector did against the simulator's ground truth (or NAB's
windows, ``--nab``), and what a broker delivered of what was sent."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import EXIT_THRESHOLD, cli_errors, err
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import location

if TYPE_CHECKING:
    from tesaiot_cli.analysis.nab import NabScore
    from tesaiot_cli.analysis.score import DeliveryScore, DetectionScore
    from tesaiot_cli.analysis.sequence import SequenceCounter
    from tesaiot_cli.message import Message

EPILOG = """\b
Examples:
  tesaiot score truth.parquet --alerts alerts.parquet
  tesaiot score truth.parquet --received recorded.parquet        # what the broker delivered
  tesaiot score truth.parquet --alerts alerts.parquet --json | jq .detection.f1
  tesaiot score truth.parquet --alerts alerts.parquet --fail-under f1=0.9,recall=0.95
  tesaiot score truth.parquet --alerts alerts.jsonl --tolerance 500ms
  tesaiot score nab.parquet --alerts alerts.csv --nab --fail-under nab=60   # docs/nab.md
"""

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)?\s*$")


def parse_duration_s(text: str, *, option: str) -> float:
    """``2``, ``2s``, ``1.5 s``, ``500ms`` -> seconds. Raises :class:`ConfigError`."""
    match = _DURATION.match(text)
    if not match:
        raise ConfigError(f"invalid {option} {text!r}: use seconds (2, 2s, 1.5s) or milliseconds (500ms)")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value


def score(
    truth: Annotated[Path, typer.Argument(parser=location, metavar="TRUTH", help="The ground truth: a labelled recording from 'tesaiot simulate --record' (file or dataset directory).", show_default=False)],  # noqa: E501
    alerts: Annotated[Optional[Path], typer.Option("--alerts", parser=location, metavar="ALERTS", help="The detector's alerts: a recording of its alert messages (e.g. 'tesaiot record alerts.parquet -t device/+/alerts', or 'tesaiot detect REC --to alerts.parquet'), or a plain file: NDJSON (.ndjson, or .jsonl that is not a recording) of alert objects, or CSV rows timestamp,device_id[,kind,score].", show_default=False)] = None,  # noqa: E501
    received: Annotated[Optional[Path], typer.Option("--received", parser=location, metavar="RECEIVED", help="A recording of what arrived at a subscriber: matched with TRUTH by topic and exact payload bytes.", show_default=False)] = None,  # noqa: E501
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout instead of the table.")] = False,  # noqa: E501
    tolerance: Annotated[str, typer.Option("--tolerance", metavar="TIME", help="Alerts without the reading's timestamp match an event they arrive at most this long after (2s, 500ms).")] = "2s",  # noqa: E501
    fail_under: Annotated[Optional[str], typer.Option("--fail-under", metavar="NAME=RATIO,...", help=f"Exit {EXIT_THRESHOLD} when a score is below its threshold: precision, recall, f1 (with --alerts), delivered (with --received), nab (with --nab: the standard profile's 0-100). Example: f1=0.9,recall=0.95.", show_default=False)] = None,  # noqa: E501
    nab: Annotated[bool, typer.Option("--nab", help="NAB's score instead of events: the Numenta Anomaly Benchmark's windows, profiles and normalisation, for a TRUTH from 'tesaiot convert --from nab'.")] = False,  # noqa: E501
) -> None:
    """Score a detector's alerts against the ground truth (precision, recall, F1, latency,
    per anomaly kind), and/or check what a broker delivered of the messages sent. With
    --nab: the Numenta Anomaly Benchmark's score of the alerts (docs/nab.md).

    Exit codes: 0 scored (thresholds met), 1 bad option or a TRUTH without labels,
    5 a recording or alert file is missing, unreadable or has a bad line, 8 a --fail-under
    threshold was not met.
    """
    from tesaiot_cli.analysis import thresholds as scoring

    with cli_errors():
        tolerance_s = parse_duration_s(tolerance, option="--tolerance")
        thresholds: dict[str, float] = {}
        if fail_under is not None:
            try:
                thresholds = scoring.parse_thresholds(fail_under)
            except ValueError as exc:
                raise ConfigError(f"invalid --fail-under {exc}") from None
        if alerts is None and received is None:
            raise ConfigError("nothing to score: give --alerts ALERTS (a detector's alerts) and/or --received "
                              "RECEIVED (what a subscriber recorded)")
        if (alerts is None or nab) and any(name in thresholds for name in ("precision", "recall", "f1")):
            raise ConfigError("--fail-under precision, recall or f1 needs --alerts (and no --nab)")
        if nab and alerts is None:
            raise ConfigError("--nab needs --alerts ALERTS")
        if not nab and "nab" in thresholds:
            raise ConfigError("--fail-under nab needs --nab")
        if received is None and "delivered" in thresholds:
            raise ConfigError("--fail-under delivered needs --received")
        from tesaiot_cli.analysis.sequence import SequenceCounter

        sequence = SequenceCounter()  # the received side's own "seq" numbers: no truth needed
        detection = _detection(truth, alerts, tolerance_s) if alerts is not None and not nab else None
        nab_score = _nab(truth, alerts) if alerts is not None and nab else None
        delivery = _delivery(truth, received, sequence) if received is not None else None
        seq_report = sequence.report() if sequence.numbered else None
        unmet = scoring.unmet_thresholds(thresholds, detection, delivery, nab_score)
        if json_out:
            import orjson

            report: dict[str, Any] = {
                "truth": str(truth), "alerts": None if alerts is None else str(alerts),
                "received": None if received is None else str(received),
                "detection": None if detection is None else detection.as_dict(),
                "nab": None if nab_score is None else nab_score.as_dict(),
                "delivery": None if delivery is None else delivery.as_dict(),
                "sequence": None if seq_report is None else seq_report.as_dict(),
                "thresholds": {"given": thresholds, "unmet": unmet},
            }
            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            lines = [] if nab_score is None else nab_lines(nab_score)
            rest = table_lines(detection, delivery)
            for line in lines + ([""] if lines and rest else []) + rest:
                typer.echo(line)
            if seq_report is not None:
                typer.echo("  received " + seq_report.summary_line())
        if nab_score is not None and (nab_score.unplaced or nab_score.invalid):
            err(f"warning: {nab_score.unplaced:,} alerts name no reading of {truth} (device and timestamp) and "
                f"{nab_score.invalid:,} are not JSON objects: not scored")
        if not json_out and detection is not None and not detection.dropouts_known:
            err("warning: the truth does not say which packets were left out (dropout): dropouts are not scored")
    if unmet:
        err(f"below --fail-under: {', '.join(unmet)}")
        raise typer.Exit(EXIT_THRESHOLD)


def _open_truth(truth: Path) -> Any:
    from tesaiot_cli.recording import open_reader

    reader = open_reader(truth)
    if not reader.metadata.labelled:
        reader.__exit__(None, None, None)
        raise ConfigError(f"{truth} has no ground-truth labels: make one with 'tesaiot simulate --record {truth}'")
    return reader


def _detection(truth: Path, alerts: Path, tolerance_s: float) -> DetectionScore:
    from tesaiot_cli.analysis.score import score_detection

    with _open_truth(truth) as truth_reader, _open_alerts(alerts) as alert_messages:
        return score_detection(truth_reader.iter_labelled(), truth_reader.metadata, alert_messages,
                               tolerance_s=tolerance_s)


def _nab(truth: Path, alerts: Path) -> NabScore:
    from tesaiot_cli.analysis.nab import score_recordings

    with _open_truth(truth) as truth_reader, _open_alerts(alerts) as alert_messages:
        return score_recordings(truth_reader.iter_labelled(), truth_reader.metadata, alert_messages)


@contextmanager
def _open_alerts(alerts: Path) -> Iterator[Iterator[Message]]:
    """The alerts of a recording or of a plain alert file (NDJSON, CSV)."""
    from tesaiot_cli.recording import open_reader
    from tesaiot_cli.recording.alertfile import is_plain_alert_file, read_alert_file

    if is_plain_alert_file(alerts):
        yield iter(read_alert_file(alerts))
        return
    with open_reader(alerts) as reader:
        yield iter(reader)


def _delivery(truth: Path, received: Path, sequence: SequenceCounter) -> DeliveryScore:
    from tesaiot_cli.analysis.score import score_delivery
    from tesaiot_cli.recording import open_reader

    with open_reader(truth) as truth_reader, open_reader(received) as received_reader:
        return score_delivery(iter(truth_reader), sequence.counted(received_reader))


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"


def nab_lines(nab: NabScore) -> list[str]:
    """NAB's report: the corpus, then one row per profile."""
    lines = [
        f"NAB: {nab.series} series, {nab.windows} windows, {nab.rows:,} readings ({nab.probationary_rows:,} "
        f"probationary, not scored); {nab.alerts:,} alerts marked {nab.detections:,} readings"
        + (f", {nab.unplaced:,} alerts name no reading" if nab.unplaced else ""),
        "",
        f"  {'profile':<20}{'score':>8}{'raw':>10}{'detected':>10}{'missed':>8}{'false positives':>17}",
    ]
    for name, profile in nab.profiles.items():
        shown = "-" if profile.score is None else f"{profile.score:.2f}"
        lines.append(f"  {name:<20}{shown:>8}{profile.raw:>10.3f}{profile.tp:>10}{profile.fn:>8}{profile.fp:>17}")
    lines += ["", "  score: 100 = every window found at its first reading and no false positive; 0 = no detection "
                  "(NAB's null detector)"]
    return lines


def table_lines(detection: DetectionScore | None, delivery: DeliveryScore | None) -> list[str]:
    """The human report: a few summary lines and one row per anomaly kind."""
    lines: list[str] = []
    if detection is not None:
        overall = detection.overall
        latency = overall.latency_ms()
        per_hour = detection.false_alarms_per_hour
        lines += [
            f"detection: {overall.events} events, {overall.detected} detected, {overall.missed} missed, "
            f"{overall.false_alarms} false alarms" + ("" if per_hour is None else f" ({per_hour:.1f} per hour)")
            + f"; {detection.alerts} alerts ({detection.time_matched} matched by time, "
            f"tolerance {detection.tolerance_s:g} s)",
            f"  precision {_ratio(overall.precision)}  recall {_ratio(overall.recall)}  F1 {_ratio(overall.f1)}  "
            f"latency p50 {_ms(latency['p50'])}  p95 {_ms(latency['p95'])}  max {_ms(latency['max'])}",
        ]
        if detection.invalid_alerts:
            lines.append(f"  {detection.invalid_alerts} alerts were not JSON objects (counted as false alarms)")
        header = (f"  {'kind':<18}{'events':>7}{'detected':>10}{'missed':>8}{'false alarms':>14}{'recall':>8}"
                  f"{'precision':>10}{'p50':>10}{'p95':>10}")
        lines += ["", header]
        for kind, score in sorted(detection.by_kind.items()):
            kind_latency = score.latency_ms()
            lines.append(f"  {kind:<18}{score.events:>7}{score.detected:>10}{score.missed:>8}{score.false_alarms:>14}"
                         f"{_ratio(score.recall):>8}{_ratio(score.precision):>10}{_ms(kind_latency['p50']):>10}"
                         f"{_ms(kind_latency['p95']):>10}")
    if delivery is not None:
        if lines:
            lines.append("")
        data = delivery.as_dict()
        latency = data["latency_ms"]
        lines += [
            f"delivery: {delivery.sent} sent, {delivery.received} received, {delivery.lost} lost, "
            f"{delivery.duplicated} duplicated, {delivery.out_of_order} out of order"
            + (f", {delivery.unexpected} not sent by the simulator" if delivery.unexpected else ""),
            f"  delivered {_ratio(delivery.delivered)}  latency p50 {_ms(latency['p50'])}  "
            f"p99 {_ms(latency['p99'])}  max {_ms(latency['max'])}",
        ]
    return lines
