"""``tesaiot export``: a recording as a typed table (Parquet, CSV) or an MCAP file for Foxglove."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import cli_errors, err, sigterm_unwinds, warn
from tesaiot_cli.errors import ConfigError, EmptySelection
from tesaiot_cli.recording.storage import location, output_exists, staged_output

if TYPE_CHECKING:
    from tesaiot_cli.playback.selection import Selection
    from tesaiot_cli.recording import RecordingReader

EPILOG = """\b
Examples:
  tesaiot export recordings/dps368-sample.parquet dps368.parquet   # typed columns: data.pressure, ...
  tesaiot export run.jsonl run.csv --topic 'device/+/telemetry' --device 'infineon-*'
  tesaiot export out.parquet window.parquet --start 60 --end 120    # seconds after the first message
  tesaiot export data/ fleet.parquet                # a dataset directory, merged by time
  tesaiot export out.parquet out.mcap               # open in Foxglove (needs tesaiot-cli[mcap])
"""


def export(
    file: Annotated[Path, typer.Argument(parser=location, metavar="RECORDING", help="A recording: .parquet or .jsonl, a crash leftover (FILE.partial/), or a dataset directory.", show_default=False)],  # noqa: E501
    output: Annotated[Path, typer.Argument(parser=location, metavar="OUT", help="The file to write; its suffix chooses the format: .parquet, .csv or .mcap.", show_default=False)],  # noqa: E501
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Only messages matching this MQTT filter (+ and # wildcards), repeatable.", show_default=False)] = None,  # noqa: E501
    device: Annotated[Optional[list[str]], typer.Option("--device", metavar="GLOB", help="Only these device ids (glob patterns), repeatable.", show_default=False)] = None,  # noqa: E501
    start: Annotated[Optional[str], typer.Option("--start", metavar="TIME", help="Skip messages before TIME: seconds after the first message (30, 1.5) or ISO 8601 (UTC unless an offset is given).", show_default=False)] = None,  # noqa: E501
    end: Annotated[Optional[str], typer.Option("--end", metavar="TIME", help="Stop after TIME (same forms as --start).", show_default=False)] = None,  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="Format of RECORDING: parquet or jsonl (default: from its suffix).", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT.")] = False,
) -> None:
    """Export a recording for analysis: one row per message with time (UTC, ns), topic,
    device_id, sensor_type, qos, retain, label (when labelled) and the JSON payload's fields
    as typed columns named by their path (data.pressure). Payloads that are not a JSON object
    are counted and kept as bytes in a payload column. .mcap: one channel per topic for
    Foxglove. OUT appears only when complete."""
    from tesaiot_cli.analysis.export import EXPORT_DECAY_MS, export_format
    from tesaiot_cli.playback.selection import Selection, parse_time_bound
    from tesaiot_cli.recording import is_dataset_path, open_reader, strip_partial
    from tesaiot_cli.recording.files import check_output_path

    with cli_errors(), sigterm_unwinds():  # SIGTERM: the unfinished output is removed
        from tesaiot_cli.recording.schema import use_lean_memory_pool

        use_lean_memory_pool(dict(os.environ), decay_ms=EXPORT_DECAY_MS)  # bounded RSS, few page faults
        file = strip_partial(file)
        kind = export_format(output)
        check_output_path(output)
        if not force and output_exists(output):
            raise ConfigError(f"{output} already exists: choose another name, or --force to overwrite")
        if output.resolve() == file.resolve():
            raise ConfigError("RECORDING and OUT are the same file")
        selection = Selection(
            tuple(topic or ()), tuple(device or ()),
            start=parse_time_bound(start, name="--start") if start is not None else None,
            end=parse_time_bound(end, name="--end") if end is not None else None)
        if kind == "mcap":
            from tesaiot_cli.analysis.mcap_export import require_mcap

            require_mcap()
        reader: RecordingReader
        # An s3:// OUT: written locally, uploaded once complete.
        with staged_output(output) as local, open_reader(file, format=None if is_dataset_path(file) else fmt) as reader:
            # The reader applies the selection (skipping row groups and files it excludes).
            tables = functools.partial(_selected, reader, selection, file)
            if kind == "mcap":
                from tesaiot_cli.analysis.mcap_export import export_mcap

                report = export_mcap(tables, local, selection=Selection())
            else:
                from tesaiot_cli.analysis.export import export_table

                report = export_table(tables, local, selection=Selection(),
                                      labelled=bool(reader.metadata.labelled))
            report.skipped += selection.excluded
            warnings = list(reader.warnings)
            sealed = reader.sealed
        for text in warnings:
            warn(text)
        if not sealed and not is_dataset_path(file):
            warn(f"{file} is not sealed (a recording still running, or left by a crash): exported what it holds")
        if report.not_json:
            where = "kept as bytes in the payload column" if kind != "mcap" else \
                "written to each topic's raw channel (message encoding application/octet-stream)"
            warn(f"{report.not_json:,} of {report.messages:,} payloads are not a JSON object: {where}")
        for name, kinds in report.mixed.items():
            warn(f"field {name} changes type ({', '.join(kinds)}): written as text")
        _warn_exactness(report)
        if report.messages == 0:  # an empty selection stopped above (exit 9)
            warn(f"{file} holds no message: {output} holds no rows")
        from tesaiot_cli.textfmt import human_bytes

        what = f"{report.channels} channels" if kind == "mcap" else f"{len(report.columns)} columns"
        if report.labels:
            what += f", {report.labels:,} labels on channel tesaiot/labels"
        skipped = f", {report.skipped:,} left out by the selection" if report.skipped else ""
        err(f"exported {report.messages:,} messages: {file} -> {output} ({kind}, {what}, "
            f"{human_bytes(report.file_bytes)}){skipped}")


def _warn_exactness(report: Any) -> None:
    """Say where the rules of docs/recording-format.md changed a field's name or type."""
    from tesaiot_cli.textfmt import plural

    if report.renamed:
        import orjson

        shared = ", ".join(f"the path {orjson.dumps(list(path)).decode()} as {name}" for path, name in report.renamed)
        warn(f"{plural(len(report.renamed), 'payload field')} would share a column name with another: "
             f"written as {shared}")
    for name, count in report.inexact.items():
        warn(f"field {name}: {plural(count, 'integer')} that float64 cannot hold exactly: the field is written "
             f"as text, every number's digits exact")
    for name, count in report.untimed.items():
        warn(f"field {name}: {plural(count, 'time')} without a zone offset: kept as text, as written "
             f"(a timestamp column needs times with an offset: Z, +07:00)")


def _selected(reader: RecordingReader, selection: Selection, file: Path) -> Iterator[Any]:
    """One pass over the tables ``selection`` selects (a fresh count of what it leaves
    out). An active selection that selects nothing raises :class:`EmptySelection` (exit 9)
    before OUT is written: an export of nothing is a mistake."""
    selection.excluded = 0
    rows = 0
    for table in reader.iter_tables(selection):
        rows += table.num_rows
        yield table
    if rows == 0 and selection.active:
        raise EmptySelection(f"nothing to export: no message in {file} matches {selection.describe()}; "
                             "nothing was written")
