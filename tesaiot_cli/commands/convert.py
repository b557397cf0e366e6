"""``tesaiot convert``: Parquet to JSONL and back, lossless."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import cli_errors, err, warn
from tesaiot_cli.commands.info import human_bytes
from tesaiot_cli.errors import ConfigError

EPILOG = """\b
Examples:
  tesaiot convert out.parquet out.jsonl          # for jq, grep and friends
  tesaiot convert run.jsonl run.parquet          # compact, for pandas, polars, DuckDB
  tesaiot convert data.bin copy.jsonl --from parquet --force
"""


def convert(
    source: Annotated[Path, typer.Argument(metavar="IN", help="The recording to read (.parquet or .jsonl).", show_default=False)],  # noqa: E501
    target: Annotated[Path, typer.Argument(metavar="OUT", help="The file to write (.parquet or .jsonl).", show_default=False)],  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="Format of OUT: parquet or jsonl (default: from its suffix).", show_default=False)] = None,  # noqa: E501
    from_fmt: Annotated[Optional[str], typer.Option("--from", metavar="FORMAT", help="Format of IN (default: from its suffix).", show_default=False)] = None,  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT.")] = False,
) -> None:
    """Convert a recording between Parquet and JSONL, keeping every payload byte, time,
    QoS, retain flag, label and the metadata. OUT appears only when complete."""
    from tesaiot_cli.recording.base import existing_outputs, format_for, open_reader, open_writer, strip_partial

    with cli_errors():
        source = strip_partial(source)
        out_format = format_for(target, fmt)
        format_for(source, from_fmt)
        if source.resolve() == target.resolve():
            raise ConfigError("IN and OUT are the same file")
        in_the_way = [p for p in existing_outputs(target, format=out_format) if p.is_file()]
        if in_the_way and not force:
            raise ConfigError(f"{target} already exists: choose another name, or --force to overwrite")
        with open_reader(source, format=from_fmt) as reader:
            writer: Any = open_writer(target, metadata=reader.metadata, format=out_format, crash_safe=False)
            try:
                for message, label in reader.iter_labelled():
                    writer.write(message, label=label)
            except BaseException:
                writer.discard()
                raise
            summary = writer.close()
            warnings = list(getattr(reader, "warnings", []))
        for text in warnings:
            warn(text)
        err(f"converted {summary.messages:,} messages: {source} -> {target} ({out_format}, "
            f"{human_bytes(summary.file_bytes)})")
