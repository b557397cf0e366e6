"""Every command has help with real examples; --version; --help stays light (no pyarrow)."""

from __future__ import annotations

import subprocess
import sys

import typer.main
from typer.testing import CliRunner

from tesaiot_cli import __version__
from tesaiot_cli.cli import app

runner = CliRunner()


def command_names() -> list[str]:
    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


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


def test_help_does_not_import_heavy_modules() -> None:
    code = (
        "import sys\n"
        "from tesaiot_cli.cli import main\n"
        "sys.argv = ['tesaiot', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('pyarrow', 'paho', 'orjson', 'multiprocessing', 'amqtt', 'dotenv', 'matplotlib',\n"
        "                      'numpy') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in result.stderr, result.stderr


def test_python_dash_m_works() -> None:
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli", "--version"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and __version__ in result.stdout


def test_analysis_command_help_does_not_import_heavy_modules() -> None:
    """`tesaiot score|detect|plot --help` loads neither matplotlib nor pyarrow."""
    for name in ("score", "detect", "plot"):
        code = (
            "import sys\n"
            "from tesaiot_cli.cli import main\n"
            f"sys.argv = ['tesaiot', '{name}', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('pyarrow', 'matplotlib', 'numpy', 'paho') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)\n"
        )
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert "HEAVY []" in result.stderr, (name, result.stderr)
