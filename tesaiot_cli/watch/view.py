"""What ``tesaiot watch`` draws: the model and the view state as rich ``Text``, one screen.

Pure: give it the size and it returns exactly ``height`` lines, none wider than ``width``;
only the rows that fit are rendered (a 10,000-row fleet costs the same as a screenful).
Columns that do not fit a narrow terminal are left out, least useful first; a terminal too
small for anything gets one line saying so. Colour is the console's business: with colour
off the same text is drawn without it (stale rows and anomalies keep a visible mark).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from rich.text import Text

from tesaiot_cli.output.render import escape_control, human_block
from tesaiot_cli.textfmt import plural
from tesaiot_cli.watch.model import SPARK_WINDOW, FleetModel, Row
from tesaiot_cli.watch.state import ViewState

SPARKS = "▁▂▃▄▅▆▇█"
HEADER_LINES = 3
MIN_WIDTH, MIN_HEIGHT = 20, 6
FRESH_ALERT_S = 10.0  # an alert this recent is drawn bold
KEYS_HELP = "q quit  / filter  s sort  f field  p pause  Enter details  ↑↓ PgUp PgDn scroll"
_NARROW = frozenset(SPARKS + "…×")  # one cell wide, as the view uses them
GROW_ORDER = (("device", 99), ("trend", 16), ("alert", 99), ("anomaly", 99), ("trend", 99))
_TITLES = {"pressure": "PRESSURE", "temperature": "TEMP"}


@dataclass
class Header:
    """What the header says about the source: ``where`` (the broker, or the recording),
    ``topics``, and a live ``progress`` text (a replay's position), when there is one;
    ``live``: connected to a broker (the header shows the connection's state)."""

    where: str
    topics: str
    progress: Callable[[], str] | None = None
    live: bool = True
    alerts: bool = True  # alert topics are watched: the ALERT column is shown
    keys: bool = True  # keys can be read (False: stdin is not a terminal, Ctrl+C is the way out)


class Column(NamedTuple):
    name: str
    title: str
    width: int
    drop: int  # columns with the highest number are left out first
    right: bool = False
    flex: int = 0  # may grow up to this width


def age_text(seconds: float | None) -> str:
    """``0.4s``, ``12s``, ``3m05``, ``2h03``; ``-`` before any message."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}"


def value_text(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value}"
    return f"{value:.2f}" if abs(value) < 1e5 else f"{value:.4g}"


def rate_text(rate: float) -> str:
    return f"{rate:.1f}/s" if rate < 100 else f"{rate:,.0f}/s"


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled from the window's lowest to its highest."""
    if not values:
        return ""
    low, high = min(values), max(values)
    if high - low <= 1e-12 * max(abs(high), 1.0):
        return SPARKS[3] * len(values)
    scale = (len(SPARKS) - 1) / (high - low)
    return "".join(SPARKS[int((v - low) * scale + 0.5)] for v in values)


def middle_cut(text: str, width: int) -> str:
    """``infineon-sensor-01`` in 14 cells: ``infine…sor-01`` (a fleet's names differ at the end)."""
    if len(text) <= width or width < 5:
        return text
    tail = (width - 1) // 2
    return text[:width - 1 - tail] + "…" + text[len(text) - tail:]


def plain_cell(text: str, width: int, *, right: bool = False) -> str | None:
    """``text`` cut (with an ellipsis) or padded to ``width``, when every character is one
    cell wide (ASCII and the few symbols the view draws itself); None when it cannot tell."""
    if not (text.isascii() or all(char in _NARROW or char.isascii() for char in text)):
        return None
    if len(text) > width:
        return text[:max(width - 1, 0)] + "…" if width else ""
    return text.rjust(width) if right else text.ljust(width)


def cell(text: str, width: int, *, right: bool = False, style: str = "") -> Text:
    """``text`` cut (with an ellipsis) or padded to exactly ``width`` cells."""
    piece = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    if piece.cell_len > width:
        piece.truncate(width, overflow="ellipsis")
    pad = width - piece.cell_len
    if pad > 0:
        piece = Text(" " * pad) + piece if right else piece + Text(" " * pad)
    return piece


def fit_line(text: Text, width: int) -> Text:
    line = text.copy()
    line.no_wrap = True
    if line.cell_len > width:
        line.truncate(width, overflow="ellipsis")
    return line


def layout(width: int, value_fields: list[str], *, labels: bool, alerts: bool, longest: int) -> list[Column]:
    """The columns that fit ``width`` (one space between them), widest useful first."""
    columns = [Column("device", "DEVICE", 12, 0, flex=max(12, min(longest, 36))),
               Column("messages", "MSGS", 6, 7, right=True), Column("rate", "RATE", 6, 1, right=True)]
    for index, name in enumerate(value_fields[:3]):
        title = _TITLES.get(name, name.upper())
        columns.append(Column(f"value:{name}", title, max(6, min(len(title), 10)), (2, 5, 8)[index], right=True))
    columns.append(Column("trend", "TREND", 8, 6, flex=SPARK_WINDOW))
    columns.append(Column("last", "LAST", 6, 1, right=True))
    if labels:
        columns.append(Column("anomaly", "ANOMALY", 10, 3, flex=22))
    if alerts:
        columns.append(Column("alert", "ALERT", 11, 4, flex=28))

    def used(cols: list[Column]) -> int:
        return 1 + sum(c.width for c in cols) + len(cols)  # a gutter, then a space before each column

    while used(columns) > width and len(columns) > 1:
        worst = max(columns, key=lambda c: (c.drop, columns.index(c)))
        columns.remove(worst)
    room = width - used(columns)
    widths = {column.name: column.width for column in columns}
    for name, most in GROW_ORDER:  # what is left goes to the names first, the sparkline's full width last
        column = next((c for c in columns if c.name == name), None)
        if column is not None and room > 0:
            extra = max(0, min(room, min(most, column.flex) - widths[name]))
            widths[name] += extra
            room -= extra
    return [column._replace(width=widths[column.name]) for column in columns]


class Screen(NamedTuple):
    """One drawn screen, and what the run loop needs to know about it."""

    text: Text
    page: int  # table rows that fit
    keys: list[str]  # the rows' keys in the order shown (the whole list, for the selection)


def draw(model: FleetModel, state: ViewState, header: Header, *, width: int, height: int,
         frozen: list[Text] | None = None) -> tuple[Screen, list[Text]]:
    """The whole screen. ``frozen``: table lines to show instead of fresh ones (paused).
    Returns the screen and the table lines drawn (to freeze them)."""
    if width < MIN_WIDTH or height < MIN_HEIGHT:
        small = Text(f"too small ({width}x{height}): tesaiot watch needs {MIN_WIDTH}x{MIN_HEIGHT}")
        return Screen(fit_line(small, width), 1, []), []
    lines = header_lines(model, header, state, width)
    page = max(1, height - len(lines) - 2)  # the column titles and the footer
    if state.detail is not None:
        body = detail_lines(model, state, width, height - len(lines) - 1)
        footer = Text("Esc/Enter back  ↑↓ PgUp PgDn scroll  q quit", style="dim")
        keys: list[str] = []
        table: list[Text] = []
    else:
        rows = model.select(state.filter, state.sort)
        keys = [row.key for row in rows]
        state.place(keys, page)
        if frozen is not None:
            table = frozen
        else:
            table = table_lines(model, state, rows, width, page, alerts=header.alerts)
        body = table
        footer = footer_line(state, len(rows), page, width, shown_field(model, state), keys=header.keys)
    out = lines + body
    out += [Text("")] * max(0, height - 1 - len(out))
    out = out[:height - 1] + [fit_line(footer, width)]
    whole = Text("\n", no_wrap=True, overflow="crop").join(fit_line(line, width) for line in out)
    return Screen(whole, page, keys), table


def header_lines(model: FleetModel, header: Header, state: ViewState, width: int) -> list[Text]:
    totals = model.totals
    state_style = {"connected": "bold green", "disconnected": "bold red", "reconnecting": "bold yellow",
                   "connecting": "yellow"}.get(model.connection, "")
    first = Text.assemble(("tesaiot watch", "bold"), "  ", header.where, "  ")
    if header.live:
        first.append(model.connection, style=state_style)
        first.append("  ")
    elif header.progress is not None:
        first.append(header.progress(), style="bold")
        first.append("  ")
    first.append(header.topics, style="dim")
    stale = model.stale_rows()
    second = Text(plural(len(model.rows), "device") + (f" ({stale:,} stale)" if stale else "")
                  + f"  {totals.messages:,} msgs  {rate_text(model.rate())}  "
                  f"{plural(totals.anomalies, 'anomaly', 'anomalies')}  {plural(totals.alerts, 'alert')}  ")
    lost = totals.dropped + totals.untracked
    second.append(f"{lost:,} dropped", style="bold red" if lost else "")
    second.append(f"  {totals.not_parsed:,} not parsed", style="yellow" if totals.not_parsed else "")
    if model.disconnects:
        second.append(f"  disconnects {model.disconnects:,}", style="yellow")
    if state.paused:
        second.append("  PAUSED (p resumes; still counting)", style="bold reverse")
    third = Text("")
    if model.events:
        at, kind, text = model.events[-1]
        style = {"disconnected": "bold red", "reconnecting": "yellow", "warning": "yellow"}.get(kind, "dim")
        third = Text(f"{age_text(model.clock() - at)} ago: {escape_control(text)}", style=style)
    return [first, second, third]


def shown_field(model: FleetModel, state: ViewState) -> str | None:
    """The sparkline's field: the one picked with ``f``, else the fleet's first."""
    return state.field if state.field in model.fields else (model.fields[0] if model.fields else None)


def _anomaly_cell(row: Row) -> tuple[str, str]:
    if row.anomalies:
        current = row.last_label not in (None, "normal")
        return f"{row.anomalies}× {row.last_anomaly}", "bold red" if current else "red"
    return ("normal" if row.last_label == "normal" else "-"), "dim"


def _alert_cell(row: Row, now: float) -> tuple[str, str]:
    if not row.alerts:
        return "-", "dim"
    score = f" {row.last_alert_score:.2f}" if row.last_alert_score is not None else ""
    fresh = row.last_alert_s is not None and now - row.last_alert_s < FRESH_ALERT_S
    return f"{row.alerts}× {row.last_alert}{score}", "bold magenta" if fresh else "magenta"


def table_lines(model: FleetModel, state: ViewState, rows: list[Row], width: int, page: int, *,
                alerts: bool = True) -> list[Text]:
    """The column titles and the rows on screen (only those)."""
    shown = rows[state.top:state.top + page]
    field = shown_field(model, state)
    present = {name for row in shown for name in row.values}
    value_fields = [name for name in model.fields if name in present]
    labels = any(row.last_label is not None for row in shown) or model.totals.anomalies > 0
    longest = max((len(row.name) for row in shown), default=12)
    columns = layout(width, value_fields, labels=labels, alerts=alerts, longest=longest)
    titles = Text(" ")
    for column in columns:
        title = column.title
        if column.name == "trend" and field and len(title) + 1 + len(field) <= column.width:
            title = f"{title} {field}"
        titles += Text(" ") + cell(title, column.width, right=column.right, style="bold")
    out = [titles]
    now = model.clock()
    for index, row in enumerate(shown, start=state.top):
        selected = index == state.selected
        stale = row.stale(now, model.stale_after)
        pieces: list[tuple[str, str] | Text] = [(">" if selected else " ", "")]
        for column in columns:
            text, style = _cell_text(row, column, field, now, stale)
            plain = plain_cell(text, column.width, right=column.right)
            pieces.append((" ", ""))
            pieces.append((plain, style) if plain is not None else cell(text, column.width, right=column.right,
                                                                      style=style))
        line = Text.assemble(*pieces, no_wrap=True)
        if stale:
            line.stylize("dim")
        if selected:
            line.stylize("reverse")
        out.append(line)
    if not rows:
        out.append(Text("  (no messages yet)" if not state.filter else f"  (no row matches {state.filter!r})",
                        style="dim"))
    return out


def _cell_text(row: Row, column: Column, field: str | None, now: float, stale: bool) -> tuple[str, str]:
    name = column.name
    if name == "device":
        return middle_cut(row.name, column.width), "bold cyan" if row.by_device else "cyan"
    if name == "messages":
        return f"{row.messages:,}", ""
    if name == "rate":
        return rate_text(row.rate(now)), ""
    if name.startswith("value:"):
        return value_text(row.values.get(name[6:])), ""
    if name == "trend":
        return (sparkline(row.spark(field, column.width)) if field else ""), "green"
    if name == "last":
        return age_text(row.age(now)) + ("!" if stale else ""), "bold red" if stale else ""
    if name == "anomaly":
        return _anomaly_cell(row)
    if name == "alert":
        return _alert_cell(row, now)
    raise ValueError(name)


def footer_line(state: ViewState, rows: int, page: int, width: int, field: str | None = None, *,
                keys: bool = True) -> Text:
    if state.editing:
        return Text.assemble(("filter (Enter keeps, Esc clears): ", "bold"), state.filter, ("█", "blink"))
    first = state.top + 1 if rows else 0
    last = min(state.top + page, rows)
    text = Text(f"rows {first:,}-{last:,} of {rows:,}  sort: {state.sort}  field: {field or '-'}", style="bold")
    if state.filter:
        text.append(f"  filter: {state.filter}", style="bold yellow")
    text.append("  " + (KEYS_HELP if keys else "Ctrl+C quits (stdin is not a terminal: no keys)"), style="dim")
    return text


def detail_lines(model: FleetModel, state: ViewState, width: int, height: int) -> list[Text]:
    """The row's statistics, then its recent messages (newest first) in full."""
    row = model.rows.get(state.detail or "")
    if row is None:
        return [Text(f"{state.detail!r}: no such row", style="red")]
    now = model.clock()
    interval = row.interval()
    out = [Text.assemble((row.name, "bold cyan"), f"  {row.messages:,} messages, {rate_text(row.rate(now))}"
                         f", last {age_text(row.age(now))} ago"
                         + (f", every {interval:.2f} s" if interval is not None else "")
                         + ("  STALE" if row.stale(now, model.stale_after) else "")),
           Text("topics: " + ", ".join(escape_control(topic) for topic in row.topics), style="dim"),
           Text("values: " + ("  ".join(f"{name} {value_text(value)}" for name, value in row.values.items())
                              or "(no numeric field)")),
           Text(f"anomalies: {row.anomalies:,}" + (f" (last {row.last_anomaly})" if row.last_anomaly else "")
                + f"   alerts: {row.alerts:,}"
                + (f" (last {row.last_alert}" + (f", score {row.last_alert_score:.2f}"
                                                 if row.last_alert_score is not None else "") + ")"
                   if row.last_alert else "")
                + (f"   not parsed: {row.not_parsed:,}" if row.not_parsed else "")),
           Text(f"recent messages, newest first ({len(row.recent)} kept):", style="bold")]
    lines: list[Text] = []
    for recent in reversed(row.recent):
        mark = "ALERT " if recent.alert else (f"[{recent.label}] " if recent.label not in (None, "normal") else "")
        block = human_block(recent.message, color=False)
        for number, text in enumerate(block.splitlines()):
            style = "bold magenta" if recent.alert else ("red" if mark else "")
            for piece in _wrap(("  " + mark if number == 0 else "    ") + text, width):
                lines.append(Text(piece, style=style))
    room = max(1, height - len(out))
    state.detail_top = min(state.detail_top, max(0, len(lines) - room))
    return out + lines[state.detail_top:state.detail_top + room]


def _wrap(text: str, width: int, indent: str = "      ") -> list[str]:
    """``text`` in pieces of ``width``; the pieces after the first indented."""
    if len(text) <= width:
        return [text]
    room = max(width - len(indent), 1)
    return [text[:width]] + [indent + text[i:i + room] for i in range(width, len(text), room)]


def redraw_stats(durations: list[float]) -> tuple[float, float]:
    """The median and the longest of the redraw times given (ms)."""
    if not durations:
        return math.nan, math.nan
    ordered = sorted(durations)
    return ordered[len(ordered) // 2] * 1e3, ordered[-1] * 1e3
