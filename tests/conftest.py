from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto, start_mosquitto
from tests.support.s3 import Moto, start_moto

ROOT = Path(__file__).resolve().parent.parent
# Variables the CLI reads: never inherited from the developer's shell into a test.
_CLI_ENV_PREFIXES = ("MQTT_", "TESAIOT_", "CA_CERT_PATH", "DEVICE_ID", "PUBLISH_INTERVAL", "ANOMALY_INTERVAL",
                     "NO_COLOR")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLI_ENV_PREFIXES)}
    if os.environ.get("TESAIOT_PAHO_PATH"):  # scripts/test runs the MQTT tests again on paho's public path
        env["TESAIOT_PAHO_PATH"] = os.environ["TESAIOT_PAHO_PATH"]
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tesaiot_cli", *args]


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None,
            input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess (bounded by ``timeout``)."""
    return subprocess.run(
        cli_command(*args), env=env if env is not None else clean_env(), capture_output=True, text=True,
        timeout=timeout, cwd=cwd, input=input.decode() if input is not None else None,
    )


def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args), env=env if env is not None else clean_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=cwd,
    )

def wait_for_stderr(process: subprocess.Popen[str], text: str, timeout: float = 30) -> str:
    """Read ``process``'s stderr line by line until a line holds ``text``; what was read.
    Fails the test, with what was read, when the stream ends or ``timeout`` passes first."""
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not seen: {seen!r}")



@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One private mosquitto for the whole run (fails, never skips, when it cannot start)."""
    instance = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A mosquitto of the test's own, for tests that stop and restart it."""
    instance = start_mosquitto(tmp_path / "mosquitto")
    try:
        yield instance
    finally:
        instance.close()


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """One moto S3 server (real S3 API over HTTP on loopback) for the whole run."""
    instance = start_moto()
    try:
        yield instance
    finally:
        instance.stop()
