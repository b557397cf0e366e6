"""Plots of telemetry: values over time per device, ground-truth anomalies by kind, alerts.

Streams: the recording is read once (twice when its metadata has no time span), and what
is kept per drawn device and channel is a fixed number of buckets (the min and the max of
the readings that fall in each, in the order they came), so a million-message recording
plots in bounded memory. Anomaly events and alerts are never downsampled: each gets its
marker. matplotlib is imported only here (the ``plot`` extra).
"""

from __future__ import annotations

import fnmatch
import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tesaiot_cli.analysis.score import DEFAULT_TOLERANCE_S, DROPOUT, match_alerts
from tesaiot_cli.analysis.telemetry import CHANNELS, iso_to_ns, load_object
from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import UNKNOWN_DEVICE, Message
from tesaiot_cli.recording import RecordingMetadata
from tesaiot_cli.textfmt import utc_text

DEFAULT_MAX_DEVICES = 6
BUCKETS = 1000  # per axes: about one per horizontal pixel pair at the default size
RUN_KINDS = ("stuck", "drift", DROPOUT, "window")  # drawn as shaded spans; the others as markers

# kind -> (colour, marker). Colour-blind-safe-ish choices from the tab10 palette.
KIND_STYLE: dict[str, tuple[str, str]] = {
    "high_temperature": ("#d62728", "^"),
    "high_pressure": ("#9467bd", "v"),
    "both": ("#8c564b", "D"),
    "spike": ("#ff7f0e", "o"),
    "stuck": ("#7f7f7f", "s"),
    "drift": ("#bcbd22", "s"),
    "dropout": ("#17becf", "s"),
}
OTHER_STYLE = ("#e377c2", "P")
WINDOW_KIND = "window"  # a truth's anomaly window (convert --from nab): a shaded span
WINDOW_STYLE = ("#ff7f0e", "s")
MAX_FIELDS = 2  # numeric fields drawn side by side when the payload has several and none is chosen
ALERT_COLOUR = "#2ca02c"
FALSE_ALARM_COLOUR = "#000000"


class _Series:
    """min/max per time bucket for one channel of one device."""

    __slots__ = ("low", "high", "low_first", "count")

    def __init__(self, buckets: int) -> None:
        self.low = array("d", [math.nan]) * buckets
        self.high = array("d", [math.nan]) * buckets
        self.low_first = array("b", [0]) * buckets
        self.count = 0

    def add(self, bucket: int, value: float) -> None:
        self.count += 1
        low = self.low[bucket]
        if low != low:  # NaN: the bucket's first value
            self.low[bucket] = self.high[bucket] = value
            return
        if value < low:
            self.low[bucket] = value
            self.low_first[bucket] = 0
        if value > self.high[bucket]:
            self.high[bucket] = value
            self.low_first[bucket] = 1

    def points(self, start_ns: int, bucket_ns: float) -> tuple[list[float], list[float]]:
        """(x in ns, y) through each bucket's extremes in the order they came."""
        xs: list[float] = []
        ys: list[float] = []
        for index in range(len(self.low)):
            low, high = self.low[index], self.high[index]
            if low != low:
                continue
            x = start_ns + (index + 0.5) * bucket_ns
            if low == high:
                xs.append(x)
                ys.append(low)
            else:
                first, second = (low, high) if self.low_first[index] else (high, low)
                xs += [x - bucket_ns / 4, x + bucket_ns / 4]
                ys += [first, second]
        return xs, ys


@dataclass
class EventMark:
    """One ground-truth event of a drawn device (times in ns)."""

    kind: str
    first_ns: int
    last_ns: int
    detected: bool | None  # None: no alerts given


@dataclass
class AlertMark:
    time_ns: int
    matched: bool | None  # None: no truth to match against


@dataclass
class PlotData:
    """Everything the figure needs, already reduced."""

    start_ns: int
    end_ns: int
    devices: list[str]
    series: dict[tuple[str, str], _Series]
    events: dict[str, list[EventMark]] = field(default_factory=dict)
    alerts: dict[str, list[AlertMark]] = field(default_factory=dict)
    devices_seen: int = 0
    readings: int = 0
    labelled: bool = False
    bucket_ns: float = 1.0
    channels: list[tuple[str, str]] = field(default_factory=lambda: list(CHANNELS))  # (field, unit)
    left_out: dict[str, int] = field(default_factory=dict)  # alerts not drawn, by why

    def left_out_text(self) -> str | None:
        """What was left out of the picture, in words (None: nothing)."""
        parts = [f"{count} {why}" for why, count in self.left_out.items() if count]
        return "alerts not drawn: " + ", ".join(parts) if parts else None


