"""``tesaiot recover``: seal a recording left by a crash, or save what a damaged one holds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tesaiot_cli.cliutil import cli_errors, err, sigterm_unwinds
from tesaiot_cli.recording.storage import location
from tesaiot_cli.textfmt import plural

EPILOG = """\b
Examples:
  tesaiot recover out.parquet        # seal out.parquet.partial/ (left by a kill or power loss)
  tesaiot recover run.jsonl          # cut an incomplete last line
  tesaiot recover bad.parquet --output good.parquet   # copy the readable row groups
"""


def recover(
    file: Annotated[Path, typer.Argument(parser=location, metavar="FILE", help="The recording (for a crash leftover: the name it was recorded to).", show_default=False)],  # noqa: E501
    output: Annotated[Optional[Path], typer.Option("--output", "-o", metavar="PATH", help="Where to write what is recovered (default: FILE when sealing, else NAME.recovered.EXT).", show_default=False)] = None,  # noqa: E501
    fmt: Annotated[Optional[str], typer.Option("--format", "-f", metavar="FORMAT", help="parquet or jsonl (default: from the suffix).", show_default=False)] = None,  # noqa: E501
) -> None:
    """Repair what a crash or damage left behind, keeping everything that is readable.

    \b
    - Parquet killed while recording (FILE.partial/ left): seal it into FILE.
    - JSONL with an incomplete last line: cut that line.
    - Damaged Parquet row groups or JSONL lines: copy the rest to --output.
    A healthy file is left alone (exit 0)."""
    from tesaiot_cli.recording import recover as recover_recording
    from tesaiot_cli.recording.files import check_output_path

    with cli_errors(), sigterm_unwinds():  # SIGTERM: the unfinished output is removed
        if output is not None:
            check_output_path(output)
        result = recover_recording(file, output=output, format=fmt)
        detail = f" ({result.detail})" if result.detail else ""
        if result.action == "nothing":
            err(f"nothing to recover: {plural(result.messages, 'message')} readable{detail}")
        elif result.action == "sealed":
            err(f"sealed {plural(result.messages, 'message')} into {result.output}{detail}")
        elif result.action == "truncated":
            err(f"{result.path}: {plural(result.messages, 'message')} kept{detail}")
        else:
            err(f"saved {result.messages:,} readable messages to {result.output}{detail}")
