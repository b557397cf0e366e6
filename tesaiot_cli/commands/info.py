"""``tesaiot info``: what is in a recording (both formats, sealed or left by a crash).

The report itself (the ``--json`` object and its human form) is
:mod:`tesaiot_cli.analysis.info_report`; this module holds the options, the scan and
what is printed.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli.analysis.dedupe import DEFAULT_WINDOW_S
from tesaiot_cli.analysis.info_report import build_report, render_report
from tesaiot_cli.cliutil import check_recording_path, cli_errors, warn
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import location

EPILOG = """\b
Examples:
  tesaiot info out.parquet
  tesaiot info run.jsonl --json | jq '.topics[] | {topic, messages, rate_per_s}'
  tesaiot info out.parquet          # after a crash: reads out.parquet.partial/ as it is
  tesaiot info out.parquet --duplicates   # messages delivered twice (QoS 1 after a reconnect)
  tesaiot info data/                # a dataset (record --workers/--share): all files, merged by time
  tesaiot info out.parquet --json | jq '.values.fields["data.pressure"]'   # min, mean, max, nulls
  tesaiot info big.parquet --no-values   # faster: counts and rates only
  tesaiot info big.parquet --summary     # at once: messages and time span from the footer
"""

def info(
    file: Annotated[Path, typer.Argument(parser=location, metavar="FILE", help="A recording: .parquet or .jsonl (or a crash leftover FILE.partial/), or a dataset directory.", show_default=False)],  # noqa: E501
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object on stdout, for machines.")] = False,
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="parquet or jsonl (default: from the suffix).", show_default=False)] = None,  # noqa: E501
    duplicates: Annotated[bool, typer.Option("--duplicates", help="Also count duplicates: messages whose topic and payload repeat an earlier one within --dedupe-window (QoS 1 re-deliveries after a reconnect). Slower: every message is compared.")] = False,  # noqa: E501
    window: Annotated[float, typer.Option("--dedupe-window", metavar="SECONDS", help="How far back --duplicates looks.")] = DEFAULT_WINDOW_S,  # noqa: E501
    no_values: Annotated[bool, typer.Option("--no-values", help="Skip the statistics of the payloads' numeric JSON fields (faster: payloads are not parsed).")] = False,  # noqa: E501
    summary: Annotated[bool, typer.Option("--summary", help="Only the messages, time span and rate, from the footer (Parquet, a dataset's footers) or the metadata line and a line count (JSONL): a sealed Parquet file answers at once, whatever its size. No per-topic table, payload sizes, labels or values.")] = False,  # noqa: E501
) -> None:
    """Show what a recording holds: messages, time span, per-topic counts, rates and the
    longest silence, payload sizes, anomaly counts when the messages are labelled, and the
    numeric JSON fields' min / mean / max and nulls, overall and per device."""
    from tesaiot_cli.analysis.dedupe import DuplicateFinder
    from tesaiot_cli.analysis.stats import compute_stats
    from tesaiot_cli.recording import open_reader, strip_partial

    with cli_errors():
        file = strip_partial(file)
        check_recording_path(file)
        if summary:
            if duplicates:
                raise ConfigError("--summary reads no message: it cannot count --duplicates")
            _summary(file, fmt=fmt, json_out=json_out)
            return
        finder = DuplicateFinder(window) if duplicates else None
        values = None
        if not no_values:
            from tesaiot_cli.analysis.values import ValueStats

            values = ValueStats()
        from tesaiot_cli.analysis.sequence import SequenceCounter

        sequence = SequenceCounter()
        with open_reader(file, format=fmt) as reader:
            tables = _teed(reader.iter_tables(), sequence.add_table)
            if values is not None:
                tables = _teed(tables, values.add)
            stats = compute_stats(finder.scan_tables(tables) if finder is not None else tables)
            sealed = reader.sealed
            warnings = list(reader.warnings)
            report = build_report(file, reader.metadata, stats, sealed=sealed, warnings=warnings, fmt=fmt)
        report["duplicates"] = finder.report() if finder is not None else None
        report["values"] = values.report() if values is not None else None
        report["sequence"] = sequence.report().as_dict() if sequence.numbered else None
        if json_out:
            import orjson

            sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
        else:
            typer.echo(render_report(report))
        for text in warnings:
            warn(text)
        if not sealed and report["format"] != "parquet-dataset":  # a dataset's warnings say what is unsealed
            where = f" in {file.name}.partial/" if report["format"] == "parquet" else ""
            warn(f"{file} is not sealed: a recording still running, or left by a crash{where}; "
                 f"'tesaiot recover {file}' seals it")


def _summary(file: Path, *, fmt: str | None, json_out: bool) -> None:
    """``info --summary``: counts and span from the reader's plan (the footer), no scan."""
    from tesaiot_cli.analysis.stats import RecordingStats
    from tesaiot_cli.recording import open_reader

    with open_reader(file, format=fmt) as reader:
        plan = reader.plan()
        stats = RecordingStats(messages=plan.messages or 0, start_ns=plan.start_ns, end_ns=plan.end_ns)
        report = build_report(file, reader.metadata, stats, sealed=reader.sealed, warnings=list(reader.warnings),
                              fmt=fmt)
    report.update(payload_bytes=None, labels=None, anomalies=None, unlabelled=None, duplicates=None, values=None,
                  summary=True)
    if json_out:
        import orjson

        sys.stdout.buffer.write(orjson.dumps(report, option=orjson.OPT_INDENT_2) + b"\n")
    else:
        typer.echo(render_report(report))
    for text in report["warnings"]:
        warn(text)


def _teed(tables: Iterator[Any], also: Callable[[Any], None]) -> Iterator[Any]:
    for table in tables:
        also(table)
        yield table
