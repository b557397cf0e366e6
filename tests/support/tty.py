"""Run the CLI with its stderr (and optionally stdin) on a pseudo-terminal, as a user sees it.

Status lines are drawn only on a terminal; these tests read what the terminal got.
"""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from dataclasses import dataclass

from tests.support.cli import clean_env, cli_command


@dataclass
class TTYRun:
    returncode: int
    stdout: str
    terminal: str  # everything written to the terminal (stderr), escapes included

    def frames(self) -> list[str]:
        """The successive contents of the status line: the text between carriage returns,
        with the erase-line escapes removed."""
        text = self.terminal.replace("\x1b[K", "")
        return [part.strip() for part in text.replace("\n", "\r").split("\r") if part.strip()]


class TTYProcess:
    """``tesaiot ARGS`` with stderr and stdin on one pseudo-terminal (stdout a pipe)."""

    def __init__(self, *args: str, columns: int = 200) -> None:
        self.master, slave = pty.openpty()
        import fcntl
        import struct
        import termios

        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = clean_env(COLUMNS=str(columns))
        self.process = subprocess.Popen(cli_command(*args), stdin=slave, stdout=subprocess.PIPE, stderr=slave,
                                        env=env, text=True, start_new_session=True)
        os.close(slave)
        self.chunks: list[bytes] = []

    def read_for(self, seconds: float) -> str:
        """What the terminal got in the next ``seconds`` (or until the process ends)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.master], [], [], 0.05)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.chunks.append(data)
            elif self.process.poll() is not None:
                break
        return b"".join(self.chunks).decode("utf-8", "replace")

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def finish(self, timeout: float = 60) -> TTYRun:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self.read_for(0.2)
        if self.process.poll() is None:
            self.process.kill()
        stdout = self.process.stdout.read() if self.process.stdout else ""
        self.process.wait(timeout=10)
        self.read_for(0.2)
        os.close(self.master)
        return TTYRun(self.process.returncode, stdout, b"".join(self.chunks).decode("utf-8", "replace"))


def run_on_tty(*args: str, timeout: float = 60, columns: int = 200) -> TTYRun:
    return TTYProcess(*args, columns=columns).finish(timeout)
