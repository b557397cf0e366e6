"""The Infineon XENSIV DPS368 sensor model: pure and seeded, with anomaly injection.

No MQTT and no clock in here: :meth:`DPS368Device.read` takes the time (ns since the
Unix epoch, UTC) and returns the packet, its ground-truth label and the payload bytes.

Each device draws from three random streams derived from ``(seed, device index)``:
the signal, the anomaly kinds, and the anomaly magnitudes. So the same seed gives the
same values and kinds, device 0 of a fleet is the same as a lone device, and the
normal values do not depend on the anomaly settings: a run with ``anomaly_every=0`` is
the clean version of the same run with anomalies.

The payload is byte-identical to the upstream simulator's ``json.dumps`` output
(``", "`` and ``": "`` separators, floats as ``repr``), see :func:`encode_payload`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from tesaiot_cli.errors import ConfigError

if TYPE_CHECKING:
    from tesaiot_cli.recording.truth import DropoutPlan

SENSOR_TYPE = "DPS368"
NORMAL = "normal"
UPSTREAM_KINDS: tuple[str, ...] = ("high_temperature", "high_pressure", "both")
EXTRA_KINDS: tuple[str, ...] = ("spike", "stuck", "drift", "dropout")
ALL_KINDS: tuple[str, ...] = UPSTREAM_KINDS + EXTRA_KINDS
PROFILES: tuple[str, ...] = ("upstream", "realistic")

# How many packets the multi-packet kinds last (cut short by the next anomaly onset).
EPISODE_PACKETS: dict[str, int] = {"stuck": 5, "drift": 10, "dropout": 3}

# DPS368 datasheet: measurement ranges and the pressure noise in high-precision mode.
PRESSURE_RANGE_HPA = (300.0, 1200.0)
TEMPERATURE_RANGE_C = (-40.0, 85.0)
PRESSURE_NOISE_HPA = 0.002
# Not a datasheet figure (it gives only the +-0.5 degC accuracy): our assumption.
TEMPERATURE_NOISE_C = 0.01

# upstream profile: independent uniform values, as the upstream simulator.
UPSTREAM_PRESSURE_HPA = (950.0, 1050.0)
UPSTREAM_TEMPERATURE_C = (20.0, 35.0)

_P_LOW, _P_SPAN = UPSTREAM_PRESSURE_HPA[0], UPSTREAM_PRESSURE_HPA[1] - UPSTREAM_PRESSURE_HPA[0]
_T_LOW, _T_SPAN = UPSTREAM_TEMPERATURE_C[0], UPSTREAM_TEMPERATURE_C[1] - UPSTREAM_TEMPERATURE_C[0]

# Offsets of spike and drift (hPa, degC) per profile: (low, high); the sign is random.
# For the upstream profile they exceed the width of the normal range, so the value
# always leaves it; for the realistic profile they are a few times the slow variation.
SPIKE_OFFSETS = {"upstream": ((110.0, 200.0), (20.0, 30.0)), "realistic": ((2.0, 10.0), (3.0, 10.0))}
DRIFT_OFFSETS = {"upstream": ((110.0, 200.0), (20.0, 30.0)), "realistic": ((2.0, 10.0), (2.0, 8.0))}

# Decimals on the wire: upstream rounds both to 2; the realistic profile keeps pressure to
# 3 decimals (0.001 hPa) so the 0.002 hPa datasheet noise stays visible.
DECIMALS = {"upstream": (2, 2), "realistic": (3, 2)}


class Reading(NamedTuple):
    """One sensor reading and its ground truth.

    ``packet`` is the 1-based packet counter; ``label`` is ``normal`` or the anomaly kind;
    ``onset`` is true on the first packet of an anomaly (packets N, 2N, ...); a reading
    labelled ``dropout`` is not sent. Pressure in hPa, temperature in degC, rounded.
    """

    packet: int
    label: str
    onset: bool
    pressure: float
    temperature: float


class Packet(NamedTuple):
    """A reading made into a message body. ``payload`` is None for a ``dropout`` packet."""

    device_index: int
    packet: int
    label: str
    onset: bool
    pressure: float
    temperature: float
    time_ns: int
    payload: bytes | None


def derive_seed(seed: int, device_index: int, stream: str) -> int:
    """A 64-bit seed for one random stream of one device, stable across Python versions."""
    digest = hashlib.sha256(f"tesaiot-dps368:{seed}:{device_index}:{stream}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def parse_kinds(text: str | Sequence[str]) -> tuple[str, ...]:
    """Parse ``--anomaly-kinds``: comma-separated kinds, ``upstream`` or ``all``.

    Returns the kinds in the order given, without repeats. Raises :class:`ConfigError`.
    """
    words = [text] if isinstance(text, str) else list(text)
    kinds: list[str] = []
    for word in (w.strip().lower() for item in words for w in item.split(",")):
        if not word:
            continue
        expanded = {"all": ALL_KINDS, "upstream": UPSTREAM_KINDS}.get(word, (word,))
        for kind in expanded:
            if kind not in ALL_KINDS:
                raise ConfigError(
                    f"unknown anomaly kind {word!r}: use {', '.join(ALL_KINDS)}, upstream or all"
                )
            if kind not in kinds:
                kinds.append(kind)
    if not kinds:
        raise ConfigError("no anomaly kind given: use --anomaly-every 0 for no anomalies")
    return tuple(kinds)


@functools.lru_cache(maxsize=16)
def _parsed_kinds(kinds: tuple[str, ...]) -> tuple[str, ...]:
    return parse_kinds(list(kinds))


def check_profile(profile: str) -> str:
    """Return the profile name, lower case; raise :class:`ConfigError` for an unknown one."""
    name = profile.strip().lower()
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}: use {' or '.join(PROFILES)}")
    return name


def check_anomaly_every(anomaly_every: int) -> int:
    """0 means no anomalies; a negative value raises :class:`ConfigError`."""
    if anomaly_every < 0:
        raise ConfigError(f"invalid anomaly interval {anomaly_every}: use 0 (no anomalies) or a positive N")
    return anomaly_every


class _Realistic:
    """Slowly varying signal: level + slow sinusoid + Ornstein-Uhlenbeck wander + noise.

    Simulated time advances ``step_s`` per packet (not the wall clock), so a seed gives
    the same signal however the publishing was scheduled.
    """

    # (OU standard deviation, OU time constant in s, sinusoid amplitude, period in s)
    PRESSURE = (1.0, 3600.0, 0.5, 12 * 3600.0)  # weather wander and the semi-diurnal tide
    TEMPERATURE = (0.5, 900.0, 0.3, 1200.0)  # room drift and a 20-minute HVAC cycle

    def __init__(self, rng: random.Random, step_s: float) -> None:
        self._rng = rng
        self._step_s = step_s
        self._packets = 0
        self._base = (rng.uniform(985.0, 1030.0), rng.uniform(21.0, 27.0))
        self._phase = (rng.uniform(0.0, math.tau), rng.uniform(0.0, math.tau))
        self._ou = [rng.gauss(0.0, self.PRESSURE[0]), rng.gauss(0.0, self.TEMPERATURE[0])]
        self._decay: list[float] = []
        self._kick: list[float] = []
        for std, tau, _amp, _period in (self.PRESSURE, self.TEMPERATURE):
            decay = math.exp(-step_s / tau)
            self._decay.append(decay)
            self._kick.append(std * math.sqrt(1.0 - decay * decay))

    def sample(self) -> tuple[float, float]:
        rng = self._rng
        now_s = self._packets * self._step_s
        self._packets += 1
        values: list[float] = []
        for channel, (params, noise) in enumerate(((self.PRESSURE, PRESSURE_NOISE_HPA),
                                                    (self.TEMPERATURE, TEMPERATURE_NOISE_C))):
            _std, _tau, amplitude, period = params
            slow = amplitude * math.sin(math.tau * now_s / period + self._phase[channel])
            values.append(self._base[channel] + slow + self._ou[channel] + rng.gauss(0.0, noise))
            self._ou[channel] = self._ou[channel] * self._decay[channel] + self._kick[channel] * rng.gauss(0.0, 1.0)
        return values[0], values[1]


class _Episode:
    """The anomaly in progress: its kind, length, packets done, and what it does to the
    values: ``channel`` (0 pressure, 1 temperature) and ``offset`` for spike and drift (or
    the value for high_*), ``fixed`` (pressure, temperature) for stuck and both."""

    __slots__ = ("kind", "length", "done", "channel", "offset", "fixed")

    def __init__(self, kind: str, length: int, channel: int, offset: float, fixed: tuple[float, float]) -> None:
        self.kind = kind
        self.length = length
        self.done = 0
        self.channel = channel
        self.offset = offset
        self.fixed = fixed


class DPS368Model:
    """The readings of one simulated DPS368 (values and ground-truth labels).

    ``anomaly_every``: an anomaly starts at packets N, 2N, ... (0: never). ``kinds``: the
    kinds to choose from (uniformly). ``step_s``: simulated seconds per packet for the
    realistic profile. Raises :class:`ConfigError` for invalid settings.
    """

    def __init__(
        self,
        *,
        seed: int,
        device_index: int = 0,
        anomaly_every: int = 10,
        kinds: Sequence[str] = UPSTREAM_KINDS,
        profile: str = "upstream",
        step_s: float = 1.0,
    ) -> None:
        self.anomaly_every = check_anomaly_every(anomaly_every)
        # A fleet builds one model per device with the same kinds: parsed once, not 100,000 times.
        self.kinds = _parsed_kinds(tuple(kinds))
        self.profile = check_profile(profile)
        if step_s <= 0 or not math.isfinite(step_s):
            raise ConfigError(f"invalid simulation step {step_s}: it must be a positive number of seconds")
        self._signal_rng = random.Random(derive_seed(seed, device_index, "signal"))
        self._kind_rng = random.Random(derive_seed(seed, device_index, "kind"))
        self._size_rng = random.Random(derive_seed(seed, device_index, "size"))
        self._realistic = _Realistic(self._signal_rng, step_s) if self.profile == "realistic" else None
        self._decimals = DECIMALS[self.profile]
        self._packet = 0
        self._episode: _Episode | None = None
        self._last: tuple[float, float] | None = None

    def _start(self, kind: str, current: tuple[float, float]) -> _Episode:
        rng = self._size_rng
        channel = rng.randrange(2)
        offset = 0.0
        if kind in ("spike", "drift"):
            table = SPIKE_OFFSETS if kind == "spike" else DRIFT_OFFSETS
            low, high = table[self.profile][channel]
            offset = rng.uniform(low, high) * (1.0 if rng.random() < 0.5 else -1.0)
        elif kind == "high_temperature":
            offset = 85.0 + rng.uniform(0.0, 5.0)
        elif kind == "high_pressure":
            offset = 1200.0 + rng.uniform(0.0, 50.0)
        # stuck repeats the last packet sent (the current values when there is none yet).
        fixed = self._last if self._last is not None else current
        if kind == "both":
            fixed = (1200.0 + rng.uniform(0.0, 50.0), 85.0 + rng.uniform(0.0, 5.0))
        return _Episode(kind, EPISODE_PACKETS.get(kind, 1), channel, offset, fixed)

    def next_reading(self) -> Reading:
        """The next packet's reading (the packet counter advances by one)."""
        self._packet += 1
        packet = self._packet
        if self._realistic is None:
            # random.uniform(a, b) is a + (b - a) * random(): the same numbers, one call less.
            uniform = self._signal_rng.random
            pressure = _P_LOW + _P_SPAN * uniform()
            temperature = _T_LOW + _T_SPAN * uniform()
        else:
            pressure, temperature = self._realistic.sample()
        onset = self.anomaly_every > 0 and packet % self.anomaly_every == 0
        if onset:
            kind = self.kinds[self._kind_rng.randrange(len(self.kinds))]
            self._episode = self._start(kind, (pressure, temperature))
        label = NORMAL
        episode = self._episode
        if episode is not None:
            episode.done += 1
            label = episode.kind
            pressure, temperature = _apply(episode, pressure, temperature)
            if episode.done >= episode.length:
                self._episode = None
        decimals = self._decimals
        pressure = round(pressure, decimals[0])
        temperature = round(temperature, decimals[1])
        if label != "dropout":
            self._last = (pressure, temperature)
        return Reading(packet, label, onset, pressure, temperature)


