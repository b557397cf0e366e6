"""The project's exceptions.

The core raises only these; the CLI turns them into one line on stderr and an
exit code (see ``EXIT_CODES`` in :mod:`tesaiot_cli.cli`). Messages never hold a
secret: callers pass masked values only.
"""

from __future__ import annotations


class TesaiotError(Exception):
    """Base class of every error the core raises on purpose."""


class ConfigError(TesaiotError):
    """A setting or option value is invalid (bad URL, bad token, bad topic filter...)."""


class ConnectError(TesaiotError):
    """The broker could not be reached or refused the connection.

    ``reason_code`` is the MQTT CONNACK reason code when the broker answered.
    """

    def __init__(self, message: str, *, reason_code: int | None = None) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class AuthError(ConnectError):
    """The broker refused the credentials (CONNACK 4/5, reason codes 134/135) or a subscription."""


class RecordingError(TesaiotError):
    """A recording could not be written or read (missing, corrupt, wrong format, disk full)."""


class EmptySelection(TesaiotError):
    """No message of a recording matches the selection (``--topic``, ``--device``,
    ``--start``, ``--end``): a command that takes one has nothing to do (exit 9)."""


class Interrupted(TesaiotError):
    """A wait was cut short because the caller asked to stop (Ctrl+C, SIGTERM)."""


class ProtocolError(ConnectError):
    """The broker broke the MQTT protocol (a malformed or forbidden packet): the session
    closes the connection, as MQTT requires, and reconnects with backoff."""
