"""The fault harness: what `simulate` and `record` lose, and say, on a bad wire.

Run it through ``bench/faults`` (which installs what is missing and picks the network
namespace's name). Cases, each with QoS 0 and 1 and a clean or a persistent
(``record --session``) recorder:

* ``baseline``   nothing goes wrong (the control row);
* ``slow-link``  the namespace's loopback limited with ``tc qdisc ... tbf`` (``--rate``) at
                 an Ethernet MTU (1500);
* ``black-hole`` the same tbf at loopback's 64 KiB MTU: segments larger than tbf's burst
                 are dropped every time, so bulk data stops while small packets pass;
* ``stall``      the broker stopped with SIGSTOP for ``--stall`` seconds, then SIGCONT;
* ``restart``    the broker stopped (SIGTERM) and started again ``--down`` seconds later,
                 with ``persistence true`` so persistent sessions survive it;
* ``hostile``    ``tests/support/hostile_broker.py`` (when the tree has it) instead of
                 mosquitto, one row per crafted packet, with ``record`` against it.

A row runs ``tesaiot record`` (subscribed before the first packet), then ``tesaiot simulate
--record truth.parquet``; the fault is applied on a timer; after simulate ends the
recorder gets a bounded time to catch up and is stopped with SIGINT. Delivery is computed
by matching topic + exact payload bytes between the ground truth and the recording (and
with ``tesaiot score --received`` when that command exists). Every wait is bounded; every
process is stopped by the code that started it, and the namespace is removed on exit.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.common import BENCH_DIR, ROOT, Broker, percentile, progress, run, say, stop_process  # noqa: E402

from bench import machine, versions  # noqa: E402

CASES = ("baseline", "slow-link", "black-hole", "stall", "restart", "hostile")
LINK_CASES = ("slow-link", "black-hole")  # they need the namespace's own loopback
HOSTILE_SCRIPT = ROOT / "tests" / "support" / "hostile_broker.py"
HOSTILE_CASES = ("wildcard-topic", "packet-id-zero", "bad-utf8-topic", "qos3", "bad-remaining-length")
# mosquitto's own default, written out so the table can name it: a persistent session's
# queue beyond it is dropped by the broker ("Outgoing messages are being dropped").
MAX_QUEUED_MESSAGES = 1000
BROKER_PORT = 1883  # inside the private namespace nothing else listens
LOOPBACK_MTU = 65536  # Linux's default for lo
DOCS_BEGIN = "<!-- bench/faults results: begin -->"
DOCS_END = "<!-- bench/faults results: end -->"


class HarnessError(RuntimeError):
    """A step of the harness itself failed (not a fault under test)."""


class Stop(BaseException):
    """SIGTERM: unwind through every ``finally`` like Ctrl+C does."""


# ---------------------------------------------------------------- the network


@dataclass
class Net:
    """Where the processes run: inside the private namespace ``name``, or (no namespaces) on
    the host's loopback, where the slow-link case cannot run."""

    name: str | None
    port: int
    why_no_netns: str = ""

    def argv(self, argv: Sequence[str]) -> list[str]:
        return (["ip", "netns", "exec", self.name] if self.name else []) + list(argv)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def listening(self, port: int) -> bool:
        """Whether something listens on ``port`` here (asked with ``ss``, which does not
        connect: a hostile script may serve one connection only)."""
        out = run(self.argv(["ss", "-Hltn", f"sport = :{port}"]), timeout=10).stdout
        return bool(out.strip())

    def wait_listening(self, port: int, process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise HarnessError(f"{process.args!r} exited with {process.returncode} before listening")
            if self.listening(port):
                return
            time.sleep(0.1)
        raise HarnessError(f"nothing listens on port {port} after {timeout:g} s")

    def set_rate(self, rate: str | None, *, ethernet_mtu: bool = True) -> None:
        """Limit the namespace's loopback to ``rate`` (tc tbf), at an Ethernet MTU or at
        loopback's own; ``None`` undoes both."""
        assert self.name is not None
        if rate is None:
            run(self.argv(["tc", "qdisc", "del", "dev", "lo", "root"]), timeout=10)
            run(self.argv(["ip", "link", "set", "lo", "mtu", str(LOOPBACK_MTU)]), timeout=10)
            return
        # tbf drops every packet larger than its burst: at loopback's 64 KiB MTU, TCP's
        # larger segments never pass (a black hole for bulk data while small packets still
        # flow: the black-hole case); at 1500 it is a slow link. The latency bounds the
        # queue (what would wait longer is dropped and TCP sends it again), as on a
        # congested uplink.
        steps = [["ip", "link", "set", "lo", "mtu", "1500" if ethernet_mtu else str(LOOPBACK_MTU)],
                 ["tc", "qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate, "burst", "10kb",
                  "latency", "400ms"]]
        for argv in steps:
            result = run(self.argv(argv), timeout=10)
            if result.returncode != 0:
                raise HarnessError(f"{' '.join(argv)} failed: {result.stderr.decode(errors='replace').strip()}")


@contextmanager
def network(name: str | None, port_if_host: Callable[[], int]) -> Iterator[Net]:
    """The private namespace ``name`` (loopback up), removed on exit whatever happens;
    the host's loopback when it cannot be made."""
    if name:
        made = run(["ip", "netns", "add", name], timeout=10)
        if made.returncode == 0:
            try:
                up = run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], timeout=10)
                if up.returncode != 0:
                    raise HarnessError(f"cannot bring up lo in {name}: {up.stderr.decode(errors='replace')}")
                yield Net(name, BROKER_PORT)
            finally:
                for pid in run(["ip", "netns", "pids", name], timeout=10).stdout.split():
                    # Only our own processes live in the namespace; a stopped broker needs CONT to die.
                    for sig in (signal.SIGCONT, signal.SIGKILL):
                        try:
                            os.kill(int(pid), sig)
                        except ProcessLookupError:
                            pass
                run(["ip", "netns", "del", name], timeout=10)
            return
        why = made.stderr.decode(errors="replace").strip() or f"exit {made.returncode}"
        why = f"ip netns add failed ({why})"
    else:
        why = "no --netns given"
    yield Net(None, port_if_host(), why_no_netns=why)


