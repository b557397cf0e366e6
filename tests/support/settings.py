"""Connection settings for a test's own Session."""

from __future__ import annotations

import os

from tesaiot_cli.config import ConnectionSettings, resolve_connection


def settings_for(url: str, **flags: object) -> ConnectionSettings:
    # TESAIOT_PAHO_PATH=public runs these tests on paho's public path (scripts/test does).
    env = {k: v for k, v in os.environ.items() if k == "TESAIOT_PAHO_PATH"}
    return resolve_connection({"broker": url, "connect_timeout": 5, **flags}, env, client_prefix="tesaiot-test")
