"""The Numenta Anomaly Benchmark (NAB) corpus read as a labelled recording
(``tesaiot convert --from nab DATA OUT``).

DATA is one NAB CSV (``timestamp,value``) or a directory searched recursively for them.
Each file is one device: ``device_id`` is the file's name without ``.csv``, its topic
``nab/<device_id>`` (``topic_template``). Each row becomes one message whose time is the
row's timestamp (NAB's timestamps carry no zone: UTC) and whose payload is::

    {"timestamp": "2014-04-10 07:15:00", "device_id": "ec2_cpu_utilization_5f5533", "value": 42.5}

``timestamp`` is in NAB's text form (:func:`~tesaiot_cli.recording.truth.stamp_text`: its
CSVs' own, kept as written) and ``value`` is the number exactly as written (a JSON number).
The labels file (NAB's ``labels/combined_windows.json``: per ``<category>/<name>.csv`` its
windows ``[start, end]``, both ends timestamps of rows of that file) becomes the truth: every
row inside a window is labelled ``anomaly``, every other ``normal``, and the windows are kept in
the metadata (:class:`~tesaiot_cli.recording.truth.TruthWindows`, ends as the rows' texts).

The files are merged by time (ties in file order) and each keeps its row order, so the
recording is in time order except where a file itself is not (NAB's
``machine_temperature_system_failure`` goes back an hour once; some files repeat a timestamp).
A file missing from the labels, a window whose ends are not rows of its file, a row that
is not ``timestamp,value`` with a timestamp and a JSON number: :class:`RecordingError`
(convert's writer then leaves nothing behind).
"""

from __future__ import annotations

import csv
import heapq
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson

from tesaiot_cli.errors import ConfigError, RecordingError
from tesaiot_cli.message import Message, validate_topic_name
from tesaiot_cli.recording.model import NORMAL_LABEL, RecordingMetadata
from tesaiot_cli.recording.truth import WINDOW_LABEL, TruthWindows, Window, stamp_ns, stamp_text

NAB_FORMAT = "nab"
DEFAULT_TOPIC_TEMPLATE = "nab/{device_id}"
LABELS_NAME = "combined_windows.json"
_JSON_NUMBER = re.compile(r"^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$")


def find_labels(data: Path) -> Path | None:
    """NAB's layout: ``labels/combined_windows.json`` beside the ``data`` directory that holds DATA."""
    start = data.resolve()
    for folder in [start, *start.parents][:4]:  # DATA may be data/, data/<category>/ or one file
        candidate = folder / "labels" / LABELS_NAME
        if candidate.is_file():
            return candidate
    return None


@dataclass(frozen=True)
class _Series:
    path: Path
    device_id: str
    topic: str
    label_key: str  # the file's key in the labels file
    windows: tuple[tuple[int, int], ...]  # (first, last) ns