# ---------------------------------------------------------------- processes


@dataclass
class Proc:
    """A child started in the network, with its stdout/stderr in files and its peak memory."""

    name: str
    process: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)
    maxrss_kib: int | None = None  # peak memory (VmHWM) seen while it ran
    timed_out: bool = False

    @classmethod
    def start(cls, net: Net, name: str, argv: Sequence[str], directory: Path,
              env: dict[str, str] | None = None) -> Proc:
        out, err = directory / f"{name}.out", directory / f"{name}.err"
        with open(out, "wb") as out_file, open(err, "wb") as err_file:
            # A session of its own: Ctrl+C reaches the harness, which stops the children itself.
            process = subprocess.Popen(net.argv(argv), stdout=out_file, stderr=err_file,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=None if env is None else {**os.environ, **env})
        return cls(name, process, out, err)

    def poll(self) -> int | None:
        """The exit code once it ended; while it runs, its peak memory is sampled.

        The peak is the kernel's high-water mark of the process's memory (VmHWM), read
        from /proc while it runs: wait4's ru_maxrss would not do, as Linux starts it at
        the parent's size (here the harness, with pyarrow loaded) when the child execs.
        """
        if self.process.returncode is None:
            self._sample_peak()
        return self.process.poll()

    def _sample_peak(self) -> None:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.maxrss_kib = max(self.maxrss_kib or 0, int(line.split()[1]))

    def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.poll() is not None:
                return self.process.returncode
            time.sleep(0.05)
        return None

    def stop(self, first: int = signal.SIGINT, grace: float = 15.0) -> int:
        """Stop it (``first``, then SIGTERM, then SIGKILL), bounded; the exit code."""
        for sig, wait in ((first, grace), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.poll() is not None:
                break
            if sig != first:
                self.timed_out = True
            try:
                self.process.send_signal(sig)
            except ProcessLookupError:
                break
            if self.wait(wait) is not None:
                break
        code = self.poll()
        if code is None:  # cannot happen after SIGKILL; keep the bound anyway
            code = stop_process(self.process, first=signal.SIGKILL, grace=5)
        return code

    def stderr_lines(self) -> list[str]:
        return self.err.read_text(errors="replace").splitlines() if self.err.exists() else []


# The live status line of simulate (and record on a terminal): "tesaiot:     5.0 s   495.7 msg/s ..."
STATUS_LINE = re.compile(r"^tesaiot:\s+\d+(\.\d+)?\s*s\s")
# The session's connection events on stderr (tesaiot_cli/mqtt/).
CONNECTION_EVENT = re.compile(r"^tesaiot: (disconnected from|reconnecting|reconnect failed|reconnect refused|"
                              r"reconnect attempt|reconnected to)")
NUMBER = r"([\d,]+)"
# "N packets published (R msg/s), N acknowledged by the broker, ..." (QoS 0: "N written to the socket (...)")
SIM_SUMMARY = re.compile(rf"{NUMBER} packets published .*?{NUMBER} (?:acknowledged by the broker|written to the socket)"
                         rf"[^,]*, {NUMBER} failed, {NUMBER} dropped")
REC_SUMMARY = re.compile(rf"recorded {NUMBER} messages")


def to_int(text: str) -> int:
    return int(text.replace(",", ""))


def said(lines: list[str], *, skip: Sequence[str] = ()) -> list[str]:
    """What a tool said: its stderr lines without live status lines and banner lines
    (``skip`` prefixes), repeats folded as ``(xN)``, in first-seen order."""
    counts: dict[str, int] = {}
    for line in lines:
        line = line.rstrip()
        if not line.strip() or STATUS_LINE.match(line) or any(line.startswith(p) for p in skip):
            continue
        if not line.startswith(("tesaiot", "warning", "error", "Traceback")) and line.startswith(" "):
            continue  # record's per-topic lines after its summary
        counts[line] = counts.get(line, 0) + 1
    return [f"{line} (x{n})" if n > 1 else line for line, n in counts.items()]


# ---------------------------------------------------------------- the broker


class FaultBroker(Broker):
    """mosquitto inside the network: default limits (written out), a fixed port, and the
    faults: pause/resume (SIGSTOP/SIGCONT) and restart."""

    def __init__(self, directory: Path, net: Net, *, persistence: bool) -> None:
        super().__init__(directory)
        self.net = net
        self.port = net.port
        self.persistence = persistence
        self.proc: Proc | None = None
        self.starts = 0

    def config_text(self) -> str:
        return (
            ("user root\n" if os.geteuid() == 0 else "")
            + (f"persistence true\npersistence_location {self.directory}/\n" if self.persistence
               else "persistence false\n")
            + f"log_dest file {self.log_path}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type subscribe\n"
            "connection_messages true\n"
            f"max_queued_messages {MAX_QUEUED_MESSAGES}\n"
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        )

    def start(self) -> None:
        from benchlib.common import find_mosquitto

        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "mosquitto.conf"
        config.write_text(self.config_text())
        self.starts += 1
        self.proc = Proc.start(self.net, f"mosquitto-{self.starts}", [find_mosquitto(), "-c", str(config)],
                               self.directory)
        self.process = self.proc.process
        self.net.wait_listening(self.port, self.proc.process)

    def stop(self) -> None:
        if self.proc is not None:
            try:
                self.proc.process.send_signal(signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.stop(first=signal.SIGTERM, grace=10)
            self.proc = None
            self.process = None

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc is not None:
            self.proc.process.send_signal(signal.SIGCONT)

    def notes(self) -> list[str]:
        """What the broker logged that explains a loss, counted by kind."""
        text = self._log_text + self._read_log()
        kinds = {
            "client timed out": r"has exceeded timeout",
            "queue full, messages dropped": r"Outgoing messages are being dropped",
            "socket error": r"Socket error on client",
        }
        found = []
        for name, pattern in kinds.items():
            n = len(re.findall(pattern, text))
            if n:
                found.append(f"{name} x{n}")
        return found


# ---------------------------------------------------------------- delivery


@dataclass
class Delivery:
    """Ground truth against a recording, by topic + exact payload bytes."""

    truth: int = 0
    recorded: int = 0
    delivered: int = 0  # distinct truth messages found in the recording
    duplicates: int = 0  # recorded again after the first copy
    foreign: int = 0  # recorded, but not in the truth
    latency_ms: dict[str, float | None] = field(default_factory=dict)

    @property
    def lost(self) -> int:
        return self.truth - self.delivered


def read_messages(path: Path) -> Iterator[tuple[str, bytes, int]]:
    from tesaiot_cli.recording import open_reader

    with open_reader(path) as reader:
        for message in reader:
            yield message.topic, bytes(message.payload), message.time_ns


def match_delivery(truth_path: Path, recording_path: Path) -> Delivery:
    """Match every recorded message to the ground truth (topic and payload bytes; DPS368
    payloads carry a microsecond timestamp, so each is unique). Latency: receive time
    minus the truth's time (the payload's timestamp), in ms, over first copies."""
    sent: dict[tuple[str, bytes], int] = {}
    result = Delivery()
    for topic, payload, time_ns in read_messages(truth_path):
        sent[(topic, payload)] = time_ns
        result.truth += 1
    seen: set[tuple[str, bytes]] = set()
    latencies: list[float] = []
    if recording_path.exists() or recording_path.with_name(recording_path.name + ".partial").exists():
        for topic, payload, time_ns in read_messages(recording_path):
            result.recorded += 1
            key = (topic, payload)
            if key in seen:
                result.duplicates += 1
            elif key in sent:
                seen.add(key)
                result.delivered += 1
                latencies.append((time_ns - sent[key]) / 1e6)
            else:
                result.foreign += 1
    latencies.sort()
    result.latency_ms = {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
                         "max": latencies[-1] if latencies else None}
    return result


def recorded_so_far(path: Path) -> int | None:
    """Messages in a live recording (its crash-safe ``.partial/`` journal); None if unreadable yet."""
    from tesaiot_cli.errors import TesaiotError

    try:
        from tesaiot_cli.recording import open_reader

        with open_reader(path) as reader:
            return reader.count()
    except TesaiotError:
        return None


def score_report(tesaiot: str, truth: Path, recording: Path) -> dict[str, Any] | None:
    """``tesaiot score TRUTH --received REC --json`` when this tesaiot has ``score``
    (None otherwise): its JSON, or {"error": ...}."""
    if run([tesaiot, "score", "--help"], timeout=30).returncode != 0:
        return None
    result = run([tesaiot, "score", str(truth), "--received", str(recording), "--json"], timeout=120)
    try:
        data: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return {"error": f"exit {result.returncode}: {tail[0]}"}
    data["exit"] = result.returncode
    return data


def score_cells(data: dict[str, Any] | None) -> str:
    """The loss and latency numbers of a score report, found by name (its keys are the
    score command's; whatever holds lost/loss/missing/latency is shown)."""
    if data is None:
        return "n/a"
    if "error" in data:
        return f"error: {data['error']}"
    delivery = data.get("delivery")
    if isinstance(delivery, dict) and isinstance(delivery.get("lost"), int) and isinstance(delivery.get("sent"), int):
        # score's own shape (tesaiot_cli/analysis/score.py DeliveryScore.as_dict): lost of sent,
        # duplicates, latency in ms; set out like the harness's columns so the two can be compared.
        latency_ms = delivery.get("latency_ms")
        latency: dict[str, Any] = latency_ms if isinstance(latency_ms, dict) else {}
        dup = f", {delivery['duplicated']} dup" if delivery.get("duplicated") else ""
        exit_text = f", exit {data['exit']}" if data.get("exit") not in (None, 0) else ""
        return (f"lost {delivery['lost']} ({pct(delivery['lost'], delivery['sent'])}){dup}, "
                f"{ms(latency.get('p50'))} / {ms(latency.get('p99'))}{exit_text}")
    found: list[str] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float)) and re.search(r"lost|loss|missing|latency", prefix):
            found.append(f"{prefix}={value:g}")

    walk("", data)
    return ", ".join(found[:6]) or "no loss/latency keys"


