"""The Typer app: the table of commands, their lazy loading, and the version flag.

Adding a command is ONE line in ``COMMANDS`` below: its name and its one-sentence summary
(what ``tesaiot --help`` lists). The command itself lives in ``tesaiot_cli/commands/NAME.py``
as a function ``NAME`` (Typer-annotated), with ``EPILOG`` (help examples) and, when it
needs one, ``COMMAND_CLASS`` (a ``TyperCommand`` subclass). That module is imported only
when the command runs, is asked for its help, or is completed: ``tesaiot --help`` imports
none of them (tests/test_help.py checks both this and that each summary is the first
sentence of the command's own help).
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from tesaiot_cli import __version__

HELP = """Listen to, simulate, record and replay MQTT telemetry for the TESAIoT platform; score
Edge-AI anomaly detectors against labelled ground truth.

\b
Examples:
  tesaiot listen --topic 'device/+/telemetry/#'
  tesaiot simulate --anomaly-every 10 --count 100
  tesaiot record out.parquet --duration 60
  tesaiot replay recordings/dps368-sample.parquet --speed 5x

Exit codes (every command): 0 done, 1 invalid value, 2 command-line syntax, 3 cannot
connect, 4 authentication refused, 5 recording or file problem, 6 --timeout before --count,
7 messages not delivered, 8 score below --fail-under, 9 the selection is empty (no message
matches --topic/--device/--start/--end), 70 internal error. 'tesaiot COMMAND --help' for
each command.
"""


@dataclass(frozen=True)
class Cmd:
    """One command: ``name`` (also its module ``tesaiot_cli.commands.<module or name>`` and
    function ``<function or name>``) and ``summary``, the first sentence of its help."""

    name: str
    summary: str
    module: str | None = None
    function: str | None = None

    @property
    def module_path(self) -> str:
        return f"tesaiot_cli.commands.{self.module or self.name}"


# The commands, in the order `tesaiot --help` lists them. ONE line per command.
COMMANDS: tuple[Cmd, ...] = (
    Cmd("listen", "Subscribe to telemetry and show it: readable on a terminal, NDJSON with --json."),
    Cmd("watch", "Watch a fleet's telemetry live in a full-screen table: one row per device with its message count, rate, latest pressure and temperature (or first numeric fields), a sparkline, the time since its last message, and its last anomaly label and detector alert."),  # noqa: E501
    Cmd("record", "Record MQTT messages to a Parquet or JSONL file: exact payload bytes, receive time (ns), topic, QoS and retain flag."),  # noqa: E501
    Cmd("info", "Show what a recording holds: messages, time span, per-topic counts, rates and the longest silence, payload sizes, anomaly counts when the messages are labelled, and the numeric JSON fields' min / mean / max and nulls, overall and per device."),  # noqa: E501
    Cmd("convert", "Convert a recording between Parquet and JSONL, keeping every payload byte, time, QoS, retain flag, label and the metadata; or turn a capture of another tool (--from mosquitto-json, mqtt-recorder-csv) into a recording."),  # noqa: E501
    Cmd("export", "Export a recording for analysis: one row per message with time (UTC, ns), topic, device_id, sensor_type, qos, retain, label (when labelled) and the JSON payload's fields as typed columns named by their path (data.pressure)."),  # noqa: E501
    Cmd("recover", "Repair what a crash or damage left behind, keeping everything that is readable."),
    Cmd("simulate", "Simulate Infineon DPS368 pressure/temperature devices publishing to a broker, with anomalies."),
    Cmd("broker", "Run an embedded MQTT broker (amqtt) on localhost until Ctrl+C: for development and demos."),
    Cmd("replay", "Republish a recording to a broker with its original timing (or --speed), or dry-run it to stdout."),  # noqa: E501
    Cmd("score", "Score a detector's alerts against the ground truth (precision, recall, F1, latency, per anomaly kind), and/or check what a broker delivered of the messages sent."),  # noqa: E501
    Cmd("detect", "Detect anomalies in DPS368 telemetry with the reference detector (range, spike, stuck, drift, dropout), or in any numeric field with the generic one (--field), live or on a recording; alerts follow the alert contract."),  # noqa: E501
    Cmd("plot", "Plot pressure and temperature (or any numeric field: --field) over time per device (min/max per pixel, so a million messages draw in bounded memory), with the ground-truth anomalies marked by kind (NAB's windows shaded) and the alerts of a detector: matched, false alarms (x) and missed anomalies (hollow)."),  # noqa: E501
)

# Every command's help ends with this (README "Exit codes" is the full table).
EXIT_CODES_HELP = """
Exit codes: 0 done (also Ctrl+C/SIGTERM), 1 invalid value, 2 command-line syntax, 3 cannot
connect, 4 authentication refused, 5 recording or file problem, 6 --timeout before --count,
7 messages not delivered, 8 score below --fail-under, 9 the selection is empty: no message
matches --topic/--device/--start/--end, 70 internal error.
"""

EXIT_CONFIG = 1  # as cliutil.EXIT_CONFIG (not imported here: the help path stays small)


def load_command(entry: Cmd) -> Any:
    """Import ``entry``'s module and build its click command (a ``TyperCommand``)."""
    module = importlib.import_module(entry.module_path)
    function = getattr(module, entry.function or entry.name)
    base = getattr(module, "COMMAND_CLASS", TyperCommand)
    cls = type(base.__name__, (_PlainUsage, base), {})
    single = typer.Typer(add_completion=False, rich_markup_mode=None, pretty_exceptions_enable=False)
    epilog = getattr(module, "EPILOG", None) or ""
    if "Exit codes" not in (function.__doc__ or "") + epilog:
        epilog += EXIT_CODES_HELP
    single.command(entry.name, cls=cls, epilog=epilog or None, short_help=entry.summary)(function)
    command = typer.main.get_command(single)
    command.name = entry.name
    return command


