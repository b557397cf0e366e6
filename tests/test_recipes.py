"""Every Python recipe in docs/recording-format.md runs as written, on a recording with binary
and text payloads mixed in and on its export. pandas, polars and DuckDB are not dependencies
of tesaiot, only of its test extra: a missing one fails the recipe that imports it."""

from __future__ import annotations

import re
import runpy
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_writer
from tests.support.cli import run_cli

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "recording-format.md"
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
RECIPES = BLOCK.findall(DOC.read_text())


def test_the_doc_has_recipes_for_each_library() -> None:
    text = "\n".join(RECIPES)
    for word in ("import duckdb", "import pandas", "import polars", "TRY(decode(payload)", "export.parquet"):
        assert word in text


@pytest.mark.parametrize("index", range(len(RECIPES)))
def test_recipe_runs(tmp_path: Path, index: int, capsys: pytest.CaptureFixture[str]) -> None:
    recipe = RECIPES[index]
    sample = pq.read_table(ROOT / "recordings" / "dps368-sample.parquet").slice(0, 20).to_pylist()
    with open_writer(tmp_path / "recording.parquet", metadata=RecordingMetadata()) as writer:
        for row in sample:
            writer.write(Message(row["topic"], row["payload"], row["qos"], row["retain"], row["time"].value))
        last = sample[-1]["time"].value
        writer.write(Message("raw/bin", b"\xff\x00\x01binary", 0, False, last + 1))
        writer.write(Message("text/t", b"hello", 0, False, last + 2))
        writer.write(Message("device/x/telemetry", b"[1, 2]", 0, False, last + 3))
    result = run_cli("export", str(tmp_path / "recording.parquet"), str(tmp_path / "export.parquet"))
    assert result.returncode == 0, result.stderr
    result = run_cli("convert", str(tmp_path / "recording.parquet"), str(tmp_path / "run.jsonl"))
    assert result.returncode == 0, result.stderr
    script = tmp_path / "recipe.py"
    script.write_text(recipe)
    import os

    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        runpy.run_path(str(script), run_name="__main__")
    finally:
        os.chdir(here)
    out = capsys.readouterr().out
    if "run.jsonl" not in recipe:
        assert "974.66" in out or "pressure" in out  # the first DPS368 reading, or the aggregate's column
    shutil.rmtree(tmp_path, ignore_errors=True)