def collect(reader_factory: Any, *, alerts: Iterable[Message] | None = None, devices: Sequence[str] = (),
            max_devices: int = DEFAULT_MAX_DEVICES, buckets: int = BUCKETS,
            tolerance_s: float = DEFAULT_TOLERANCE_S, fields: Sequence[str] = ()) -> PlotData:
    """Read the recording (``reader_factory()`` opens a reader) and reduce it for drawing.

    ``devices``: glob patterns of the device ids to draw (default: the first
    ``max_devices`` seen); ``fields``: the numeric payload fields to draw (default:
    :func:`default_fields`). Raises :class:`ConfigError` when nothing can be drawn.
    """
    from tesaiot_cli.analysis.detect_generic import field_value
    from tesaiot_cli.recording.truth import TruthWindows

    with reader_factory() as reader:
        metadata: RecordingMetadata = reader.metadata
        start_ns, end_ns = metadata.start_ns, metadata.end_ns
        if start_ns is None or end_ns is None:
            start_ns, end_ns = _time_span(reader)
    if start_ns is None or end_ns is None:
        raise ConfigError("the recording is empty: nothing to plot")
    with reader_factory() as reader:
        chosen, first_payload = _choose_devices(reader, devices, max_devices)
    if not chosen:
        raise ConfigError("no device to plot" + (f" matches --device {', '.join(devices)}" if devices else ""))
    windows = TruthWindows.of(metadata)
    if devices or windows is not None:  # chosen devices (NAB's series: years apart): their own time span
        with reader_factory() as reader:
            start_ns, end_ns = _time_span(reader, set(chosen))
        if start_ns is None or end_ns is None:
            raise ConfigError("the chosen devices have no messages: nothing to plot")
    span = max(end_ns - start_ns, 1)
    bucket_ns = span / buckets
    units = dict(CHANNELS)
    channels = [(name, units.get(name, "")) for name in (list(fields) or default_fields(first_payload))]
    names = [name for name, _unit in channels]
    drawn = set(chosen)
    placing: list[tuple[str, int, int | None]] = []  # drawn devices' alerts: device, time, reading time
    left_out = {"of other devices": 0, "not JSON objects": 0}
    if alerts is not None:
        alerts = _noting(alerts, drawn, placing, left_out)
    series = {(device, name): _Series(buckets) for device in chosen for name in names}
    all_devices: set[str] = set()
    readings = 0

    topics: dict[str, str] = {}

    def on_reading(message: Message, label: str | None, device: str) -> None:
        nonlocal readings
        if device == UNKNOWN_DEVICE:  # a topic that names no device (nab/<id>): the payload's device_id
            device = topics.get(message.topic) or _device_of(message, topics)
        if len(all_devices) < 1_000_000:
            all_devices.add(device)
        if device not in drawn:
            return
        data = load_object(message.payload)
        if data is None:
            return
        bucket = min(int((message.time_ns - start_ns) / bucket_ns), buckets - 1)
        if bucket < 0:
            return
        readings += 1
        for name in names:
            value = field_value(data, name)
            if value is not None and math.isfinite(value):
                series[(device, name)].add(bucket, value)

    with reader_factory() as reader:
        matching = match_alerts(reader.iter_labelled(), reader.metadata, alerts if alerts is not None else [],
                                tolerance_s=tolerance_s, on_reading=on_reading,
                                require_labels=False, keep=drawn.__contains__)
    data = PlotData(start_ns, end_ns, chosen, series, devices_seen=len(all_devices), readings=readings,
                    labelled=matching.labelled > 0, bucket_ns=bucket_ns, channels=channels)
    if windows is None:
        _marks(data, matching, alerts is not None)
        late_ns = end_ns + int(tolerance_s * 1e9)  # an alert may come a little after the last reading
        outside = {device: sum(1 for a in marks if not start_ns <= a.time_ns <= late_ns)
                   for device, marks in data.alerts.items()}
        for device, marks in data.alerts.items():
            data.alerts[device] = [a for a in marks if start_ns <= a.time_ns <= late_ns]
        left_out["outside the recording's time span"] = sum(outside.values())
    else:
        left_out["outside the recording's time span"] = _window_marks(data, windows, placing, alerts is not None)
    data.left_out = left_out
    return data


