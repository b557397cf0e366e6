"""The CLI keeps pyarrow from importing pandas on its behalf (tesaiot_cli/process/lean.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.cli import clean_env

CHILD = """
import sys
from tesaiot_cli.process import lean
from tesaiot_cli.cli import main
sys.argv = ["tesaiot", "convert", {source!r}, {target!r}]
try:
    main()
except SystemExit as exit:
    assert not exit.code, exit.code
guard = next(f for f in sys.meta_path if isinstance(f, lean._RefusePandas))
print("pandas imported:", "pandas" in sys.modules, "refused:", guard.refused)
try:
    import pandas  # code that is not tesaiot's still gets it (when installed)
    print("others get pandas:", pandas.__name__ == "pandas")
except ImportError:
    print("others get pandas: not installed")
"""


def test_a_command_that_converts_python_values_leaves_pandas_unimported(tmp_path: Path) -> None:
    """``convert`` JSONL -> Parquet builds Arrow arrays from Python lists (the recorder's
    path): pyarrow's one look for pandas is refused, pandas is never imported, the file is
    whole, and other code in the process can still import pandas."""
    source, target = tmp_path / "in.jsonl", tmp_path / "out.parquet"
    from tesaiot_cli.message import Message
    from tesaiot_cli.recording import RecordingMetadata, open_writer

    with open_writer(source, metadata=RecordingMetadata(), crash_safe=False) as writer:
        for i in range(100):
            writer.write(Message(f"device/d{i % 3}/telemetry", b'{"v": %d}' % i, 1, False, 1_700_000_000 + i))
    result = subprocess.run([sys.executable, "-c", CHILD.format(source=str(source), target=str(target))],
                            capture_output=True, text=True, timeout=60, env=clean_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-2] == "pandas imported: False refused: 1", result.stdout  # pyarrow remembered the answer
    assert lines[-1] in ("others get pandas: True", "others get pandas: not installed")
    import pyarrow.parquet as pq

    assert pq.read_table(target).num_rows == 100
