"""Section 7: ``tesaiot simulate`` fleets: how many devices one process carries.

A. **One connection, 1 Hz.** ``simulate --devices N --interval 1 --duration D`` for a ladder
   of N, this build beside today's build (the tree of ``--fleet-baseline REF``, extracted
   with ``git archive`` and run from its own directory). A rung **holds its schedule** when
   the run published every packet (N × D, exit 0) and its send lateness p99 stays within
   50 ms (publish time minus due time of every packet: the new build's summary; for today's
   build, which reports only the maximum, a shim records what its scheduler returns). CPU is measured in steady
   state: /proc/<pid>/stat between 2 s after the schedule starts (the banner) and 1 s before
   its end, as a fraction of one core; RSS (VmRSS) at that end point. Each build climbs its
   ladder until the first rung that does not hold (today's build stops at 10,000: its limit).
B. **One connection per device.** ``simulate --connections per-device --interval 10`` held
   for ``hold`` seconds, for a ladder of N; a rung passes when every device connected and
   none lost its connection, and every packet was acknowledged (exit 0). Connect time
   (attempt to CONNACK) p50/p99 from the summary. Beside it the naive baseline
   (bench/paho_fleet.py: one paho client with its own ``loop_start`` thread per device).

The bench's own mosquitto on loopback (``max_connections -1``, its soft descriptor limit
raised to the hard limit, noted in the results).
"""

from __future__ import annotations

import os
import re
import resource
import subprocess
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib.common import BENCH_DIR, PYTHON, ROOT, BenchError, Table, progress, say, stop_process

DEFAULT_BASELINE = "e0df4ca"  # the commit before the fleet work: "today's build" of issue 17
LATENESS_LIMIT_S = 0.050
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Trial:
    """One run of a fleet: what it said and what it cost."""

    tool: str
    devices: int
    ok: bool = False
    exit_code: int | None = None
    cpu_cores: float | None = None
    rss_mib: float | None = None
    lateness_p99_ms: float | None = None
    lateness_max_ms: float | None = None
    lateness_last_ms: float | None = None
    published: int | None = None
    connected: int | None = None
    lost: int | None = None
    connect_p50_ms: float | None = None
    connect_p99_ms: float | None = None
    startup_s: float | None = None
    us_per_message: float | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _baseline_tree(ref: str, workdir: Path) -> Path:
    """Today's build: ``git archive REF tesaiot_cli`` into ``workdir/baseline``."""
    target = workdir / "baseline"
    target.mkdir(parents=True, exist_ok=True)
    archive = workdir / "baseline.tar"
    with open(archive, "wb") as out:
        done = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "tesaiot_cli"], stdout=out,
                              stderr=subprocess.PIPE, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"git archive {ref} failed: {done.stderr.decode(errors='replace').strip()}")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    return target


def _simulate_argv(tree: Path | None, args: list[str]) -> list[str]:
    """Run ``tesaiot simulate`` from ``tree`` (None: this build)."""
    if tree is None:
        return [PYTHON, "-m", "tesaiot_cli", "simulate", *args]
    # The project is installed editable: put the old tree first on sys.path explicitly.
    return [PYTHON, "-c", _BASELINE_BOOT.replace("TREE", repr(str(tree))), "simulate", *args]


# Today's build reports only its maximum lateness: this shim records what its
# Scheduler.wait_for returns for every packet (publish time minus due time, as the new
# build's histogram does) and prints p50/p99 in the new build's words at exit.
_BASELINE_BOOT = """
import atexit, runpy, sys
sys.path.insert(0, TREE)
from tesaiot_cli.sim import schedule as _schedule
_late = []
_wait_for = _schedule.Scheduler.wait_for
def _recording_wait_for(self, slot, stop):
    late = _wait_for(self, slot, stop)
    if late is not None:
        _late.append(late)
    return late
_schedule.Scheduler.wait_for = _recording_wait_for
def _report():
    if _late:
        _late.sort()
        at = lambda q: _late[min(len(_late) - 1, int(q * len(_late)))] * 1000
        sys.stderr.write(f"tesaiot: send lateness p50 {at(0.5):.1f}, p99 {at(0.99):.1f} ms (bench shim)\\n")
atexit.register(_report)
sys.argv = ["tesaiot", *sys.argv[1:]]
runpy.run_module("tesaiot_cli", run_name="__main__", alter_sys=True)
"""


