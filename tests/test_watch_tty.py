"""``tesaiot watch`` in a real terminal (tmux): a simulated labelled fleet with ``detect``
running, the keys, a resize, colour, a broker outage, Ctrl+C and SIGTERM, a replay; and the
refusal off a terminal."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Mosquitto
from tests.support.cli import ROOT, clean_env, cli_command, run_cli, start_cli
from tests.support.tmux import Tmux, has_colour

SAMPLE = ROOT / "recordings" / "dps368-sample.parquet"


def watch_in_tmux(tmp_path: Path, *args: str, width: int = 120, height: int = 30, **env: str) -> Tmux:
    return Tmux(cli_command("watch", *args), env=clean_env(**env), cwd=tmp_path, width=width, height=height,
                stderr=tmp_path / "watch.err")


@pytest.fixture
def fleet(own_broker: Mosquitto) -> Iterator[Mosquitto]:
    """Three labelled DPS368 devices at 5 Hz, an anomaly every 4 packets, and the reference
    detector publishing its alerts on device/<id>/alerts."""
    url = own_broker.tcp_url
    detector = start_cli("detect", "-b", url, "--duration", "90")
    simulator = start_cli("simulate", "-b", url, "--devices", "3", "--interval", "0.2", "--anomaly-every", "4",
                          "--label", "--device-id", "wt-01", "--seed", "7", "--duration", "90", "--quiet")
    try:
        yield own_broker
    finally:
        for process in (simulator, detector):
            process.send_signal(signal.SIGINT)
        for process in (simulator, detector):
            try:
                process.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()


def row(screen: str, name: str) -> str:
    return next((line for line in screen.split("\n") if name in line and "×" in line), "")


def test_not_a_terminal_is_one_line_naming_listen_json() -> None:
    result = run_cli("watch", "-b", "mqtt://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "tesaiot: error: " in result.stderr
    assert "'tesaiot listen --json'" in result.stderr and result.stdout == ""


def test_a_labelled_fleet_with_detect_its_keys_and_a_resize(fleet: Mosquitto, tmp_path: Path) -> None:
    with watch_in_tmux(tmp_path, "-b", fleet.tcp_url) as term:
        term.wait(lambda s: "3 devices" in s and "connected" in s.split("\n")[0])
        # rows with their rate (5 Hz), DPS368 values, a labelled anomaly and the detector's alert
        screen = term.wait(lambda s: all(re.search(r"\d+× \S+.*\d+× \S+ \d\.\d\d", row(s, f"wt-0{d}"))
                                         for d in (1, 2, 3)))
        titles = next(line for line in screen.split("\n") if "DEVICE" in line).split()
        assert titles[:5] == ["DEVICE", "MSGS", "RATE", "PRESSURE", "TEMP"] and titles[-2:] == ["ANOMALY", "ALERT"]
        for d in (1, 2, 3):
            line = row(screen, f"wt-0{d}")
            assert re.search(r"\b[3-7]\.\d/s\s+\d{3,4}(\.\d+)?\s+-?\d+(\.\d+)?\s", line), line
        header = screen.split("\n")[1]
        anomalies, alerts = (int(re.search(rf"([\d,]+) {word}", header)[1].replace(",", ""))  # type: ignore[index]
                             for word in ("anomalies", "alerts"))
        assert anomalies > 0 and alerts > 0 and "0 dropped  0 not parsed" in header

        term.keys("s")
        term.wait("sort: rate")
        term.keys("s", "s", "s")
        term.wait("sort: name")
        term.keys("f")
        term.wait("field: temperature")
        term.keys("/")
        term.wait("filter (Enter keeps, Esc clears):")
        term.keys("wt-02", literal=True)
        term.keys("Enter")
        screen = term.wait(lambda s: "rows 1-1 of 1" in s and "filter: wt-02" in s)
        assert "wt-01" not in screen and "wt-02" in screen
        term.keys("Escape")
        term.wait("rows 1-3 of 3")
        term.keys("p")
        paused = term.wait("PAUSED")
        assert row(paused, "wt-01") == row(term.screen(), "wt-01")  # the table stands still
        term.keys("p")
        term.wait(lambda s: "PAUSED" not in s)

        term.keys("Home", "Down", "Enter")  # the second row's recent messages
        screen = term.wait(lambda s: "recent messages, newest first" in s and '"device_id": "wt-02"' in s)
        assert "topics: device/wt-02/telemetry" in screen and "Esc/Enter back" in screen
        term.keys("Escape")
        term.wait("DEVICE")

        term.resize(60, 7)  # 2 rows fit: the table reflows and scrolls
        screen = term.wait(lambda s: "rows 1-2 of 3" in s)
        assert all(len(line) <= 60 for line in screen.split("\n"))
        term.keys("End")
        term.wait("rows 2-3 of 3")
        term.keys("PageUp")
        term.wait("rows 1-2 of 3")
        term.resize(12, 4)
        term.wait("too small")
        term.resize(200, 60)
        screen = term.wait(lambda s: "TREND temperature" in s and "rows 1-3 of 3" in s)

        term.keys("q")
        screen = term.wait("EXIT=0")
        assert "tesaiot watch" not in screen  # the alternate screen is gone: the terminal is restored
    err = (tmp_path / "watch.err").read_text()
    assert re.search(r"stopped \(q\): [\d,]+ messages \([\d,]+ alerts\) from 3 rows", err), err


def test_a_broker_outage_shows_in_the_header_and_recovers(own_broker: Mosquitto, tmp_path: Path) -> None:
    simulator = start_cli("simulate", "-b", own_broker.tcp_url, "--devices", "2", "--interval", "0.2",
                          "--device-id", "out-01", "--duration", "90", "--quiet")
    try:
        with watch_in_tmux(tmp_path, "-b", own_broker.tcp_url) as term:
            term.wait(lambda s: "2 devices" in s and "connected" in s.split("\n")[0])
            own_broker.stop()
            screen = term.wait(lambda s: re.search(r"\b(disconnected|reconnecting)\b", s.split("\n")[0]))
            assert "disconnected from" in screen.split("\n")[2] or "reconnect" in screen.split("\n")[2]
            own_broker.start()
            term.wait(lambda s: " connected " in s.split("\n")[0], timeout=40)
            before = _messages(term.screen())
            term.wait(lambda s: _messages(s) > before + 5, timeout=40)  # the fleet is back on screen
            assert "disconnects 1" in term.screen()
            term.keys("q")
            term.wait("EXIT=0")
    finally:
        simulator.send_signal(signal.SIGINT)
        simulator.communicate(timeout=30)
    err = (tmp_path / "watch.err").read_text()
    assert "disconnected from" in err and "reconnected to" in err, err


def _messages(screen: str) -> int:
    match = re.search(r"([\d,]+) msgs", screen)
    return int(match[1].replace(",", "")) if match else -1


def test_ctrl_c_and_sigterm_leave_cleanly(broker: Mosquitto, tmp_path: Path) -> None:
    with watch_in_tmux(tmp_path, "-b", broker.tcp_url, "-t", "watch-test/ctrl-c/#") as term:
        term.wait("(no messages yet)")
        term.keys("C-c")
        assert "tesaiot watch" not in term.wait("EXIT=0")
    assert "stopped (SIGINT)" in (tmp_path / "watch.err").read_text()
    with watch_in_tmux(tmp_path, "-b", broker.tcp_url, "-t", "watch-test/term/#") as term:
        term.wait("(no messages yet)")
        shell = term.pane_pid()
        children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
        assert len(children) == 1
        os.kill(int(children[0]), signal.SIGTERM)
        assert "tesaiot watch" not in term.wait("EXIT=0")
    assert "stopped (SIGTERM)" in (tmp_path / "watch.err").read_text()


def test_without_a_keyboard_ctrl_c_is_the_way_out(broker: Mosquitto, tmp_path: Path) -> None:
    term = Tmux(cli_command("watch", "-b", broker.tcp_url, "-t", "watch-test/stdin/#"), env=clean_env(),
                cwd=tmp_path, stderr=tmp_path / "watch.err", stdin=Path("/dev/null"))
    with term:
        term.wait("Ctrl+C quits (stdin is not a terminal: no keys)")
        term.keys("C-c")
        term.wait("EXIT=0")


def test_no_color_and_color_always(broker: Mosquitto, tmp_path: Path) -> None:
    with watch_in_tmux(tmp_path, "-b", broker.tcp_url, "-t", "watch-test/color/#", NO_COLOR="1") as term:
        screen = term.wait("(no messages yet)", escapes=True)
        assert not has_colour(screen) and "tesaiot watch" in screen
        term.keys("q")
        term.wait("EXIT=0")
    with watch_in_tmux(tmp_path, "-b", broker.tcp_url, "-t", "watch-test/color/#", "--color", "always",
                       NO_COLOR="1") as term:
        assert has_colour(term.wait("(no messages yet)", escapes=True))
        term.keys("q")
        term.wait("EXIT=0")


def test_replay_a_recording_with_its_labels_no_broker(tmp_path: Path) -> None:
    with watch_in_tmux(tmp_path, "--replay", str(SAMPLE), "--speed", "max", width=140, height=20) as term:
        screen = term.wait("finished: 300 messages")
        assert "replay of dps368-sample.parquet at max speed" in screen
        header = screen.split("\n")[1]
        assert "1 device  300 msgs" in header and "30 anomalies" in header  # the recording's label column
        line = row(screen, "infineon-sensor-01")
        assert re.search(r"\b30× (both|high_pressure|high_temperature)\b", line), line
        assert "10.0/s" in line  # the recording's own rate, at any speed
        term.keys("q")
        term.wait("EXIT=0")
    assert "stopped (q): 300 messages" in (tmp_path / "watch.err").read_text()


def test_replay_at_a_speed_plays_in_recording_time(tmp_path: Path) -> None:
    with watch_in_tmux(tmp_path, "--replay", str(SAMPLE), "--speed", "10x", width=100, height=20) as term:
        term.wait("playing")
        screen = term.wait(lambda s: re.search(r"\b(9\.\d|10\.\d)/s", row(s, "infineon") or s), timeout=20)
        assert "replay of dps368-sample.parquet at 10x" in screen
        term.wait("finished: 300 messages", timeout=20)
        term.keys("q")
        term.wait("EXIT=0")


def test_bad_values_are_one_line_and_exit_1(tmp_path: Path) -> None:
    for args, text in ((["--speed", "10x"], "--speed needs --replay FILE"),
                       (["--replay", str(SAMPLE), "--speed", "0"], "invalid --speed"),
                       (["--stale", "0"], "invalid --stale"),
                       (["--color", "pink"], "invalid --color"),
                       (["--alert-topic", "a/#/b"], "topic filter"),
                       (["--replay", str(tmp_path / "missing.parquet")], "missing.parquet")):
        term = watch_in_tmux(tmp_path, *args)
        with term:
            term.wait("EXIT=", timeout=30)
            code = re.search(r"EXIT=(\d+)", term.screen())[1]  # type: ignore[index]
        err = (tmp_path / "watch.err").read_text()
        assert err.count("\n") == 1 and text in err, (args, err)
        assert code == ("5" if "missing" in text else "1"), (args, code, err)