# ---------------------------------------------------------------- one row


@dataclass
class Row:
    case: str
    qos: int
    session: bool
    note: str = ""
    skipped: str = ""
    sim: dict[str, Any] = field(default_factory=dict)
    rec: dict[str, Any] = field(default_factory=dict)
    delivery: Delivery | None = None
    score: dict[str, Any] | None = None
    broker_notes: list[str] = field(default_factory=list)
    hostile: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.case} q{self.qos} {'session' if self.session else 'clean'}"


@dataclass
class Options:
    tesaiot: str
    devices: int
    interval: float
    duration: float
    seed: int
    rate: str
    stall: float
    down: float
    fault_at: float
    drain: float
    quiet: float
    hostile_duration: float
    hostile_script: Path
    workdir: Path
    sequence: bool = False  # simulate --sequence: record counts what the broker dropped


def tool_summary(proc: Proc, code: int, workdir: Path) -> dict[str, Any]:
    # Paths shown relative to the run's work directory: the table stays readable.
    lines = [line.replace(f"{workdir}/", "") for line in proc.stderr_lines()]
    return {"exit": code, "timed_out": proc.timed_out,
            "maxrss_mib": round(proc.maxrss_kib / 1024, 1) if proc.maxrss_kib else None,
            "said": said(lines, skip=("tesaiot: simulating ", "tesaiot: topic ", "tesaiot: recording ")),
            "status": status_lines(lines)}


