"""``tesaiot watch``: a live full-screen view of a fleet's telemetry, one row per device."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from tesaiot_cli.cliutil import (
    EXIT_UNDELIVERED,
    ConnectionFlags,
    KeyPresses,
    StopSignals,
    check_recording_path,
    cli_errors,
    clock_text,
    env_topics,
    err,
    exit_if_protocol_broken,
    load_environment,
    resolve_settings,
    use_color,
    warn,
    with_connection_options,
)
from tesaiot_cli.config import check_token_topics
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import validate_topic_filter
from tesaiot_cli.textfmt import plural

if TYPE_CHECKING:
    from rich.text import Text

    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.services.watch import WatchResult

DEFAULT_TOPIC = "device/+/telemetry/#"
DEFAULT_ALERT_TOPIC = "device/+/alerts"
NOT_A_TERMINAL = ("watch draws a full-screen view and needs a terminal; in a pipe or CI use "
                  "'tesaiot listen --json' (one JSON object per message)")

EPILOG = """\b
Examples:
  tesaiot watch                                    # localhost:1883: device/+/telemetry/# and device/+/alerts
  tesaiot watch -b mqtt://broker.local:1883 -t 'device/+/telemetry/#'
  MQTT_API_TOKEN=tesa_mqtt_... tesaiot watch       # the TESAIoT cloud over WSS
  tesaiot watch --alert-topic 'lab/{device_id}/anomaly' --stale 30
  tesaiot watch --replay recordings/dps368-sample.parquet --speed 10x   # a recording, no broker
  NO_COLOR=1 tesaiot watch --replay run.jsonl --speed max

\b
Keys: q quits; arrows, PageUp/PageDown, Home/End move the selection; / filters by device or
topic (Enter keeps, Esc clears); s cycles the sort (name, rate, last seen, anomalies); f picks
the sparkline's field; p pauses the table (messages are still counted); Enter shows the
selected device's recent messages in full (Esc goes back).
"""


class _FullScreen:
    """The terminal as the view's screen: rich's Live on the alternate screen, redrawn only
    when the run loop says (never on its own timer), keys from ``KeyPresses``."""

    def __init__(self, color: bool, keys: KeyPresses) -> None:
        self._color = color
        self._keys = keys
        self._live: Any = None
        self._console: Any = None

    def __enter__(self) -> _FullScreen:
        from rich.console import Console
        from rich.live import Live

        self._console = Console(force_terminal=True, color_system="auto" if self._color else None,
                                no_color=not self._color, highlight=False, emoji=False, markup=False)
        self._console.size = self.size()  # our own measure, each redraw: never COLUMNS from the environment
        self._live = Live(console=self._console, screen=True, auto_refresh=False, redirect_stdout=False,
                          redirect_stderr=False)
        self._live.__enter__()
        return self

    @property
    def interactive(self) -> bool:
        return self._keys.active

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(sys.stdout.fileno())
        except (OSError, ValueError):
            return 80, 24
        return size.columns, size.lines

    def show(self, text: Text) -> None:
        self._console.size = self.size()
        self._live.update(text, refresh=True)

    def keys(self) -> str:
        return self._keys.read()

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.__exit__(None, None, None)


def default_alert_topics(settings: ConnectionSettings, *, no_alerts: bool) -> list[str]:
    """``device/+/alerts``, except with ``--no-alerts`` and with an API token on the TESAIoT
    cloud, where a token may read only telemetry (the broker would refuse the rest)."""
    if no_alerts or (settings.token is not None and settings.is_cloud):
        return []
    return [DEFAULT_ALERT_TOPIC]


def alert_filter(text: str) -> str:
    """An ``--alert-topic``: an MQTT filter, or detect's template (``{device_id}`` is ``+``)."""
    return validate_topic_filter(text.replace("{device_id}", "+"))