def default_fields(payload: dict[str, Any] | None) -> list[str]:
    """The fields drawn when none is chosen: DPS368's pressure and temperature when the payload
    has either, else ``value`` or the payload's only numeric field, else its first numeric fields
    (at most ``MAX_FIELDS``). Raises :class:`ConfigError` when it has none."""
    from tesaiot_cli.analysis.detect_generic import default_field, field_value

    if payload is None:
        raise ConfigError("the first message of the device to plot is not a JSON object: no field to draw")
    dps368 = [name for name, _unit in CHANNELS]
    if any(field_value(payload, name) is not None for name in dps368):
        return dps368
    one = default_field(payload)
    if one is not None:
        return [one]
    inner = payload.get("data")
    source: dict[str, Any] = inner if isinstance(inner, dict) else payload
    prefix = "data." if source is not payload else ""
    numeric = [prefix + key for key, value in source.items()
               if key != "seq" and isinstance(value, (int, float)) and not isinstance(value, bool)]
    if not numeric:
        raise ConfigError("the payloads have no numeric field to draw: name one with --field")
    return numeric[:MAX_FIELDS]


def _device_of(message: Message, cache: dict[str, str]) -> str:
    """The device a message is from: its topic's (``device/<id>/...``), else its payload's
    ``device_id``; remembered per topic in ``cache`` (up to 100,000 topics)."""
    from tesaiot_cli.message import parse_topic

    device = parse_topic(message.topic).device_id
    if device == UNKNOWN_DEVICE:
        data = load_object(message.payload)
        named = data.get("device_id") if data is not None else None
        if isinstance(named, str) and named:
            device = named
    if len(cache) < 100_000:
        cache[message.topic] = device
    return device


def _noting(alerts: Iterable[Message], drawn: set[str], placing: list[tuple[str, int, int | None]],
            left_out: dict[str, int]) -> Iterable[Message]:
    """The alerts, unchanged; on the way, the drawn devices' (device, time, reading time) and
    the count of those left out (another device, not a JSON object)."""
    from tesaiot_cli.message import parse_topic

    for message in alerts:
        data = load_object(message.payload)
        if data is None:
            left_out["not JSON objects"] += 1
        else:
            device = data.get("device_id")
            device_id = device if isinstance(device, str) and device else parse_topic(message.topic).device_id
            if device_id in drawn:
                stamp = data.get("timestamp")
                placing.append((device_id, message.time_ns, iso_to_ns(stamp) if isinstance(stamp, str) else None))
            else:
                left_out["of other devices"] += 1
        yield message


def _window_marks(data: PlotData, windows: Any, placing: list[tuple[str, int, int | None]],
                  have_alerts: bool) -> int:
    """A truth with anomaly windows (NAB): each window one span, detected when an alert falls in it;
    an alert is drawn at the time of the reading it names (its ``timestamp``), else when it came,
    matched when inside a window. Returns how many alerts fell outside the time span."""
    spans: dict[str, list[tuple[int, int]]] = {}
    for device in data.devices:
        for window in windows.by_device.get(device, ()):
            first, last = iso_to_ns(window.first), iso_to_ns(window.last)
            if first is not None and last is not None:
                spans.setdefault(device, []).append((first, last))
    outside = 0
    hit: set[tuple[str, int]] = set()
    for device, time_ns, reading_ns in placing:
        at = reading_ns if reading_ns is not None and data.start_ns <= reading_ns <= data.end_ns else time_ns
        if not data.start_ns <= at <= data.end_ns:
            outside += 1
            continue
        inside = next((first for first, last in spans.get(device, ()) if first <= at <= last), None)
        if inside is not None:
            hit.add((device, inside))
        data.alerts.setdefault(device, []).append(AlertMark(at, inside is not None))
    data.labelled = True
    for device, ranges in spans.items():
        data.events[device] = [EventMark(WINDOW_KIND, first, last, ((device, first) in hit) if have_alerts else None)
                               for first, last in ranges]
    return outside


def _choose_devices(reader: Any, patterns: Sequence[str], limit: int) -> tuple[list[str], dict[str, Any] | None]:
    """The first ``limit`` device ids (matching a pattern, if any) in the recording's order:
    read until they are found (a fleet's first few messages), at worst to the end; and the
    first chosen device's first payload (what the default fields are read from)."""

    chosen: list[str] = []
    first: dict[str, Any] | None = None
    seen: set[str] = set()
    for message in reader:
        topic = message.topic
        if topic in seen:
            continue
        seen.add(topic)
        device = _device_of(message, {})
        if device in chosen:
            continue
        if not patterns or any(fnmatch.fnmatchcase(device, pattern) for pattern in patterns):
            if not chosen:
                first = load_object(message.payload)
            chosen.append(device)
            if len(chosen) >= limit:
                break
    return chosen, first