def status_lines(lines: list[str], *, most: int = 8) -> list[str]:
    """The live status lines a tool printed (every 5 s when stderr is not a terminal), shown
    apart from what it said: whether acknowledged and queued counts moved under a fault is
    part of the reading. At most ``most``: the first few and the last ones."""
    found = [line.rstrip() for line in lines if STATUS_LINE.match(line)]
    if len(found) <= most:
        return found
    head = most // 3
    return [*found[:head], f"... {len(found) - most} more ...", *found[len(found) - (most - head):]]


def record_argv(opts: Options, net: Net, path: Path, qos: int, client: str, session: bool,
                duration: float | None = None) -> list[str]:
    argv = [opts.tesaiot, "record", str(path), "-b", net.url, "-t", "#", "--qos", str(qos)]
    argv += ["--session", client] if session else ["--client-id", client]
    if duration is not None:
        argv += ["--duration", f"{duration:g}"]
    return argv


def run_row(opts: Options, net: Net, row: Row) -> None:
    """One fault case with one QoS and session kind: fills ``row``."""
    directory = opts.workdir / row.label.replace(" ", "-")
    directory.mkdir(parents=True)
    broker = FaultBroker(directory, net, persistence=row.case == "restart")
    truth, recording = directory / "truth.parquet", directory / "rec.parquet"
    client = f"faults-rec-{row.case}-q{row.qos}-{'s' if row.session else 'c'}"
    procs: list[Proc] = []
    try:
        if row.case in LINK_CASES:
            net.set_rate(opts.rate, ethernet_mtu=row.case == "slow-link")
        broker.start()
        rec = Proc.start(net, "record", record_argv(opts, net, recording, row.qos, client, row.session), directory)
        procs.append(rec)
        broker.wait_subscribed(client, "#", timeout=30, process=rec.process)
        sim = Proc.start(net, "simulate", [
            opts.tesaiot, "simulate", "-b", net.url, "--devices", str(opts.devices), "--interval", f"{opts.interval:g}",
            "--duration", f"{opts.duration:g}", "--seed", str(opts.seed), "--qos", str(row.qos),
            "--record", str(truth), "--force", "--client-id", f"faults-sim-{row.case}",
            *(["--sequence"] if opts.sequence else [])], directory)
        procs.append(sim)
        fault_errors: list[BaseException] = []
        fault = threading.Thread(target=apply_fault, args=(row, broker, sim, opts, fault_errors), daemon=True)
        fault.start()
        # simulate: its duration, then at most 10 s for acknowledgements; a bound beyond that.
        if sim.wait(opts.duration + 60) is None:
            row.note = "simulate did not end in time; stopped"
        sim_code = sim.stop()
        fault.join(timeout=opts.stall + opts.down + 30)
        if fault_errors:  # the fault itself failed (say, the broker did not come back): the row is void
            raise HarnessError(f"{row.label}: applying the fault failed: {fault_errors[0]}") from fault_errors[0]
        broker.resume()
        drain(opts, rec, recording)
        rec_code = rec.stop()
        row.sim = tool_summary(sim, sim_code, opts.workdir)
        row.rec = tool_summary(rec, rec_code, opts.workdir)
        parse_summaries(row, sim, rec)
        row.broker_notes = broker.notes()
    finally:
        broker.resume()  # a stalled broker would hold up the clients' clean stop
        for proc in reversed(procs):
            proc.stop(grace=5)
        broker.stop()
        if row.case in LINK_CASES:
            net.set_rate(None)
    if truth.exists() or truth.with_name(truth.name + ".partial").exists():
        row.delivery = match_delivery(truth, recording)
        row.score = score_report(opts.tesaiot, truth, recording)
    info = run([opts.tesaiot, "info", "--json", str(recording)], timeout=120)
    if info.returncode == 0:
        row.rec["kept"] = json.loads(info.stdout)["messages"]
    else:
        row.rec["kept"] = None
        row.rec["info_error"] = info.stderr.decode(errors="replace").strip()


