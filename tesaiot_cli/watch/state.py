"""What the keys of ``tesaiot watch`` do: the sort, the filter being typed, the sparkline's
field, pause, the selected row and scrolling, the detail view. Pure: key names in, state out.

Keys arrive as the bytes a terminal sends (:func:`decode_keys` turns escape sequences into
names: ``up``, ``down``, ``pageup``, ``pagedown``, ``home``, ``end``, ``enter``, ``esc``,
``backspace``; any other key is its character).
"""

from __future__ import annotations

from tesaiot_cli.watch.model import SORTS

_SEQUENCES = {
    "[A": "up", "[B": "down", "OA": "up", "OB": "down", "[5~": "pageup", "[6~": "pagedown",
    "[H": "home", "[F": "end", "OH": "home", "OF": "end", "[1~": "home", "[4~": "end", "[7~": "home", "[8~": "end",
    "[C": "right", "[D": "left", "OC": "right", "OD": "left",
}


def decode_keys(text: str) -> list[str]:
    """The keys in what the terminal sent (several may come at once)."""
    keys: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\x1b":
            if index + 1 >= len(text) or text[index + 1] not in "[O":
                keys.append("esc")
                index += 1
                continue
            end = index + 2
            if text[index + 1] == "[":  # CSI: parameters, then one final byte in @..~
                while end < len(text) and not ("@" <= text[end] <= "~"):
                    end += 1
            sequence = text[index + 1:end + 1]
            keys.append(_SEQUENCES.get(sequence, "unknown"))
            index = end + 1
            continue
        if char in "\r\n":
            keys.append("enter")
        elif char in "\x7f\x08":
            keys.append("backspace")
        else:
            keys.append(char)
        index += 1
    return keys


class ViewState:
    """The screen's state. ``selected`` is the index of the highlighted row in the rows as
    shown; ``top`` the first row on screen; ``detail`` the key of the row whose recent messages
    are shown (None: the table); ``editing`` while a filter is typed after ``/``."""

    def __init__(self) -> None:
        self.sort = SORTS[0]
        self.filter = ""
        self.editing = False
        self.field: str | None = None  # None: the first field the fleet has
        self.paused = False
        self.selected = 0
        self.top = 0
        self.selected_key: str | None = None
        self.detail: str | None = None
        self.detail_top = 0
        self.quit = False

    def handle(self, key: str, *, fields: list[str], rows: list[str], page: int) -> None:
        """Apply one key. ``fields``: the field names the picker cycles through; ``rows``: the
        keys of the table's rows in the order shown; ``page``: how many fit on the screen."""
        if self.editing:
            self._edit(key)
            return
        if key in ("q", "Q"):
            self.quit = True
        elif self.detail is not None:
            self._detail_key(key, page)
        elif key == "/":
            self.editing = True
        elif key == "esc":
            self.filter = ""
        elif key == "s":
            self.sort = SORTS[(SORTS.index(self.sort) + 1) % len(SORTS)]
        elif key == "f":
            self.field = next_field(self.field, fields)
        elif key == "p":
            self.paused = not self.paused
        elif key == "enter":
            if rows:
                self.detail = rows[max(0, min(self.selected, len(rows) - 1))]
                self.detail_top = 0
        else:
            moves = {"up": -1, "down": 1, "pageup": -max(page, 1), "pagedown": max(page, 1),
                     "home": -len(rows), "end": len(rows)}
            if key in moves and rows:
                self.selected = max(0, min(len(rows) - 1, self.selected + moves[key]))
                self.selected_key = rows[self.selected]

    def _edit(self, key: str) -> None:
        if key == "enter":
            self.editing = False
        elif key == "esc":
            self.editing = False
            self.filter = ""
        elif key == "backspace":
            self.filter = self.filter[:-1]
        elif len(key) == 1 and key.isprintable():
            self.filter += key
        self.selected = 0
        self.top = 0

    def _detail_key(self, key: str, page: int) -> None:
        if key in ("esc", "enter", "backspace", "left"):
            self.detail = None
        elif key == "p":
            self.paused = not self.paused
        else:
            moves = {"up": -1, "down": 1, "pageup": -max(page, 1), "pagedown": max(page, 1), "home": -10**9}
            if key in moves:
                self.detail_top = max(0, self.detail_top + moves[key])

    def place(self, keys: list[str], page: int) -> None:
        """Keep the selection on its row when the order changes, and on screen: ``keys`` are
        the rows' keys as shown now, ``page`` how many rows fit."""
        if self.selected_key is not None and self.selected_key in keys:
            self.selected = keys.index(self.selected_key)
        self.selected = max(0, min(self.selected, len(keys) - 1))
        if self.selected_key is not None:  # a row chosen with the keys: followed when it moves
            self.selected_key = keys[self.selected] if keys else None
        page = max(page, 1)
        if self.selected < self.top:
            self.top = self.selected
        elif self.selected >= self.top + page:
            self.top = self.selected - page + 1
        self.top = max(0, min(self.top, max(len(keys) - page, 0)))


def next_field(current: str | None, fields: list[str]) -> str | None:
    """The field after ``current`` in ``fields`` (cycling; the first when none is chosen)."""
    if not fields:
        return None
    if current not in fields:
        return fields[1] if current is None and len(fields) > 1 else fields[0]
    return fields[(fields.index(current) + 1) % len(fields)]
