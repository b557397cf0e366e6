"""The docs show the same examples as the help, and shell completion works."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tesaiot_cli.cli import all_commands

ROOT = Path(__file__).resolve().parent.parent


def help_examples() -> dict[str, list[str]]:
    """Each command's example lines from its help epilog, without the trailing comments."""
    examples: dict[str, list[str]] = {}
    for name, command in all_commands().items():
        epilog = command.epilog or ""
        lines = epilog.split("Examples:", 1)[1].splitlines() if "Examples:" in epilog else []
        examples[name] = [re.sub(r"\s+#.*$", "", line).strip() for line in lines if "tesaiot " in line]
    return examples


def test_every_help_example_is_in_the_docs() -> None:
    docs = "\n".join(path.read_text() for path in sorted((ROOT / "docs").glob("*.md")))
    docs += (ROOT / "README.md").read_text()
    missing = [f"{name}: {example}" for name, lines in help_examples().items() for example in lines
               if example not in docs]
    assert not missing, "help examples missing from docs/:\n" + "\n".join(missing)


def test_readme_starts_with_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_shell_completion_completes_commands_and_options() -> None:
    env = {**os.environ, "_TESAIOT_COMPLETE": "complete_bash", "COMP_WORDS": "tesaiot rep", "COMP_CWORD": "1"}
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "replay" in result.stdout.split()
    env.update(COMP_WORDS="tesaiot replay --spe", COMP_CWORD="2")
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert "--speed" in result.stdout.split()


def test_show_completion_prints_a_script() -> None:
    result = subprocess.run([sys.executable, "-m", "tesaiot_cli", "--show-completion", "bash"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "complete" in result.stdout and "tesaiot" in result.stdout