def _load_labels(path: Path) -> dict[str, list[tuple[int, int]]]:
    try:
        raw = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise RecordingError(f"cannot read the labels {path}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise RecordingError(f"the labels {path} are not JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise RecordingError(f"the labels {path} are not an object of file -> windows")
    labels: dict[str, list[tuple[int, int]]] = {}
    for key, windows in raw.items():
        if not isinstance(windows, list):
            raise RecordingError(f"the labels {path}: {key}: not a list of windows")
        ends: list[tuple[int, int]] = []
        for window in windows:
            first = stamp_ns(window[0]) if isinstance(window, list) and len(window) == 2 \
                and isinstance(window[0], str) else None
            last = stamp_ns(window[1]) if first is not None and isinstance(window[1], str) else None
            if first is None or last is None or last < first or (ends and first <= ends[-1][1]):
                raise RecordingError(f"the labels {path}: {key}: {window!r} is not a [start, end] window of "
                                     "timestamps after the previous one")
            ends.append((first, last))
        labels[str(key)] = ends
    return labels


class NabReader:
    """A NAB corpus (or part of it) as labelled messages in time order; ``sealed`` is always
    True, ``lost`` always 0 (a bad row raises instead). A context manager."""

    sealed = True
    lost = 0

    def __init__(self, data: Path, *, labels: Path | None = None,
                 topic_template: str = DEFAULT_TOPIC_TEMPLATE) -> None:
        self.path = data
        self.labels = labels
        self.topic_template = topic_template
        self.warnings: list[str] = []
        self.metadata = RecordingMetadata(source="convert")
        self._series: list[_Series] = []

    def open(self) -> NabReader:
        """Find the files, read the labels, build the metadata. Raises :class:`RecordingError`
        (no CSV, unreadable or incomplete labels) or :class:`ConfigError` (bad template)."""
        if "{device_id}" not in self.topic_template:
            raise ConfigError(f"invalid --topic-template {self.topic_template!r}: it must contain {{device_id}}")
        if self.path.is_dir():
            files = sorted(p for p in self.path.rglob("*.csv") if p.is_file())
        elif self.path.is_file():
            files = [self.path]
        else:
            raise RecordingError(f"{self.path} does not exist")
        if not files:
            raise RecordingError(f"{self.path} holds no NAB CSV file (*.csv)")
        labels_path = self.labels or find_labels(self.path)
        if labels_path is None:
            raise RecordingError(f"no {LABELS_NAME} found beside {self.path}: give --labels FILE")
        labels = _load_labels(labels_path)
        by_name: dict[str, list[str]] = {}
        for key in labels:
            by_name.setdefault(key.rsplit("/", 1)[-1], []).append(key)
        seen: dict[str, Path] = {}
        for file in files:
            device_id = file.name[:-len(".csv")]
            if device_id in seen:
                raise RecordingError(f"{file} and {seen[device_id]} would both be device {device_id!r}")
            seen[device_id] = file
            keys = by_name.get(file.name, [])
            if len(keys) > 1:  # the same name in two categories: the category decides
                keys = [k for k in keys if k == f"{file.parent.name}/{file.name}"]
            if len(keys) != 1:
                raise RecordingError(f"{file} is not in the labels {labels_path}: every file needs its windows "
                                     "(an empty list for none)")
            try:
                topic = validate_topic_name(self.topic_template.format(device_id=device_id))
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(f"invalid --topic-template {self.topic_template!r}: {exc}") from None
            self._series.append(_Series(file, device_id, topic, keys[0], tuple(labels[keys[0]])))
        truth = TruthWindows({s.device_id: tuple(Window(stamp_text(a), stamp_text(b)) for a, b in s.windows)
                              for s in self._series}, benchmark=NAB_FORMAT)
        self.metadata = RecordingMetadata(source="convert", labelled=True, extra={
            "converted_from": NAB_FORMAT, **truth.to_extra(),
            "nab_files": {s.device_id: s.label_key for s in self._series},
        })
        return self

    def iter_labelled(self) -> Iterator[tuple[Message, str | None]]:
        """(message, label) of every row of every file, merged by time. Raises
        :class:`RecordingError` on a bad row or a window whose ends are not rows."""
        streams = [self._rows(order, series) for order, series in enumerate(self._series)]
        for _time_ns, _order, message, label in heapq.merge(*streams):
            yield message, label

    def __iter__(self) -> Iterator[Message]:
        for message, _label in self.iter_labelled():
            yield message

    def _rows(self, order: int, series: _Series) -> Iterator[tuple[int, int, Message, str]]:
        prefix = b'{"timestamp": "'
        middle = b'", "device_id": ' + orjson.dumps(series.device_id) + b', "value": '
        windows = series.windows
        window = 0  # the next window not yet left
        inside = False
        where = str(series.path)
        try:
            handle = open(series.path, newline="", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as exc:
            raise RecordingError(f"cannot read {series.path}: {exc.strerror or exc}") from None
        with handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                if header is None or [c.strip() for c in header] != ["timestamp", "value"]:
                    raise RecordingError(f"{where} line 1: not the NAB header 'timestamp,value'")
                for row in reader:
                    if len(row) != 2:
                        raise RecordingError(f"{where} line {reader.line_num}: not 'timestamp,value'")
                    stamp, value = row[0].strip(), row[1].strip()
                    time_ns = stamp_ns(stamp)
                    if time_ns is None:
                        raise RecordingError(f"{where} line {reader.line_num}: {stamp[:40]!r} is not a "
                                             "YYYY-MM-DD HH:MM:SS timestamp")
                    if not _JSON_NUMBER.match(value):
                        raise RecordingError(f"{where} line {reader.line_num}: the value {value[:40]!r} is not "
                                             "a number as JSON writes one")
                    # As NAB reads a window: from the first row at its start to the next row at its
                    # end, in file order (NAB's timestamps may repeat, and once go back an hour).
                    if not inside and window < len(windows) and time_ns == windows[window][0]:
                        inside = True
                    label = WINDOW_LABEL if inside else NORMAL_LABEL
                    if inside and time_ns == windows[window][1]:
                        inside, window = False, window + 1
                    if len(stamp) != 19 or stamp[10] != " ":
                        stamp = stamp_text(time_ns)  # one text form for rows, windows and alerts
                    payload = b"".join((prefix, stamp.encode(), middle, value.encode(), b"}"))
                    yield time_ns, order, Message(series.topic, payload, 0, False, time_ns), label
            except csv.Error as exc:
                raise RecordingError(f"{where} line {reader.line_num}: not CSV ({exc})") from None
        if window < len(windows):
            raise self._not_rows(series, window)

    @staticmethod
    def _not_rows(series: _Series, window: int) -> RecordingError:
        first, last = series.windows[window]
        return RecordingError(f"{series.path}: the window [{stamp_text(first)}, {stamp_text(last)}] of the labels: "
                              "its ends are not rows of the file")

    def close(self) -> None:
        pass

    def __enter__(self) -> NabReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

