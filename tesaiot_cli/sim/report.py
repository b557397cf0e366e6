"""What ``tesaiot simulate`` shows: per-packet lines, the live status line, the summary.

Pure functions that build strings; the command writes them.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping

from tesaiot_cli.sim.dps368 import NORMAL, Packet

_RED = "\x1b[1;31m"
_GREEN = "\x1b[32m"
_RESET = "\x1b[0m"


def packet_line(packet: Packet, *, sent: bool, pressure_decimals: int = 2, color: bool = False,
                device_id: str | None = None) -> str:
    """Upstream's console line: ``[HH:MM:SS] [NORMAL] Published: Pressure=1013.25 hPa,
    Temperature=25.10 °C``; anomalies as ``[ANOMALY] (kind)``. Local time of the packet."""
    clock = time.strftime("%H:%M:%S", time.localtime(packet.time_ns // 1_000_000_000))
    if packet.label == NORMAL:
        tag = _paint("[NORMAL]", _GREEN, color)
    else:
        tag = _paint("[ANOMALY]", _RED, color) + f" ({packet.label})"
    who = f" {device_id}" if device_id else ""
    if packet.payload is None:
        return f"[{clock}]{who} {tag} Not sent: packet {packet.packet} left out on purpose"
    verb = "Published" if sent else "Not sent (queue full)"
    return (
        f"[{clock}]{who} {tag} {verb}: Pressure={packet.pressure:.{pressure_decimals}f} hPa, "
        f"Temperature={packet.temperature:.2f} °C"
    )


def _paint(text: str, style: str, color: bool) -> str:
    return f"{style}{text}{_RESET}" if color else text


def status_line(*, sent: int, acknowledged: int, anomalies: int, dropped: int, rate: float, elapsed_s: float,
                devices: int, connected: bool, links: tuple[int, int, int] | None = None) -> str:
    """The compact live status: rate, sent, acknowledged, anomalies (and trouble, if any).
    ``links``: (connected, connecting, failed) devices with ``--connections per-device``."""
    parts = [
        f"{elapsed_s:7.1f} s",
        f"{rate:9.1f} msg/s",
        f"sent {sent}",
        f"acked {acknowledged}",
        f"anomalies {anomalies}",
    ]
    if dropped:
        parts.append(f"dropped {dropped}")
    if devices > 1:
        parts.append(f"{devices} devices")
    if links is not None:
        up, connecting, failed = links
        parts.append(f"connected {up}" + (f"  connecting {connecting}" if connecting else "")
                     + (f"  failed {failed}" if failed else ""))
    elif not connected:
        parts.append("DISCONNECTED (queueing)")
    return "  ".join(parts)


def kinds_text(counts: Mapping[str, int]) -> str:
    """``high_temperature 4, both 3`` (most frequent first), or ``none``."""
    items = [(kind, n) for kind, n in collections.Counter(counts).most_common() if n and kind != NORMAL]
    return ", ".join(f"{kind} {n}" for kind, n in items) or "none"


def summary_lines(
    *,
    stopped_by: str,
    elapsed_s: float,
    sent: int,
    completed: int,
    failed: int,
    dropped: int,
    qos: int,
    onsets: Mapping[str, int],
    labelled: Mapping[str, int],
    disconnects: int,
    reconnects: int,
    interval_s: float,
    last_lateness_s: float,
    max_lateness_s: float,
) -> list[str]:
    """The shutdown summary (for stderr), one fact per line. Packets refused for lack of
    room in the queue are in ``dropped``; dropouts are counted in ``labelled``."""
    rate = sent / elapsed_s if elapsed_s > 0 else 0.0
    done = "acknowledged by the broker" if qos > 0 else "written to the socket (QoS 0: no acknowledgement)"
    lines = [
        f"stopped ({stopped_by}) after {elapsed_s:.1f} s: {sent} packets published ({rate:.1f} msg/s), "
        f"{completed} {done}, {failed} failed, {dropped} dropped",
    ]
    total_onsets = sum(onsets.values())
    anomaly_text = f"anomalies injected: {total_onsets}"
    if total_onsets:
        anomaly_text += f" ({kinds_text(onsets)})"
        anomalous = sum(n for kind, n in labelled.items() if kind != NORMAL)
        if anomalous != total_onsets:
            anomaly_text += f"; {anomalous} anomalous packets"
    left_out = labelled.get("dropout", 0)
    if left_out:
        anomaly_text += f"; {left_out} packets left out on purpose (dropout)"
    lines.append(anomaly_text)
    if disconnects or reconnects:
        lines.append(f"connection lost {disconnects} time(s), reconnected {reconnects} time(s)")
    if interval_s > 0 and sent:
        lines.append(
            f"schedule: last packet {last_lateness_s * 1000:.1f} ms after its due time "
            f"(at most {max_lateness_s * 1000:.1f} ms late)"
        )
    return lines