@with_connection_options
def watch(
    topic: Annotated[Optional[list[str]], typer.Option("--topic", "-t", metavar="FILTER", help="Telemetry topic filter, repeatable. Env: MQTT_SUBSCRIBE_TOPIC or MQTT_TOPIC. Default device/+/telemetry/# (with --replay: every topic).", show_default=False)] = None,  # noqa: E501
    alert_topic: Annotated[Optional[list[str]], typer.Option("--alert-topic", metavar="FILTER", help="Topics that carry a detector's alerts (the alert contract: device_id, kind, score), repeatable; detect's form 'lab/{device_id}/anomaly' works too. Default device/+/alerts (none with an API token on the TESAIoT cloud: a token may read only telemetry).", show_default=False)] = None,  # noqa: E501
    no_alerts: Annotated[bool, typer.Option("--no-alerts", help="Watch no alert topic.")] = False,
    qos: Annotated[int, typer.Option("--qos", "-q", metavar="QOS", min=0, max=2, help="Subscription QoS.")] = 1,
    replay: Annotated[Optional[Path], typer.Option("--replay", metavar="FILE", help="Watch a recording (Parquet, JSONL or a dataset) at its own timing instead of a broker; its labels show as anomalies.", show_default=False)] = None,  # noqa: E501
    speed: Annotated[Optional[str], typer.Option("--speed", "-s", metavar="FACTOR", help="With --replay: time factor (10x, 0.5x, 2...) or max. Default 1x.", show_default=False)] = None,  # noqa: E501
    recording_format: Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", help="With --replay: parquet or jsonl (default: from the file suffix).", show_default=False)] = None,  # noqa: E501
    stale: Annotated[Optional[float], typer.Option("--stale", metavar="SECONDS", help="Mark a device stale after SECONDS without a message. Default: 3 of its usual intervals, at least 5 s.", show_default=False)] = None,  # noqa: E501
    color: Annotated[str, typer.Option("--color", metavar="auto|always|never", help="Colour: auto (unless NO_COLOR is set), always or never.")] = "auto",  # noqa: E501
    *,
    conn: ConnectionFlags,
) -> None:
    """Watch a fleet's telemetry live in a full-screen table: one row per device with its message count, rate, latest pressure and temperature (or first numeric fields), a sparkline, the time since its last message, and its last anomaly label and detector alert."""  # noqa: E501
    from tesaiot_cli.services.watch import watch_live, watch_replay

    with cli_errors():
        if not sys.stdout.isatty():
            raise ConfigError(NOT_A_TERMINAL)
        if color not in ("auto", "always", "never"):
            raise ConfigError(f"invalid --color {color!r}: use auto, always or never")
        if stale is not None and not stale > 0:
            raise ConfigError(f"invalid --stale {stale}: it must be a positive number of seconds")
        if no_alerts and alert_topic:
            raise ConfigError("--alert-topic and --no-alerts exclude each other")
        if replay is None and (speed is not None or recording_format is not None):
            raise ConfigError(f"{'--speed' if speed is not None else '--format'} needs --replay FILE")
        env = load_environment(conn.env_file)
        alerts = [] if no_alerts else [alert_filter(text) for text in alert_topic or ()]
        painted = {"always": True, "never": False}.get(color)
        color_on = use_color(sys.stdout, env) if painted is None else painted
        # Everything that may prompt (a password) or fail is settled before the terminal is
        # put in cbreak mode and the screen taken.
        if replay is not None:
            from tesaiot_cli.playback.replay import parse_speed

            if any(value for value in conn.as_mapping().values()):
                warn("connection options are ignored with --replay")
            factor = parse_speed(speed or "1x")
            filters = [validate_topic_filter(text) for text in topic or ()]
            alerts = alerts or ([] if no_alerts else [DEFAULT_ALERT_TOPIC])
            check_recording_path(replay)
            where = str(replay)
        else:
            settings = resolve_settings(conn, command="watch", env=env)
            filters = [validate_topic_filter(text) for text in topic or env_topics(env) or [DEFAULT_TOPIC]]
            alerts = alerts or default_alert_topics(settings, no_alerts=no_alerts)
            check_token_topics(settings, [*filters, *alerts])
            where = settings.url.display()
        with StopSignals() as stop, KeyPresses() as keys:
            def screen() -> _FullScreen:
                return _FullScreen(color_on, keys)

            if replay is not None:
                result = watch_replay(replay, recording_format=recording_format, speed=factor, filters=filters,
                                      alert_filters=alerts, terminal=screen, stop=stop.event, stale_after=stale)
            else:
                result = watch_live(settings, filters, alerts, qos=qos, terminal=screen, stop=stop.event,
                                    stale_after=stale)
        finish(result, where=where, stopped_by=stop.signal_name or result.stopped_by)


def finish(result: WatchResult, *, where: str, stopped_by: str) -> None:
    """After the screen is gone: what happened to the connection, then the counts; exit 3
    when the broker broke the protocol, 7 when messages were dropped or not shown."""
    _report(result, stopped_by=stopped_by)
    exit_if_protocol_broken(result.protocol_errors, where, what="shown")
    if result.dropped or result.untracked:
        raise typer.Exit(EXIT_UNDELIVERED)


def _report(result: WatchResult, *, stopped_by: str) -> None:
    for kind, text in result.events:
        if kind in ("disconnected", "reconnected", "warning"):
            err(text if kind != "warning" else f"warning: {text}")
    err(f"stopped ({stopped_by}): {plural(result.messages, 'message')} ({plural(result.alerts, 'alert')}) from "
        f"{plural(result.rows, 'row')} in {clock_text(result.elapsed_s)}; {result.not_parsed:,} not parsed; "
        f"{plural(result.redraws, 'redraw')}, median {result.redraw_median_ms:.1f} ms, longest "
        f"{result.redraw_max_ms:.1f} ms")
    if result.dropped:
        err(f"{plural(result.dropped, 'message')} dropped: the view fell behind the broker (counted, not shown)")
    if result.untracked:
        err(f"{plural(result.untracked, 'message')} of devices past the row limit were counted but not shown")
