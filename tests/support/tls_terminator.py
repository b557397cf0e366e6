"""A small TLS terminator: TLS on one loopback port, plain TCP to another.

Debian's mosquitto 2.0.11 cannot open a TLS websockets listener, so the tests put
this in front of its plain websockets listener to get wss://.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from pathlib import Path


class TLSTerminator:
    def __init__(self, *, listen_port: int, target_port: int, cert: Path, key: Path) -> None:
        self.listen_port = listen_port
        self.target_port = target_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(str(cert), str(key))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-terminator", daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> None:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.listen_port, ssl=self._context, reuse_address=True
        )

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.close()
            return
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer),
            return_exceptions=True,
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            try:
                writer.close()
            except (OSError, RuntimeError):
                pass

    def stop(self) -> None:
        async def _stop() -> None:
            if self._server is not None:
                self._server.close()
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