def _apply(episode: _Episode, pressure: float, temperature: float) -> tuple[float, float]:
    kind = episode.kind
    if kind == "high_temperature":
        return pressure, episode.offset
    if kind == "high_pressure":
        return episode.offset, temperature
    if kind in ("both", "stuck"):
        return episode.fixed
    if kind in ("spike", "drift"):
        shift = episode.offset if kind == "spike" else episode.offset * episode.done / episode.length
        values = [pressure, temperature]
        values[episode.channel] += shift
        low, high = (PRESSURE_RANGE_HPA, TEMPERATURE_RANGE_C)[episode.channel]
        values[episode.channel] = min(max(values[episode.channel], low), high)
        return values[0], values[1]
    return pressure, temperature  # dropout: the values are not sent


def planned_dropouts(
    *, seed: int, device_index: int, anomaly_every: int, kinds: Sequence[str], packets: int
) -> list[int]:
    """The packet numbers (1-based, up to ``packets``) a device will not send (``dropout``).

    Computed from the kind stream alone, without simulating the values; matches
    :class:`DPS368Model` exactly.
    """
    if anomaly_every <= 0:
        return []
    choices = parse_kinds(list(kinds))
    rng = random.Random(derive_seed(seed, device_index, "kind"))
    dropped: list[int] = []
    length = EPISODE_PACKETS["dropout"]
    for onset in range(anomaly_every, packets + 1, anomaly_every):
        if choices[rng.randrange(len(choices))] == "dropout":
            dropped.extend(range(onset, min(onset + min(length, anomaly_every), packets + 1)))
    return dropped


