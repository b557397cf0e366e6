"""``tesaiot replay``: republish a recording with its original, or scaled, timing."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    KeyPresses,
    Pause,
    StatusLine,
    StopSignals,
    check_recording_path,
    cli_errors,
    clock_text,
    err,
    print_event,
    resolve_settings,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError, EmptySelection
from tesaiot_cli.playback.replay import LOOP_FOREVER
from tesaiot_cli.recording.storage import location
from tesaiot_cli.textfmt import plural, utc_text

if TYPE_CHECKING:
    from tesaiot_cli.playback.replay import ReplayOptions, ReplayStats
    from tesaiot_cli.playback.selection import Selection
    from tesaiot_cli.recording import RecordingReader
    from tesaiot_cli.services.replayer import ReplayPlan

PROGRESS_PERIOD_S = 0.5  # the progress line on a terminal

EPILOG = """\b
Examples:
  tesaiot replay rec.parquet                          # to mqtt://localhost:1883, original timing
  tesaiot replay rec.parquet --speed 5x -b mqtt://broker.local:1883
  tesaiot replay rec.jsonl --speed max --qos 1
  tesaiot replay rec.parquet --to - --speed 10x | jq -c .payload
  tesaiot replay rec.parquet --start 30 --end 90 --restore-retained
  tesaiot replay rec.parquet -t 'device/+/telemetry/#' --remap device/=lab/device/ --loop
  tesaiot replay rec.parquet --restamp --loop 3 --json
  tesaiot replay data/ --speed 10x                    # a dataset (record --workers): merged by time
  tesaiot replay rec.parquet --speed max --qos 2 --max-inflight 10   # at most 10 unacknowledged
"""

# ``--loop`` takes an optional count, which Typer cannot express: a bare ``--loop`` (not
# followed by a number) is rewritten to ``--loop=forever`` before parsing.
_COUNT = re.compile(r"[+-]?\d+")


class ReplayCommand(TyperCommand):
    """The replay command: lets ``--loop`` be given with or without a count."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, loop_value_optional(args))


COMMAND_CLASS = ReplayCommand


def loop_value_optional(args: list[str]) -> list[str]:
    """``--loop`` not followed by a count becomes ``--loop=forever`` (nothing after ``--``)."""
    result: list[str] = []
    for index, arg in enumerate(args):
        if arg == "--":
            return result + args[index:]
        following = args[index + 1] if index + 1 < len(args) else ""
        result.append(f"--loop={LOOP_FOREVER}" if arg == "--loop" and not _COUNT.fullmatch(following)
                      else arg)
    return result


