"""A real terminal for the tests: a tmux server on a socket of the test's own, one window, a
command in it; the screen read back with ``capture-pane``, keys typed with ``send-keys``.

Waiting is polling the screen until what is expected is there (or a bounded timeout that
fails the test with the last screen), never a fixed sleep.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

POLL_S = 0.1
# An SGR sequence that sets a colour (foreground, background, 256 or true colour).
_COLOUR = re.compile(r"\x1b\[([0-9;]*)m")


def find_tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        raise RuntimeError("tmux not found: install it (apt-get install tmux) or run ./scripts/test, which does")
    return tmux


def has_colour(screen: str) -> bool:
    """Whether ``screen`` (captured with escapes) sets any colour."""
    for match in _COLOUR.finditer(screen):
        for part in match.group(1).split(";"):
            if part.isdigit() and (30 <= int(part) <= 38 or 40 <= int(part) <= 48 or 90 <= int(part) <= 107):
                return True
    return False


class Tmux:
    """One tmux window of ``width`` x ``height`` running ``argv`` (then ``EXIT=<code>``)."""

    def __init__(self, argv: list[str], *, env: dict[str, str], cwd: Path, width: int = 120, height: int = 30,
                 stderr: Path | None = None, stdin: Path | None = None) -> None:
        self.tmux = find_tmux()
        self.socket = f"watch-test-{secrets.token_hex(6)}"
        redirect = f" 2>{shlex.quote(str(stderr))}" if stderr is not None else ""
        redirect += f" <{shlex.quote(str(stdin))}" if stdin is not None else ""
        # After the command: its exit code on the screen, and the window kept open to read it.
        # The shell catches Ctrl+C (its children get the default again) so that it lives to say so.
        script = f"trap : INT; {shlex.join(argv)}{redirect}; echo EXIT=$?; sleep 120"
        subprocess.run([self.tmux, "-L", self.socket, "-f", "/dev/null", "new-session", "-d", "-s", "t",
                        "-x", str(width), "-y", str(height), "sh", "-c", script],
                       env=env, cwd=cwd, check=True, timeout=30)

    def _run(self, *args: str) -> str:
        result = subprocess.run([self.tmux, "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise AssertionError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def screen(self, *, escapes: bool = False) -> str:
        return self._run("capture-pane", "-p", "-t", "t", *(["-e"] if escapes else []))

    def lines(self) -> list[str]:
        return self.screen().split("\n")

    def keys(self, *keys: str, literal: bool = False) -> None:
        self._run("send-keys", "-t", "t", *(["-l"] if literal else []), *keys)

    def resize(self, width: int, height: int) -> None:
        self._run("resize-window", "-t", "t", "-x", str(width), "-y", str(height))

    def pane_pid(self) -> int:
        return int(self._run("display-message", "-p", "-t", "t", "#{pane_pid}").strip())

    def wait(self, check: str | Callable[[str], object], timeout: float = 30.0, *, escapes: bool = False) -> str:
        """Poll the screen until ``check`` (text it holds, or a predicate) is true; the screen."""
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen(escapes=escapes)
            if (check in screen) if isinstance(check, str) else check(screen):
                return screen
            time.sleep(POLL_S)
        raise AssertionError(f"not on the screen after {timeout} s: {check!r}\n--- screen ---\n{screen}")

    def close(self) -> None:
        subprocess.run([self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=30)
        # the server leaves its socket file behind: -L names it in tmux's directory
        directory = Path(os.environ.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
        (directory / self.socket).unlink(missing_ok=True)

    def __enter__(self) -> Tmux:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
