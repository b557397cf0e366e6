"""Every command has help with real examples; --version; --help stays light (no pyarrow)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from tesaiot_cli import __version__
from tesaiot_cli.cli import COMMANDS, all_commands, app

runner = CliRunner()


def command_names() -> list[str]:
    return sorted(all_commands())


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return result.stdout + result.stderr


def test_commands_registered() -> None:
    assert {"listen", "score", "detect", "plot"} <= set(command_names())


def test_every_command_help_has_examples() -> None:
    for name in command_names():
        result = runner.invoke(app, [name, "--help"], env={"NO_COLOR": "1"})
        assert result.exit_code == 0, name
        assert "Examples:" in result.output, f"{name} --help has no examples"
        assert f"tesaiot {name}" in result.output.split("Examples:", 1)[1], name


def test_top_level_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "Examples:" in result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"tesaiot {__version__}"


def loaded_after(argv: list[str], prefixes: tuple[str, ...]) -> list[str]:
    """The modules starting with one of ``prefixes`` that ``tesaiot ARGV`` imported."""
    code = (
        "import sys\n"
        "from tesaiot_cli.cli import main\n"
        f"sys.argv = ['tesaiot', *{argv!r}]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        f"print('LOADED', sorted(m for m in sys.modules if m.startswith({prefixes!r})), file=sys.stderr)\n"
    )
    output = run_python(code)
    match = re.search(r"LOADED (\[.*\])", output)
    assert match, output
    return eval(match.group(1))  # noqa: S307 - a list literal printed by our own child process


def test_help_does_not_import_heavy_modules() -> None:
    heavy = ("pyarrow", "paho", "orjson", "multiprocessing", "amqtt", "dotenv", "rich", "pydantic", "matplotlib",
             "numpy")
    assert loaded_after(["--help"], heavy) == []


def test_help_imports_no_command_module() -> None:
    """The lazy group: `tesaiot --help` lists every command without importing one."""
    assert loaded_after(["--help"], ("tesaiot_cli.commands.",)) == []
    assert loaded_after([], ("tesaiot_cli.commands.",)) == []


def test_a_command_imports_only_its_own_module() -> None:
    assert loaded_after(["info", "--help"], ("tesaiot_cli.commands.",)) == ["tesaiot_cli.commands.info"]


def test_top_level_help_lists_every_command_with_its_whole_summary() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "100"})
    text = " ".join(result.output.split())
    for entry in COMMANDS:
        assert f"{entry.name} {entry.summary}" in text, entry.name
    assert "..." not in result.output.split("Commands:", 1)[1]


@pytest.mark.parametrize("entry", COMMANDS, ids=lambda entry: entry.name)
def test_summary_is_the_first_sentence_of_the_command_help(entry: object) -> None:
    import importlib

    module = importlib.import_module(entry.module_path)  # type: ignore[attr-defined]
    doc = " ".join((inspect.getdoc(getattr(module, entry.name)) or "").split())  # type: ignore[attr-defined]
    first = re.split(r"(?<=\.) ", doc, maxsplit=1)[0]
    assert entry.summary == first  # type: ignore[attr-defined]


def test_bare_tesaiot_shows_help_and_exits_0() -> None:
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Commands:" in result.stdout


def test_usage_line_names_the_argument_plainly() -> None:
    result = runner.invoke(app, ["record"])
    assert result.exit_code == 2
    assert "Usage: tesaiot record [OPTIONS] FILE" in result.output


def test_completion_still_completes_commands_and_options() -> None:
    env = {"_TESAIOT_COMPLETE": "complete_bash", "COMP_WORDS": "tesaiot re", "COMP_CWORD": "1"}
    result = runner.invoke(app, [], env=env, prog_name="tesaiot")
    assert {"record", "recover", "replay"} <= set(result.output.split()), result.output
    env = {"_TESAIOT_COMPLETE": "complete_bash", "COMP_WORDS": "tesaiot replay --spe", "COMP_CWORD": "2"}
    result = runner.invoke(app, [], env=env, prog_name="tesaiot")
    assert "--speed" in result.output.split(), result.output


def test_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_each_short_flag_means_one_thing_in_every_command() -> None:
    """`-d` was duration in record but device id in simulate; `-s` seed in simulate but speed
    in replay. Now a short flag stands for the same long option everywhere."""
    meanings: dict[str, set[str]] = {}
    for command in all_commands().values():
        for param in command.params:
            if getattr(param, "hidden", False) or param.param_type_name != "option":
                continue
            longs = [opt for opt in param.opts if opt.startswith("--")]
            for short in (opt for opt in param.opts if not opt.startswith("--")):
                meanings.setdefault(short, set()).update(f"{long}" for long in longs)
    clashes = {short: longs for short, longs in meanings.items() if len(longs) > 1}
    assert not clashes, clashes
    assert meanings["-d"] == {"--duration"} and meanings["-s"] == {"--speed"} and meanings["-S"] == {"--seed"}


def test_moved_short_flags_explain_themselves() -> None:
    result = runner.invoke(app, ["simulate", "-d", "lab-01"])
    assert result.exit_code == 1
    assert "invalid --duration 'lab-01': it must be a number (-d is --duration, as in record; the device id is " \
           "-D/--device-id)" in result.output


def test_old_simulate_seed_flag_still_works_with_a_warning() -> None:
    result = runner.invoke(app, ["simulate", "-s", "5", "--count", "-1"])  # stops at --count, after the seed
    assert "warning: -s is now -S (--seed)" in result.output
    assert result.exit_code == 1 and "--count" in result.output


def test_every_command_help_lists_the_exit_codes() -> None:
    for name in command_names():
        result = runner.invoke(app, [name, "--help"], env={"NO_COLOR": "1"})
        assert "Exit codes" in result.output, name


@pytest.mark.parametrize("name", ["score", "detect", "plot"])
def test_analysis_command_help_does_not_import_heavy_modules(name: str) -> None:
    """`tesaiot score|detect|plot --help` loads neither matplotlib nor pyarrow."""
    assert loaded_after([name, "--help"], ("pyarrow", "matplotlib", "numpy", "paho")) == []