def apply_fault(row: Row, broker: FaultBroker, sim: Proc, opts: Options, errors: list[BaseException]) -> None:
    """The fault on its timer (relative to simulate's start), bounded; runs on its own
    thread, so a failure is handed back in ``errors`` for the row's thread to raise."""
    if row.case not in ("stall", "restart"):
        return
    try:
        time.sleep(opts.fault_at)
        if sim.poll() is not None:
            errors.append(HarnessError(f"simulate ended before the fault at {opts.fault_at:g} s"))
            return
        if row.case == "stall":
            broker.pause()
            time.sleep(opts.stall)
            broker.resume()
        else:
            broker.stop()
            time.sleep(opts.down)
            broker.start()
    except Exception as exc:  # noqa: BLE001 - handed to the row's thread, which raises it
        errors.append(exc)


def drain(opts: Options, rec: Proc, recording: Path) -> None:
    """Give the recorder time to catch up: until its count stood still for ``quiet`` s while
    it was connected, at most ``drain`` s."""
    deadline = time.monotonic() + opts.drain
    last, still_since = -1, time.monotonic()
    while time.monotonic() < deadline and rec.poll() is None:
        count = recorded_so_far(recording)
        count = -1 if count is None else count  # nothing on disk yet
        now = time.monotonic()
        if count != last:
            last, still_since = count, now
        events = [line for line in rec.stderr_lines() if CONNECTION_EVENT.match(line)]
        connected = not events or events[-1].startswith("tesaiot: reconnected to")
        if connected and now - still_since >= opts.quiet:
            return
        time.sleep(0.5)


def parse_summaries(row: Row, sim: Proc | None, rec: Proc) -> None:
    """The counts in simulate's and record's closing summaries, into ``row``."""
    for line in sim.stderr_lines() if sim else []:
        if m := SIM_SUMMARY.search(line):
            row.sim.update(published=to_int(m[1]), acked=to_int(m[2]), failed=to_int(m[3]), dropped=to_int(m[4]))
    for line in rec.stderr_lines():
        if m := REC_SUMMARY.search(line):
            row.rec["summary_count"] = to_int(m[1])


# record's one line when the broker breaks the protocol (tesaiot_cli/mqtt), as ``said`` folds it.
CLOSED_BY_CLIENT = re.compile(r"^tesaiot: closed the connection to \S+: (?P<why>.*?)(?: \(x(?P<times>\d+)\))?$")
INTERNAL_ERROR = re.compile(r"^tesaiot: internal error: ")


