"""The options of ``tesaiot simulate``, checked and completed (pure: no I/O).

Precedence: flag > environment > ``.env`` > default. The caller passes the merged
environment (``.env`` values under the real environment); the upstream simulator's
names DEVICE_ID, MQTT_TOPIC, PUBLISH_INTERVAL and ANOMALY_INTERVAL are read here.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.sim.dps368 import UPSTREAM_KINDS, check_anomaly_every, check_profile, parse_kinds
from tesaiot_cli.sim.naming import DEFAULT_DEVICE_ID, DEFAULT_TOPIC, MAX_DEVICES, parse_shard, shard_range

if TYPE_CHECKING:
    from tesaiot_cli.config import ConnectionSettings

# Below this interval (or for a fleet) a live status line replaces the per-packet lines.
PER_PACKET_MIN_INTERVAL_S = 0.2
# Unacknowledged packets kept by default (in flight, or queued while disconnected): about
# this many seconds of packets, within these bounds. A flat-out run keeps fewer: with paho's
# in-flight limit equal to the window, every acknowledgement costs O(window) (measured: a
# window of 100 publishes about twice as fast as 1000 at QoS 1 on loopback).
QUEUE_SECONDS = 60.0
QUEUE_MIN, QUEUE_MAX = 1000, 10_000
QUEUE_FLAT_OUT = 100
# --connections per-device: --queue is per device; by default QUEUE_SECONDS of its packets, within these.
PER_DEVICE_QUEUE_MIN, PER_DEVICE_QUEUE_MAX = 10, 1000
DEFAULT_CONNECT_RATE = 100.0  # per-device connects per second: emqtt-bench's default pace (one per 10 ms)
SEED_LIMIT = 2**31


@dataclass(frozen=True)
class SimOptions:
    """The simulator's options, resolved: flag > environment > .env > default.

    ``devices`` is how many devices this process simulates; with ``--shard K/M`` that is
    shard K of a fleet of ``fleet_devices``, whose first device has index ``first_index``.
    """

    device_id: str
    devices: int
    topic: str
    interval_s: float
    anomaly_every: int
    kinds: tuple[str, ...]
    profile: str
    seed: int
    seed_given: bool
    count: int | None
    duration_s: float | None
    qos: int
    label_field: bool
    queue: int
    shard: tuple[int, int] | None = None
    queue_given: int | None = None  # --queue as given (None: the default was chosen)
    fleet_devices: int = 0
    first_index: int = 0
    sequence: bool = False  # --sequence: "seq" and "boot" in every payload

    @property
    def fleet_size(self) -> int:
        """Devices in the whole fleet (all shards)."""
        return self.fleet_devices or self.devices

    @property
    def slot_s(self) -> float:
        return self.interval_s / self.devices

    @property
    def per_packet_lines(self) -> bool:
        return self.devices == 1 and self.interval_s >= PER_PACKET_MIN_INTERVAL_S


def _env_number(env: Mapping[str, str], name: str, kind: type) -> Any:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"invalid {name} {text!r}: it must be {what}") from None


def resolve_options(
    env: Mapping[str, str],
    *,
    device_id: str | None = None,
    devices: int = 1,
    topic: str | None = None,
    interval: float | None = None,
    anomaly_every: int | None = None,
    anomaly_kinds: str | None = None,
    profile: str = "upstream",
    seed: int | None = None,
    count: int | None = None,
    duration: float | None = None,
    qos: int = 1,
    label: bool = False,
    queue: int | None = None,
    shard: str | None = None,
    sequence: bool = False,
) -> SimOptions:
    """Check and complete the options; upstream env names DEVICE_ID, MQTT_TOPIC,
    PUBLISH_INTERVAL and ANOMALY_INTERVAL fill what no flag gave. Raises :class:`ConfigError`."""
    base_id = device_id if device_id is not None else (env.get("DEVICE_ID") or DEFAULT_DEVICE_ID)
    if devices < 1 or devices > MAX_DEVICES:
        raise ConfigError(f"invalid --devices {devices}: use 1 to {MAX_DEVICES}")
    if topic is None:
        topic = env.get("MQTT_TOPIC") or DEFAULT_TOPIC
        if "+" in topic or "#" in topic:
            raise ConfigError(
                f"MQTT_TOPIC={topic!r} is a topic filter (as listen and record use it), but simulate needs a "
                "topic to publish to: give --topic (default device/{device_id}/telemetry)"
            )
    if interval is None:
        interval = _env_number(env, "PUBLISH_INTERVAL", float)
    interval_s = 1.0 if interval is None else float(interval)
    if not math.isfinite(interval_s) or interval_s < 0:
        raise ConfigError(f"invalid interval {interval}: use 0 (as fast as possible) or a positive number of seconds")
    if anomaly_every is None:
        anomaly_every = _env_number(env, "ANOMALY_INTERVAL", int)
    every = check_anomaly_every(10 if anomaly_every is None else anomaly_every)
    kinds = parse_kinds(anomaly_kinds) if anomaly_kinds is not None else UPSTREAM_KINDS
    if count is not None and count < 1:
        raise ConfigError(f"invalid --count {count}: it must be at least 1")
    if duration is not None and (not math.isfinite(duration) or duration <= 0):
        raise ConfigError(f"invalid --duration {duration}: it must be a positive number of seconds")
    if interval_s == 0 and count is None and duration is None:
        raise ConfigError("--interval 0 (as fast as possible) needs --count or --duration")
    if qos not in (0, 1, 2):
        raise ConfigError(f"invalid --qos {qos}: use 0, 1 or 2")
    if queue is not None and queue < 1:
        raise ConfigError(f"invalid --queue {queue}: it must be at least 1")
    fleet_devices, first_index, shard_pair = devices, 0, None
    if shard is not None:
        shard_pair = parse_shard(shard, devices)
        indices = shard_range(devices, *shard_pair)
        devices, first_index = len(indices), indices.start
    slot_s = interval_s / devices
    if slot_s == 0:
        auto_queue = QUEUE_FLAT_OUT
    else:
        auto_queue = int(min(QUEUE_MAX, max(QUEUE_MIN, math.ceil(QUEUE_SECONDS / slot_s))))
    return SimOptions(
        device_id=base_id, devices=devices, topic=topic, interval_s=interval_s, anomaly_every=every, kinds=kinds,
        profile=check_profile(profile), seed=seed if seed is not None else secrets.randbelow(SEED_LIMIT),
        seed_given=seed is not None, count=count, duration_s=duration, qos=qos, label_field=label,
        queue=queue if queue is not None else auto_queue, queue_given=queue, shard=shard_pair,
        fleet_devices=fleet_devices, first_index=first_index, sequence=sequence,
    )


@dataclass(frozen=True)
class LinkOptions:
    """``--connections per-device``: each device's settings, the connect rate, the per-device queue."""

    settings: list[ConnectionSettings]
    connect_rate: float
    queue: int


