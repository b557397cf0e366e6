"""``tesaiot broker``: a small embedded MQTT broker for development and demos."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tesaiot_cli.cliutil import StopSignals, cli_errors, err

EPILOG = """\b
Examples:
  tesaiot broker                          # mqtt://127.0.0.1:1883 and ws://127.0.0.1:8083/mqtt
  tesaiot broker --port 1884 --no-ws
  tesaiot broker --host 0.0.0.0           # reachable from other machines (no auth!)

For real loads use mosquitto, EMQX or the TESAIoT platform: this broker carries a few
thousand messages per second.
"""


def broker(
    host: Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT", help="MQTT (TCP) port.")] = 1883,
    ws_port: Annotated[int, typer.Option("--ws-port", metavar="PORT", help="MQTT over WebSocket port.")] = 8083,
    ws: Annotated[bool, typer.Option("--ws/--no-ws", help="Also listen for MQTT over WebSocket.")] = True,
    duration: Annotated[Optional[float], typer.Option("--duration", "-d", metavar="SECONDS", help="Stop after SECONDS (default: until Ctrl+C).", show_default=False)] = None,  # noqa: E501
) -> None:
    """Run an embedded MQTT broker (amqtt) on localhost until Ctrl+C: for development and demos."""
    from tesaiot_cli.services.broker import EmbeddedBroker

    with cli_errors():
        embedded = EmbeddedBroker(host=host, port=port, ws_port=ws_port if ws else None)
        with StopSignals() as stop, embedded as address:
            where = address.url + (f" and {address.ws_url}" if address.ws_url else "")
            err(f"embedded broker (amqtt) listening on {where}; Ctrl+C to stop")
            if host not in ("127.0.0.1", "localhost", "::1"):
                err("warning: this broker has no authentication and listens beyond this machine")
            stop.event.wait(duration)
        err("embedded broker stopped")
