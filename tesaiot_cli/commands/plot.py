"""``tesaiot plot``: telemetry over time per device, with ground-truth anomalies and alerts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from tesaiot_cli.cliutil import cli_errors, err, sigterm_unwinds, warn
from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.recording.files import check_output_path, commit_temp, os_error_text
from tesaiot_cli.recording.storage import location, output_exists, staged_output

INSTALL_HINT = "pip install 'tesaiot-cli[plot]'"

EPILOG = """\b
Examples:
  tesaiot plot recordings/dps368-sample.parquet -o sample.png
  tesaiot plot truth.parquet --alerts alerts.parquet -o run.svg
  tesaiot plot fleet.parquet --device 'infineon-sensor-0*' --max-devices 4 -o fleet.png
  tesaiot plot nab.parquet --device machine_temperature_system_failure --alerts nab-alerts.parquet -o nab.png
"""


def plot(
    recording: Annotated[Path, typer.Argument(parser=location, metavar="RECORDING", help="A recording (file or dataset directory); with labels (simulate --record) the ground-truth anomalies are marked.", show_default=False)],  # noqa: E501
    output: Annotated[Path, typer.Option("--output", "-o", parser=location, metavar="FILE", help="The image to write: .png or .svg.", show_default=False)],  # noqa: E501
    alerts: Annotated[Optional[Path], typer.Option("--alerts", metavar="ALERTS", help="A recording of a detector's alerts: marked, matched alerts apart from false alarms, missed anomalies hollow or hatched.", show_default=False)] = None,  # noqa: E501
    device: Annotated[Optional[list[str]], typer.Option("--device", metavar="GLOB", help="Only these device ids (glob patterns), repeatable.", show_default=False)] = None,  # noqa: E501
    max_devices: Annotated[int, typer.Option("--max-devices", metavar="N", help="Draw at most N devices (the first ones seen).")] = 6,  # noqa: E501
    tolerance: Annotated[str, typer.Option("--tolerance", metavar="TIME", help="As for 'tesaiot score': how late an alert without the reading's timestamp may arrive.")] = "2s",  # noqa: E501
    force: Annotated[bool, typer.Option("--force", help="Overwrite FILE.")] = False,
    title: Annotated[Optional[str], typer.Option("--title", metavar="TEXT", help="Title (default: the recording's name).", show_default=False)] = None,  # noqa: E501
    field: Annotated[Optional[list[str]], typer.Option("--field", metavar="NAME", help="A numeric payload field to draw (a top-level key, one in 'data', or a dotted path), repeatable. Default: pressure and temperature for DPS368 payloads, else 'value' or the only numeric field, else the first two numeric fields.", show_default=False)] = None,  # noqa: E501
) -> None:
    """Plot pressure and temperature (or any numeric field: --field) over time per device
    (min/max per pixel, so a million messages draw in bounded memory), with the ground-truth
    anomalies marked by kind (NAB's windows shaded) and the alerts of a detector: matched,
    false alarms (x) and missed anomalies (hollow).

    Needs matplotlib: pip install 'tesaiot-cli[plot]'. Exit codes: 0 written, 1 bad
    option or matplotlib missing, 5 a recording is missing or unreadable, or FILE cannot be
    written (see 'Output paths' in docs/usage.md), 9 no message matches --device.
    """
    from tesaiot_cli.commands.score import parse_duration_s

    with cli_errors(), sigterm_unwinds():  # SIGTERM: the unfinished output is removed
        try:
            import matplotlib  # noqa: F401 - only to know it is there
        except ImportError:
            raise ConfigError(f"plot needs matplotlib: {INSTALL_HINT}") from None
        if output.suffix.lower() not in (".png", ".svg"):
            raise ConfigError(f"cannot tell the image format of {str(output)!r}: use .png or .svg")
        if max_devices < 1:
            raise ConfigError(f"invalid --max-devices {max_devices}: it must be at least 1")
        check_output_path(output)
        if not force and output_exists(output):
            raise ConfigError(f"{output} already exists: choose another file name, or --force to overwrite")
        tolerance_s = parse_duration_s(tolerance, option="--tolerance")
        if field and not all(name.strip() for name in field):
            raise ConfigError("--field names a numeric payload field: not empty")
        if device:
            _check_selection(recording, tuple(device))
        _plot(recording, output, alerts=alerts, devices=device or [], max_devices=max_devices,
              tolerance_s=tolerance_s, title=title or recording.name, fields=field or [])


def _check_selection(recording: Path, devices: tuple[str, ...]) -> None:
    """Exit 9 (:class:`EmptySelection`) when no message of ``recording`` is from a device
    ``devices`` matches, known from the reader's index (Parquet statistics, dataset
    partitions) or a bounded scan (a small JSONL file)."""
    from tesaiot_cli.errors import EmptySelection
    from tesaiot_cli.playback.selection import Selection
    from tesaiot_cli.recording import open_reader

    selection = Selection((), devices)
    with open_reader(recording) as reader:
        if reader.plan(selection).messages == 0:
            raise EmptySelection(f"nothing to plot: no message in {recording} matches {selection.describe()}")


def _plot(recording: Path, output: Path, *, alerts: Path | None, devices: list[str], max_devices: int,
          tolerance_s: float, title: str, fields: list[str]) -> None:
    import secrets

    from tesaiot_cli.analysis.plot import collect, render
    from tesaiot_cli.recording import open_reader

    if alerts is not None:
        with open_reader(alerts) as reader:  # streamed: only the drawn devices' alerts are kept
            data = collect(lambda: open_reader(recording), alerts=iter(reader), devices=devices,
                           max_devices=max_devices, tolerance_s=tolerance_s, fields=fields)
    else:
        data = collect(lambda: open_reader(recording), devices=devices, max_devices=max_devices,
                       tolerance_s=tolerance_s, fields=fields)
    # Drawn to a temporary name and renamed: an error leaves no half-written image (an
    # s3:// FILE: drawn locally, uploaded once complete).
    with staged_output(output) as local:
        partial = local.with_name(f".{local.stem}.{secrets.token_hex(4)}{local.suffix}")
        try:
            render(data, partial, title=title)
            commit_temp(partial, local)
        except OSError as exc:  # the user's name, not the temporary one
            raise RecordingError(f"cannot write {output}: {os_error_text(exc)}") from None
        finally:
            partial.unlink(missing_ok=True)
    seen = max(data.devices_seen, len(data.devices))
    shown = f"{len(data.devices)} of {seen} device{'s' if seen > 1 else ''}"
    marks = sum(len(v) for v in data.events.values())
    alert_marks = sum(len(v) for v in data.alerts.values())
    err(f"plot: {shown}, {data.readings} readings, {marks} anomaly events, {alert_marks} alerts drawn; "
        f"written to {output}")
    left_out = data.left_out_text()
    if left_out:
        warn(f"plot: {left_out}")
