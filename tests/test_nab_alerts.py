"""Plain alert files (NDJSON, CSV) for ``score --alerts``, and ``score --nab``'s CLI: the table,
``--fail-under nab``, alerts that name no reading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.alertfile import is_plain_alert_file, read_alert_file
from tests.support.cli import run_cli
from tests.support.truth import write_truth

DATA = Path(__file__).parent / "data" / "nab"
# The first row of the window of exchange-2_cpc_results, and a row outside any window.
IN_WINDOW = "2011-07-11 04:00:01"
OUTSIDE = "2011-08-24 12:00:01"
DEVICE = "exchange-2_cpc_results"


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nab") / "nab.jsonl"
    result = run_cli("convert", "--from", "nab", str(DATA / "data" / "realAdExchange"), str(path), "--labels",
                     str(DATA / "labels" / "combined_windows.json"))
    assert result.returncode == 0, result.stderr
    return path


def test_ndjson_and_csv_alert_files_are_read(tmp_path: Path) -> None:
    ndjson = tmp_path / "a.ndjson"
    ndjson.write_text(f'{{"timestamp": "{IN_WINDOW}", "device_id": "{DEVICE}", "kind": "x", "score": 2}}\n\n')
    [alert] = read_alert_file(ndjson)
    assert alert.topic == f"device/{DEVICE}/alerts" and json.loads(alert.payload)["kind"] == "x"
    assert alert.time_ns == 1_310_356_801 * 10**9
    table = tmp_path / "a.csv"
    table.write_text(f"timestamp,device_id,kind,score\n{IN_WINDOW},{DEVICE},spike,1.5\n{OUTSIDE},{DEVICE},,\n")
    first, second = read_alert_file(table)
    assert json.loads(first.payload) == {"timestamp": IN_WINDOW, "device_id": DEVICE, "kind": "spike", "score": 1.5}
    assert json.loads(second.payload) == {"timestamp": OUTSIDE, "device_id": DEVICE}
    headless = tmp_path / "b.csv"
    headless.write_text(f"{IN_WINDOW},{DEVICE}\n")
    assert len(read_alert_file(headless)) == 1


def test_a_jsonl_recording_is_not_a_plain_alert_file(tmp_path: Path, truth: Path) -> None:
    plain = tmp_path / "alerts.jsonl"
    plain.write_text(f'{{"timestamp": "{IN_WINDOW}", "device_id": "{DEVICE}"}}\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert is_plain_alert_file(plain) and is_plain_alert_file(empty)
    assert not is_plain_alert_file(truth) and not is_plain_alert_file(tmp_path / "x.parquet")


@pytest.mark.parametrize(("name", "text", "reason"), [
    ("a.ndjson", '{"timestamp": "x", "device_id": "d"}\n[1]\n', "line 2: not a JSON object"),
    ("a.ndjson", '{"device_id": "d"}\n', 'line 1: an alert needs "timestamp" and "device_id" strings'),
    ("a.csv", "timestamp,device_id\nt,d\nt\n", "line 3: not timestamp,device_id[,kind,score]"),
    ("a.csv", "t,d,k,high\n", "line 1: the score 'high' is not a number"),
    ("a.csv", "timestamp,device,kind\n", "line 1: the header is not timestamp,device_id[,kind,score]"),
])
def test_a_bad_line_names_its_number(tmp_path: Path, name: str, text: str, reason: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(RecordingError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        read_alert_file(path)


def test_a_bad_alert_line_is_exit_5_with_one_line(truth: Path, tmp_path: Path) -> None:
    path = tmp_path / "alerts.csv"
    path.write_text(f"{IN_WINDOW},{DEVICE}\nnot-a-row\n")
    result = run_cli("score", str(truth), "--alerts", str(path), "--nab")
    assert result.returncode == 5, result.stderr
    assert result.stderr.strip() == f"tesaiot: error: {path} line 2: not timestamp,device_id[,kind,score]"


def test_nab_table_and_fail_under(truth: Path, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.csv"
    alerts.write_text(f"timestamp,device_id\n{IN_WINDOW},{DEVICE}\n")
    result = run_cli("score", str(truth), "--alerts", str(alerts), "--nab")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("NAB: 1 series, 1 windows, 1,624 readings (243 probationary, not scored); "
                               "1 alerts marked 1 readings")
    assert lines[3].split() == ["standard", "100.00", "1.000", "1", "0", "0"]
    assert run_cli("score", str(truth), "--alerts", str(alerts), "--nab", "--fail-under", "nab=99.9").returncode == 0
    outside = tmp_path / "outside.csv"
    outside.write_text(f"{OUTSIDE},{DEVICE}\n")
    failed = run_cli("score", str(truth), "--alerts", str(outside), "--nab", "--fail-under", "nab=60")
    assert failed.returncode == 8
    assert "below --fail-under: nab -5.50 < 60" in failed.stderr
    wrong = run_cli("score", str(truth), "--alerts", str(outside), "--fail-under", "nab=60")
    assert wrong.returncode == 1 and "--fail-under nab needs --nab" in wrong.stderr


def test_alerts_in_another_iso_form_match_and_unplaced_ones_are_reported(truth: Path, tmp_path: Path) -> None:
    alerts = tmp_path / "alerts.ndjson"
    alerts.write_text(f'{{"timestamp": "2011-07-11T04:00:01Z", "device_id": "{DEVICE}"}}\n'
                      f'{{"timestamp": "2011-07-11 04:00:02", "device_id": "{DEVICE}"}}\n'
                      f'{{"timestamp": "{IN_WINDOW}", "device_id": "no-such-series"}}\n')
    result = run_cli("score", str(truth), "--alerts", str(alerts), "--nab", "--json")
    assert result.returncode == 0, result.stderr
    nab = json.loads(result.stdout)["nab"]
    assert nab["standard"]["score"] == pytest.approx(100.0)
    assert (nab["alerts"], nab["detections"], nab["unplaced_alerts"]) == (3, 1, 2)
    assert "warning: 2 alerts name no reading" in result.stderr


def test_an_empty_alert_file_is_a_detector_that_found_nothing(tmp_path: Path) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, count=60, anomaly_every=10)
    empty = tmp_path / "alerts.csv"
    empty.write_text("")
    result = run_cli("score", str(truth), "--alerts", str(empty), "--json")
    assert result.returncode == 0, result.stderr
    detection = json.loads(result.stdout)["detection"]
    assert detection["alerts"] == 0 and detection["detected"] == 0 and detection["events"] > 0


def test_nab_needs_a_truth_with_windows(tmp_path: Path) -> None:
    truth = tmp_path / "truth.parquet"
    write_truth(truth, count=20)
    empty = tmp_path / "alerts.csv"
    empty.write_text("")
    result = run_cli("score", str(truth), "--alerts", str(empty), "--nab")
    assert result.returncode == 1 and "has no anomaly windows" in result.stderr


def test_alerts_on_a_repeated_timestamp_mark_its_readings_in_order(truth: Path, tmp_path: Path) -> None:
    # exchange-2_cpc_results has two rows at OUTSIDE: one alert marks the first, two mark both,
    # a third is one more copy (neither a detection nor unplaced).
    for copies in (1, 2, 3):
        alerts = tmp_path / f"x{copies}.csv"
        alerts.write_text(f"{OUTSIDE},{DEVICE}\n" * copies)
        result = run_cli("score", str(truth), "--alerts", str(alerts), "--nab", "--json")
        assert result.returncode == 0, result.stderr
        nab = json.loads(result.stdout)["nab"]
        assert (nab["alerts"], nab["detections"], nab["standard"]["fp"], nab["unplaced_alerts"]) == (
            copies, min(copies, 2), min(copies, 2), 0)
    copies = tmp_path / "copies.csv"
    copies.write_text(f"{IN_WINDOW},{DEVICE}\n" * 3)
    result = run_cli("score", str(truth), "--alerts", str(copies), "--nab", "--json")
    nab = json.loads(result.stdout)["nab"]
    assert (nab["detections"], nab["unplaced_alerts"], nab["standard"]["score"]) == (1, 0, pytest.approx(100.0))
    assert "warning" not in result.stderr


def test_fail_under_nab_is_at_most_100() -> None:
    from tesaiot_cli.analysis.thresholds import parse_thresholds

    assert parse_thresholds("nab=60,f1=0.5") == {"nab": 60.0, "f1": 0.5}
    assert parse_thresholds("nab=-10") == {"nab": -10.0}
    with pytest.raises(ValueError, match="a NAB score is at most 100"):
        parse_thresholds("nab=101")
