"""Shared pieces of the benchmark: the private mosquitto, processes, the paced publisher, tables.

Every wait here is bounded in time; every process started is stopped (SIGINT, then
SIGTERM, then SIGKILL) by the code that started it.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent.parent
ROOT = BENCH_DIR.parent
PYTHON = sys.executable

# mosquitto queues and in-flight windows, set high so the broker's defaults (1000 queued,
# 20 in flight) are not what is measured; a subscriber that cannot keep up then shows up
# as late, not as messages dropped by the broker.
MAX_QUEUED_MESSAGES = 1_000_000
MAX_INFLIGHT_MESSAGES = 10_000


class BenchError(RuntimeError):
    """A benchmark step could not run (tool missing, broker down, timeout)."""


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise BenchError("mosquitto not found (apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Broker:
    """A private mosquitto on a free loopback port, with its own config and log in ``directory``."""

    directory: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _log_offset: int = 0
    _log_text: str = ""

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "mosquitto.log"

    def config_text(self) -> str:
        return (
            ("user root\n" if os.geteuid() == 0 else "")
            + "persistence false\n"
            f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n"
            "connection_messages true\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
            "max_queued_bytes 0\n"
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}\n"
            "set_tcp_nodelay true\n"
            "max_connections -1\n"  # unlimited (the default, said out loud): the fleet section holds thousands
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        config = self.directory / "mosquitto.conf"
        config.write_text(self.config_text())
        self.process = subprocess.Popen([find_mosquitto(), "-c", str(config)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, preexec_fn=raise_fd_limit)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        log = self.log_path.read_text(errors="replace")[-2000:] if self.log_path.exists() else ""
        self.stop()
        raise BenchError(f"mosquitto did not start on 127.0.0.1:{self.port}:\n{log}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, first=signal.SIGTERM)
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _read_log(self) -> str:
        """New log text since the last call (also kept for :meth:`warnings_since`)."""
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                data = log.read()
        except FileNotFoundError:
            return ""
        self._log_offset += len(data)
        text = data.decode(errors="replace")
        self._log_text += text
        return text

    def mark(self) -> int:
        """A position in the log, for :meth:`warnings_since`."""
        self._read_log()
        return len(self._log_text)

    def wait_subscribed(self, client_id: str, topic: str, *, timeout: float,
                        process: subprocess.Popen[bytes] | None = None) -> None:
        """Wait until the broker logged ``client_id``'s SUBSCRIBE to ``topic``.

        mosquitto logs it when it has processed the subscription, so messages published
        afterwards are routed to the client. Raises BenchError on timeout or if
        ``process`` exits first.
        """
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen += self._read_log()
            for line in seen.splitlines():
                parts = line.split()
                # "<time>: <client id> <qos> <topic>"
                if len(parts) == 4 and parts[1] == client_id and parts[3] == topic:
                    return
            if process is not None and process.poll() is not None:
                raise BenchError(f"the subscriber exited (code {process.returncode}) before subscribing")
            time.sleep(0.02)
        raise BenchError(f"{client_id} did not subscribe to {topic} within {timeout:g} s")

    def warnings_since(self, mark: int) -> list[str]:
        """Warning lines the broker logged since ``mark`` (dropped messages, errors)."""
        self._read_log()
        lines = self._log_text[mark:].splitlines()
        return [line for line in lines if "Warning" in line or "Error" in line or "dropped" in line.lower()]


def raise_fd_limit() -> None:
    """The soft RLIMIT_NOFILE up to the hard limit (for the broker's thousands of connections)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def stop_process(process: subprocess.Popen[Any], *, first: int = signal.SIGINT, grace: float = 15.0) -> int:
    """Stop ``process``: ``first`` signal, then SIGTERM, then SIGKILL. Returns the exit code."""
    for sig, wait in ((first, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            process.send_signal(sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    code = process.wait(timeout=5)
    return int(code)


def run(argv: Sequence[str], *, timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    """Run a command to completion within ``timeout`` seconds (killed after it). Never raises for its exit."""
    try:
        return subprocess.run(list(argv), timeout=timeout, capture_output=True, check=False, **kwargs)
    except subprocess.TimeoutExpired as exc:
        return subprocess.CompletedProcess(list(argv), -9, exc.stdout or b"", (exc.stderr or b"") + b"\n(timed out)")


def tesaiot_command(name: str) -> bool:
    """Whether this tesaiot has the subcommand ``name`` (its --help exits 0)."""
    tool = shutil.which("tesaiot")
    if tool is None:
        return False
    return run([tool, name, "--help"], timeout=30).returncode == 0


@functools.cache
def tesaiot_help(name: str) -> str:
    """The --help text of ``tesaiot <name>``; "" when that command does not exist (cached per run)."""
    tool = shutil.which("tesaiot")
    if tool is None:
        return ""
    result = run([tool, name, "--help"], timeout=30)
    return result.stdout.decode(errors="replace") if result.returncode == 0 else ""


def has_module(name: str) -> bool:
    return run([PYTHON, "-c", f"import {name}"], timeout=30).returncode == 0


@dataclass
class PubResult:
    """What ``pacedpub`` printed (see bench/pacedpub.c)."""

    data: dict[str, Any]
    returncode: int

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.data.get("error")

    def held(self, target_rate: float, tolerance: float = 0.95) -> bool:
        """Whether the publisher held at least ``tolerance`` of the target rate."""
        return self.ok and float(self.data.get("rate", 0)) >= tolerance * target_rate

    @property
    def end_ns(self) -> int:
        return int(self.data["end_mono_ns"])


@dataclass
class PacedPublisher:
    """The compiled bench/pacedpub.c."""

    path: str
    broker: Broker

    def argv(self, *, topic: str, rate: float, count: int, qos: int, device: str = "bench-01",
             client_id: str | None = None, port: int | None = None, boot: int | None = None) -> list[str]:
        """``boot``: end each payload with ``"boot"`` after ``"seq"`` (numbered, as simulate --sequence)."""
        port = port or self.broker.port
        argv = [self.path, "-H", "127.0.0.1", "-p", str(port), "-t", topic, "-r", f"{rate:g}",
                "-n", str(count), "-q", str(qos), "-d", device]
        if client_id:
            argv += ["-i", client_id]
        if boot is not None:
            argv += ["-B", str(boot)]
        return argv

    def start(self, **kwargs: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv(**kwargs), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    @staticmethod
    def result(process: subprocess.Popen[bytes], timeout: float) -> PubResult:
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(process, first=signal.SIGKILL)
            return PubResult({"error": f"pacedpub did not finish within {timeout:g} s"}, -9)
        try:
            data = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            data = {"error": f"no result from pacedpub: {err.decode(errors='replace')[-300:]}"}
        return PubResult(data, process.returncode)

    def run(self, *, timeout: float, **kwargs: Any) -> PubResult:
        return self.result(self.start(**kwargs), timeout)


@dataclass
class Table:
    """A plain-text table for the report."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        self.rows.append([str(cell) for cell in cells])

    def render(self) -> str:
        widths = [len(h) for h in self.headers]
        for row in self.rows:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        lines = ["  ".join(h.ljust(w) for h, w in zip(self.headers, widths, strict=True)),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in self.rows]
        return "\n".join(lines)


def say(text: str = "") -> None:
    print(text, flush=True)


def progress(text: str) -> None:
    """A progress note on stderr (the report itself goes to stdout)."""
    print(f"  .. {text}", file=sys.stderr, flush=True)


def rate_text(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{rate / 1000:.1f}k" if rate >= 1000 else f"{rate:.0f}"


def ratio_text(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "n/a"
    return f"{a / b:.2f}x"


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence; None when empty."""
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(fraction * len(sorted_values) + 0.5)) - 1))
    return float(sorted_values[index])


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    count = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            count += chunk.count(b"\n")
    return count


class LineCounter:
    """Counts the lines of a growing file incrementally (cheap to call often)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def update(self) -> int:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return self.lines
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines
