"""``tesaiot export``: a recording as a typed table (Parquet, CSV) or an MCAP file for Foxglove."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import cli_errors, err, warn
from tesaiot_cli.errors import ConfigError

EPILOG = """\b
Examples:
  tesaiot export recordings/dps368-sample.parquet dps368.parquet   # typed columns: data.pressure, ...
  tesaiot export run.jsonl run.csv --topic 'device/+/telemetry' --device 'infineon-*'
  tesaiot export out.parquet window.parquet --start 60 --end 120    # seconds after the first message
  tesaiot export data/ fleet.parquet                # a dataset directory, merged by time
  tesaiot export out.parquet out.mcap               # open in Foxglove (needs tesaiot-cli[mcap])
"""


def export(
    file: Annotated[Path, typer.Argument(metavar="RECORDING", help="A recording: .parquet or .jsonl, a crash leftover (FILE.partial/), or a dataset directory.", show_default=False)],  # noqa: E501
    output: Annotated[Path, typer.Argument(metavar="OUT", help="The file to write; its suffix chooses the format: .parquet, .csv or .mcap.", show_default=False)],  # noqa: E501
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
    from tesaiot_cli.recording import is_dataset_path, open_reader, strip_partial
    from tesaiot_cli.selection import Selection, parse_time_bound

    with cli_errors():
        from tesaiot_cli.recording.schema import use_lean_memory_pool

        use_lean_memory_pool(dict(os.environ), decay_ms=EXPORT_DECAY_MS)  # bounded RSS, few page faults
        file = strip_partial(file)
        kind = export_format(output)
        if output.is_dir():
            raise ConfigError(f"{output} is a directory: give a file name ending in .parquet, .csv or .mcap")
        if output.exists() and not force:
            raise ConfigError(f"{output} already exists: choose another name, or --force to overwrite")
        if not output.parent.is_dir():
            raise ConfigError(f"cannot write {output}: the directory {output.parent} does not exist")
        if output.resolve() == file.resolve():
            raise ConfigError("RECORDING and OUT are the same file")
        selection = Selection(
            tuple(topic or ()), tuple(device or ()),
            start=parse_time_bound(start, name="--start") if start is not None else None,
            end=parse_time_bound(end, name="--end") if end is not None else None)
        if kind == "mcap":
            from tesaiot_cli.analysis.mcap_export import require_mcap

            require_mcap()
        reader: Any
        with open_reader(file, format=None if is_dataset_path(file) else fmt) as reader:
            if kind == "mcap":
                from tesaiot_cli.analysis.mcap_export import export_mcap

                report = export_mcap(reader.iter_tables, output, selection=selection)
            else:
                from tesaiot_cli.analysis.export import export_table

                report = export_table(reader.iter_tables, output, selection=selection,
                                      labelled=bool(reader.metadata.labelled))
            warnings = list(getattr(reader, "warnings", []))
            sealed = getattr(reader, "sealed", True)
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
        if report.messages == 0:
            warn(f"no message in {file} matched the selection: {output} holds no rows")
        from tesaiot_cli.textfmt import human_bytes

        what = f"{report.channels} channels" if kind == "mcap" else f"{len(report.columns)} columns"
        if report.labels:
            what += f", {report.labels:,} labels on channel tesaiot/labels"
        skipped = f", {report.skipped:,} left out by the selection" if report.skipped else ""
        err(f"exported {report.messages:,} messages: {file} -> {output} ({kind}, {what}, "
            f"{human_bytes(report.file_bytes)}){skipped}")
