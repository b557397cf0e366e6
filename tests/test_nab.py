"""NAB: the scorer's rules on hand-built series, and NAB's own published numbers reproduced
through the real CLI on the part of its results shipped in tests/data/nab (see its README)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tesaiot_cli.analysis.nab import (
    PROFILES,
    Series,
    normalised,
    probationary_rows,
    scaled_sigmoid,
    score_corpus,
    score_series,
)
from tests.support.cli import run_cli

DATA = Path(__file__).parent / "data" / "nab"
DETECTORS = ("numenta", "knncad", "windowedGaussian", "relativeEntropy", "skyline")
STANDARD = PROFILES[0]
CORPUS_WINDOWS = 116  # windows in NAB's combined_windows.json (none in a probationary period)


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("nab") / "nab.parquet"
    result = run_cli("convert", "--from", "nab", str(DATA / "data"), str(path))
    assert result.returncode == 0, result.stderr
    return path


def nab_json(truth: Path, alerts: Path, *extra: str) -> dict[str, object]:
    result = run_cli("score", str(truth), "--alerts", str(alerts), "--nab", "--json", *extra)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["detection"] is None
    nab = report["nab"]
    assert isinstance(nab, dict)
    return nab


def write_alerts(detector: str, threshold: float, path: Path) -> None:
    """NAB's rows at or above the threshold as a plain alert CSV (timestamp,device_id)."""
    with open(path, "w", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(["timestamp", "device_id"])
        for results in sorted((DATA / "results" / detector).glob("*.csv")):
            for row in csv.DictReader(results.open()):
                if float(row["anomaly_score"]) >= threshold:
                    out.writerow([row["timestamp"], results.stem])


# -- NAB's published numbers ---------------------------------------------------------


@pytest.mark.parametrize("detector", DETECTORS)
def test_nab_per_file_scores_are_reproduced(truth: Path, tmp_path: Path, detector: str) -> None:
    thresholds = json.loads((DATA / "thresholds.json").read_text())[detector]
    for profile in PROFILES:
        alerts = tmp_path / f"{profile.name}.csv"
        write_alerts(detector, float(thresholds[profile.name]["threshold"]), alerts)
        by_series = nab_json(truth, alerts)["by_series"]
        assert isinstance(by_series, dict)
        expected = list(csv.DictReader((DATA / "scores" / f"{detector}_{profile.name}_scores.csv").open()))
        files = [row for row in expected if row["Detector"] != "Totals"]
        assert len(files) == len(by_series) == 5
        for row in files:
            ours = by_series[row["File"].rsplit("/", 1)[1][:-len(".csv")]][profile.name]
            assert ours["raw"] == pytest.approx(float(row["Score"]), abs=1e-9), (detector, profile.name, row["File"])
            assert ours["rows"] == {"tp": int(row["TP"]), "tn": int(row["TN"]), "fp": int(row["FP"]),
                                    "fn": int(row["FN"])}, (detector, profile.name, row["File"])


@pytest.mark.parametrize("detector", DETECTORS)
def test_the_corpus_totals_normalise_to_the_published_scores(detector: str) -> None:
    final = json.loads((DATA / "final_results.json").read_text())[detector]
    for profile in PROFILES:
        rows = list(csv.DictReader((DATA / "scores" / f"{detector}_{profile.name}_scores.csv").open()))
        total = next(float(row["Score"]) for row in rows if row["Detector"] == "Totals")
        score = normalised(total, null=-profile.fn_weight * CORPUS_WINDOWS, perfect=profile.tp_weight * CORPUS_WINDOWS)
        assert score == pytest.approx(final[profile.name], abs=1e-6)


def test_no_alert_is_the_null_detector_and_every_window_start_the_perfect_one(truth: Path, tmp_path: Path) -> None:
    empty = tmp_path / "none.csv"
    empty.write_text("")
    nab = nab_json(truth, empty)
    assert nab["windows"] == 9
    for profile in PROFILES:
        score = nab[profile.name]
        assert isinstance(score, dict)
        assert score["score"] == 0.0 and score["tp"] == 0 and score["fp"] == 0 and score["fn"] == 9
        assert score["raw"] == pytest.approx(-9 * profile.fn_weight)
    labels = json.loads((DATA / "labels" / "combined_windows.json").read_text())
    perfect = tmp_path / "perfect.ndjson"
    perfect.write_text("".join(
        json.dumps({"timestamp": start[:19], "device_id": name.rsplit("/", 1)[1][:-4], "kind": "anomaly"}) + "\n"
        for name, windows in labels.items() for start, _end in windows))
    nab = nab_json(truth, perfect)
    for profile in PROFILES:
        score = nab[profile.name]
        assert isinstance(score, dict)
        assert score["score"] == pytest.approx(100.0) and score["tp"] == 9 and score["fp"] == 0


# -- the rules, on hand-built series -------------------------------------------------


def test_scaled_sigmoid_at_the_window_edges() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)
    assert scaled_sigmoid(3.5) == -1.0


