"""Conventions across commands: ``-d`` is the duration everywhere, a JSON report has one
shape at every setting (and the docs show that shape), and the Python the project declares
is the one CI tests, refused when older by the scripts a newcomer runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import tomllib
from pathlib import Path

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_writer
from tests.support.broker import free_ports
from tests.support.cli import ROOT, run_cli

T0 = 1_795_335_896_000_000_000


def test_broker_takes_d_for_its_duration() -> None:
    (port,) = free_ports(1)
    started = time.monotonic()
    result = run_cli("broker", "--port", str(port), "--no-ws", "-d", "0.5", timeout=30)
    assert result.returncode == 0, result.stderr
    assert "embedded broker stopped" in result.stderr
    assert time.monotonic() - started < 25


def test_replay_json_at_max_speed_keeps_the_lateness_object(tmp_path: Path) -> None:
    """At --speed max there is no schedule: each lateness value is null, the object stays
    (a pipe reads .lateness_ms.p99 the same way at every speed), and the docs say so."""
    path = tmp_path / "rec.parquet"
    with open_writer(path, metadata=RecordingMetadata(source="record")) as writer:
        for i in range(5):
            writer.write(Message("device/d1/telemetry", b'{"v": %d}' % i, 0, False, T0 + i * 10**8))
    result = run_cli("replay", str(path), "--to", "-", "--speed", "max", "--json")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 5
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["speed"] == "max" and report["expected_s"] is None
    assert report["lateness_ms"] == {"p50": None, "p99": None, "max": None, "mean": None}
    docs = " ".join((ROOT / "docs" / "replay.md").read_text().split())
    assert '`lateness_ms` is `{"p50": null, "p99": null, "max": null, "mean": null}`' in docs
    assert "lateness is `null` at `max`" not in docs


def test_the_declared_python_is_the_tested_one() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["requires-python"] == ">=3.11"
    assert project["tool"]["ruff"]["target-version"] == "py311"
    assert project["tool"]["mypy"]["python_version"] == "3.11"
    for name in ("README.md", "scripts/test", "scripts/demo"):
        text = (ROOT / name).read_text()
        assert "3.10" not in text and "Python 3.11+" in text, name


def _copy_scripts(tmp_path: Path) -> Path:
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for name in ("test", "demo", "require-python.sh"):
        shutil.copy2(ROOT / "scripts" / name, checkout / "scripts" / name)
    return checkout


def test_the_scripts_refuse_an_older_python_in_one_line(tmp_path: Path) -> None:
    """A python3 that says it is 3.10 (a stand-in: there is no 3.10 here) is refused before
    anything is installed or created: one line, exit 1, no .venv."""
    checkout = _copy_scripts(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/sh\necho 3.10\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    for name in ("test", "demo"):
        result = subprocess.run([str(checkout / "scripts" / name)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 1, (name, result.stderr)
        assert result.stderr == f"scripts/{name}: Python 3.11 or newer is needed; python3 is Python 3.10\n"
        assert result.stdout == ""
        assert not (checkout / ".venv").exists()


def test_the_scripts_pass_the_check_on_this_python(tmp_path: Path) -> None:
    """The same check passes on the Python running the tests (3.11 or newer)."""
    checkout = _copy_scripts(tmp_path)
    script = ". scripts/require-python.sh && require_python check && echo ok"
    result = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout == "ok\n", result.stderr
