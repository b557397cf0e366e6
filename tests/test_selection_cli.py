"""What replay and export say about a selection (issue 21 item 8): the start line gives the
count and span of what will be replayed; an empty selection is one line and exit 9."""

from __future__ import annotations

from pathlib import Path

import pytest

from tesaiot_cli.message import Message
from tesaiot_cli.recording import RecordingMetadata, open_writer
from tests.support.cli import run_cli

T0 = 1_796_000_000_000_000_000
S = 1_000_000_000
EXIT_EMPTY_SELECTION = 9


def recording(path: Path) -> Path:
    """20 messages, 0.5 s apart (t/0 and t/1 alternating): 9.5 s recorded."""
    with open_writer(path, metadata=RecordingMetadata(source="record"), crash_safe=False) as writer:
        for i in range(20):
            writer.write(Message(f"t/{i % 2}", b"x", 0, False, T0 + i * S // 2))
    return path


@pytest.fixture(params=["parquet", "jsonl"])
def rec(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    return recording(tmp_path / f"rec.{request.param}")


def replay(path: Path, *args: str) -> tuple[int, list[str], int]:
    result = run_cli("replay", str(path), "--to", "-", "--speed", "max", *args)
    return result.returncode, result.stderr.splitlines(), len(result.stdout.splitlines())


def test_the_start_line_gives_the_count_and_span_of_the_selection(rec: Path) -> None:
    code, lines, sent = replay(rec, "--start", "5")
    assert code == 0 and sent == 10
    assert lines[0].startswith("tesaiot: replaying a selection of 10 messages (4.5 s recorded, from "), lines
    code, lines, sent = replay(rec, "-t", "t/1", "--end", "2")
    assert code == 0 and sent == 2
    assert lines[0].startswith("tesaiot: replaying a selection of 2 messages (1 s recorded, from "), lines
    code, lines, sent = replay(rec)
    assert code == 0 and sent == 20 and lines[0].startswith("tesaiot: replaying 20 messages (9.5 s recorded"), lines


@pytest.mark.parametrize("args", [["-t", "nomatch/#"], ["--start", "60"], ["--start", "1.1", "--end", "1.2"]])
def test_an_empty_selection_is_one_line_and_exit_9(rec: Path, args: list[str]) -> None:
    code, lines, sent = replay(rec, *args)
    assert code == EXIT_EMPTY_SELECTION and sent == 0
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"tesaiot: error: nothing to replay: no message in {rec} matches "), lines
    assert args[1] in lines[0] and "20 messages over 9.5 s" in lines[0]


def test_an_empty_selection_past_the_index_limit_is_found_while_reading(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A JSONL file too large to count beforehand (the limit set to 0 here): the start line
    says the count is not known, and an empty selection still ends with exit 9."""
    import sys

    from tesaiot_cli.cli import main
    from tesaiot_cli.recording.formats import jsonl

    monkeypatch.setattr(jsonl, "SCAN_LIMIT", 0)
    path = recording(tmp_path / "rec.jsonl")
    monkeypatch.setattr(sys, "argv", ["tesaiot", "replay", str(path), "--to", "-", "--speed", "max", "-t", "no/#"])
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == EXIT_EMPTY_SELECTION
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == ""
    assert lines[0].startswith("tesaiot: replaying the messages of the selection (counted as they are replayed"), lines
    assert lines[-1] == f"tesaiot: error: nothing to replay: no message in {path} matches --topic 'no/#'"


def test_export_of_an_empty_selection_writes_nothing_and_exits_9(rec: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    result = run_cli("export", str(rec), str(out), "--device", "nobody")
    assert result.returncode == EXIT_EMPTY_SELECTION, result.stderr
    assert result.stderr.splitlines() == [f"tesaiot: error: nothing to export: no message in {rec} matches "
                                          "--device 'nobody'; nothing was written"]
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == [rec.name]
    result = run_cli("export", str(rec), str(out), "--start", "5")
    assert result.returncode == 0, result.stderr
    assert "exported 10 messages" in result.stderr and "10 left out by the selection" in result.stderr


def test_plot_of_no_matching_device_exits_9(rec: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "p.png"
    result = run_cli("plot", str(rec), "-o", str(out), "--device", "nobody")
    assert result.returncode == EXIT_EMPTY_SELECTION, result.stderr
    assert result.stderr.splitlines() == [f"tesaiot: error: nothing to plot: no message in {rec} matches "
                                          "--device 'nobody'"]
    assert not out.exists()


def test_info_summary_from_the_footer_equals_a_scan(rec: Path, tmp_path: Path) -> None:
    import orjson

    from tesaiot_cli.playback.selection import Selection, parse_time_bound
    from tesaiot_cli.recording import open_reader

    scan = orjson.loads(run_cli("info", str(rec), "--json", "--no-values").stdout)
    result = run_cli("info", str(rec), "--json", "--summary")
    assert result.returncode == 0, result.stderr
    summary = orjson.loads(result.stdout)
    for key in ("messages", "start_ns", "end_ns", "duration_s", "rate_per_s", "sealed", "format"):
        assert summary[key] == scan[key], key
    assert summary["summary"] is True and summary["topics"] == [] and summary["payload_bytes"] is None
    with open_reader(rec) as reader:  # and a selection's plan equals the messages read
        chosen = Selection(("t/1",), start=parse_time_bound("2", name="--start"))
        assert reader.plan(chosen).messages == len(list(reader.iter_messages(chosen))) == 8


def test_the_progress_line_counts_against_the_selection() -> None:
    from typing import Any, cast

    from tesaiot_cli.commands.replay import _Progress
    from tesaiot_cli.playback.replay import ReplayOptions, ReplayStats
    from tesaiot_cli.services.replayer import ReplayPlan

    plan = ReplayPlan(10, T0, T0 + 9 * S, True)  # a selection of 10 messages
    progress = _Progress(ReplayOptions(speed=None, topic_filters=("t/1",)), plan, cast(Any, None), cast(Any, None))
    stats = ReplayStats(sent=4, position_ns=T0 + 3 * S)
    assert progress.text(stats, 1.0).startswith("sent 4 of 10   33%")
