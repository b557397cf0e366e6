"""An embedded MQTT broker for development and demos (amqtt, pure Python, optional extra).

It carries a few thousand messages per second (about 4-9k msg/s measured here, against
about 136k for mosquitto): enough for a demo and for trying the tool without installing
anything. For real loads use mosquitto, EMQX or the TESAIoT platform.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Any

from tesaiot_cli.errors import ConfigError, ConnectError

SHUTDOWN_WAIT_S = 10.0  # longest wait for amqtt's shutdown, then for its thread
INSTALL_HINT = "the embedded broker needs the 'broker' extra: pip install 'tesaiot-cli[broker]' (it adds amqtt)"


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    ws_port: int | None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        return None if self.ws_port is None else f"ws://{self.host}:{self.ws_port}/mqtt"


def broker_class() -> tuple[type[Any], bool]:
    """amqtt's ``Broker``, with retained messages sent only for a client's own subscriptions.

    amqtt (0.11, 0.12) sends every new client the retained messages matching *every*
    client's subscriptions (it walks all filters on connect), so a subscriber to
    ``other/#`` also got ``config/...``'s retained values. The subclass sends them only for
    filters the connecting client holds itself. It relies on two private names of amqtt's
    ``Broker`` (``_publish_retained_messages_for_subscription`` and ``_subscriptions``):
    when a version lacks them, amqtt's own ``Broker`` is used as it is. Returns the class
    and whether the workaround is on. Raises :class:`ConfigError` without amqtt.
    """
    try:
        from amqtt.broker import Broker
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    private = "_publish_retained_messages_for_subscription"
    if not callable(getattr(Broker, private, None)):
        return Broker, False

    class OwnRetainedOnly(Broker):  # type: ignore[misc]
        async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                              session: Any) -> None:
            holders = getattr(self, "_subscriptions", {}).get(subscription[0], ())
            if not any(holder is session for holder, _qos in holders):
                return  # another client's filter: its retained messages are not for this one
            await super()._publish_retained_messages_for_subscription(subscription, session)

    return OwnRetainedOnly, True


def _check_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConnectError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} (is another broker running? "
                "use --port)"
            ) from None


class EmbeddedBroker:
    """amqtt on a background thread with its own event loop. A context manager.

    Raises :class:`ConfigError` when amqtt is not installed, :class:`ConnectError` when
    a port is taken.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 1883, ws_port: int | None = 8083) -> None:
        for value in (port, ws_port):
            if value is not None and not 1 <= value <= 65535:
                raise ConfigError(f"invalid port {value}: out of range 1-65535")
        self.address = BrokerAddress(host, port, ws_port)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None
        self.retained_fix = False  # whether retained messages go only to their own subscribers

    def _config(self) -> dict[str, Any]:
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.address.host}:{self.address.port}"},
        }
        if self.address.ws_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"{self.address.host}:{self.address.ws_port}"}
        return {
            "listeners": listeners,
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

    def start(self) -> BrokerAddress:
        broker_cls, self.retained_fix = broker_class()
        _check_free(self.address.host, self.address.port)
        if self.address.ws_port is not None:
            _check_free(self.address.host, self.address.ws_port)
        # amqtt logs every connection, and websockets logs a traceback for every port probe
        # or stray HTTP request: a demo broker's console should stay readable.
        logging.getLogger("amqtt").setLevel(logging.CRITICAL)
        logging.getLogger("websockets").setLevel(logging.CRITICAL)
        logging.getLogger("transitions").setLevel(logging.ERROR)
        loop = asyncio.new_event_loop()
        self._loop = loop
        started = threading.Event()
        failure: list[BaseException] = []

        async def boot() -> None:
            try:
                self._broker = broker_cls(self._config(), loop=loop)
                await self._broker.start()
            except Exception as exc:  # noqa: BLE001 - reported to the caller below
                failure.append(exc)
            finally:
                started.set()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.create_task(boot())
            loop.run_forever()

        self._thread = threading.Thread(target=run, name="embedded-broker", daemon=True)
        self._thread.start()
        if not started.wait(15) or failure:
            why = f"{type(failure[0]).__name__}: {failure[0]}" if failure else "timed out"
            try:
                self.stop()
            except Exception as exc:  # noqa: BLE001 - said with the failure to start, not dropped
                raise ConnectError(f"the embedded broker did not start ({why}); stopping it then failed too "
                                   f"({type(exc).__name__}: {exc})") from exc
            raise ConnectError(f"the embedded broker did not start ({why})")
        return self.address

    def stop(self) -> None:
        """Shut amqtt down (it disconnects its clients), then stop its thread. What amqtt's
        shutdown raises is raised here, after the thread was stopped: a bug, not a state a
        user can mend (the CLI says it as an internal error, exit 70)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if self._broker is not None and loop.is_running():
                shutdown = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), loop)
                try:
                    shutdown.result(timeout=SHUTDOWN_WAIT_S)
                except concurrent.futures.TimeoutError:
                    raise TimeoutError(f"amqtt did not shut down within {SHUTDOWN_WAIT_S:g} s") from None
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=SHUTDOWN_WAIT_S)
            self._loop = self._thread = self._broker = None

    def __enter__(self) -> BrokerAddress:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