def hostile_verdict(said_lines: Sequence[str]) -> str:
    """What record did about the crafted packet, for the table: how often it closed the
    connection and why (its own line), or that it failed with an internal error, or that
    it said nothing of it (the packet was taken as a message)."""
    for line in said_lines:
        if m := CLOSED_BY_CLIENT.match(line):
            return f"record closed the connection x{m['times'] or 1}: {m['why']}"
    for line in said_lines:
        if INTERNAL_ERROR.match(line):
            return line.removeprefix("tesaiot: ")
    return "record did not close the connection"


def run_hostile_row(opts: Options, net: Net, row: Row, hostile_case: str) -> None:
    """``record`` against the hostile broker script serving ``hostile_case``."""
    directory = opts.workdir / f"{row.label.replace(' ', '-')}-{hostile_case}"
    directory.mkdir(parents=True)
    recording = directory / "rec.parquet"
    client = f"faults-rec-hostile-q{row.qos}"
    procs: list[Proc] = []
    try:
        hostile = Proc.start(net, "hostile", [sys.executable, str(opts.hostile_script), "--port", str(net.port),
                                              "--case", hostile_case], directory,
                             env={"PYTHONPATH": str(ROOT)})  # it may import tests.support
        procs.append(hostile)
        net.wait_listening(net.port, hostile.process)
        rec = Proc.start(net, "record", record_argv(opts, net, recording, row.qos, client, row.session,
                                                    duration=opts.hostile_duration), directory)
        procs.append(rec)
        if rec.wait(opts.hostile_duration + 20) is None:
            row.note = f"record still running {opts.hostile_duration + 20:g} s after start (hung?); stopped"
        rec_code = rec.stop()
        row.rec = tool_summary(rec, rec_code, opts.workdir)
        parse_summaries(row, None, rec)
        row.note = "; ".join(filter(None, [row.note, hostile_verdict(row.rec.get("said", []))]))
        hostile_code = hostile.stop(first=signal.SIGTERM, grace=5)
        row.hostile = {"case": hostile_case, "exit": hostile_code,
                       "said": said(hostile.stderr_lines() + hostile.out.read_text(errors="replace").splitlines())[-3:]}
    finally:
        for proc in reversed(procs):
            proc.stop(grace=5)
    info = run([opts.tesaiot, "info", "--json", str(recording)], timeout=60)
    row.rec["kept"] = json.loads(info.stdout)["messages"] if info.returncode == 0 else None


# ---------------------------------------------------------------- the report


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "n/a"