def link_options(opts: SimOptions, settings: ConnectionSettings, env: Mapping[str, str], *, connections: str,
                 connect_rate: float | None, client_id: str | None, username_template: str | None,
                 password_template: str | None, password_file: Path | None,
                 cert_dir: Path | None) -> LinkOptions | None:
    """Check the per-device options; None for one shared connection. Raises ConfigError."""
    mode = connections.strip().lower()
    if mode not in ("shared", "per-device"):
        raise ConfigError(f"invalid --connections {connections!r}: use shared or per-device")
    password_template = password_template or env.get("TESAIOT_PASSWORD_TEMPLATE") or None
    given = [name for name, value in (("--connect-rate", connect_rate), ("--username-template", username_template),
                                      ("--password-template", password_template),
                                      ("--password-file", password_file), ("--cert-dir", cert_dir))
             if value is not None]
    if mode == "shared":
        if given:
            raise ConfigError(f"{given[0]} goes with --connections per-device")
        return None
    if opts.interval_s == 0:
        raise ConfigError("--connections per-device needs a schedule: give --interval SECONDS (not 0)")
    from tesaiot_cli.config import Secret
    from tesaiot_cli.sim.credentials import device_settings
    from tesaiot_cli.sim.naming import device_ids

    rate = DEFAULT_CONNECT_RATE if connect_rate is None else connect_rate
    if not math.isfinite(rate) or rate <= 0:
        raise ConfigError(f"invalid --connect-rate {connect_rate}: it must be a positive number of connects per second")
    ids = device_ids(opts.device_id, opts.fleet_size, start=opts.first_index, stop=opts.first_index + opts.devices)
    per_device = device_settings(
        settings, ids, first_number=opts.first_index + 1, client_id=client_id or env.get("MQTT_CLIENT_ID") or None,
        username_template=username_template,
        password_template=Secret(password_template) if password_template is not None else None,
        password_file=password_file, cert_dir=cert_dir)
    # --queue is per device here; by default about QUEUE_SECONDS of each device's packets.
    queue = opts.queue_given or int(min(PER_DEVICE_QUEUE_MAX, max(PER_DEVICE_QUEUE_MIN,
                                                                  math.ceil(QUEUE_SECONDS / opts.interval_s))))
    return LinkOptions(per_device, rate, queue)


_SECRET_FLAGS = ("--password", "--token", "--password-template")
_USERINFO = re.compile(r"://[^/@]*@")


def safe_argv(argv: list[str]) -> list[str]:
    """The command line with secrets masked: password and token values, URL credentials."""
    safe: list[str] = []
    mask_next = False
    for arg in argv:
        if mask_next:
            safe.append("****")
            mask_next = False
            continue
        name, eq, _value = arg.partition("=")
        if name in _SECRET_FLAGS:
            if eq:
                safe.append(f"{name}=****")
            else:
                safe.append(arg)
                mask_next = True
            continue
        safe.append(_USERINFO.sub("://****@", arg))
    return safe
