"""The buffered socket of the fast path: read-ahead, corked writes, a clean close; and
the I/O lock a waiting caller gets before the network thread takes it again.

It wraps the connection's socket (tcp, TLS or paho's websocket wrapper) and is what paho
reads from and writes to on the fast path (installed by :mod:`paho_compat`). No paho name
is used here.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tesaiot_cli.mqtt import codec

READ_CHUNK = 64 * 1024  # bytes asked of the socket per read (paho asks for 1 byte at a time)
IO_HANDOFF_S = 0.05  # longest the network thread stands back for a caller that waits for the I/O lock


def set_nodelay(raw: Any) -> None:
    """Switch Nagle's algorithm off: it holds small packets back up to ~40 ms, and
    telemetry wants them now. Sockets that have no such option are left alone."""
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (a test's socket pair): nothing to switch off


class IoHandoff:
    """The I/O lock that serialises paho's socket use between the network thread and the
    callers' threads, handed to a waiting caller first.

    A lock is not fair: while data flows the network thread takes it again the moment it
    lets go, and a caller could wait seconds (seen: 1.3 s on paho's public path under a
    backlog). Callers say they wait (:meth:`for_caller`, :meth:`wait`); the network thread
    :meth:`stand_back` s until they have it. ``lock`` is the plain lock: the publish hot path
    tries it without a context manager, and the network thread holds it for a turn.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wanted = 0
        self._wanted_lock = threading.Lock()

    @contextmanager
    def for_caller(self) -> Iterator[None]:
        """The I/O lock for a caller's thread: handed over by the network thread even while
        data flows (it checks for waiting callers before it takes the lock again)."""
        if not self.lock.acquire(blocking=False):
            self.wait()
        try:
            yield
        finally:
            self.lock.release()

    def wait(self) -> None:
        """Take the I/O lock on a caller's thread when it was not free: say so, so the
        network thread stands back."""
        with self._wanted_lock:
            self._wanted += 1
        try:
            self.lock.acquire()
        finally:
            with self._wanted_lock:
                self._wanted -= 1

    def stand_back(self) -> None:
        """On the network thread, before it takes the I/O lock: let a waiting caller have it
        first (bounded: a caller that never comes does not stop the network)."""
        if not self._wanted:
            return
        deadline = time.monotonic() + IO_HANDOFF_S
        while self._wanted and time.monotonic() < deadline:
            time.sleep(0.0002)


