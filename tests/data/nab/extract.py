"""How this directory was made from NAB (numenta/NAB at commit ea702d7, MIT licence).

    python tests/data/nab/extract.py NAB_GIT_DIR NAB_CORPUS_DIR

Copies a few series (data/, their windows in labels/), and for five detectors: the rows of
each series whose anomaly_score is at least the detector's lowest threshold (results/),
NAB's per-file scores of those series and its whole-corpus Totals row (scores/), the
thresholds and the published final scores.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

FILES = ("realAdExchange/exchange-2_cpc_results.csv", "realKnownCause/ambient_temperature_system_failure.csv",
         "artificialNoAnomaly/art_daily_small_noise.csv", "realTraffic/speed_7578.csv",
         "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv")
DETECTORS = ("numenta", "knncad", "windowedGaussian", "relativeEntropy", "skyline")
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


def main() -> None:
    git_dir, corpus = Path(sys.argv[1]), Path(sys.argv[2])
    here = Path(__file__).resolve().parent

    def show(path: str) -> str:
        return subprocess.run(["git", f"--git-dir={git_dir}", "show", f"HEAD:{path}"], check=True,
                              capture_output=True, text=True).stdout

    windows = json.loads((corpus / "labels" / "combined_windows.json").read_text())
    (here / "labels").mkdir(exist_ok=True)
    (here / "labels" / "combined_windows.json").write_text(json.dumps({f: windows[f] for f in FILES}, indent=1))
    for name in FILES:
        (here / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(corpus / "data" / name, here / "data" / name)
    thresholds = json.loads(show("config/thresholds.json"))
    final = json.loads(show("results/final_results.json"))
    (here / "thresholds.json").write_text(json.dumps({d: thresholds[d] for d in DETECTORS}, indent=1))
    (here / "final_results.json").write_text(json.dumps({d: final[d] for d in DETECTORS}, indent=1))
    for detector in DETECTORS:
        lowest = min(float(thresholds[detector][p]["threshold"]) for p in PROFILES)
        (here / "results" / detector).mkdir(parents=True, exist_ok=True)
        for name in FILES:
            category, file = name.split("/")
            rows = csv.DictReader(io.StringIO(show(f"results/{detector}/{category}/{detector}_{file}")))
            with open(here / "results" / detector / file, "w", newline="") as handle:
                out = csv.writer(handle)
                out.writerow(["timestamp", "anomaly_score"])
                out.writerows((r["timestamp"], r["anomaly_score"]) for r in rows
                              if float(r["anomaly_score"]) >= lowest)
        (here / "scores").mkdir(exist_ok=True)
        for profile in PROFILES:
            table = list(csv.reader(io.StringIO(show(f"results/{detector}/{detector}_{profile}_scores.csv"))))
            kept = [table[0]] + [r for r in table[1:] if r[2] in FILES or r[0] == "Totals"]
            with open(here / "scores" / f"{detector}_{profile}_scores.csv", "w", newline="") as handle:
                csv.writer(handle).writerows(kept)
    shutil.copyfile(corpus / "LICENSE.txt", here / "LICENSE.txt")


if __name__ == "__main__":
    main()
