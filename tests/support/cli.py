"""The real CLI in a process of its own: the environment it gets, one-shot runs, and
processes whose output threads drain (never blocking the test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository

# Variables the CLI reads: never inherited from the developer's shell into a test.
_CLI_ENV_PREFIXES = ("MQTT_", "TESAIOT_", "CA_CERT_PATH", "DEVICE_ID", "PUBLISH_INTERVAL", "ANOMALY_INTERVAL",
                     "NO_COLOR")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_CLI_ENV_PREFIXES)}
    if os.environ.get("TESAIOT_PAHO_PATH"):  # scripts/test runs the MQTT tests again on paho's public path
        env["TESAIOT_PAHO_PATH"] = os.environ["TESAIOT_PAHO_PATH"]
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"  # a process that hangs is sent SIGABRT: its threads' stacks go to stderr
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tesaiot_cli", *args]


# Commands that never connect to a broker: run_cli runs them in the test's own process.
_OFFLINE = frozenset({"info", "export", "convert", "recover", "score", "plot"})


def runs_offline(args: tuple[str, ...]) -> bool:
    """Whether ``tesaiot ARGS`` never connects: an offline command, ``replay --to -``
    (NDJSON on stdout) or ``detect --to FILE`` (a recording in, alerts to a file)."""
    if not args or os.environ.get("TESAIOT_TEST_CLI_PROCESS") == "1":  # every run a real process
        return False
    if args[0] in _OFFLINE:
        return True
    pairs = set(zip(args, args[1:], strict=False))
    return (args[0] == "replay" and ("--to", "-") in pairs) or (args[0] == "detect" and "--to" in args)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None,
            input: bytes | None = None, process: bool | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI, bounded by ``timeout``: in a subprocess, or (``process`` False;
    by default when :func:`runs_offline` and ``env`` sets the interpreter up as this one
    is) in this process through the Typer app the
    ``tesaiot`` entry point runs, with ``env`` as the whole environment and ``cwd`` as
    the working directory. Either way: the exit code, stdout and stderr the user gets."""
    chosen = env if env is not None else clean_env()
    interpreter = {k for k in {*chosen, *os.environ}
                   if k.startswith("PYTHON") and k not in ("PYTHONUNBUFFERED", "PYTHONFAULTHANDLER")}
    same_interpreter = all(chosen.get(k) == os.environ.get(k) for k in interpreter)  # PYTHONPATH...: a process
    if process is False or (process is None and runs_offline(args) and same_interpreter):
        return run_in_process(*args, env=env if env is not None else clean_env(), cwd=cwd, input=input)
    return subprocess.run(
        cli_command(*args), env=env if env is not None else clean_env(), capture_output=True, text=True,
        timeout=timeout, cwd=cwd, input=input.decode() if input is not None else None,
    )


def run_in_process(*args: str, env: dict[str, str], cwd: Path | None = None,
                   input: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """``tesaiot ARGS`` through Typer's CliRunner: os.environ is ``env`` for the call (and
    restored after); an exception that escapes the command is written to stderr as the
    interpreter would (a traceback) and exits 1, so a test that looks for one finds it."""
    from typer.testing import CliRunner

    from tesaiot_cli.cli import app

    unset: dict[str, str | None] = {key: None for key in os.environ if key not in env}
    here = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, list(args), input=input, env={**env, **unset}, prog_name="tesaiot")
    finally:
        os.chdir(here)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(cli_command(*args), result.exit_code, result.stdout, stderr)


def start_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
              preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[str]:
    """Start the real CLI (stdout and stderr piped; ``preexec_fn`` runs in the child first)."""
    return subprocess.Popen(
        cli_command(*args), env=env if env is not None else clean_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=cwd, preexec_fn=preexec_fn,
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


def error_lines(stderr: str) -> list[str]:
    """The ``tesaiot: error:`` lines of ``stderr`` (and never a traceback)."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("tesaiot: error:")]


class Proc:
    """A `tesaiot` process whose stdout and stderr are drained by threads (never blocks)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], None] | None = None) -> None:
        self.process = start_cli(*args, env=env, preexec_fn=preexec_fn)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
                         for stream, sink in ((self.process.stdout, self.out), (self.process.stderr, self.err))]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _drain(stream: object, sink: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            sink.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    def wait_for_stderr(self, text: str, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.stderr:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"{text!r} never appeared on stderr: {self.stderr!r}")

    def wait_for_eof(self, timeout: float = 30) -> bool:
        """Wait until stdout and stderr are closed by every process that holds them (its
        children too), at most ``timeout`` s; whether they were."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in self._threads)

    def wait(self, timeout: float = 60) -> int:
        """The exit code, waiting at most ``timeout`` s. A process still running then is
        sent SIGABRT (with PYTHONFAULTHANDLER set, as :func:`clean_env` sets it, it writes
        every thread's stack to stderr), then killed; the test fails with that stderr."""
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGABRT)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            for thread in self._threads:
                thread.join(timeout=5)
            raise AssertionError(f"the process did not exit within {timeout:g} s; its stacks and stderr:\n"
                                 f"{self.stderr}") from None
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(5)
        for thread in self._threads:
            thread.join(timeout=5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.wait(timeout)


def record(*args: str, env: dict[str, str] | None = None) -> Proc:
    """``tesaiot record ARGS``, returned once it says it is recording."""
    recorder = Proc("record", *args, env=env)
    recorder.wait_for_stderr("recording mqtt", timeout=15)
    return recorder
