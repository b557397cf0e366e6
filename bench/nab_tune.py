#!/usr/bin/env python3
"""Tune the generic detector on the NAB corpus offline, in process (no MQTT, no files written).

Reads NAB's CSVs and windows, feeds every series to ``GenericDetector`` in its row order and
scores the detections with ``tesaiot score --nab``'s own rules. ``--set NAME=VALUE`` overrides a
module parameter of ``tesaiot_cli.analysis.detect_generic`` (the same for every series).

    bench/nab_tune.py --corpus ../shared/nab --set THRESHOLD=4 --set SUPPRESS=250
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from tesaiot_cli.analysis import detect_generic
from tesaiot_cli.analysis.nab import Series, score_corpus


def load(corpus: Path) -> list[tuple[str, list[str], list[float], list[tuple[str, str]]]]:
    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    out = []
    for path in sorted((corpus / "data").rglob("*.csv")):
        key = path.relative_to(corpus / "data").as_posix()
        with path.open(newline="") as handle:
            rows = list(csv.reader(handle))[1:]
        stamps = [row[0] for row in rows]
        values = [float(row[1]) for row in rows]
        out.append((path.stem, stamps, values, [(a[:19], b[:19]) for a, b in windows[key]]))
    return out


def run(data: list[tuple[str, list[str], list[float], list[tuple[str, str]]]]) -> dict[str, float]:
    series = []
    for name, stamps, values, windows in data:
        detector = detect_generic.GenericDetector()
        detections = tuple(i for i, value in enumerate(values) if detector.feed(name, value) is not None)
        index = {stamp: i for i, stamp in reversed(list(enumerate(stamps)))}
        rows = tuple((index[a], index[b]) for a, b in windows)
        series.append(Series(name, len(values), rows, detections))
    result = score_corpus(series)
    return {name: (score.score or 0.0) for name, score in result.profiles.items()} | {
        "fp": result.profiles["standard"].fp, "tp": result.profiles["standard"].tp}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", type=Path, default=Path("../shared/nab"))
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(detect_generic, name):
            print(f"no parameter {name}", file=sys.stderr)
            return 1
        setattr(detect_generic, name, type(getattr(detect_generic, name))(value))
    data = load(args.corpus)
    started = time.monotonic()
    scores = run(data)
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in scores.items()),
          f"({time.monotonic() - started:.1f} s)", " ".join(args.set))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