def _marks(data: PlotData, matching: Any, have_alerts: bool) -> None:
    events, index = matching.events, matching.alerts
    drawn = set(data.devices)
    for event, (device, kind) in enumerate(zip(events.devices, events.kinds, strict=True)):
        if device not in drawn:
            continue
        data.events.setdefault(device, []).append(EventMark(
            kind, events.first_ns[event], events.last_ns[event],
            (events.detected_ns[event] >= 0) if have_alerts else None))
    for alert in range(len(index)):
        device = index.devices[alert]
        if device not in drawn:
            continue
        matched = index.event[alert] >= 0 if matching.labelled else None
        data.alerts.setdefault(device, []).append(AlertMark(index.time_ns[alert], matched))


def _time_span(reader: Any, devices: set[str] | None = None) -> tuple[int | None, int | None]:
    """The first and last message time (of ``devices`` only, when given)."""
    low: int | None = None
    high: int | None = None
    topics: dict[str, str] = {}
    for message in reader:
        if devices is not None and (topics.get(message.topic) or _device_of(message, topics)) not in devices:
            continue
        t = message.time_ns
        low = t if low is None or t < low else low
        high = t if high is None or t > high else high
    return low, high


def _time_unit(span_s: float) -> tuple[str, float]:
    if span_s <= 600:
        return "s", 1.0
    if span_s <= 36_000:
        return "min", 60.0
    if span_s <= 10 * 86_400:
        return "h", 3600.0
    return "d", 86_400.0


