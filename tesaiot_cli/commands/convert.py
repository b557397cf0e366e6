"""``tesaiot convert``: Parquet to JSONL and back, lossless; captures of other tools in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli.analysis.dedupe import DEFAULT_WINDOW_S
from tesaiot_cli.cliutil import EXIT_RECORDING, check_recording_path, cli_errors, err, sigterm_unwinds, warn
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.recording.storage import location
from tesaiot_cli.textfmt import human_bytes, plural

EPILOG = """\b
Examples:
  tesaiot convert out.parquet out.jsonl          # for jq, grep and friends
  tesaiot convert run.jsonl run.parquet          # compact, for pandas, polars, DuckDB
  tesaiot convert data.bin copy.jsonl --from parquet --force
  tesaiot convert out.parquet clean.parquet --dedupe   # drop QoS 1 re-deliveries
  mosquitto_sub -t '#' -v -F %j > cap.jsonl            # then:
  tesaiot convert --from mosquitto-json cap.jsonl cap.parquet
  tesaiot convert --from mqtt-recorder-csv recording.csv rec.parquet   # mqtt-recorder's CSV
  tesaiot convert --from nab NAB/data nab.parquet        # the NAB corpus, windows as truth
"""


def convert(
    source: Annotated[Path, typer.Argument(parser=location, metavar="IN", help="The recording to read (.parquet or .jsonl).", show_default=False)],  # noqa: E501
    target: Annotated[Path, typer.Argument(parser=location, metavar="OUT", help="The file to write (.parquet or .jsonl).", show_default=False)],  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="Format of OUT: parquet or jsonl (default: from its suffix).", show_default=False)] = None,  # noqa: E501
    from_fmt: Annotated[Optional[str], typer.Option("--from", metavar="FORMAT", help="Format of IN: parquet, jsonl (default: from its suffix), or a capture of another tool: mosquitto-json (mosquitto_sub -F %j or %J lines), mqtt-recorder-csv, mqtt-recorder-csv-b64 (recorded with --encode_b64); nab (a NAB CSV or a directory of them: docs/nab.md).", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT.")] = False,
    dedupe: Annotated[bool, typer.Option("--dedupe", help="Leave out duplicates: messages whose topic and payload repeat an earlier one within --dedupe-window (QoS 1 re-deliveries after a reconnect); the first copy is kept.")] = False,  # noqa: E501
    window: Annotated[float, typer.Option("--dedupe-window", metavar="SECONDS", help="How far back --dedupe looks.")] = DEFAULT_WINDOW_S,  # noqa: E501
    labels: Annotated[Optional[Path], typer.Option("--labels", metavar="FILE", help="--from nab: NAB's combined_windows.json (default: labels/ beside the data directory).", show_default=False)] = None,  # noqa: E501
    topic_template: Annotated[str, typer.Option("--topic-template", metavar="TEMPLATE", help="--from nab: the topic of each series.")] = "nab/{device_id}",  # noqa: E501
) -> None:
    """Convert a recording between Parquet and JSONL, keeping every payload byte, time,
    QoS, retain flag, label and the metadata; or turn a capture of another tool (--from
    mosquitto-json, mqtt-recorder-csv) into a recording. OUT appears only when complete.
    Messages of a capture that cannot be taken over whole are left out, counted, and the
    exit code is 5; a capture with lines its tool never writes is refused (exit 5, nothing
    written)."""
    from dataclasses import replace

    from tesaiot_cli.analysis.dedupe import DuplicateFinder
    from tesaiot_cli.recording import (
        FORMATS,
        existing_outputs,
        format_for,
        open_reader,
        open_writer,
        strip_partial,
    )
    from tesaiot_cli.recording.files import check_output_path
    from tesaiot_cli.recording.foreign import FOREIGN_FORMATS, ForeignReader
    from tesaiot_cli.recording.nab import NabReader

    with cli_errors(), sigterm_unwinds():  # SIGTERM: the unfinished output is removed
        finder = DuplicateFinder(window) if dedupe else None
        nab = from_fmt is not None and from_fmt.lower() == "nab"
        if not nab and (labels is not None or topic_template != "nab/{device_id}"):
            raise ConfigError("--labels and --topic-template are for --from nab")
        source = source if nab else strip_partial(source)
        if not nab:
            check_recording_path(source)
        out_format = format_for(target, fmt)
        foreign = from_fmt is not None and from_fmt.lower() in FOREIGN_FORMATS
        if from_fmt is not None and not foreign and not nab and from_fmt.lower() not in FORMATS:
            raise ConfigError(f"unknown recording format {from_fmt!r} for --from: use "
                              f"{', '.join([*FORMATS, *FOREIGN_FORMATS, 'nab'])}")
        check_output_path(target)
        if source.resolve() == target.resolve():
            raise ConfigError("IN and OUT are the same file")
        in_the_way = [p for p in existing_outputs(target, format=out_format) if p.is_file()]
        if in_the_way and not force:
            raise ConfigError(f"{target} already exists: choose another name, or --force to overwrite")
        reader: Any
        opened = ForeignReader(source, from_fmt.lower()).open() if foreign and from_fmt else \
            NabReader(source, labels=labels, topic_template=topic_template).open() if nab else \
            open_reader(source, format=from_fmt)
        with opened as reader:
            metadata = reader.metadata
            if not reader.sealed:
                warn(f"{source} is not sealed (left by a crash?): converting what is readable; "
                     f"'tesaiot recover {source}' seals it")
            note: dict[str, Any] = {"removed": 0, "window_s": window}
            if finder is not None:  # said in the metadata: filled in before the writer closes
                metadata = replace(metadata, extra={**metadata.extra, "deduplicated": note})
            writer = open_writer(target, metadata=metadata, format=out_format, crash_safe=False)
            try:
                for message, label in reader.iter_labelled():
                    if finder is not None and finder.repeated(message.topic, message.payload, message.time_ns):
                        continue
                    writer.write(message, label=label)
                note["removed"] = finder.duplicates if finder is not None else 0
            except BaseException:
                writer.discard()
                raise
            summary = writer.close()
            warnings = list(reader.warnings)
        for text in warnings:
            warn(text)
        removed = f", {finder.duplicates:,} duplicates left out" if finder is not None else ""
        err(f"converted {plural(summary.messages, 'message')}: {source} -> {target} ({out_format}, "
            f"{human_bytes(summary.file_bytes)}){removed}")
        lost = getattr(reader, "lost", 0)
        if lost:
            err(f"error: {lost:,} messages of {source} could not be taken over whole and were left out "
                "(see the warnings above)")
            raise typer.Exit(EXIT_RECORDING)