@dataclass
class Measured:
    """A run's exit code and stderr; CPU (cores) and RSS in steady state; CPU per message."""

    code: int | None
    err: str
    cpu: float | None = None
    rss: float | None = None
    startup: float | None = None
    us_per_message: float | None = None
    cpu_after_start_s: float | None = None  # CPU time from the start marker to the exit (wait4)


_SENT = re.compile(r"sent ([\d,]+)")  # the status line: "sent 19,802"


def _measure(argv: list[str], *, timeout: float, workdir: Path, started_marker: str = "simulating ") -> Measured:
    """Run ``argv`` to its end (bounded by ``timeout``). Steady state is from the first to
    the last status line the run prints (every 5 s when stderr is not a terminal), where the
    process's CPU time is read from /proc: cores = CPU time / wall time meanwhile. CPU per
    message (set by the caller) = the CPU time from the start marker to the exit (``wait4``)
    over the packets published, which holds even on a shared machine: a slowed run still
    costs what its packets cost."""
    err_path = workdir / "stderr.txt"
    launched = time.monotonic()
    with open(err_path, "wb") as err:
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err, cwd=workdir)
    result = Measured(None, "")
    samples: list[tuple[float, float, int]] = []  # (wall, cpu, sent)
    seen = 0
    cpu_at_start: float | None = None
    try:
        deadline = launched + timeout
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                # Reaped here (not by Popen) to get its rusage: all the CPU time it used.
                process.returncode = os.waitstatus_to_exitcode(status)
                if cpu_at_start is not None:
                    result.cpu_after_start_s = usage.ru_utime + usage.ru_stime - cpu_at_start
                break
            text = err_path.read_text(errors="replace")
            if result.startup is None and started_marker in text:
                result.startup = time.monotonic() - launched
                cpu_at_start = _cpu_s(process.pid)
            lines = text.splitlines()
            for line in lines[seen:]:
                match = _SENT.search(line)
                cpu = _cpu_s(process.pid)
                if match and result.startup is not None and cpu is not None and "stopped" not in line:
                    samples.append((time.monotonic(), cpu, int(match.group(1).replace(",", ""))))
                    result.rss = _rss_mib(process.pid)
            seen = len(lines)
            time.sleep(0.02)
    finally:
        if process.returncode is None:
            stop_process(process)
    result.code, result.err = process.returncode, err_path.read_text(errors="replace")
    if len(samples) >= 2:
        (t1, c1, _), (t2, c2, _) = samples[0], samples[-1]
        result.cpu = (c2 - c1) / (t2 - t1)
    return result


def _number(pattern: str, text: str) -> float | None:
    """The first group of ``pattern`` in ``text`` as a number; thousands separators
    (``1,200,000``, as the summaries print counts) are taken out."""
    match = re.search(pattern, text)
    return float(match.group(1).replace(",", "")) if match else None


