"""What a labelled recording says about its ground truth beyond the per-message labels.

Two kinds of truth live in a recording's metadata (``RecordingMetadata.extra``):

- **dropouts** (``tesaiot simulate --record``): ``extra.dropouts`` maps each device to the
  packet numbers (1-based) it left out on purpose. ``null`` when they were not known in
  advance and the writer had no room to store them at close (a JSONL header): they are then
  recomputed from the seed. :class:`DropoutPlan` is the typed view: the listed numbers, or
  what recomputing them needs (seed, devices, first device index, anomaly pace and kinds,
  packets made). Computing them needs the simulator (``recording`` does not import
  ``sim``): :func:`tesaiot_cli.sim.dps368.fleet_dropouts` is the one computation, used by
  ``simulate`` (writing the plan) and ``score`` (reading it).
- **windows** (``tesaiot convert --from nab``): ``extra.windows`` maps each device to its
  anomaly windows, each ``[first, last]``: the ``timestamp`` texts of the first and the
  last reading inside it (both inclusive), in time order, not overlapping. Every device of
  the recording has an entry (an empty list: a series without anomalies), so a device
  missing from it is not part of the benchmark. ``extra.benchmark`` names where the
  windows come from (``"nab"``). :class:`TruthWindows` is the typed view. Window ends and
  readings' timestamps share one text form, :func:`stamp_text` (NAB's own).

Pure: metadata in, typed values out; raises :class:`RecordingError` for malformed entries.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any

from tesaiot_cli.errors import RecordingError
from tesaiot_cli.recording.model import RecordingMetadata

DROPOUTS_KEY = "dropouts"
DROPOUT_KIND = "dropout"
WINDOWS_KEY = "windows"
BENCHMARK_KEY = "benchmark"
# The label of every reading inside a window (readings outside are NORMAL_LABEL).
WINDOW_LABEL = "anomaly"
_STAMP = re.compile(r"^(\d{4})-(\d\d)-(\d\d)[ T](\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")
_EPOCH = dt.datetime(1970, 1, 1)


def stamp_ns(text: str) -> int | None:
    """``YYYY-MM-DD HH:MM:SS[.ffffff]`` (also with ``T``; no zone: UTC) -> ns since the epoch, or None."""
    if len(text) == 19 and text[13] == ":" and text[16] == ":" and text[11:13].isdigit() \
            and text[14:16].isdigit() and text[17:19].isdigit() and text[10] in " T":
        # NAB's own form, 365,558 times a corpus: the date part parsed once per day.
        day = _day_ns(text[:10])
        hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
        if day is None or hour > 23 or minute > 59 or second > 59:
            return None
        return day + ((hour * 60 + minute) * 60 + second) * 1_000_000_000
    match = _STAMP.match(text)
    if match is None:
        return None
    year, month, day_text, hour_text, minute_text, second_text, fraction = match.groups()
    try:
        moment = dt.datetime(int(year), int(month), int(day_text), int(hour_text), int(minute_text),
                             int(second_text))
    except ValueError:
        return None
    return (moment - _EPOCH) // dt.timedelta(seconds=1) * 1_000_000_000 + int((fraction or "0").ljust(9, "0"))


@functools.lru_cache(maxsize=4096)
def _day_ns(text: str) -> int | None:
    """``YYYY-MM-DD`` -> ns since the epoch at its midnight (UTC), or None."""
    if len(text) != 10 or text[4] != "-" or text[7] != "-" or not (text[:4] + text[5:7] + text[8:]).isdigit():
        return None
    try:
        moment = dt.datetime(int(text[:4]), int(text[5:7]), int(text[8:]))
    except ValueError:
        return None
    return (moment - _EPOCH) // dt.timedelta(seconds=1) * 1_000_000_000


def stamp_text(time_ns: int) -> str:
    """ns -> the timestamp text of NAB's CSVs, ``YYYY-MM-DD HH:MM:SS`` (UTC; ``.ffffff``
    only when the microseconds are not 0)."""
    moment = _EPOCH + dt.timedelta(microseconds=time_ns // 1000)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f" if moment.microsecond else "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Window:
    """One anomaly window of a device: the timestamps (payload text) of its first and last reading."""

    first: str
    last: str


@dataclass(frozen=True)
class TruthWindows:
    """Anomaly windows per device (every device of the recording, in metadata order)."""

    by_device: dict[str, tuple[Window, ...]]
    benchmark: str | None = None

    @property
    def count(self) -> int:
        return sum(len(windows) for windows in self.by_device.values())

    def to_extra(self) -> dict[str, Any]:
        """The entries this truth adds to ``RecordingMetadata.extra``."""
        extra: dict[str, Any] = {WINDOWS_KEY: {device: [[w.first, w.last] for w in windows]
                                               for device, windows in self.by_device.items()}}
        if self.benchmark is not None:
            extra[BENCHMARK_KEY] = self.benchmark
        return extra

    @classmethod
    def of(cls, metadata: RecordingMetadata) -> TruthWindows | None:
        """The windows a recording's metadata holds, or None when it has none.

        Raises :class:`RecordingError` when ``extra.windows`` is not as described above.
        """
        raw = metadata.extra.get(WINDOWS_KEY)
        if raw is None:
            return None
        if not isinstance(raw, dict):
            raise RecordingError("the recording's truth windows (metadata extra.windows) are not an object")
        by_device: dict[str, tuple[Window, ...]] = {}
        for device, windows in raw.items():
            if not isinstance(windows, list) or not all(
                    isinstance(w, list) and len(w) == 2 and all(isinstance(end, str) for end in w) for w in windows):
                raise RecordingError(f"the recording's truth windows for {device!r} are not [first, last] "
                                     "timestamp pairs")
            by_device[str(device)] = tuple(Window(first, last) for first, last in windows)
        benchmark = metadata.extra.get(BENCHMARK_KEY)
        return cls(by_device, benchmark if isinstance(benchmark, str) else None)


@dataclass(frozen=True)
class DropoutPlan:
    """What a simulated recording's metadata says about its dropouts (plain data).

    ``listed``: the packet numbers per device as stored (None: ``null``, to recompute).
    The rest is what recomputing needs: ``packets`` is the packets made by all devices
    (dropouts included), dealt round-robin over ``device_ids`` (device ``i`` made
    :meth:`packets_of` ``(i)``); ``sharded_blind``: a shard of a fleet recorded before the
    first device's index was stored, so its devices' numbers cannot be known.
    """

    listed: dict[str, tuple[int, ...]] | None
    seed: int | None = None
    device_ids: tuple[str, ...] | None = None
    first_device_index: int = 0
    anomaly_every: int = 0
    kinds: tuple[str, ...] = ()
    packets: int | None = None
    sharded_blind: bool = False

    @property
    def possible(self) -> bool:
        """Whether the run could leave packets out at all (the dropout kind, anomalies on)."""
        return DROPOUT_KIND in self.kinds and self.anomaly_every > 0

    @property
    def computable(self) -> bool:
        """Whether the numbers can be recomputed (the seed, the devices and the packets made are known)."""
        return (self.seed is not None and self.device_ids is not None and self.packets is not None
                and not self.sharded_blind)

    def packets_of(self, offset: int) -> int:
        """Packets made by the device at ``offset`` in :attr:`device_ids`."""
        assert self.packets is not None and self.device_ids is not None
        return len(range(offset, self.packets, len(self.device_ids)))

    def trimmed(self, packets: int) -> dict[str, list[int]] | None:
        """The listed numbers cut to the packets each device made of ``packets`` in all."""
        if self.listed is None:
            return None
        made = {device: len(range(offset, packets, len(self.listed))) for offset, device in enumerate(self.listed)}
        return {device: [k for k in numbers if k <= made[device]] for device, numbers in self.listed.items()}

    @classmethod
    def of(cls, metadata: RecordingMetadata) -> DropoutPlan:
        """The plan of a recording's metadata (``extra`` as ``simulate`` writes it; what is
        missing or of another type counts as not known)."""
        extra = metadata.extra
        planned = extra.get(DROPOUTS_KEY)
        listed = ({str(device): tuple(numbers) for device, numbers in planned.items()}
                  if isinstance(planned, dict) else None)
        ids, packets, kinds = extra.get("device_ids"), extra.get("packets"), extra.get("anomaly_kinds") or []
        return cls(listed, seed=metadata.seed,
                   device_ids=tuple(str(d) for d in ids) if isinstance(ids, list) else None,
                   first_device_index=int(extra.get("first_device_index", 0)),
                   anomaly_every=int(extra.get("anomaly_every") or 0),
                   kinds=tuple(str(kind) for kind in kinds),
                   packets=packets if isinstance(packets, int) else None,
                   sharded_blind="shard" in extra and "first_device_index" not in extra)