def test_probationary_period_is_15_percent_up_to_750_rows() -> None:
    assert probationary_rows(1000) == 150
    assert probationary_rows(4032) == 604
    assert probationary_rows(20000) == 750


def test_only_the_earliest_detection_in_a_window_counts() -> None:
    # 1000 rows: probation 150; window rows 500..599 (width 100).
    first = score_series(Series("s", 1000, ((500, 599),), (500,)), STANDARD)
    both = score_series(Series("s", 1000, ((500, 599),), (500, 550, 599)), STANDARD)
    late = score_series(Series("s", 1000, ((500, 599),), (599,)), STANDARD)
    assert first.raw == pytest.approx(1.0)  # at the window's start: the full tp weight
    assert both.raw == first.raw and both.tp == 1 and both.fp == 0 and both.rows.tp == 3
    assert 0 < late.raw < 0.03  # at its end: almost nothing


def test_false_positives_cost_less_right_after_a_window() -> None:
    window = ((500, 599),)
    before = score_series(Series("s", 1000, window, (300,)), STANDARD)  # no preceding window
    just_after = score_series(Series("s", 1000, window, (601,)), STANDARD)
    far_after = score_series(Series("s", 1000, window, (999,)), STANDARD)  # > 3 widths past it
    assert before.raw == pytest.approx(-1 - 0.11)
    assert -1 - 0.11 < just_after.raw < -1
    assert far_after.raw == pytest.approx(-1 - 0.11)
    assert just_after.fp == 1 and just_after.fn == 1


def test_probationary_rows_count_for_nothing() -> None:
    early = score_series(Series("s", 1000, ((100, 140), (500, 599)), (10, 120)), STANDARD)
    assert early.windows == 1 and early.raw == pytest.approx(-1.0) and early.fp == 0
    corpus = score_corpus([Series("s", 1000, ((100, 140), (500, 599)), ())])
    standard = corpus.profiles["standard"]
    # The window in the probationary period is not in null; perfect counts every window (as NAB does).
    assert standard.null == -1.0 and standard.perfect == 2.0 and standard.score == 0.0


# -- convert --from nab ----------------------------------------------------------------


def test_convert_writes_one_device_per_series_with_the_windows(truth: Path) -> None:
    from tesaiot_cli.recording import open_reader
    from tesaiot_cli.recording.truth import TruthWindows

    with open_reader(truth) as reader:
        windows = TruthWindows.of(reader.metadata)
        assert windows is not None and windows.benchmark == "nab" and windows.count == 9
        assert windows.by_device["art_daily_small_noise"] == ()
        assert [(w.first, w.last) for w in windows.by_device["exchange-2_cpc_results"]] == [
            ("2011-07-11 04:00:01", "2011-07-17 22:00:01")]
        rows = [(m, label) for m, label in reader.iter_labelled() if m.topic == "nab/exchange-2_cpc_results"]
    assert len(rows) == 1624
    first, label = rows[0]
    assert first.payload == (b'{"timestamp": "2011-07-01 00:00:01", "device_id": "exchange-2_cpc_results", '
                             b'"value": 0.0819647355164}')
    assert first.time_ns == 1_309_478_401 * 10**9 and label == "normal"
    inside = [label for m, label in rows if b'"2011-07-11 04:00:01"' in m.payload or b'"2011-07-14' in m.payload]
    assert set(inside) == {"anomaly"}
    assert sum(label == "anomaly" for _m, label in rows) == 163  # NAB: TP + FN of this file's window


