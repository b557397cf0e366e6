"""``tesaiot replay``: republish a recording with its original, or scaled, timing."""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    StopSignals,
    cli_errors,
    err,
    freeze_startup_objects,
    print_event,
    resolve_settings,
    stderr_is_tty,
    warn,
    with_connection_options,
)
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import Message

if TYPE_CHECKING:
    from tesaiot_cli.replay import Replayer, ReplayOptions, ReplayStats

Passes = Callable[[], Iterable[Message]]

FLUSH_TIMEOUT_S = 10.0
LOOP_FOREVER = "forever"

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


def parse_loops(value: str | None) -> int | None:
    """``None`` (no --loop) -> 1; ``forever`` -> ``None``; ``N`` -> N >= 1. Raises ConfigError."""
    if value is None:
        return 1
    if value.strip().lower() == LOOP_FOREVER:
        return None
    try:
        loops = int(value)
    except ValueError:
        raise ConfigError(f"invalid --loop {value!r}: give a count (--loop 3) or none (--loop: forever)") from None
    if loops < 1:
        raise ConfigError(f"invalid --loop {loops}: it must be at least 1")
    return loops


@with_connection_options
def replay(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Recording (.parquet or .jsonl) from 'record' or 'simulate --record', or a dataset directory (its files merged by receive time).", show_default=False)],  # noqa: E501
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
    from tesaiot_cli.recording import open_reader
    from tesaiot_cli.replay import (
        ReplayOptions,
        check_topic_prefix,
        parse_remap,
        parse_speed,
        parse_time_bound,
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
        with open_reader(file, format=recording_format) as first_reader:
            metadata = first_reader.metadata
            pending: list[Any] = [first_reader]

            def passes() -> Iterator[Message]:
                # The open reader serves the first loop; each later loop opens the file again.
                if pending:
                    return iter(pending.pop())
                return _read_again(file, recording_format)

            show_progress = not quiet and stderr_is_tty()
            with StopSignals() as stop:
                progress = _Progress(options, metadata.end_ns) if show_progress else None
                common: dict[str, Any] = {
                    # time.sleep, not stop.event.wait: its wake-up is tighter, and the core sleeps
                    # in slices of at most 0.25 s, checking should_stop between them.
                    "should_stop": stop.event.is_set,
                    "on_progress": progress.show if progress is not None else None,
                }
                if to == "-":
                    if any(value for value in conn.as_mapping().values()):
                        warn("connection options are ignored with --to -")
                    delivery = _replay_to_stdout(options, passes, common)
                    target = "-"
                else:
                    delivery = _replay_to_broker(options, passes, common, conn, stop, max_inflight=max_inflight)
                    target = delivery.pop("broker")
                if progress is not None:
                    progress.clear()
            for text in getattr(first_reader, "warnings", ()):
                warn(text)
        replayer = delivery.pop("replayer")
        report = _report(replayer, delivery, file=file, target=target, signal_name=stop.signal_name)
        if not report["sent"] and not report["stopped"] and not quiet:
            warn(f"no message in {file} matched the selection: nothing was replayed")
        if json_out:
            import orjson

            stream = sys.stderr if to == "-" else sys.stdout
            stream.write(orjson.dumps(report).decode() + "\n")
            stream.flush()
        elif not quiet:
            _print_report(report)
        if report["failed"] or report["dropped"]:
            raise typer.Exit(EXIT_UNDELIVERED)


def _read_again(path: Path, recording_format: str | None) -> Iterator[Message]:
    from tesaiot_cli.recording import open_reader

    with open_reader(path, format=recording_format) as reader:
        yield from reader


def _replay_to_broker(options: ReplayOptions, passes: Passes, common: dict[str, Any], conn: ConnectionFlags,
                      stop: StopSignals, *, max_inflight: int | None = None) -> dict[str, Any]:
    from tesaiot_cli.errors import Interrupted
    from tesaiot_cli.replay import Replayer
    from tesaiot_cli.session import Session

    settings = resolve_settings(conn, command="replay", allow_token=False)
    # threaded=False: this thread runs the network loop, so each PUBLISH is written straight
    # to the socket; the scheduler's sleeps serve the connection (acks, keepalive, reconnect).
    with Session(settings, on_event=print_event, interrupt=stop.event, threaded=False,
                 max_inflight=max_inflight) as session:
        # At --speed max, QoS 0 packets go out in batches (one send per ~64 KiB); on a
        # schedule each one is written at its due time.
        send = functools.partial(session.publish, hold=True) if options.speed is None else session.publish
        replayer = Replayer(options, send=send, sleep=session.wait, **common)
        try:
            freeze_startup_objects()
            replayer.run(passes)
        except Interrupted:  # Ctrl+C while waiting for room in the publish window
            replayer.stats.stopped = True
        # A first Ctrl+C/SIGTERM stops publishing; clearing the event lets the in-flight
        # messages still complete (a second Ctrl+C cuts the flush short).
        stop.event.clear()
        try:
            session.flush(FLUSH_TIMEOUT_S)
        except Interrupted:
            pass
    stats = session.stats
    return {"replayer": replayer, "broker": settings.url.display(), "published": stats.published,
            "acknowledged": stats.completed, "failed": stats.failed, "dropped": stats.dropped,
            "failed_reasons": dict(stats.failed_reasons)}


def _replay_to_stdout(options: ReplayOptions, passes: Passes, common: dict[str, Any]) -> dict[str, Any]:
    import orjson

    from tesaiot_cli.render import message_record
    from tesaiot_cli.replay import Replayer

    out = sys.stdout.buffer
    written = 0

    def write(message: Message) -> None:
        # The listen --json line, as a listener would see it now, plus when it was recorded.
        nonlocal written
        record = message_record(message._replace(time_ns=time.time_ns()))
        record["recorded_time_ns"] = message.time_ns
        out.write(orjson.dumps(record) + b"\n")
        written += 1

    replayer = Replayer(options, send=write, before_wait=out.flush, **common)
    freeze_startup_objects()
    replayer.run(passes)
    out.flush()
    return {"replayer": replayer, "published": written, "acknowledged": written, "failed": 0, "dropped": 0,
            "failed_reasons": {}}


class _Progress:
    """One self-rewriting line on a terminal's stderr: count, position, rate and ETA."""

    def __init__(self, options: ReplayOptions, end_ns: int | None) -> None:
        self._options = options
        self._end_ns = end_ns
        self._begin = time.monotonic()

    def show(self, stats: ReplayStats) -> None:
        elapsed = time.monotonic() - self._begin
        text = f"sent {stats.sent}" + (f" ({stats.sent / elapsed:,.0f}/s)" if elapsed > 0 else "")
        eta = self._eta(stats, elapsed)
        if eta is not None:
            text += f", ETA {_clock_text(eta)}"
        if self._options.loops != 1:
            total = "forever" if self._options.loops is None else str(self._options.loops)
            text += f", loop {stats.loops_done + 1}/{total}"
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()

    def _eta(self, stats: ReplayStats, elapsed: float) -> float | None:
        first, position, end = stats.first_ns, stats.position_ns, self._end_ns
        loops = self._options.loops
        if loops is None or first is None or position is None or end is None or end <= first:
            return None
        window_end = stats.window_end_ns if stats.window_end_ns is not None else end
        end = min(end, window_end)
        done = max(0.0, min(1.0, (position - first) / max(1, end - first)))
        loops_left = loops - stats.loops_done - 1
        if self._options.speed is None:
            progress = (stats.loops_done + done) / loops
            return elapsed * (1 - progress) / progress if progress > 0 else None
        per_loop_s = (end - first) / 1e9 / self._options.speed
        return float(per_loop_s * (1 - done) + loops_left * per_loop_s)

    def clear(self) -> None:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


def _clock_text(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _report(replayer: Replayer, delivery: dict[str, Any], *, file: Path, target: str,
            signal_name: str | None) -> dict[str, Any]:
    from tesaiot_cli.replay import summary

    report: dict[str, Any] = {"file": str(file), "target": target}
    report.update(summary(replayer.stats, speed=replayer.options.speed))
    report.update(delivery)
    report["stopped_by"] = signal_name if replayer.stats.stopped else None
    return report


def _print_report(report: dict[str, Any]) -> None:
    speed = report["speed"]
    speed_text = "max speed" if speed == "max" else f"{speed:g}x"
    expected = report["expected_s"]
    timing = f"in {report['duration_s']:.3f} s" + (f" (expected {expected:.3f} s at {speed_text})"
                                                  if expected is not None else f" ({speed_text})")
    stopped = f", stopped by {report['stopped_by']}" if report["stopped_by"] else ""
    err(f"replayed {report['sent']} messages from {report['file']} to {report['target']} {timing}{stopped}")
    restored = f" (incl. {report['restored_retained']} restored retained)" if report["restored_retained"] else ""
    err(f"  published {report['published']}{restored}, acknowledged {report['acknowledged']}, "
        f"failed {report['failed']}, dropped {report['dropped']}")
    late = report["lateness_ms"]
    if late["max"] is not None:
        err(f"  send lateness p50 {late['p50']:.3f} ms, p99 {late['p99']:.3f} ms, max {late['max']:.3f} ms")
    notes = []
    if report["skipped"]:
        notes.append(f"{report['skipped']} not selected")
    if report["clamped"]:
        notes.append(f"{report['clamped']} out of time order (sent right after their predecessor)")
    if report["not_restamped"]:
        notes.append(f"{report['not_restamped']} payloads without a JSON timestamp left as they were")
    if report["loops"] > 1:
        notes.append(f"{report['loops']} loops")
    if notes:
        err("  " + "; ".join(notes))
    for reason, count in report["failed_reasons"].items():
        err(f"  refused by the broker: {count} x {reason}")