def one_connection(broker_url: str, tree: Path | None, tool: str, devices: int, *, duration: float, qos: int,
                   workdir: Path) -> Trial:
    args = ["-b", broker_url, "--devices", str(devices), "--interval", "1", "--duration", str(duration),
            "--qos", str(qos), "--seed", "7", "--device-id", f"{tool}-{devices}-1",
            "-t", "bench/fleet/{device_id}/telemetry"]
    m = _measure(_simulate_argv(tree, args), timeout=duration + 60 + devices / 2000, workdir=workdir)
    code, err = m.code, m.err
    trial = Trial(tool, devices, exit_code=code, cpu_cores=m.cpu, rss_mib=m.rss, startup_s=m.startup,
                  us_per_message=m.us_per_message)
    trial.published = int(_number(r"([\d,]+) packets published", err) or 0)
    if trial.published and m.cpu_after_start_s is not None:
        # Everything after start-up (the schedule, the drain, the close) over the packets sent.
        trial.us_per_message = m.cpu_after_start_s / trial.published * 1e6
    trial.lateness_p99_ms = _number(r"lateness p50 [\d.]+, p99 ([\d.]+) ms", err)
    trial.lateness_max_ms = _number(r"at most ([\d.]+) ms late", err)
    trial.lateness_last_ms = _number(r"last packet ([\d.]+) ms after", err)
    judged = trial.lateness_p99_ms
    expected = devices * int(duration)
    trial.ok = (code == 0 and trial.published is not None and trial.published >= expected
                and judged is not None and judged <= LATENESS_LIMIT_S * 1000)
    if code != 0:
        trial.note = (err.strip().splitlines() or ["no output"])[-1][:160]
    elif trial.published < expected:
        trial.note = f"published {trial.published} of {expected}"
    return trial


def per_device(broker_url: str, devices: int, *, hold: float, connect_rate: float, workdir: Path) -> Trial:
    args = ["-b", broker_url, "--devices", str(devices), "--interval", "10", "--duration", str(hold),
            "--connections", "per-device", "--connect-rate", str(connect_rate), "--seed", "7",
            "--device-id", f"pd{devices}-1", "-t", "bench/pd/{device_id}/telemetry", "--anomaly-every", "0"]
    m = _measure(_simulate_argv(None, args), timeout=hold + 90 + devices / connect_rate * 3, workdir=workdir)
    code, err = m.code, m.err
    trial = Trial("tesaiot per-device", devices, exit_code=code, cpu_cores=m.cpu, rss_mib=m.rss, startup_s=m.startup,
                  us_per_message=m.us_per_message)
    trial.connected = int(_number(r"devices: ([\d,]+) of [\d,]+ connected", err) or 0)
    trial.lost = int(_number(r"([\d,]+) connections lost", err) or 0)
    trial.connect_p50_ms = _number(r"connect time .*? p50 ([\d.]+) ms", err)
    trial.connect_p99_ms = _number(r"connect time .*? p99 ([\d.]+) ms", err)
    trial.published = int(_number(r"([\d,]+) packets published", err) or 0)
    trial.ok = code == 0 and trial.connected == devices and trial.lost == 0
    if not trial.ok:
        trial.note = (err.strip().splitlines() or ["no output"])[-1][:160]
    return trial