def test_convert_topic_template(tmp_path: Path) -> None:
    out = tmp_path / "one.jsonl"
    result = run_cli("convert", "--from", "nab", str(DATA / "data" / "realTraffic" / "speed_7578.csv"), str(out),
                     "--labels", str(DATA / "labels" / "combined_windows.json"),
                     "--topic-template", "lab/{device_id}/v")
    assert result.returncode == 0, result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1 + 1127
    assert json.loads(lines[1])["topic"] == "lab/speed_7578/v"


def _corpus_copy(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "data" / "realTraffic").mkdir(parents=True)
    (root / "labels").mkdir()
    source = DATA / "data" / "realTraffic" / "speed_7578.csv"
    (root / "data" / "realTraffic" / "speed_7578.csv").write_text(source.read_text())
    labels = json.loads((DATA / "labels" / "combined_windows.json").read_text())
    (root / "labels" / "combined_windows.json").write_text(json.dumps({"realTraffic/speed_7578.csv":
                                                                           labels["realTraffic/speed_7578.csv"]}))
    return root


@pytest.mark.parametrize(("change", "message"), [
    ("bad value", "line 5: the value 'x1' is not a number"),
    ("bad time", "line 5: '2015-09-08 11:69:00' is not a YYYY-MM-DD HH:MM:SS timestamp"),
    ("not in labels", "is not in the labels"),
    ("window end", "its ends are not rows of the file"),
])
def test_convert_refuses_bad_input_with_one_line_and_leaves_nothing(tmp_path: Path, change: str, message: str) -> None:
    root = _corpus_copy(tmp_path)
    csv_path = root / "data" / "realTraffic" / "speed_7578.csv"
    lines = csv_path.read_text().splitlines()
    if change == "bad value":
        lines[4] = lines[4].split(",")[0] + ",x1"
    elif change == "bad time":
        lines[4] = "2015-09-08 11:69:00," + lines[4].split(",")[1]
    elif change == "not in labels":
        (root / "labels" / "combined_windows.json").write_text("{}")
    else:
        lines = [line for line in lines if not line.startswith("2015-09-16 18:20:00")]
    csv_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.parquet"
    result = run_cli("convert", "--from", "nab", str(root / "data"), str(out))
    assert result.returncode == 5
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.glob("out*")) == []


def test_labels_option_is_only_for_nab(tmp_path: Path, truth: Path) -> None:
    result = run_cli("convert", str(truth), str(tmp_path / "x.jsonl"), "--labels", "x.json")
    assert result.returncode == 1 and "--from nab" in result.stderr


@pytest.mark.parametrize(("text", "expected"), [
    ("2014-04-10 07:15:00", 1_397_114_100 * 10**9),
    ("2014-04-10T07:15:00", 1_397_114_100 * 10**9),
    ("2014-04-10 07:15:00.500000", 1_397_114_100_500_000_000),
    ("2014-02-30 00:00:00", None),
    ("2014-04-10 24:00:00", None),
    ("2014-04-1x 07:15:00", None),
    ("2014-04-10 07:15", None),
])
def test_nab_timestamps(text: str, expected: int | None) -> None:
    from tesaiot_cli.recording.truth import stamp_ns, stamp_text

    assert stamp_ns(text) == expected
    if expected is not None:
        assert stamp_ns(stamp_text(expected)) == expected