def ms(value: float | None) -> str:
    return "n/a" if value is None else (f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms")


def code_text(tool: dict[str, Any]) -> str:
    if "exit" not in tool:
        return "n/a"
    text = str(tool["exit"])
    return text + (" (killed: hung)" if tool.get("timed_out") else "")


def table_rows(rows: list[Row]) -> list[str]:
    out = ["| case | QoS | session | simulate published / acked / dropped, exit | record kept (dup), exit "
           "| lost | acked, not recorded | latency p50 / p99 | broker log | score |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        session = "persistent" if row.session else "clean"
        case = row.case + (f": {row.hostile.get('case', '')}" if row.case == "hostile" and row.hostile else "")
        if row.skipped:
            reason = row.skipped if row.skipped.startswith("the harness failed") else f"skipped: {row.skipped}"
            out.append(f"| {case} | {row.qos} | {session} | {reason} | | | | | | |")
            continue
        sim = row.sim
        sim_cell = (f"{sim.get('published', '?')} / {sim.get('acked', '?')} / {sim.get('dropped', '?')}, "
                    f"exit {code_text(sim)}" if sim else "n/a")
        d = row.delivery
        dup = f" ({d.duplicates} dup)" if d and d.duplicates else ""
        kept = row.rec.get("kept")
        rec_cell = f"{'no file' if kept is None else kept}{dup}, exit {code_text(row.rec)}"
        if d:
            lost = f"{d.lost} ({pct(d.lost, d.truth)})"
            acked = sim.get("acked")
            not_recorded = str(max(0, acked - d.delivered)) if isinstance(acked, int) else "?"
            latency = f"{ms(d.latency_ms.get('p50'))} / {ms(d.latency_ms.get('p99'))}"
        else:
            lost = not_recorded = latency = "n/a"
        notes = "; ".join(filter(None, [", ".join(row.broker_notes), row.note])) or "-"
        out.append(f"| {case} | {row.qos} | {session} | {sim_cell} | {rec_cell} | {lost} | {not_recorded} "
                   f"| {latency} | {notes} | {score_cells(row.score)} |")
    return out


def messages_section(rows: list[Row]) -> list[str]:
    out = ["<details><summary>What each tool printed on stderr (banners left out; simulate's live status lines "
           "gathered in one item; <code>(xN)</code>: repeated)</summary>", ""]
    for row in rows:
        if row.skipped:
            continue
        title = row.label + (f" ({row.hostile['case']})" if row.hostile else "")
        out.append(f"- **{title}**")
        for tool, data in (("simulate", row.sim), ("record", row.rec), ("hostile broker", row.hostile)):
            for line in data.get("said", []) if data else []:
                out.append(f"  - {tool}: `{line.replace('`', chr(39))}`")
        if row.sim.get("status"):
            out.append("  - simulate's live status: " + "; ".join(
                f"`{' '.join(line.split()[1:])}`" for line in row.sim["status"]))
        if row.rec.get("maxrss_mib"):
            out.append(f"  - record peak memory: {row.rec['maxrss_mib']} MiB")
    return [*out, "", "</details>"]


def report(rows: list[Row], header: dict[str, Any]) -> str:
    lines = [f"Command: `{header['command']}`  ", f"Date: {header['date']}  ",
             f"Versions: {', '.join(f'{k} {v}' for k, v in header['versions'].items() if v)}  ",
             f"Network: {header['network']}  ",
             f"Load: simulate --devices {header['devices']} --interval {header['interval']:g} "
             f"--duration {header['duration']:g} (QoS as in the row); record -t '#' --qos as in the row, "
             f"`--session` when persistent; mosquitto max_queued_messages {MAX_QUEUED_MESSAGES}. "
             f"Faults: slow-link tbf {header['rate']} at MTU 1500; black-hole the same at lo's MTU 65536; "
             f"stall SIGSTOP {header['stall']:g} s at "
             f"{header['fault_at']:g} s; restart: down {header['down']:g} s at {header['fault_at']:g} s "
             "(persistence true).", ""]
    lines += table_rows(rows)
    lines += [""] + messages_section(rows)
    return "\n".join(lines) + "\n"


def write_docs(path: Path, text: str) -> None:
    """Put ``text`` between the harness's markers in ``path`` (the markers must be there)."""
    doc = path.read_text()
    begin, end = doc.find(DOCS_BEGIN), doc.find(DOCS_END)
    if begin < 0 or end < begin:
        raise HarnessError(f"{path} has no '{DOCS_BEGIN}' ... '{DOCS_END}' markers")
    path.write_text(doc[:begin + len(DOCS_BEGIN)] + "\n" + text + doc[end:])


# ---------------------------------------------------------------- main


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--netns", help="network namespace to create (bench/faults picks one)")
    parser.add_argument("--workdir", type=Path, help="an empty directory for recordings and logs (default: a new one)")
    parser.add_argument("--tesaiot", default=str(ROOT / ".venv" / "bin" / "tesaiot"), help="the tesaiot to test")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of {', '.join(CASES)}")
    parser.add_argument("--qos", default="0,1", help="comma-separated QoS levels (default 0,1)")
    parser.add_argument("--sessions", default="clean,persistent", help="clean, persistent or clean,persistent")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--interval", type=float, default=0.1, help="simulate --interval (s)")
    parser.add_argument("--duration", type=float, default=20.0, help="simulate --duration (s)")
    parser.add_argument("--seed", type=int, default=18)
    parser.add_argument("--rate", default="1mbit", help="slow-link rate for tc tbf (default 1mbit)")
    parser.add_argument("--stall", type=float, default=8.0, help="seconds the broker is stopped (SIGSTOP)")
    parser.add_argument("--down", type=float, default=3.0, help="seconds the broker is down in a restart")
    parser.add_argument("--fault-at", type=float, default=None, help="seconds into simulate (default duration/4)")
    parser.add_argument("--drain", type=float, default=45.0, help="most seconds record gets to catch up")
    parser.add_argument("--quiet", type=float, default=4.0, help="record is done when its count stood still so long")
    parser.add_argument("--hostile-duration", type=float, default=5.0,
                        help="record --duration against the hostile broker")
    parser.add_argument("--hostile-script", type=Path, default=HOSTILE_SCRIPT,
                        help="the hostile broker (--port PORT --case CASE); default tests/support/hostile_broker.py")
    parser.add_argument("--output", type=Path, default=None,
                        help="markdown table file (default bench/results/faults-DATE.md)")
    parser.add_argument("--docs", type=Path, default=None, help="also put the table into this file between its markers")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (recordings, logs)")
    parser.add_argument("--sequence", action="store_true",
                        help="simulate --sequence: numbered payloads, so record counts (and exits 7 for) what the "
                             "broker dropped")
    args = parser.parse_args(argv)
    bad = set(args.cases.split(",")) - set(CASES)
    if bad:
        parser.error(f"unknown case(s) {', '.join(sorted(bad))}: use {', '.join(CASES)}")
    if not set(args.sessions.split(",")) <= {"clean", "persistent"}:
        parser.error(f"--sessions {args.sessions!r}: use clean, persistent or clean,persistent")
    if not set(args.qos.split(",")) <= {"0", "1", "2"}:
        parser.error(f"--qos {args.qos!r}: use 0, 1, 2 or a comma-separated list of them")
    if args.duration <= 0 or args.interval <= 0 or args.devices <= 0:
        parser.error("--duration, --interval and --devices must be > 0")
    return args


def raise_stop(signum: int, frame: object) -> None:
    raise Stop()


def shown_command(argv: list[str]) -> str:
    """The command line as a person types it (without what bench/faults adds itself)."""
    shown, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--netns", "--tesaiot", "--workdir"):
            skip = True
        else:
            shown.append(arg)
    return " ".join(["bench/faults", *shown])


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    import tempfile

    signal.signal(signal.SIGTERM, raise_stop)
    # Ctrl+C must reach the cleanup even when started with SIGINT ignored (a shell's `&`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    now = datetime.now(UTC)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tesaiot-faults-"))
    fault_at = args.fault_at if args.fault_at is not None else args.duration / 4
    opts = Options(tesaiot=args.tesaiot, devices=args.devices, interval=args.interval, duration=args.duration,
                   seed=args.seed, rate=args.rate, stall=min(args.stall, args.duration / 2), down=args.down,
                   fault_at=fault_at, drain=args.drain, quiet=args.quiet,
                   hostile_duration=args.hostile_duration, hostile_script=args.hostile_script, workdir=workdir,
                   sequence=args.sequence)
    qos_levels = [int(q) for q in args.qos.split(",")]
    sessions = [s == "persistent" for s in args.sessions.split(",")]
    rows: list[Row] = []
    from benchlib.common import free_port

    started = time.monotonic()
    load_at_start = machine().get("loadavg_at_start", [])
    try:
        with network(args.netns, free_port) as net:
            where = (f"private network namespace {net.name} (loopback only)" if net.name
                     else f"host loopback: {net.why_no_netns}")
            progress(f"running in the {where}; work directory {workdir}")
            for case in args.cases.split(","):
                for qos in qos_levels:
                    for session in sessions:
                        if case == "hostile":
                            rows += hostile_rows(opts, net, qos, session)
                            continue
                        row = Row(case, qos, session)
                        rows.append(row)
                        if case in LINK_CASES and net.name is None:
                            row.skipped = f"needs a network namespace ({net.why_no_netns})"
                            continue
                        progress(f"{row.label} ...")
                        t0 = time.monotonic()
                        try:
                            run_row(opts, net, row)
                        except HarnessError as exc:  # this row is void; the others still run
                            row.skipped = f"the harness failed: {exc}"
                            progress(row.skipped)
                        progress(f"{row.label}: {time.monotonic() - t0:.0f} s")
    except (KeyboardInterrupt, Stop):
        print("bench/faults: interrupted; processes stopped and the namespace removed", file=sys.stderr)
        return 130
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    header = {
        "command": shown_command(argv),
        "date": now.strftime("%Y-%m-%d %H:%M UTC"), "versions": versions(),
        "network": where + f"; kernel {machine().get('kernel')}, {machine().get('nproc')} cores, shared: load "
                   f"average {' '.join(load_at_start)} at the start, {' '.join(machine().get('loadavg_at_start', []))} "
                   "at the end",
        "devices": args.devices, "interval": args.interval, "duration": args.duration, "rate": args.rate,
        "stall": opts.stall, "down": args.down, "fault_at": fault_at,
    }
    text = report(rows, header)
    say(text)
    output = args.output or BENCH_DIR / "results" / f"faults-{now.strftime('%Y-%m-%dT%H%M%SZ')}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    say(f"whole run: {time.monotonic() - started:.0f} s; table in {output}")
    if args.docs:
        write_docs(args.docs, text)
        say(f"table written into {args.docs}")
    return 0


def hostile_rows(opts: Options, net: Net, qos: int, session: bool) -> list[Row]:
    if not opts.hostile_script.exists():
        script = opts.hostile_script.resolve()
        shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
        row = Row("hostile", qos, session, skipped=f"needs {shown}")
        print(f"hostile q{qos} {'session' if session else 'clean'}: skipped: needs {shown}", file=sys.stderr)
        return [row]
    rows = []
    for hostile_case in HOSTILE_CASES:
        row = Row("hostile", qos, session)
        progress(f"{row.label} {hostile_case} ...")
        try:
            run_hostile_row(opts, net, row, hostile_case)
        except HarnessError as exc:  # this row is void; the others still run
            row.hostile = {"case": hostile_case}
            row.skipped = f"the harness failed: {exc}"
            progress(row.skipped)
        rows.append(row)
    return rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
