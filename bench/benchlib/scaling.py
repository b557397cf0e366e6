"""Section 6: scaling out the recorder, ``tesaiot record DIR --workers N`` (N = 1, 2, 4).

The same trials as section 1 (bench/benchlib/record.py: a paced C publisher, zero loss,
done at most GRACE_S after the publisher), at QoS 1, for ``mosquitto_sub`` (the C
reference: one process) and for tesaiot recording into a dataset directory with 1, 2 and
4 worker processes in one shared subscription (``--share GROUP``: every worker
subscribes to ``$share/GROUP/<topic>``, and mosquitto hands each message to one of them).
The result per tool is the highest passing rate on the ladder, i.e. the total rate of all
its workers together; each tool gets an equal share of the time budget.

The trial machinery is section 1's; only "is it subscribed?" differs: N worker clients
(``<client id>-w1`` .. ``-wN``) must each have subscribed to ``$share/GROUP/<topic>``,
which :class:`SharedBroker` checks in the broker's log.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib import record
from benchlib.common import BenchError, Broker, Table, progress, rate_text, ratio_text, say
from benchlib.subscribers import MosquittoSub, SubscriberTool, TesaiotRecord

WORKERS = (1, 2, 4)
QOS = 1


class TesaiotWorkers(TesaiotRecord):
    """``tesaiot record DIR --workers N --share GROUP --count M``: a dataset directory."""

    def __init__(self, workers: int) -> None:
        super().__init__("parquet")
        self.workers = workers
        self.group = f"bench-w{workers}"
        self.key = f"tesaiot-w{workers}"
        self.label = f"tesaiot record --workers {workers}"
        self.suffix = ""  # no suffix: the output is a dataset directory

    def unavailable(self) -> str | None:
        reason = super().unavailable()
        if reason is None and "--workers" not in self.help_text():
            return "tesaiot record has no --workers"
        return reason

    def argv(self, broker: Broker, *, topic: str, qos: int, count: int, client_id: str, output: Path) -> list[str]:
        base = super().argv(broker, topic=topic, qos=qos, count=count, client_id=client_id, output=output)
        return base + ["--workers", str(self.workers), "--share", self.group]

    def client_ids(self, client_id: str) -> list[str]:
        """The MQTT client ids the workers use (the parent itself does not connect)."""
        if self.workers == 1:
            return [client_id]
        return [f"{client_id}-w{index}" for index in range(1, self.workers + 1)]


class SharedBroker:
    """The bench broker, except that "subscribed" means every worker joined the share group."""

    def __init__(self, broker: Broker, tool: TesaiotWorkers) -> None:
        self._broker = broker
        self._tool = tool
        self._offset = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._broker, name)

    def mark(self) -> int:
        """Also remember where the log ends now: the trial's subscriptions come after it."""
        self._offset = self._broker.log_path.stat().st_size if self._broker.log_path.exists() else 0
        return self._broker.mark()

    def wait_subscribed(self, client_id: str, topic: str, *, timeout: float, process: Any = None) -> None:
        wanted = {(cid, f"$share/{self._tool.group}/{topic}") for cid in self._tool.client_ids(client_id)}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self._broker.log_path, "rb") as log:
                log.seek(self._offset)
                text = log.read().decode(errors="replace")
            for line in text.splitlines():
                parts = line.split()  # "<time>: <client id> <qos> <topic>"
                if len(parts) == 4:
                    wanted.discard((parts[1], parts[3]))
            if not wanted:
                return
            if process is not None and process.poll() is not None:
                raise BenchError(f"the recorder exited (code {process.returncode}) before subscribing")
            time.sleep(0.05)
        raise BenchError(f"{len(wanted)} worker(s) of {client_id} did not subscribe within {timeout:g} s")


@dataclass
class _Entry:
    key: str
    tool: SubscriberTool
    workers: int | None


def run_section(ctx: record.Context, *, ladder: list[int], duration: float, budget_s: float) -> dict[str, Any]:
    """Each tool climbs ``ladder`` (msg/s) until its first failure or its share of ``budget_s``."""
    entries = [_Entry("mosquitto_sub", MosquittoSub(), None)]
    entries += [_Entry(f"tesaiot-w{n}", TesaiotWorkers(n), n) for n in WORKERS]
    section: dict[str, Any] = {"qos": QOS, "duration_s": duration, "ladder": ladder, "budget_s": budget_s,
                               "grace_s": record.GRACE_S, "tools": {}, "trials": []}
    share_s = budget_s / len(entries)
    for entry in entries:
        info: dict[str, Any] = {"label": entry.tool.label, "workers": entry.workers, "best_rate": None}
        section["tools"][entry.key] = info
        reason = entry.tool.unavailable()
        if reason is not None:
            info.update(available=False, stopped=reason)
            continue
        tool_ctx = ctx
        if isinstance(entry.tool, TesaiotWorkers):
            tool_ctx = record.Context(SharedBroker(ctx.broker, entry.tool), ctx.publisher, ctx.workdir)  # type: ignore[arg-type]
        deadline = time.monotonic() + share_s
        info["stopped"] = f"passed the whole ladder (up to {rate_text(ladder[-1])}/s)"
        for rate in ladder:
            if time.monotonic() > deadline:
                info["stopped"] = f"time budget used up before {rate_text(rate)}/s"
                break
            trial = record.ladder_for_tool(tool_ctx, entry.tool, rate, QOS, duration, 0, section["trials"])
            if trial["verdict"] == "pass":
                info["best_rate"] = rate
                continue
            info["stopped"] = f"{trial['verdict']} at {rate_text(rate)}/s: {trial.get('note', '')}"
            if rate == ladder[0] and trial["verdict"] != "ceiling":  # as section 1: find a rate it holds
                for low in (rate // fraction for fraction in record.LOW_FRACTIONS):
                    if record.ladder_for_tool(tool_ctx, entry.tool, low, QOS, duration, 0,
                                              section["trials"])["verdict"] == "pass":
                        info["best_rate"] = low
                        break
            break
        info["available"] = True
        progress(f"scaling {entry.key}: best {rate_text(info['best_rate'])}/s ({info['stopped']})")
    return section


def report(section: dict[str, Any]) -> None:
    """Print the section's table."""
    say(f"## 6. Scaling record out: highest zero-loss total rate, QoS {section['qos']} "
        f"({section['duration_s']:g} s per trial, done <= {section['grace_s']:g} s after the publisher)")
    tools = section["tools"]
    one = (tools.get("tesaiot-w1") or {}).get("best_rate")
    reference = (tools.get("mosquitto_sub") or {}).get("best_rate")
    table = Table(["recorder", "processes", "best msg/s", "vs 1 worker", "vs mosquitto_sub", "stopped by"])
    for info in tools.values():
        if not info.get("available"):
            table.add(info["label"], "", "not available", "", "", info.get("stopped", ""))
            continue
        best = info["best_rate"]
        table.add(info["label"], info["workers"] or 1, rate_text(best) if best else "none",
                  ratio_text(best, one) if info["workers"] else "", ratio_text(best, reference), info["stopped"])
    say(table.render())
    say("A lower bound where the ladder or the budget ended first; on a 2-core machine the broker and the "
        "publisher share the cores with the workers, so more workers cannot add much here (docs/scaling.md).")
    say()