class _PlainUsage(TyperCommand):
    """Usage lines as people write them: ``tesaiot record [OPTIONS] FILE`` (recent typer
    writes a required argument as ``{FILE}``)."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [piece[1:-1] if piece.startswith("{") and piece.endswith("}") else piece for piece in pieces]


def _is_missing(error: Exception) -> bool:
    # click's MissingParameter (a missing argument or option value: syntax, exit 2) is a
    # BadParameter subclass that typer does not export; told apart by its class name.
    return any(kind.__name__ == "MissingParameter" for kind in type(error).__mro__)


# Typer's and click's wordings of an invalid value, made into ours ("it must be a number").
_KIND = {"number": "a number", "float": "a number", "integer": "an integer", "int": "an integer",
         "boolean": "true or false"}
_WORDING: tuple[tuple[re.Pattern[str], Any], ...] = (
    (re.compile(r"^Input should be a valid (number|integer|boolean)\b.*$"), lambda m: f"it must be {_KIND[m[1]]}"),
    # click names its range types "integer range" / "float range" (the click inside the newest
    # typer says "integer"): seen with typer 0.21.1 on click 8.5.1
    (re.compile(r"^'?.*?'? is not a valid (float|integer|int|boolean)(?: range)?$"),
     lambda m: f"it must be {_KIND[m[1]]}"),
    (re.compile(r"^Input should be (.*)$"), lambda m: f"it must be {m[1]}"),
    (re.compile(r"^.* is not in the range (.*)$"), lambda m: f"it must be in the range {m[1]}"),
)


# Short flags that changed meaning so that each means one thing in every command: a value
# that fits the old meaning and not the new one gets this hint.
MOVED_SHORT_FLAGS = {
    ("simulate", "-d"): "-d is --duration, as in record; the device id is -D/--device-id",
}


def bad_value_line(error: typer.BadParameter, args: list[str], command: str = "") -> str:
    """click's BadParameter as our one line: ``invalid --qos 3: it must be less than or equal to 2``.

    ``args``: the command line after the program name, where the value given is looked up.
    """
    param = error.param
    names = [*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())] if param is not None else []
    longest = max(names, key=len) if names else str(error.param_hint or "value")
    given = _given_value(names, args)
    text = " ".join(str(error.message).split()).rstrip(".")
    for pattern, replacement in _WORDING:
        match = pattern.match(text)
        if match:
            text = replacement(match)
            break
    value = f" {given!r}" if given is not None else ""
    hint = MOVED_SHORT_FLAGS.get((command, _short_used(names, args) or ""), "")
    return f"invalid {longest}{value}: {text}" + (f" ({hint})" if hint else "")


def _short_used(names: list[str], args: list[str]) -> str | None:
    shorts = [name for name in names if not name.startswith("--")]
    return next((arg[:2] for arg in args if arg[:2] in shorts), None)


def _given_value(names: list[str], args: list[str]) -> str | None:
    """The (last) value given on the command line for an option called by one of ``names``."""
    found = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        for name in names:
            if arg == name and index + 1 < len(args):
                found = args[index + 1]
            elif name.startswith("--") and arg.startswith(name + "="):
                found = arg[len(name) + 1:]
            elif not name.startswith("--") and arg.startswith(name) and len(arg) > len(name):
                found = arg[len(name):]
    return found


class LazyGroup(TyperGroup):
    """The top-level group: commands from ``COMMANDS``, each imported when first needed.

    Also: a bare ``tesaiot`` shows the help and exits 0; an invalid option value (click's
    ``BadParameter``: not a number, out of range, not a choice) is one line on stderr and
    exit 1, like every other invalid value; syntax errors (unknown option, missing
    argument) keep click's usage message and exit 2.
    """

    _table = {entry.name: entry for entry in COMMANDS}
    _args: list[str] = []  # the command's arguments, kept by resolve_command for error messages

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        self._args = list(args)
        return super().resolve_command(ctx, args)

    def list_commands(self, ctx: Any) -> list[str]:
        return [*self._table, *(name for name in self.commands if name not in self._table)]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in self._table:
            command = self.commands[cmd_name] = load_command(self._table[cmd_name])
        return command

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = [(entry.name, entry.summary) for entry in COMMANDS]
        rows += [(name, command.get_short_help_str(200)) for name, command in self.commands.items()
                 if name not in self._table and not command.hidden]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except typer.BadParameter as error:
            if _is_missing(error):
                raise
            command = self._args[0] if self._args else ""
            typer.echo(f"tesaiot: error: {bad_value_line(error, self._args[1:], command)}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None


app = typer.Typer(
    name="tesaiot",
    cls=LazyGroup,
    help=HELP,
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
    import os

    from tesaiot_cli.recording import storage

    storage.configure_environment(os.environ)  # s3:// settings, resolved on first use


def all_commands() -> dict[str, Any]:
    """Every command's click command, by name, in table order (imports every command module:
    for tests and documentation checks, not for the CLI's own start-up)."""
    group = typer.main.get_command(app)
    return {name: group.get_command(None, name) for name in group.list_commands(None)}  # type: ignore[attr-defined]


def main() -> None:
    from tesaiot_cli.process.lean import refuse_pandas_for_pyarrow

    refuse_pandas_for_pyarrow()  # 34 MiB and 0.18 s that pyarrow would spend on pandas
    app(prog_name="tesaiot")