def fleet_dropouts(plan: DropoutPlan) -> dict[str, list[int]]:
    """Every device's :func:`planned_dropouts` for the packets it made (``plan`` must be
    :attr:`~DropoutPlan.computable`): the one computation of a run's dropouts, written by
    ``simulate`` into the ground truth and recomputed by ``score`` when it says ``null``."""
    assert plan.seed is not None and plan.device_ids is not None
    return {device_id: planned_dropouts(seed=plan.seed, device_index=plan.first_device_index + offset,
                                        anomaly_every=plan.anomaly_every, kinds=plan.kinds,
                                        packets=plan.packets_of(offset))
            for offset, device_id in enumerate(plan.device_ids)}


class TimestampFormatter:
    """ISO 8601 UTC with microseconds and ``+00:00`` (``2026-11-22T08:24:56.055689+00:00``).

    Always with microseconds (Python's ``isoformat()`` drops them when they are 0). The
    date-and-seconds part is cached, as consecutive packets mostly share it.
    """

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def __call__(self, time_ns: int) -> str:
        second, rest = divmod(time_ns, 1_000_000_000)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{rest // 1000:06d}+00:00"


def encode_payload(
    *, timestamp: str, device_json: str, pressure: float, temperature: float, anomaly: str | None = None,
    label_field: bool = False, seq: int | None = None, boot: int | None = None,
) -> bytes:
    """The DPS368 payload, byte-identical to upstream's ``json.dumps`` of the same dict.

    ``device_json`` is the device id already as a JSON string (:func:`json_string`).
    Floats are written with ``repr``, which is what ``json.dumps`` does. With
    ``label_field`` an ``"anomaly"`` key (null or the kind) is appended; with ``seq``
    (``--sequence``), ``"seq"`` and ``"boot"`` after it.
    """
    tail = ""
    if label_field:
        tail = ', "anomaly": null' if anomaly is None or anomaly == NORMAL else f', "anomaly": "{anomaly}"'
    if seq is not None:
        tail += f', "seq": {seq}' + ("" if boot is None else f', "boot": {boot}')
    return (
        f'{{"timestamp": "{timestamp}", "device_id": {device_json}, "sensor_type": "{SENSOR_TYPE}", '
        f'"data": {{"pressure": {pressure!r}, "temperature": {temperature!r}}}{tail}}}'
    ).encode()


def json_string(text: str) -> str:
    """``text`` as a JSON string literal, escaped exactly as ``json.dumps`` does (ASCII only)."""
    return json.dumps(text)


class DPS368Device:
    """One simulated device: the model plus its id and payload encoding.

    ``label_field`` adds the ``"anomaly"`` key to the payload (``--label``). ``boot``
    (``--sequence``: the run's start, ms since the Unix epoch) adds ``"seq"`` (1, 2, 3...
    for the packets this device sends in this run; dropouts take no number) and ``"boot"``.
    """

    def __init__(self, device_id: str, model: DPS368Model, *, device_index: int = 0,
                 label_field: bool = False, timestamps: TimestampFormatter | None = None,
                 boot: int | None = None) -> None:
        self.device_id = device_id
        self.device_index = device_index
        self.model = model
        self.label_field = label_field
        self.boot = boot
        self.seq = 0  # the last sequence number sent (--sequence)
        self._device_json = json_string(device_id)
        self._timestamps = timestamps or TimestampFormatter()

    def read(self, time_ns: int) -> Packet:
        """The next packet, stamped with ``time_ns`` (ns since the Unix epoch, UTC)."""
        packet, label, onset, pressure, temperature = self.model.next_reading()
        payload = None
        if label != "dropout":
            # encode_payload, inlined: this runs once per packet on the flat-out path.
            tail = ""
            if self.label_field:
                tail = ', "anomaly": null' if label == NORMAL else f', "anomaly": "{label}"'
            if self.boot is not None:
                self.seq += 1
                tail += f', "seq": {self.seq}, "boot": {self.boot}'
            payload = (
                f'{{"timestamp": "{self._timestamps(time_ns)}", "device_id": {self._device_json}, '
                f'"sensor_type": "{SENSOR_TYPE}", "data": {{"pressure": {pressure!r}, '
                f'"temperature": {temperature!r}}}{tail}}}'
            ).encode()
        return Packet(self.device_index, packet, label, onset, pressure, temperature, time_ns, payload)
