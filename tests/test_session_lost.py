"""After a reconnect where the broker kept no session for us (clean session), record and
listen say that what was published meanwhile is lost, and name --session."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.cli import Proc, record

LOST = "messages published while it was disconnected may have been lost"


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_listen_says_what_a_clean_session_lost(own_broker: Mosquitto, version: str) -> None:
    listener = Proc("listen", "-b", own_broker.tcp_url, "-t", "device/#", "--mqtt-version", version)
    try:
        listener.wait_for_stderr("listening on")
        own_broker.restart(down_seconds=1.0)
        listener.wait_for_stderr("reconnected to", timeout=20)
        listener.wait_for_stderr(LOST, timeout=5)
    finally:
        listener.stop()
    line = next(line for line in listener.stderr.splitlines() if LOST in line)
    assert "--session" in line


def test_record_says_what_a_clean_session_lost_and_not_with_session(own_broker: Mosquitto, tmp_path: Path) -> None:
    clean = record(str(tmp_path / "clean.jsonl"), "-b", own_broker.tcp_url, "-t", "device/#")
    kept = record(str(tmp_path / "kept.jsonl"), "-b", own_broker.tcp_url, "-t", "device/#", "--qos", "1",
                  "--session", f"lost-{uuid.uuid4().hex[:6]}")
    try:
        own_broker.restart(down_seconds=1.0)
        for recorder in (clean, kept):
            deadline = time.monotonic() + 20
            while "reconnected to" not in recorder.stderr and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(0.5)
    finally:
        codes = [clean.stop(), kept.stop()]
    assert codes == [0, 0], clean.stderr + kept.stderr
    assert LOST in clean.stderr and "--session" in clean.stderr
    assert "reconnected to" in kept.stderr and LOST not in kept.stderr
