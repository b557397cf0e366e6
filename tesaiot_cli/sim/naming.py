"""Fleet naming: device ids derived from one base id, and per-device topics."""

from __future__ import annotations

import re

from tesaiot_cli.errors import ConfigError
from tesaiot_cli.message import level_forbidden_char, validate_topic_name

DEFAULT_DEVICE_ID = "infineon-sensor-01"
DEFAULT_TOPIC = "device/{device_id}/telemetry"
DEVICE_PLACEHOLDER = "{device_id}"
MAX_DEVICES = 1_000_000  # a whole fleet; one process takes a shard of it (--shard)

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


def device_ids(base: str, devices: int, *, start: int = 0, stop: int | None = None) -> list[str]:
    """The ids of ``devices`` devices derived from ``base`` (only those with index
    ``start`` to ``stop`` - 1, when given: a shard, without building the whole fleet's).

    One device keeps ``base`` as it is. For a fleet, a trailing number in ``base`` is
    counted up, zero-padded to its own width or the width the last number needs
    (``infineon-sensor-01`` -> ``-01`` ... ``-12``; ``dev-7`` x 3 -> ``dev-7``, ``dev-8``,
    ``dev-9``); without one, ``-01``, ``-02``... (at least 2 digits) is appended.
    Raises :class:`ConfigError`.
    """
    check_device_id(base)
    if devices < 1 or devices > MAX_DEVICES:
        raise ConfigError(f"invalid --devices {devices}: use 1 to {MAX_DEVICES}")
    if devices == 1:
        return [base]
    match = _TRAILING_NUMBER.match(base)
    if match:
        stem, digits = match.group(1), match.group(2)
        first = int(digits)
        width = max(len(digits), len(str(first + devices - 1)))
    else:
        stem, first = f"{base}-", 1
        width = max(2, len(str(devices)))
    end = devices if stop is None else min(stop, devices)
    return [f"{stem}{number:0{width}d}" for number in range(first + start, first + end)]


def check_device_id(device_id: str) -> str:
    """A device id must be a non-empty single topic level. Raises :class:`ConfigError`."""
    if not device_id or not device_id.strip():
        raise ConfigError("invalid device id '': it cannot be empty")
    bad = level_forbidden_char(device_id)
    if bad is not None:
        raise ConfigError(f"invalid device id {device_id!r}: it cannot contain {bad!r} (it is a topic level)")
    return device_id


def topic_for(template: str, device_id: str) -> str:
    """The topic of one device: ``{device_id}`` in ``template`` is replaced by its id.

    Raises :class:`ConfigError` when the result is not a valid topic name.
    """
    return validate_topic_name(template.replace(DEVICE_PLACEHOLDER, device_id))


def fleet_topics(template: str, ids: list[str]) -> list[str]:
    """Per-device topics; a fleet's template must contain ``{device_id}`` (distinct topics).

    Raises :class:`ConfigError`.
    """
    if len(ids) > 1 and DEVICE_PLACEHOLDER not in template:
        raise ConfigError(
            f"with several devices the topic must contain {DEVICE_PLACEHOLDER} so each device has its own "
            f"topic (got {template!r}; default {DEFAULT_TOPIC!r})"
        )
    return [topic_for(template, device_id) for device_id in ids]


def parse_shard(text: str, devices: int) -> tuple[int, int]:
    """``K/M`` -> (K, M): shard K of M (numbered from 1) of a fleet of ``devices``.

    Raises :class:`ConfigError` for anything else, K outside 1..M, or more shards than devices.
    """
    shard_text, slash, shards_text = text.strip().partition("/")
    try:
        shard, shards = int(shard_text), int(shards_text)
    except ValueError:
        shard = shards = -1
    if not slash or shard < 0 or shards < 0:
        raise ConfigError(f"invalid --shard {text!r}: use K/M, e.g. 2/4 (shard K of M, numbered from 1)")
    if shards < 1:
        raise ConfigError(f"invalid --shard {text!r}: M (the number of shards) must be at least 1")
    if not 1 <= shard <= shards:
        raise ConfigError(f"invalid --shard {text!r}: shards are numbered from 1: use 1/{shards} to {shards}/{shards}")
    if shards > devices:
        raise ConfigError(f"invalid --shard {text!r}: a fleet of {devices} device{'s' if devices > 1 else ''} "
                          f"splits into at most {devices} shards (give --devices N for the whole fleet)")
    return shard, shards


def shard_range(devices: int, shard: int, shards: int) -> range:
    """The device indices (0-based, of the whole fleet) of shard ``shard`` (1-based) of
    ``shards``: consecutive blocks whose sizes differ by at most one, together the fleet."""
    return range((shard - 1) * devices // shards, shard * devices // shards)
