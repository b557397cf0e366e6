"""The newcomer's loop on the embedded broker: simulate -> record -> info -> replay -> listen."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.support.broker import free_ports, wait_for_port
from tests.support.cli import ROOT, clean_env, run_cli, start_cli, wait_for_stderr


@pytest.fixture
def embedded_url() -> Iterator[str]:
    (port,) = free_ports(1)
    broker = start_cli("broker", "--port", str(port), "--no-ws")
    try:
        wait_for_port(port, timeout=30)
        yield f"mqtt://127.0.0.1:{port}"
    finally:
        broker.send_signal(signal.SIGINT)
        broker.communicate(timeout=20)


def test_simulate_record_replay_loop(embedded_url: str, tmp_path: Path) -> None:
    recording, truth = tmp_path / "rec.parquet", tmp_path / "truth.parquet"
    recorder = start_cli("record", str(recording), "-b", embedded_url, "-t", "device/#", "--count", "30")
    wait_for_stderr(recorder, "recording")
    sim = run_cli("simulate", "-b", embedded_url, "--count", "30", "--interval", "0.02", "--anomaly-every", "10",
                  "--seed", "7", "--quiet", "--record", str(truth))
    assert sim.returncode == 0, sim.stderr
    _, err = recorder.communicate(timeout=30)
    assert recorder.returncode == 0, err

    table = pq.read_table(recording)
    truth_table = pq.read_table(truth)
    assert table.num_rows == 30
    assert table.column("payload").to_pylist() == truth_table.column("payload").to_pylist()
    labels = truth_table.column("label").to_pylist()
    assert [i + 1 for i, label in enumerate(labels) if label != "normal"] == [10, 20, 30]

    info = run_cli("info", str(truth), "--json")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["messages"] == 30

    listener = start_cli("listen", "-b", embedded_url, "--json", "--count", "30")
    wait_for_stderr(listener, "listening on")
    started = time.monotonic()
    replay = run_cli("replay", str(recording), "-b", embedded_url, "--speed", "5x")
    assert replay.returncode == 0, replay.stderr
    out, err = listener.communicate(timeout=30)
    assert listener.returncode == 0, err
    received = [json.loads(line) for line in out.splitlines()]
    original = [json.loads(p) for p in table.column("payload").to_pylist()]
    assert [r["payload"] for r in received] == original
    assert time.monotonic() - started < 25  # bounded, not a performance claim


def test_demo_script_runs_end_to_end() -> None:
    """The README's main command, as a newcomer runs it (its .venv already exists here)."""
    before = set((ROOT / "recordings").glob("demo-*"))
    result = subprocess.run(["bash", str(ROOT / "scripts" / "demo")], cwd=ROOT, env=clean_env(),
                            capture_output=True, text=True, timeout=400)
    try:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert "Traceback" not in result.stderr
        # The detector ran live and every alert was acknowledged.
        assert "readings from 4 devices analysed" in result.stderr
        detect_line = next(line for line in result.stderr.splitlines() if "tesaiot: detect: stopped" in line)
        published = int(detect_line.split(" alerts published")[0].rsplit(" ", 1)[1])
        assert published > 50 and f"{published} acknowledged, 0 refused, 0 dropped" in detect_line
        # The score table, with every kind, and the delivery line.
        assert "detection: " in result.stdout and "precision " in result.stdout
        for kind in ("high_temperature", "high_pressure", "both", "spike", "stuck", "drift", "dropout"):
            assert any(line.split()[:1] == [kind] for line in result.stdout.splitlines()), kind
        f1 = float(result.stdout.split("  F1 ")[1].split()[0])
        assert f1 >= 0.8, result.stdout
        assert "0 lost, 0 duplicated, 0 out of order" in result.stdout
        # The plot, where the demo says it is; the alerts replayed into listen.
        plot = result.stdout.split("The plot of the run: ")[1].split()[0]
        assert (ROOT / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"replayed {published} messages" in result.stderr
        assert f"({published} alerts in all)" in result.stdout
    finally:
        for path in set((ROOT / "recordings").glob("demo-*")) - before:
            path.unlink()