class BufferedSocket:
    """The connection's socket with a read buffer and, while corked, a write buffer.

    paho reads each packet with three or more ``recv`` calls (the command byte, each
    remaining-length byte, then the body): a system call each on a plain socket. This
    reads up to ``READ_CHUNK`` bytes at once and serves the small reads from them, so a
    batch of packets costs one system call; :meth:`take_publishes` parses PUBLISH packets
    straight from the buffer. ``pending()`` says buffered bytes are waiting, as an SSL
    socket's does.

    While corked, writes (the PUBACKs of a batch) are collected and sent together by
    :meth:`uncork`. What the socket does not take at once stays ahead of anything written
    later: until it has drained, other writes are refused as a full socket refuses them
    (paho keeps those packets and retries). A PUBLISH is never taken into that buffer
    (nor the rest of a packet the socket took part of): paho counts a QoS 0 message
    delivered once its write returns, so its bytes must be in the kernel by then. While
    corked such a write is refused, and paho writes it after :meth:`uncork`. What the
    buffer can hold is acknowledgements and control packets, whose loss at a close costs
    a message sent again (QoS 1/2 received) or counted dropped (a PUBREL unanswered).

    ``raw`` is the TCP socket under ``inner`` (the same object unless ``inner`` is a
    websocket wrapper): used to half-close it in :meth:`close`.
    """

    __slots__ = ("_inner", "_raw", "_data", "_pos", "_out", "_corked", "_part_sent", "_eof", "_topics", "linger_s")

    def __init__(self, inner: Any, raw: Any = None) -> None:
        self._inner = inner
        self._raw = raw if raw is not None else inner
        self._data = b""
        self._pos = 0
        self._out = bytearray()
        self._corked = False
        self._part_sent = False  # the socket took part of paho's last write: its rest comes next
        self._eof = False
        self._topics: dict[bytes, str] = {}
        self.linger_s = 0.0  # set before a clean DISCONNECT: see close()

    def recv(self, size: int) -> bytes:
        data, pos = self._data, self._pos
        if pos < len(data):
            self._pos = pos + size
            return data[pos:pos + size]
        if self._eof:
            return b""
        # paho 2.0 and 2.1's websocket wrapper returns bytearray: kept as bytes, so that
        # slices of it can be dictionary keys (the topic cache).
        data = bytes(self._inner.recv(READ_CHUNK if size < READ_CHUNK else size))
        if len(data) <= size:
            self._data, self._pos = b"", 0
            return data
        self._data, self._pos = data, size
        return data[:size]

    def fill(self) -> bool:
        """One read from the socket, appended to what is buffered (a partial packet).
        Returns True when the connection has ended (end of stream or an error): paho's next
        read then meets it and handles the lost connection."""
        if self._eof:
            return True
        try:
            chunk = bytes(self._inner.recv(READ_CHUNK))
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return False
        except OSError:
            return True  # paho's next read meets the same error and reports the lost connection
        if not chunk:
            self._eof = True  # served as the end of the stream once the buffer is empty
            return True
        if self._pos < len(self._data):
            self._data = self._data[self._pos:] + chunk
        else:
            self._data = chunk
        self._pos = 0
        return False

    def take_publishes(self, *, mqtt5: bool, deliver: codec.Deliver,
                       acknowledged: codec.Acknowledged | None = None) -> bool:
        """Parse the complete QoS 0/1 PUBLISH packets at the head of the buffer, and the
        PUBACKs ``acknowledged`` takes (see :func:`codec.take_publishes`); the PUBLISH
        packets' PUBACKs go into the write buffer. Returns whether any packet was taken.
        Call only at a packet boundary and while corked. Raises :class:`ProtocolError` for
        a packet the broker must not send."""
        start = self._pos
        self._pos = codec.take_publishes(self._data, start, mqtt5=mqtt5, topics=self._topics, deliver=deliver,
                                         acks=self._out, acknowledged=acknowledged)
        return self._pos != start

    def buffered(self) -> int:
        """Bytes read from the socket and not yet consumed."""
        return len(self._data) - self._pos

    def pending(self) -> int:
        buffered = len(self._data) - self._pos
        if buffered > 0:
            return buffered
        inner_pending = getattr(self._inner, "pending", None)
        return inner_pending() if inner_pending is not None else 0

    def send(self, data: bytes | bytearray) -> int:
        if self._corked:
            if self._part_sent or (data and data[0] & 0xF0 == codec.PUBLISH):
                raise BlockingIOError  # not buffered (see the class docstring): written after uncork
            self._out += data
            return len(data)
        if self._out:
            self.flush()
            if self._out:
                raise BlockingIOError  # the socket is full: paho keeps the packet and retries
        sent: int = self._inner.send(data)
        self._part_sent = sent < len(data)
        return sent

    def cork(self) -> None:
        self._corked = True

    def uncork(self) -> None:
        self._corked = False
        if self._out:
            self.flush()

    def has_output(self) -> bool:
        return bool(self._out)

    def flush(self) -> None:
        """Write what the socket takes now; raises OSError when the connection is gone."""
        out = self._out
        while out:
            try:
                written = self._inner.send(out)
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                return
            if not written:
                return
            del out[:written]

    def fileno(self) -> int:
        return self._inner.fileno()  # type: ignore[no-any-return]

    def close(self) -> None:
        """Close; after a clean DISCONNECT (``linger_s`` > 0) first wait, reading and
        discarding, until the broker closes its side (at most ``linger_s`` seconds).

        Closing a socket with unread data in it resets the connection, and the broker then
        drops what it had not yet read: the last PUBACKs, so their messages would come
        again to a persistent session. The broker reads in order, so when it closes after
        our DISCONNECT it has taken every PUBACK before it. Errors on the way out are the
        connection already being gone: what is still buffered then is acknowledgements and
        control packets, never a message (see the class docstring)."""
        try:
            self.flush()  # a DISCONNECT written after buffered PUBACKs goes out with them
            if self.linger_s > 0 and not self._out:
                self._linger(self.linger_s)
        except (OSError, ValueError):
            pass  # the connection is already gone: closing is all that is left
        self._inner.close()

    def _linger(self, seconds: float) -> None:
        raw = self._raw
        raw.shutdown(socket.SHUT_WR)
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            if not select.select([raw], [], [], remaining)[0]:
                return
            try:
                if not socket.socket.recv(raw, READ_CHUNK):  # raw bytes: TLS was shut down
                    return
            except (BlockingIOError, InterruptedError):
                continue

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
