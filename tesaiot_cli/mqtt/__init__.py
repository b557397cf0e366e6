"""The one MQTT layer every command shares, over paho-mqtt 2.x.

``session`` (the facade) ← ``loops`` (connection, network loops) ← ``flow`` (windows,
counters), ``paho_compat`` (paho's private names, behind a probe) ← ``transport``
(buffered socket) ← ``codec`` (pure packet encode/parse). ``per_device``: per-device
connections for ``simulate --connections per-device`` (paho's public API only). See
docs/architecture.md.
"""

from tesaiot_cli.mqtt.flow import SessionStats
from tesaiot_cli.mqtt.loops import EventCallback, MessageCallback, NetworkFailure
from tesaiot_cli.mqtt.session import Session

__all__ = ["EventCallback", "MessageCallback", "NetworkFailure", "Session", "SessionStats"]
