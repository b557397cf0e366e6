"""Ground-truth recordings made offline with the simulator's own model (no broker): the
same values, labels and metadata as ``simulate --record`` for the same seed and options,
with times on an exact schedule (packet k of device d at start + k*interval + d*interval/N)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tesaiot_cli.recording import RecordingMetadata, open_writer
from tesaiot_cli.sim.dps368 import EPISODE_PACKETS, DPS368Device, DPS368Model, parse_kinds, planned_dropouts
from tesaiot_cli.sim.naming import device_ids

START_NS = 1_795_000_000_000_000_000


def write_truth(path: Path, *, devices: int = 1, count: int = 300, interval_s: float = 1.0, seed: int = 1,
                anomaly_every: int = 10, kinds: str = "all", profile: str = "realistic",
                device_id: str = "infineon-sensor-01", start_ns: int = START_NS) -> dict[str, Any]:
    """Write the truth file; returns its metadata ``extra`` (with the dropouts)."""
    ids = device_ids(device_id, devices)
    kind_list = parse_kinds([kinds])
    fleet = [DPS368Device(did, DPS368Model(seed=seed, device_index=i, anomaly_every=anomaly_every, kinds=kind_list,
                                            profile=profile, step_s=interval_s), device_index=i)
             for i, did in enumerate(ids)]
    extra: dict[str, Any] = {
        "sensor_type": "DPS368", "devices": devices, "device_ids": ids, "topic": "device/{device_id}/telemetry",
        "interval_s": interval_s, "anomaly_every": anomaly_every, "anomaly_kinds": list(kind_list),
        "episode_packets": dict(EPISODE_PACKETS), "profile": profile, "qos": 1, "count": count,
        "duration_s": None, "label_field": False, "packets": count * devices,
        "dropouts": {did: planned_dropouts(seed=seed, device_index=i, anomaly_every=anomaly_every, kinds=kind_list,
                                           packets=count) for i, did in enumerate(ids)},
    }
    metadata = RecordingMetadata(source="simulate", seed=seed, labelled=True, extra=extra)
    step_ns = int(interval_s * 1e9)
    with open_writer(path, metadata=metadata, crash_safe=False) as writer:
        for k in range(count):
            for d, device in enumerate(fleet):
                packet = device.read(start_ns + k * step_ns + d * step_ns // devices)
                if packet.payload is not None:
                    writer.write(_message(ids[d], packet.payload, packet.time_ns), label=packet.label)
    return extra


def _message(device_id: str, payload: bytes, time_ns: int) -> Any:
    from tesaiot_cli.message import Message

    return Message(f"device/{device_id}/telemetry", payload, 1, False, time_ns)
