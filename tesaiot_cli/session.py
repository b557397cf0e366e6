"""The old import path of the session layer, kept so that code written against it still
works: the layer itself is the package :mod:`tesaiot_cli.mqtt`."""

from tesaiot_cli.mqtt import EventCallback, MessageCallback, NetworkFailure, Session, SessionStats

__all__ = ["EventCallback", "MessageCallback", "NetworkFailure", "Session", "SessionStats"]