def naive(port: int, devices: int, *, hold: float, connect_rate: float, workdir: Path) -> Trial:
    import json

    argv = [PYTHON, str(BENCH_DIR / "paho_fleet.py"), "--port", str(port), "--devices", str(devices),
            "--interval", "10", "--hold", str(hold), "--connect-rate", str(connect_rate), "--prefix", f"nv{devices}"]
    out_path = workdir / "naive.json"
    launched = time.monotonic()
    with open(out_path, "wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL, cwd=workdir)
    cpu = rss = None
    try:
        ramp = devices / connect_rate
        time.sleep(min(ramp + 2.0, hold + ramp))
        first, t1 = _cpu_s(process.pid), time.monotonic()
        time.sleep(max(0.5, hold - 3.0))
        last, t2 = _cpu_s(process.pid), time.monotonic()
        rss = _rss_mib(process.pid)
        if first is not None and last is not None:
            cpu = (last - first) / (t2 - t1)
        process.wait(timeout=hold + 120)
    except subprocess.TimeoutExpired:
        stop_process(process)
    finally:
        if process.poll() is None:
            stop_process(process)
    trial = Trial("paho, a thread per client", devices, exit_code=process.returncode, cpu_cores=cpu, rss_mib=rss,
                  startup_s=time.monotonic() - launched)
    try:
        data = json.loads(out_path.read_text().strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        trial.note = f"no result (exit {process.returncode})"
        return trial
    trial.extra = data
    trial.connected = data["clients"]
    trial.lost = data["clients"] - data["connected_at_end"]
    trial.connect_p50_ms, trial.connect_p99_ms = data["connect_p50_ms"], data["connect_p99_ms"]
    trial.published = data["published"]
    trial.ok = (process.returncode == 0 and data["clients"] == devices and data["connected_at_end"] == devices
                and data["acknowledged"] >= data["published"] and not data["error"])
    if not trial.ok:
        trial.note = str(data.get("error") or f"{data['connected_at_end']} of {devices} connected at the end")
    return trial


def _climb(ladder: list[int], run_one: Any, budget_end: float, label: str, *, all_rungs: bool = False) -> list[Trial]:
    trials: list[Trial] = []
    for devices in ladder:
        if time.monotonic() > budget_end:
            progress(f"  {label}: out of time budget before {devices}")
            break
        trial = run_one(devices)
        progress(f"  {label} {devices}: {'holds' if trial.ok else 'FAILS'} "
                 f"(cpu {trial.cpu_cores}, p99 {trial.lateness_p99_ms}, max {trial.lateness_max_ms}, "
                 f"connect p99 {trial.connect_p99_ms}) {trial.note}")
        trials.append(trial)
        if not trial.ok and not all_rungs:
            break
    return trials


def run_section(broker: Any, workdir: Path, *, ladder: list[int], baseline_ladder: list[int], duration: float,
                qos_levels: tuple[int, ...], per_device_ladder: list[int], hold: float, connect_rate: float,
                baseline_ref: str, budget_s: float, all_rungs: bool = False) -> dict[str, Any]:
    """Both parts; returns the trials as dicts."""
    from dataclasses import asdict

    base = Path(tempfile.mkdtemp(prefix="fleet-", dir=workdir))
    tree = _baseline_tree(baseline_ref, base)
    budget_end = time.monotonic() + budget_s
    result: dict[str, Any] = {"baseline_ref": baseline_ref, "duration_s": duration, "hold_s": hold,
                              "connect_rate": connect_rate, "broker_fd_limit": broker_fd_limit(broker),
                              "bench_fd_limit": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
                              "one_connection": [], "per_device": []}
    for qos in qos_levels:
        for tool, which, steps in (("today", tree, baseline_ladder), ("new", None, ladder)):
            trials = _climb(steps, lambda n, t=tool, w=which, q=qos: one_connection(
                broker.url, w, t, n, duration=duration, qos=q, workdir=base), budget_end,
                f"one connection QoS {qos} {tool}", all_rungs=all_rungs)
            for trial in trials:
                trial.extra["qos"] = qos
            result["one_connection"] += [asdict(t) for t in trials]
    for label, runner in (("tesaiot", lambda n: per_device(broker.url, n, hold=hold, connect_rate=connect_rate,
                                                           workdir=base)),
                          ("naive", lambda n: naive(broker.port, n, hold=hold, connect_rate=connect_rate,
                                                    workdir=base))):
        result["per_device"] += [asdict(t) for t in _climb(per_device_ladder, runner, budget_end,
                                                           f"per-device {label}")]
    return result


def broker_fd_limit(broker: Any) -> list[int] | None:
    """The broker process's own RLIMIT_NOFILE (soft, hard)."""
    process = getattr(broker, "process", None)
    if process is None:
        return None
    try:
        for line in Path(f"/proc/{process.pid}/limits").read_text().splitlines():
            if line.startswith("Max open files"):
                parts = line.split()
                return [int(parts[3]), int(parts[4])]
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def report(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Print the tables; return the goals."""
    say("## 9. Simulate fleets")
    say(f"one connection: --interval 1, {section['duration_s']:g} s per rung; holds = every packet published and "
        f"send lateness p99 <= {LATENESS_LIMIT_S * 1000:g} ms; CPU in steady state. "
        f"Today's build = {section['baseline_ref']}. Broker fd limit {section['broker_fd_limit']}.")
    table = Table(["QoS", "build", "devices", "holds", "CPU (cores)", "CPU µs/msg", "devices at 1 Hz per core",
                   "lateness p99 / max / last (ms)", "RSS MiB", "start-up s", "note"])
    for t in section["one_connection"]:
        per_core = 1e6 / t["us_per_message"] if t["us_per_message"] else None
        table.add(t["extra"].get("qos"), t["tool"], t["devices"], "yes" if t["ok"] else "NO", _fmt(t["cpu_cores"], 2),
                  _fmt(t["us_per_message"]), _fmt(per_core, 0),
                  f"{_fmt(t['lateness_p99_ms'])} / {_fmt(t['lateness_max_ms'])} / {_fmt(t['lateness_last_ms'])}",
                  _fmt(t["rss_mib"], 0), _fmt(t["startup_s"]), t["note"])
    say(table.render())
    say("memory per device (RSS slope between rungs of the new build): " + ", ".join(
        f"QoS {b['extra'].get('qos')} {a['devices']}->{b['devices']}: "
        f"{(b['rss_mib'] - a['rss_mib']) * 1024 / (b['devices'] - a['devices']):.1f} KiB"
        for a, b in zip(section["one_connection"], section["one_connection"][1:], strict=False)
        if a["tool"] == b["tool"] == "new" and a["extra"].get("qos") == b["extra"].get("qos")
        and a["rss_mib"] and b["rss_mib"]) or "n/a")
    say()
    say(f"one connection per device: --interval 10, held {section['hold_s']:g} s, connect rate "
        f"{section['connect_rate']:g}/s")
    table = Table(["client", "connections", "held", "connect p50 / p99 (ms)", "CPU (cores)", "RSS MiB",
                   "KiB per connection (slope)", "note"])
    previous: dict[str, Any] = {}
    for t in section["per_device"]:
        before = previous.get(t["tool"])
        per = ((t["rss_mib"] - before["rss_mib"]) * 1024 / (t["devices"] - before["devices"])
               if before and t["rss_mib"] and before["rss_mib"] else None)
        previous[t["tool"]] = t
        table.add(t["tool"], t["devices"], "yes" if t["ok"] else "NO",
                  f"{_fmt(t['connect_p50_ms'])} / {_fmt(t['connect_p99_ms'])}", _fmt(t["cpu_cores"], 2),
                  _fmt(t["rss_mib"], 0), _fmt(per, 1), t["note"])
    say(table.render())
    say()
    goals = []
    for qos in sorted({t["extra"].get("qos") for t in section["one_connection"]}):
        new = [t for t in section["one_connection"] if t["tool"] == "new" and t["extra"].get("qos") == qos]
        best = max((t for t in new if t["ok"]), key=lambda t: t["devices"], default=None)
        costs = sorted(t["us_per_message"] for t in new if t["us_per_message"])
        cost = costs[len(costs) // 2] if costs else None
        goals.append({"goal": f"simulate: 50,000 devices at 1 Hz on one connection within 1 core (QoS {qos})",
                      "met": None if cost is None else (cost * 50_000 / 1e6 <= 1.0 and best is not None
                                                        and best["devices"] >= 50_000),
                      "detail": (f"largest held {best['devices'] if best else 'none'}; CPU {_fmt(cost)} µs/msg "
                                 f"(median of rungs) = {_fmt(cost * 50_000 / 1e6 if cost else None, 2)} cores "
                                 "at 50,000/s")})
    held = [t for t in section["per_device"] if t["tool"].startswith("tesaiot") and t["ok"]]
    most = max(held, key=lambda t: t["devices"], default=None)
    goals.append({"goal": "simulate: 10,000 per-device connections from one process",
                  "met": None if most is None else most["devices"] >= 10_000,
                  "detail": "none held" if most is None else f"largest held {most['devices']}"})
    return goals
