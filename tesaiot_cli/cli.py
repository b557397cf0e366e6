"""The Typer app: the commands, their help, and the version flag.

Each command lives in ``tesaiot_cli/commands/``; heavy modules (pyarrow) are imported
inside the commands that need them, so ``tesaiot --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tesaiot_cli import __version__
from tesaiot_cli.commands import broker as broker_cmd
from tesaiot_cli.commands import convert as convert_cmd
from tesaiot_cli.commands import export as export_cmd
from tesaiot_cli.commands import info as info_cmd
from tesaiot_cli.commands import listen as listen_cmd
from tesaiot_cli.commands import record as record_cmd
from tesaiot_cli.commands import recover as recover_cmd
from tesaiot_cli.commands import replay as replay_cmd
from tesaiot_cli.commands import simulate as simulate_cmd

HELP = """Listen to, simulate, record and replay MQTT telemetry for the TESAIoT platform.

\b
Examples:
  tesaiot listen --topic 'device/+/telemetry/#'
  tesaiot simulate --anomaly-every 10 --count 100
  tesaiot record out.parquet --duration 60
  tesaiot replay recordings/dps368-sample.parquet --speed 5x
"""

app = typer.Typer(
    name="tesaiot",
    help=HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tesaiot {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: Annotated[
        Optional[bool],
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Show the version and exit."),
    ] = None,
) -> None:
    """Listen to, simulate, record and replay MQTT telemetry for the TESAIoT platform."""


app.command("listen", epilog=listen_cmd.EPILOG)(listen_cmd.listen)
app.command("record", epilog=record_cmd.EPILOG)(record_cmd.record)
app.command("info", epilog=info_cmd.EPILOG)(info_cmd.info)
app.command("convert", epilog=convert_cmd.EPILOG)(convert_cmd.convert)
app.command("export", epilog=export_cmd.EPILOG)(export_cmd.export)
app.command("recover", epilog=recover_cmd.EPILOG)(recover_cmd.recover)
app.command("simulate", epilog=simulate_cmd.EPILOG)(simulate_cmd.simulate)
app.command("broker", epilog=broker_cmd.EPILOG)(broker_cmd.broker)
app.command("replay", cls=replay_cmd.ReplayCommand, epilog=replay_cmd.EPILOG)(replay_cmd.replay)


def main() -> None:
    app(prog_name="tesaiot")
