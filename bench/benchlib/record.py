"""Section 1: the highest zero-loss sustained rate of each recorder, QoS 0 and QoS 1.

A trial at rate R: the subscriber is started and its subscription confirmed (broker log);
bench/pacedpub sends N = R x D messages at R msg/s; the trial PASSES when the subscriber
got all N (counted in its output after it stopped) AND was done (exited after its count,
or its file held N rows) at most GRACE_S after the publisher sent the last message.
Later than that it was only draining the broker's queue: LATE. Fewer than N: LOST.
Not done GRACE_S + EXTRA_WAIT_S after the publisher: BEHIND (then stopped).
When the publisher itself fell below 95 % of R (the machine, not the tool, is saturated)
the trial is CEILING: the tool's result is then "at least the last passing rate".

Rates are tried in ascending order (the ladder); a tool stops at its first failure
(after ``retries`` more tries at that rate). A tool that fails the first rung is tried
at lower rates until one passes.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.common import Broker, PacedPublisher, Table, progress, rate_text, ratio_text, say
from benchlib.subscribers import SubscriberTool, all_tools

GRACE_S = 1.0          # done at most this long after the publisher's last message
EXTRA_WAIT_S = 3.0     # after the grace, wait this much more to tell "late" from "lost"
SUBSCRIBE_TIMEOUT_S = 20.0
LOW_FRACTIONS = (2, 5, 10)  # a tool failing the first rung R is tried at R/2, R/5, R/10

_ids = itertools.count(1)


@dataclass
class Context:
    broker: Broker
    publisher: PacedPublisher
    workdir: Path


def pacer_check(ctx: Context, *, rate: int, seconds: float) -> dict[str, Any]:
    """Can bench/pacedpub hold ``rate`` by itself? It publishes (QoS 0) to a sink in this
    process that answers CONNECT and discards everything: no broker in the way."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(10)
    received = {"bytes": 0}

    def sink() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            try:
                conn.recv(4096)  # CONNECT (small, arrives in one piece on loopback)
                conn.sendall(b"\x20\x02\x00\x00")  # CONNACK, accepted
                while data := conn.recv(1 << 20):
                    received["bytes"] += len(data)
            except OSError:
                pass

    thread = threading.Thread(target=sink, daemon=True)
    thread.start()
    try:
        count = int(rate * seconds)
        process = subprocess.Popen(ctx.publisher.argv(topic="device/bench-pacer/telemetry", rate=rate, count=count,
                                                      qos=0, port=server.getsockname()[1]),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pub = ctx.publisher.result(process, timeout=seconds * 3 + 20)
        thread.join(timeout=15)
    finally:
        server.close()
    return {"target_rate": rate, "count": count, "rate": pub.data.get("rate"), "held": pub.held(rate),
            "late_mean_ms": pub.data.get("late_mean_ms"), "late_max_ms": pub.data.get("late_max_ms"),
            "error": pub.data.get("error"), "bytes_received": received["bytes"]}


class Numbered(SubscriberTool):
    """``tool`` again, fed payloads that carry tesaiot's sequence numbers (``seq`` and
    ``boot``): beside the plain one at each rung, what counting them costs the recorder."""

    numbered = True

    def __init__(self, tool: SubscriberTool) -> None:
        self.tool = tool
        self.key = f"{tool.key}+seq"
        self.label = f"{tool.label}, numbered payloads"
        self.suffix = tool.suffix

    def unavailable(self) -> str | None:
        return self.tool.unavailable()

    def start(self, broker: Any, **kwargs: Any) -> Any:
        running = self.tool.start(broker, **kwargs)
        running.tool = self
        return running

    def received(self, running: Any) -> int:
        return self.tool.received(running)


def trial(ctx: Context, tool: SubscriberTool, *, rate: int, qos: int, duration: float) -> dict[str, Any]:
    """One trial of ``tool`` at ``rate`` msg/s for ``duration`` s; returns its record (see module doc)."""
    n = max(1, int(rate * duration))
    trial_id = next(_ids)
    topic = f"device/bench-{trial_id}/telemetry"
    client_id = f"bench-{tool.key}-{trial_id}"
    result: dict[str, Any] = {"tool": tool.key, "rate": rate, "qos": qos, "count": n, "duration_s": duration}
    began = time.monotonic()
    try:
        return _trial(ctx, tool, result, n=n, topic=topic, client_id=client_id, rate=rate, qos=qos,
                      duration=duration, device=f"bench-{trial_id}")
    finally:
        result["wall_s"] = round(time.monotonic() - began, 2)


def _trial(ctx: Context, tool: SubscriberTool, result: dict[str, Any], *, n: int, topic: str, client_id: str,
           rate: int, qos: int, duration: float, device: str) -> dict[str, Any]:
    mark = ctx.broker.mark()
    try:
        running = tool.start(ctx.broker, topic=topic, qos=qos, count=n, client_id=client_id, workdir=ctx.workdir)
    except OSError as exc:
        result.update(verdict="error", note=f"cannot start: {exc}")
        return result
    try:
        ctx.broker.wait_subscribed(client_id, topic, timeout=SUBSCRIBE_TIMEOUT_S, process=running.process)
        time.sleep(0.1)
        boot = time.time_ns() // 1_000_000 if isinstance(tool, Numbered) else None
        pub_process = ctx.publisher.start(topic=topic, rate=rate, count=n, qos=qos, device=device, boot=boot)
        pub_deadline = time.monotonic() + duration * 3 + 30
        while pub_process.poll() is None and time.monotonic() < pub_deadline:
            running.poll_done()
            time.sleep(0.005)
        pub = ctx.publisher.result(pub_process, timeout=max(1.0, pub_deadline - time.monotonic()))
        result["publisher"] = pub.data
        if not pub.ok:
            result.update(verdict="error", note=f"publisher: {pub.data.get('error')}")
            return result
        wait_until = pub.end_ns + int((GRACE_S + EXTRA_WAIT_S) * 1e9)
        while not running.poll_done() and time.monotonic_ns() < wait_until:
            time.sleep(0.005)
    except Exception as exc:  # noqa: BLE001 - one failed trial must not end the run
        result.update(verdict="error", note=str(exc))
        return result
    finally:
        received = running.finish()
        result["received"] = received
        warnings = ctx.broker.warnings_since(mark)
        if warnings:
            result["broker_warnings"] = warnings[:5]
        _remove(running.output)
    done_after = (running.done_ns - pub.end_ns) / 1e9 if running.done_ns is not None else None
    result["done_after_s"] = done_after
    result["publisher_rate"] = pub.data.get("rate")
    if not pub.held(rate):
        result["verdict"] = "ceiling"
        result["note"] = f"publisher reached only {rate_text(pub.data.get('rate'))}/s"
    elif done_after is None:
        # Still busy when stopped: it could not keep up (what it had by then is not a loss count).
        result["verdict"] = "behind"
        result["note"] = (f"not done {GRACE_S + EXTRA_WAIT_S:g} s after the publisher "
                          f"({received} of {n} by then)")
    elif received < n:
        result["verdict"] = "lost"
        result["note"] = f"lost {n - received} of {n}" + (f" ({running.note})" if running.note else "")
    elif done_after > GRACE_S:
        result["verdict"] = "late"
        result["note"] = f"done {done_after:.2f} s after the publisher"
    else:
        result["verdict"] = "pass"
    return result


def _remove(path: Path) -> None:
    import shutil

    for candidate in (path, path.with_name(path.name + ".partial"), path.with_name(path.name + ".stderr")):
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        elif candidate.exists():
            candidate.unlink()


def ladder_for_tool(ctx: Context, tool: SubscriberTool, rate: int, qos: int, duration: float, retries: int,
                    trials: list[dict[str, Any]]) -> dict[str, Any]:
    """Try ``tool`` at ``rate`` (with retries on failure); returns the last trial."""
    for attempt in range(retries + 1):
        record = trial(ctx, tool, rate=rate, qos=qos, duration=duration)
        record["attempt"] = attempt + 1
        trials.append(record)
        progress(f"record qos{qos} {tool.key} @ {rate_text(rate)}/s: {record['verdict']}"
                 + (f" ({record.get('note')})" if record.get("note") else ""))
        if record["verdict"] in ("pass", "ceiling"):
            return record
    return record


def run_section(ctx: Context, *, ladder: list[int], duration: float, retries: int, budget_s: float,
                qos_levels: tuple[int, ...] = (0, 1), tool_keys: list[str] | None = None,
                numbered_pair: bool = False) -> dict[str, Any]:
    """The ladder for every available tool (or those in ``tool_keys``), QoS 0 then 1. Each
    QoS level gets its share of ``budget_s``; rungs that would start after that are skipped
    (and say so). ``numbered_pair``: each tool also runs as ``<key>+seq`` right after it at
    every rung, fed numbered payloads (:class:`Numbered`)."""
    tools = all_tools()
    if tool_keys is not None:
        unknown = set(tool_keys) - {t.key for t in tools}
        if unknown:
            raise SystemExit(f"bench: unknown --tools {', '.join(sorted(unknown))}: "
                             f"choose from {', '.join(t.key for t in tools)}")
        tools = [t for t in tools if t.key in tool_keys]
    else:
        tools = [t for t in tools if not t.opt_in]
    if numbered_pair:
        tools = [paired for tool in tools for paired in (tool, Numbered(tool))]
    section: dict[str, Any] = {"grace_s": GRACE_S, "duration_s": duration, "ladder": ladder, "retries": retries,
                               "budget_s": budget_s, "tools": {}, "trials": []}
    section["pacer_check"] = pacer_check(ctx, rate=ladder[-1], seconds=min(duration, 2.0))
    progress(f"paced publisher alone: {section['pacer_check']}")
    for tool in tools:
        reason = tool.unavailable()
        section["tools"][tool.key] = {"label": tool.label, "available": reason is None, "reason": reason}
    for qos in qos_levels:
        best: dict[str, int | None] = {}
        stopped: dict[str, str] = {}
        active = [t for t in tools if section["tools"][t.key]["available"]]
        qos_deadline = time.monotonic() + budget_s / len(qos_levels)
        for index, rate in enumerate(ladder):
            if active and time.monotonic() > qos_deadline:
                for tool in active:
                    stopped[tool.key] = f"time budget used up before {rate_text(rate)}/s"
                active = []
                break
            for tool in list(active):
                record = ladder_for_tool(ctx, tool, rate, qos, duration, retries, section["trials"])
                if record["verdict"] == "pass":
                    best[tool.key] = rate
                    continue
                active.remove(tool)
                stopped[tool.key] = f"{record['verdict']} at {rate_text(rate)}/s: {record.get('note', '')}"
                if record["verdict"] == "ceiling":
                    stopped[tool.key] = "ceiling: " + stopped[tool.key]
                if index == 0 and record["verdict"] != "ceiling":
                    for low in (rate // f for f in LOW_FRACTIONS):
                        low_record = ladder_for_tool(ctx, tool, low, qos, duration, 0, section["trials"])
                        if low_record["verdict"] == "pass":
                            best[tool.key] = low
                            break
        for tool in active:  # passed every rung
            stopped[tool.key] = f"passed the whole ladder (up to {rate_text(ladder[-1])}/s)"
        section[f"qos{qos}"] = {key: {"best_rate": best.get(key), "stopped": stopped.get(key)}
                                for key, info in section["tools"].items() if info["available"]}
    return section


def report(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Print the section's tables; returns the goal checks."""
    say("## 1. Record: highest zero-loss sustained rate "
        f"({section['duration_s']:g} s per trial, done <= {section['grace_s']:g} s after the publisher)")
    check = section.get("pacer_check")
    if check:
        say(f"paced publisher alone (no broker, a discarding sink): target {rate_text(check['target_rate'])}/s, "
            f"achieved {rate_text(check['rate'])}/s, send lateness mean {check['late_mean_ms']} ms, "
            f"max {check['late_max_ms']} ms" + (f" ERROR {check['error']}" if check.get("error") else ""))
    goals = []
    for qos in (0, 1):
        results = section.get(f"qos{qos}")
        if results is None:
            continue
        paho = (results.get("paho") or {}).get("best_rate")
        recorder = (results.get("mqtt-recorder") or {}).get("best_rate")
        table = Table(["QoS " + str(qos), "best msg/s", "vs paho", "vs mqtt-recorder", "stopped by"])
        for key, info in section["tools"].items():
            if not info["available"]:
                table.add(info["label"], "not available", "", "", info["reason"])
                continue
            best = results[key]["best_rate"]
            table.add(info["label"], rate_text(best) if best else "none", ratio_text(best, paho),
                      ratio_text(best, recorder), results[key]["stopped"] or "")
        say(table.render())
        held = [t["publisher_rate"] / t["rate"] for t in section["trials"]
                if t["qos"] == qos and t.get("publisher_rate") and t["verdict"] != "ceiling"]
        if held:
            say(f"publisher achieved {min(held):.1%} to {max(held):.1%} of the target rate in the {len(held)} "
                "trials it held (>= 95 %)")
        say()
        for key in ("tesaiot-parquet", "tesaiot-jsonl"):
            if key not in results:
                continue
            best = results[key]["best_rate"]
            goals.append(_goal(f"record {key} qos{qos} >= 1.0x paho", best, paho, 1.0, results, key, "paho"))
            goals.append(_goal(f"record {key} qos{qos} >= 5x mqtt-recorder", best, recorder, 5.0, results, key,
                               "mqtt-recorder"))
    return goals


def _is_lower_bound(stopped: str | None) -> bool:
    """Whether a best rate is only a lower bound: not stopped by the tool's own failure."""
    text = stopped or ""
    return text.startswith(("passed the whole ladder", "ceiling", "time budget"))


def _goal(name: str, ours: int | None, theirs: int | None, factor: float, results: dict[str, Any], key: str,
          other: str) -> dict[str, Any]:
    """Is ``ours >= factor * theirs``? None (undecided) when a lower bound makes it unknowable."""
    our_bound = _is_lower_bound(results.get(key, {}).get("stopped"))
    their_bound = _is_lower_bound(results.get(other, {}).get("stopped"))
    if ours is None:
        return {"goal": name, "met": None if other not in results else False,
                "detail": f"{key} passed no rate"}
    if theirs is None:
        if other not in results:
            return {"goal": name, "met": None, "detail": f"{other} not measured"}
        return {"goal": name, "met": True, "detail": f"{other} passed no rate; {key} {rate_text(ours)}"}
    detail = f"{rate_text(ours)} vs {rate_text(theirs)} = {ours / theirs:.2f}x"
    if ours >= factor * theirs:
        if their_bound:
            return {"goal": name, "met": None,
                    "detail": detail + f" ({other} was not pushed to its limit: {results[other]['stopped']})"}
        return {"goal": name, "met": True, "detail": detail}
    if our_bound:
        return {"goal": name, "met": None, "detail": detail + f" ({key}: {results[key]['stopped']})"}
    return {"goal": name, "met": False, "detail": detail}
