"""What ``tesaiot simulate`` shows: per-packet lines, the live status line, the summary.

Pure functions that build strings; the command writes them.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from tesaiot_cli.sim.dps368 import NORMAL, Packet
from tesaiot_cli.textfmt import paint, plural

if TYPE_CHECKING:
    from tesaiot_cli.config import ConnectionSettings
    from tesaiot_cli.mqtt.per_device import DeviceCounts
    from tesaiot_cli.sim.options import SimOptions


def packet_line(packet: Packet, *, sent: bool, pressure_decimals: int = 2, color: bool = False,
                device_id: str | None = None) -> str:
    """Upstream's console line: ``[HH:MM:SS UTC] [NORMAL] Published: Pressure=1013.25 hPa,
    Temperature=25.10 °C``; anomalies as ``[ANOMALY] (kind)``. The packet's time in UTC,
    like its payload's timestamp and ``listen``."""
    clock = time.strftime("%H:%M:%S UTC", time.gmtime(packet.time_ns // 1_000_000_000))
    if packet.label == NORMAL:
        tag = paint("[NORMAL]", "normal", color)
    else:
        tag = paint("[ANOMALY]", "anomaly", color) + f" ({packet.label})"
    who = f" {device_id}" if device_id else ""
    if packet.payload is None:
        return f"[{clock}]{who} {tag} Not sent: packet {packet.packet} left out on purpose"
    verb = "Published" if sent else "Not sent (queue full)"
    return (
        f"[{clock}]{who} {tag} {verb}: Pressure={packet.pressure:.{pressure_decimals}f} hPa, "
        f"Temperature={packet.temperature:.2f} °C"
    )


def status_line(*, sent: int, acknowledged: int, queued: int, onsets: int, dropped: int, rate: float,
                elapsed_s: float, devices: int, connected: bool, qos: int, queue: int,
                links: tuple[int, int, int] | None = None) -> str:
    """The live status: elapsed time, rate, sent, acknowledged (QoS 0: written), queued
    (published, not yet acknowledged or written), anomaly onsets, dropped, and the
    connection when it is down; ``links``: (connected, connecting, failed) devices with
    ``--connections per-device``."""
    done = "acked" if qos > 0 else "written"
    parts = [f"{elapsed_s:7.1f} s"]
    if links is None and not connected:  # early in the line: a narrow terminal cuts the end
        parts.append("DISCONNECTED (queueing)" if qos > 0 else "DISCONNECTED (QoS 0: dropping)")
    parts += [
        f"{rate:9,.1f} msg/s",
        f"sent {sent:,}",
        f"{done} {acknowledged:,}",
        f"queued {queued:,}/{queue:,}",
        f"anomaly onsets {onsets:,}",
    ]
    if dropped:
        parts.append(f"dropped {dropped:,}")
    if devices > 1:
        parts.append(f"{devices:,} devices")
    if links is not None:
        up, connecting, failed = links
        parts.append(f"connected {up:,}" + (f"  connecting {connecting:,}" if connecting else "")
                     + (f"  failed {failed:,}" if failed else ""))
    return "  ".join(parts)


def undelivered_lines(*, dropped: int, failed: int, failed_reasons: Mapping[str, int], qos: int, queue: int,
                      dropped_slow: int, dropped_offline: int, stopped_by: str | None, drained: str,
                      drain_timeout_s: float, acknowledged_rate: float, scheduled_rate: float | None) -> list[str]:
    """The closing warning when packets were not delivered, with a hint that fits each
    cause: the broker or the link slower than the schedule, the broker unreachable, the
    wait at the end cut short (Ctrl+C) or timed out, refusals (MQTT 5 reason codes)."""
    reasons = ", ".join(f"{why} {n}" for why, n in failed_reasons.items())
    lines = [f"{plural(dropped + failed, 'packet')} were not delivered ({dropped} dropped, {failed} refused"
             + (f": {reasons}" if reasons else "") + ")"]
    done = "acknowledged" if qos > 0 else "written"
    if dropped_slow:
        pace = (f" ({acknowledged_rate:,.0f}/s {done} against {scheduled_rate:,.0f}/s scheduled)"
                if scheduled_rate else "")
        lines.append(f"{dropped_slow} dropped while connected: the broker or the link took packets more slowly "
                     f"than the schedule{pace}; publish less (--interval, --devices) or check the link "
                     "(a larger --queue only delays the drops)")
    if dropped_offline:
        if qos > 0:
            lines.append(f"{dropped_offline} dropped while the broker was unreachable: --queue (now {queue}) "
                         "keeps more until it is back")
        else:
            lines.append(f"{dropped_offline} dropped while the broker was unreachable: QoS 0 packets are not "
                         "queued while disconnected (--qos 1 queues up to --queue packets)")
    at_end = dropped - dropped_slow - dropped_offline
    if at_end > 0:
        if drained == "interrupted":
            lines.append(f"{at_end} still unacknowledged when a second Ctrl+C cut the final wait short")
        elif drained == "timeout":
            lines.append(f"{at_end} still unacknowledged {drain_timeout_s:g} s after the end"
                         + (f" ({stopped_by})" if stopped_by else "") + ": the broker or the link is slow or gone")
        else:
            lines.append(f"{at_end} lost when the connection closed")
    return lines


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
        f"stopped ({stopped_by}) after {elapsed_s:.1f} s: {plural(sent, 'packet')} published ({rate:.1f} msg/s), "
        f"{completed:,} {done}, {failed:,} failed, {dropped:,} dropped",
    ]
    total_onsets = sum(onsets.values())
    anomaly_text = f"anomaly onsets: {total_onsets}"
    if total_onsets:
        anomaly_text += f" ({kinds_text(onsets)})"
        anomalous = sum(n for kind, n in labelled.items() if kind != NORMAL)
        if anomalous != total_onsets:
            anomaly_text += f"; {anomalous} anomalous packets"
    left_out = labelled.get("dropout", 0)
    if left_out:
        anomaly_text += f"; {plural(left_out, 'packet')} left out on purpose (dropout)"
    lines.append(anomaly_text)
    if disconnects or reconnects:
        lines.append(f"connection lost {disconnects} time(s), reconnected {reconnects} time(s)")
    if interval_s > 0 and sent:
        lines.append(
            f"schedule: last packet {last_lateness_s * 1000:.1f} ms after its due time "
            f"(at most {max_lateness_s * 1000:.1f} ms late)"
        )
    return lines


def banner_lines(opts: SimOptions, settings: ConnectionSettings, ids: Sequence[str], topics: Sequence[str], *,
                 per_device: bool = False) -> list[str]:
    """What runs where: the devices, the broker, the topic, the pace, the anomalies, the seed."""
    who = ids[0] if len(ids) == 1 else f"{ids[0]} .. {ids[-1]}"
    where = topics[0] if len(topics) == 1 else opts.topic
    pace = "as fast as possible" if opts.interval_s == 0 else f"every {opts.interval_s:g} s"
    anomalies = (f"anomaly every {opts.anomaly_every} packets ({', '.join(opts.kinds)})" if opts.anomaly_every
                 else "no anomalies")
    seed = f"seed {opts.seed}" + ("" if opts.seed_given else f" (repeat this run with --seed {opts.seed})")
    shard = "" if opts.shard is None else f", shard {opts.shard[0]}/{opts.shard[1]} of a {opts.fleet_size}-device fleet"
    where_to = (f"{settings.url.display()}, one connection per device" if per_device else settings.describe())
    return [
        f"simulating {len(ids)} DPS368 device{'s' if len(ids) > 1 else ''} ({who}{shard}) on {where_to}",
        f"topic {where}, {pace}, {anomalies}, profile {opts.profile}, QoS {opts.qos}, {seed}",
    ]


def device_lines(counts: Sequence[DeviceCounts], connect_times: Sequence[float], *, qos: int) -> list[str]:
    """Per-device summary: connections, connect times, and the devices that lost packets."""
    times = sorted(connect_times)
    connected = sum(1 for c in counts if c.connects)
    lines = [f"devices: {connected} of {len(counts)} connected at least once, "
             f"{sum(c.disconnects for c in counts)} connections lost, "
             f"{sum(max(c.connects - 1, 0) for c in counts)} reconnects"]
    if times:
        def at(q: float) -> float:
            return times[min(len(times) - 1, int(q * len(times)))]
        lines.append(f"connect time (attempt to CONNACK) p50 {at(0.5) * 1000:.1f} ms, p99 {at(0.99) * 1000:.1f} ms, "
                     f"max {times[-1] * 1000:.1f} ms")
    lossy = [c for c in counts if c.dropped or c.failed or c.sent != c.acknowledged]
    if lossy:
        lines.append(f"{len(lossy)} device(s) with packets not {'acknowledged' if qos else 'written'} "
                     "(sent / acknowledged / failed / dropped):")
        for c in lossy[:10]:
            why = f" -- {c.last_error}" if c.last_error and not c.connects else ""
            lines.append(f"  {c.device_id} ({c.client_id}): {c.sent} / {c.acknowledged} / {c.failed} / "
                         f"{c.dropped}{why}")
        if len(lossy) > 10:
            lines.append(f"  ... and {len(lossy) - 10} more")
    else:
        lines.append("every device: every packet sent was " + ("acknowledged" if qos else "written (QoS 0)"))
    return lines