def render(data: PlotData, output: Path, *, title: str | None = None) -> Any:
    """Draw ``data`` and save it to ``output`` (.png or .svg); returns the figure (closed
    for drawing, kept for inspection). Raises :class:`ConfigError` for another suffix, OSError when
    ``output`` cannot be written."""
    suffix = output.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ConfigError(f"cannot tell the image format of {str(output)!r}: use .png or .svg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.transforms import blended_transform_factory

    rows = len(data.devices)
    channels = data.channels
    figure, axes_grid = plt.subplots(rows, len(channels), figsize=(14, 2.3 * rows + 1.0), squeeze=False,
                                     sharex=True, layout="constrained")
    unit, scale = _time_unit((data.end_ns - data.start_ns) / 1e9)

    def x_of(time_ns: float) -> float:
        return (time_ns - data.start_ns) / 1e9 / scale

    kinds_drawn: set[str] = set()
    any_missed = any_false = any_alert = False
    for row, device in enumerate(data.devices):
        marks = data.events.get(device, [])
        for column, (name, channel_unit) in enumerate(channels):
            ax = axes_grid[row][column]
            xs, ys = data.series[(device, name)].points(data.start_ns, data.bucket_ns)
            ax.plot([x_of(x) for x in xs], ys, color="#1f77b4", linewidth=0.8, zorder=2)
            label = f"{name} ({channel_unit})" if channel_unit else name
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.ticklabel_format(axis="y", useOffset=False, style="plain")
            ax.grid(True, linewidth=0.3, alpha=0.5)
            if column == 0:
                ax.set_title(device, loc="left", fontsize=9, fontweight="bold")
            to_axes = blended_transform_factory(ax.transData, ax.transAxes)
            point_x: dict[str, list[float]] = {}
            point_missed: dict[str, list[bool]] = {}
            spans: dict[tuple[str, bool], list[tuple[float, float]]] = {}
            for mark in marks:
                kinds_drawn.add(mark.kind)
                missed = mark.detected is False
                any_missed |= missed
                if mark.kind in RUN_KINDS:
                    start = x_of(mark.first_ns)
                    end = x_of(max(mark.last_ns, mark.first_ns + data.bucket_ns))
                    spans.setdefault((mark.kind, missed), []).append((start, end - start))
                else:
                    point_x.setdefault(mark.kind, []).append(x_of(mark.first_ns))
                    point_missed.setdefault(mark.kind, []).append(missed)
            # One collection per kind (not one patch per event): thousands of events draw fast.
            for (kind, missed), ranges in spans.items():
                colour, _marker = WINDOW_STYLE if kind == WINDOW_KIND else KIND_STYLE.get(kind, OTHER_STYLE)
                ax.broken_barh(ranges, (0, 1), transform=ax.get_xaxis_transform(), facecolors=colour, alpha=0.3,
                               linewidth=0, zorder=1, label=f"span:{kind}")
                if missed:
                    ax.broken_barh(ranges, (0, 1), transform=ax.get_xaxis_transform(), facecolors="none",
                                   edgecolors="#d62728", hatch="////", linewidth=0, zorder=1,
                                   label=f"missed-span:{kind}")
            # Point events sit in a strip at the top of the axes, so they never hide the values.
            for kind, positions in point_x.items():
                colour, marker = KIND_STYLE.get(kind, OTHER_STYLE)
                hit = [x for x, m in zip(positions, point_missed[kind], strict=True) if not m]
                miss = [x for x, m in zip(positions, point_missed[kind], strict=True) if m]
                if hit:
                    ax.scatter(hit, [0.93] * len(hit), marker=marker, s=26, color=colour, transform=to_axes,
                               zorder=4, clip_on=False, label=f"event:{kind}")
                if miss:
                    ax.scatter(miss, [0.93] * len(miss), marker=marker, s=46, facecolors="none",
                               edgecolors=colour, linewidths=1.4, transform=to_axes, zorder=4, clip_on=False,
                               label=f"missed:{kind}")
            alerts = data.alerts.get(device, [])
            good = [x_of(a.time_ns) for a in alerts if a.matched is not False]
            bad = [x_of(a.time_ns) for a in alerts if a.matched is False]
            any_alert |= bool(alerts)
            any_false |= bool(bad)
            if good:
                ax.scatter(good, [0.05] * len(good), marker="|", s=70, color=ALERT_COLOUR, transform=to_axes,
                           zorder=5, clip_on=False, label="alert")
            if bad:
                ax.scatter(bad, [0.05] * len(bad), marker="x", s=40, color=FALSE_ALARM_COLOUR, linewidths=1.4,
                           transform=to_axes, zorder=6, clip_on=False, label="false alarm")
            ax.margins(x=0.01, y=0.18)
            zoom = _zoom(ys)
            if zoom is not None:
                ax.set_ylim(*zoom)
                ax.set_ylabel(f"{label}, zoomed", fontsize=8)
    for column in range(len(channels)):
        axes_grid[rows - 1][column].set_xlabel(f"time ({unit}) since {utc_text(data.start_ns)}", fontsize=8)
    handles: list[Any] = [Line2D([], [], color="#1f77b4", linewidth=1, label="value (min/max per pixel)")]
    for kind in sorted(kinds_drawn):
        colour, marker = WINDOW_STYLE if kind == WINDOW_KIND else KIND_STYLE.get(kind, OTHER_STYLE)
        if kind in RUN_KINDS:
            handles.append(Patch(facecolor=colour, alpha=0.3, label="anomaly window" if kind == WINDOW_KIND else kind))
        else:
            handles.append(Line2D([], [], linestyle="none", marker=marker, color=colour, label=kind))
    if any_missed:
        handles.append(Line2D([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="#555",
                              label="missed (hollow / hatched)"))
    if any_alert:
        handles.append(Line2D([], [], linestyle="none", marker="|", markersize=10, color=ALERT_COLOUR,
                              label="alert (matched)" if data.labelled else "alert"))
    if any_false:
        handles.append(Line2D([], [], linestyle="none", marker="x", color=FALSE_ALARM_COLOUR, label="false alarm"))
    heading = title or "telemetry"
    seen = max(data.devices_seen, len(data.devices))
    heading += f" ({len(data.devices)} of {seen} device{'s' if seen > 1 else ''}" + (
        "; --device chooses)" if seen > len(data.devices) else ")")
    left_out = data.left_out_text()
    if left_out:
        heading += f"\n{left_out}"
    figure.legend(handles=handles, loc="outside upper center", ncol=min(len(handles), 7), fontsize=8, frameon=False,
                  title=heading, title_fontproperties={"size": 10, "weight": "bold"})
    try:
        figure.savefig(output, dpi=110)  # an OSError goes to the caller, who knows the user's name for output
    finally:
        plt.close(figure)
    return figure


def _zoom(values: list[float]) -> tuple[float, float] | None:
    """y limits around the bulk of the values when a few far-off ones (out-of-range
    anomalies, marked anyway) would squash the signal into a flat line; else None."""
    if len(values) < 20:
        return None
    ordered = sorted(values)
    low, high = ordered[len(ordered) // 10], ordered[-1 - len(ordered) // 10]
    bulk = high - low
    if bulk <= 0 or ordered[-1] - ordered[0] < 8 * bulk:
        return None
    return max(low - 2 * bulk, ordered[0] - bulk * 0.1), min(high + 2 * bulk, ordered[-1] + bulk * 0.1)