@with_connection_options
def replay(
    file: Annotated[Path, typer.Argument(parser=location, metavar="FILE", help="Recording (.parquet or .jsonl) from 'record' or 'simulate --record', or a dataset directory (its files merged by receive time).", show_default=False)],  # noqa: E501
    speed: Annotated[str, typer.Option("--speed", "-s", metavar="FACTOR", help="Time factor: 5x, 5, 0.5x, 1X... or max (as fast as flow control allows).")] = "1x",  # noqa: E501
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Only messages matching this MQTT filter (+ and # wildcards), repeatable.", show_default=False)] = None,  # noqa: E501
    start: Annotated[Optional[str], typer.Option("--start", metavar="TIME", help="Skip messages before TIME: seconds after the first message (30, 1.5) or ISO 8601 (UTC unless an offset is given).", show_default=False)] = None,  # noqa: E501
    end: Annotated[Optional[str], typer.Option("--end", metavar="TIME", help="Stop after TIME (same forms as --start).", show_default=False)] = None,  # noqa: E501
    topic_prefix: Annotated[Optional[str], typer.Option("--topic-prefix", metavar="PREFIX", help="Prepend PREFIX to every topic (after --remap).", show_default=False)] = None,  # noqa: E501
    remap: Annotated[Optional[list[str]], typer.Option("--remap", metavar="OLD=NEW", help="Topics starting with OLD start with NEW instead; repeatable, the first match wins.", show_default=False)] = None,  # noqa: E501
    loop: Annotated[Optional[str], typer.Option("--loop", metavar="[N]", help="Replay N times, or forever with no N; each loop continues the timeline.", show_default=False)] = None,  # noqa: E501
    qos: Annotated[Optional[int], typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Publish with this QoS instead of the recorded one.", show_default=False)] = None,  # noqa: E501
    no_retain: Annotated[bool, typer.Option("--no-retain", help="Publish every message with retain off.")] = False,  # noqa: E501
    restamp: Annotated[bool, typer.Option("--restamp", help="Set the payload's JSON 'timestamp' to the time it is republished (DPS368 schema).")] = False,  # noqa: E501
    restore_retained: Annotated[bool, typer.Option("--restore-retained", help="First publish the last retained message per topic from before --start.")] = False,  # noqa: E501
    to: Annotated[Optional[str], typer.Option("--to", metavar="-", help="'-': write NDJSON to stdout at the same timing instead of publishing (dry run).", show_default=False)] = None,  # noqa: E501
    recording_format: Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", help="parquet or jsonl (default: from the file suffix).", show_default=False)] = None,  # noqa: E501
    json_out: Annotated[bool, typer.Option("--json", help="The final summary as one JSON object: on stdout, or on stderr with --to -.")] = False,  # noqa: E501
    max_inflight: Annotated[Optional[int], typer.Option("--max-inflight", metavar="N", min=1, max=65535, help="At most N QoS 1/2 messages unacknowledged at once. Default: the broker's Receive Maximum at MQTT 5; at MQTT 3.1.1 20 for QoS 2 (mosquitto's default max_inflight_messages: a broker that keeps fewer refuses the rest) and no limit but --queue/the window for QoS 1.", show_default=False)] = None,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress or report on stderr (errors still show).")] = False,  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Republish a recording to a broker with its original timing (or --speed), or dry-run it to stdout."""
    from tesaiot_cli.playback.replay import (
        ReplayOptions,
        check_topic_prefix,
        parse_loops,
        parse_remap,
        parse_speed,
    )
    from tesaiot_cli.playback.selection import Selection, parse_time_bound
    from tesaiot_cli.recording import open_reader
    from tesaiot_cli.services.replayer import (
        RecordingPasses,
        ReplayHooks,
        plan_of,
        replay_to_broker,
        replay_to_stream,
    )

    with cli_errors():
        if to is not None and to != "-":
            raise ConfigError(f"invalid --to {to!r}: only '-' (stdout) is supported; give a broker with --broker")
        options = ReplayOptions(
            speed=parse_speed(speed),
            topic_filters=tuple(topic or ()),
            start=parse_time_bound(start, name="--start") if start is not None else None,
            end=parse_time_bound(end, name="--end") if end is not None else None,
            topic_prefix=check_topic_prefix(topic_prefix) if topic_prefix is not None else "",
            remaps=tuple(parse_remap(item) for item in remap or ()),
            qos=qos,
            retain=False if no_retain else None,
            restamp=restamp,
            restore_retained=restore_retained,
            loops=parse_loops(loop),
        )
        check_recording_path(file)
        selection = Selection(options.topic_filters, start=options.start, end=options.end,
                              keep_retained=options.restore_retained)
        with open_reader(file, format=recording_format) as first_reader:
            if not first_reader.sealed:
                warn(f"{file} is not sealed (left by a crash?): replaying what is readable; "
                     f"'tesaiot recover {file}' seals it")
            plan = plan_of(first_reader, selection)
            if plan.messages == 0 and selection.active:
                raise _nothing_to_replay(file, selection, first_reader)
            passes = RecordingPasses(first_reader, file, recording_format, selection,
                                     labelled=to == "-" and first_reader.metadata.labelled)
            with StopSignals() as stop, StatusLine(tty_period_s=PROGRESS_PERIOD_S,
                                                   enabled=not quiet) as status, KeyPresses() as keys:
                pause = Pause(keys, stop, status)
                progress = _Progress(options, plan, status, pause)

                def on_start(target: str, sleep: Callable[[float], object]) -> None:
                    # Once connected: an unreachable broker is one error line. While paused, the
                    # connection is still served (keepalive, acknowledgements).
                    pause.sleep = sleep
                    if not quiet:
                        err(_start_line(plan, options, target=target, pausable=keys.active and status.tty))

                def on_event(kind: str, text: str) -> None:
                    status.clear()
                    print_event(kind, text)

                hooks = ReplayHooks(should_stop=pause.should_stop,
                                    clock=pause.clock,  # paused time does not count: the schedule resumes
                                    on_progress=progress.show if status.tty and not quiet else None,
                                    on_start=on_start, on_event=on_event)
                if to == "-":
                    if any(value for value in conn.as_mapping().values()):
                        warn("connection options are ignored with --to -")
                    result = replay_to_stream(options, passes, hooks, sys.stdout.buffer, selection=selection)
                else:
                    settings = resolve_settings(conn, command="replay", allow_token=False)
                    result = replay_to_broker(settings, options, passes, hooks, stop.event, selection=selection,
                                              max_inflight=max_inflight)
            for text in first_reader.warnings:
                warn(text)
        report = result.report(file=file, signal_name=stop.signal_name)
        report["paused_s"] = round(pause.paused_s, 3)
        report["skipped"] += selection.excluded  # left out by the reader, unread where it could
        empty = not report["sent"] and not report["stopped"]
        if empty and not selection.active and not quiet:
            warn(f"{file} holds no message: nothing was replayed")
        if json_out:
            import orjson

            stream = sys.stderr if to == "-" else sys.stdout
            stream.write(orjson.dumps(report).decode() + "\n")
            stream.flush()
        elif not quiet:
            from tesaiot_cli.playback.replay import report_lines

            for line in report_lines(report):
                err(line)
        if empty and selection.active:  # found while reading (a format without an index)
            raise _nothing_to_replay(file, selection, None)
        if report["failed"] or report["dropped"]:
            raise typer.Exit(EXIT_UNDELIVERED)


def _nothing_to_replay(file: Path, selection: Selection, reader: RecordingReader | None) -> EmptySelection:
    """``nothing to replay: no message in FILE matches --start 999 (FILE: 779 messages
    over 12.3 s, from ...)``: the error for an empty selection (exit 9)."""
    from tesaiot_cli.textfmt import human_duration

    held = ""
    if reader is not None:
        meta = reader.metadata
        held = f" ({file.name}: {plural(reader.count(), 'message')}"
        if meta.start_ns is not None and meta.end_ns is not None:
            held += f" over {human_duration((meta.end_ns - meta.start_ns) / 1e9)}, from {utc_text(meta.start_ns)}"
        held += ")"
    return EmptySelection(f"nothing to replay: no message in {file} matches {selection.describe()}{held}")


def _start_line(plan: ReplayPlan, options: ReplayOptions, *, target: str, pausable: bool) -> str:
    """``replaying 1,200 messages (10.0 s recorded, 2026-11-22 08:00:00 UTC) at 5x: about 2.0 s``."""
    from tesaiot_cli.textfmt import human_duration

    what = "messages" if plan.messages is None else plural(plan.messages, "message")
    if plan.selective:
        what = (f"a selection of {what}" if plan.messages is not None
                else "the messages of the selection (counted as they are replayed: this format has no index)")
    span_s = None
    if plan.first_ns is not None and plan.last_ns is not None:
        span_s = max(0, plan.last_ns - plan.first_ns) / 1e9
        when = utc_text(plan.first_ns)
        what += f" ({human_duration(span_s)} recorded, from {when})" if span_s else f" (recorded at {when})"
    speed = options.speed
    loops = options.loops
    pace = "at max speed" if speed is None else f"at {speed:g}x"
    if loops is None:
        pace += ", looping forever"
    elif loops > 1:
        pace += f", {loops} loops"
    expected = ""
    if speed is not None and span_s is not None and loops is not None:
        expected = f": about {human_duration(span_s / speed * loops)}"
    where = f" to {target}"
    keys = "; space pauses" if pausable else ""
    return f"replaying {what}{where} {pace}{expected}{keys}"


class _Progress:
    """The progress line on a terminal: sent (of the total), percent, rate, ETA, loop."""

    def __init__(self, options: ReplayOptions, plan: ReplayPlan, status: StatusLine, pause: Pause) -> None:
        self._options = options
        self._plan = plan
        self._status = status
        self._pause = pause
        self._begin = time.perf_counter()

    def show(self, stats: ReplayStats) -> None:
        self._status.show(self.text(stats, time.perf_counter() - self._begin - self._pause.paused_s))

    def text(self, stats: ReplayStats, elapsed: float) -> str:
        plan, loops = self._plan, self._options.loops
        total = plan.messages if loops == 1 else None  # a selection's own count (exact when known)
        parts = [f"sent {stats.sent:,}" + (f" of {total:,}" if total is not None else "")]
        done = self._done(stats)
        if done is not None:
            parts.append(f"{done * 100:3.0f}%")
        if elapsed > 0:
            parts.append(f"{stats.sent / elapsed:,.0f} msg/s")
        eta = self._eta(done, elapsed)
        if eta is not None:
            parts.append(f"ETA {clock_text(eta)}")
        if loops != 1:
            parts.append(f"loop {stats.loops_done + 1}/{'forever' if loops is None else loops}")
        return "  ".join(parts)

    def _done(self, stats: ReplayStats) -> float | None:
        """The share done, by recording time, over all loops (None: not known, or forever)."""
        first, last, position = self._plan.first_ns, self._plan.last_ns, stats.position_ns
        loops = self._options.loops
        if loops is None or first is None or last is None or position is None:
            return None
        within = 1.0 if last <= first else max(0.0, min(1.0, (position - first) / (last - first)))
        return (stats.loops_done + within) / loops

    def _eta(self, done: float | None, elapsed: float) -> float | None:
        if done is None or done <= 0:
            return None
        speed, plan = self._options.speed, self._plan
        if speed is None or plan.first_ns is None or plan.last_ns is None:
            return elapsed * (1 - done) / done
        total_s = (plan.last_ns - plan.first_ns) / 1e9 / speed * (self._options.loops or 1)
        return max(0.0, total_s * (1 - done))
