"""Reproduce NAB's published scoreboard with ``tesaiot score --nab``.

For each detector whose per-row outputs NAB ships (``results/<detector>/<category>/
<detector>_<name>.csv``, column ``anomaly_score``), and each profile: the rows whose
``anomaly_score`` is at least the detector's threshold for that profile
(``config/thresholds.json``) become alerts, written as a plain alert CSV
(``timestamp,device_id``); the real ``tesaiot score TRUTH --alerts FILE --nab --json`` scores
them, and the table compares its score with ``results/final_results.json``.

    bench/nab_scoreboard.py --nab-results ~/src/NAB            # a checkout of numenta/NAB
    bench/nab_scoreboard.py --nab-git /path/to/NAB.git         # or a bare clone of it
    bench/nab_scoreboard.py --nab-git NAB.git --detectors numenta,null --markdown

The corpus (``--corpus``, default ``../shared/nab``: ``data/`` and ``labels/``) is converted
once with ``tesaiot convert --from nab``. Exit 1 when a published score is not reproduced to
within ``--tolerance`` points (0.01).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
ROOT = Path(__file__).resolve().parent.parent


class NabSource:
    """Files of a NAB checkout (a directory) or of a bare git repository (``git show``)."""

    def __init__(self, checkout: Path | None, git_dir: Path | None) -> None:
        self.checkout, self.git_dir = checkout, git_dir

    def read(self, path: str) -> str:
        if self.checkout is not None:
            return (self.checkout / path).read_text()
        return subprocess.run(["git", f"--git-dir={self.git_dir}", "show", f"HEAD:{path}"], check=True,
                              capture_output=True, text=True).stdout

    def files(self, folder: str) -> list[str]:
        if self.checkout is not None:
            return sorted(str(p.relative_to(self.checkout)) for p in (self.checkout / folder).rglob("*.csv"))
        listing = subprocess.run(["git", f"--git-dir={self.git_dir}", "ls-tree", "-r", "--name-only", "HEAD",
                                  folder + "/"], check=True, capture_output=True, text=True).stdout
        return sorted(line for line in listing.splitlines() if line.endswith(".csv"))


def detector_rows(source: NabSource, detector: str) -> dict[str, list[tuple[str, float]]]:
    """device_id -> [(timestamp, anomaly_score)] of one detector's per-row results."""
    rows: dict[str, list[tuple[str, float]]] = {}
    prefix = detector + "_"
    for path in source.files(f"results/{detector}"):
        name = path.rsplit("/", 1)[-1]
        if path.count("/") != 3 or not name.startswith(prefix):
            continue  # the *_scores.csv summaries
        reader = csv.DictReader(io.StringIO(source.read(path)))
        rows[name[len(prefix):-len(".csv")]] = [(r["timestamp"], float(r["anomaly_score"])) for r in reader]
    return rows


def write_alerts(rows: dict[str, list[tuple[str, float]]], threshold: float, path: Path) -> int:
    """The rows at or above ``threshold`` as a plain alert CSV; returns how many."""
    count = 0
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "device_id"])
        for device, series in rows.items():
            for stamp, score in series:
                if score >= threshold:
                    writer.writerow([stamp, device])
                    count += 1
    return count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--nab-results", type=Path, metavar="DIR", help="a checkout of numenta/NAB")
    where.add_argument("--nab-git", type=Path, metavar="GITDIR", help="a bare git repository of numenta/NAB")
    parser.add_argument("--corpus", type=Path, default=ROOT.parent / "shared" / "nab",
                        help="NAB's data/ and labels/ (default: ../shared/nab)")
    parser.add_argument("--detectors", help="comma-separated (default: every detector in config/thresholds.json)")
    parser.add_argument("--tesaiot", default=str(Path(sys.executable).with_name("tesaiot")))
    parser.add_argument("--tolerance", type=float, default=0.01, help="points (default 0.01)")
    parser.add_argument("--markdown", action="store_true", help="the table as Markdown")
    args = parser.parse_args()
    source = NabSource(args.nab_results, args.nab_git)
    thresholds = json.loads(source.read("config/thresholds.json"))
    published = json.loads(source.read("results/final_results.json"))
    detectors = args.detectors.split(",") if args.detectors else sorted(thresholds, key=str.lower)
    failed = 0
    with tempfile.TemporaryDirectory(prefix="nab-scoreboard-") as scratch:
        truth = Path(scratch) / "nab.parquet"
        started = time.monotonic()
        subprocess.run([args.tesaiot, "convert", "--from", "nab", str(args.corpus / "data"), str(truth),
                        "--labels", str(args.corpus / "labels" / "combined_windows.json")], check=True)
        print(f"converted the corpus in {time.monotonic() - started:.1f} s", file=sys.stderr)
        header = ("detector", "profile", "published", "ours", "difference")
        table: list[tuple[str, ...]] = []
        for detector in detectors:
            rows = detector_rows(source, detector)
            cache: dict[float, dict[str, object]] = {}
            for profile in PROFILES:
                threshold = float(thresholds[detector][profile]["threshold"])
                if threshold not in cache:
                    alerts = Path(scratch) / f"{detector}-{profile}.csv"
                    write_alerts(rows, threshold, alerts)
                    run = subprocess.run([args.tesaiot, "score", str(truth), "--alerts", str(alerts), "--nab",
                                          "--json"], check=True, capture_output=True, text=True)
                    cache[threshold] = json.loads(run.stdout)["nab"]
                ours = float(cache[threshold][profile]["score"])  # type: ignore[index]
                reference = published.get(detector, {}).get(profile)
                if reference is None:
                    table.append((detector, profile, "-", f"{ours:.4f}", "not published"))
                    continue
                difference = ours - float(reference)
                failed += abs(difference) > args.tolerance
                table.append((detector, profile, f"{reference:.4f}", f"{ours:.4f}", f"{difference:+.6f}"))
            print(f"{detector}: scored", file=sys.stderr)
    if args.markdown:
        print("| " + " | ".join(header) + " |")
        print("|" + " --- |" * len(header))
        for row in table:
            print("| " + " | ".join(row) + " |")
    else:
        widths = [max(len(r[i]) for r in (header, *table)) for i in range(len(header))]
        for row in (header, *table):
            print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    reproduced = sum(1 for row in table if row[4] != "not published" and abs(float(row[4])) <= args.tolerance)
    print(f"{reproduced} of {sum(1 for row in table if row[4] != 'not published')} published scores reproduced "
          f"to within {args.tolerance} points", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
