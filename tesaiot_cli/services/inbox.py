"""The queue between a subscriber's network thread and the thread that analyses what arrives.

``detect`` analyses readings more slowly than ``replay --speed max`` publishes them. Dropping
what does not fit would lose readings; an unbounded queue would hold a whole replay in memory.
This queue is bounded, and when it is full the network thread *waits* for room: it stops
reading from the socket, TCP pushes back, and the broker holds the rest (its
``max_queued_messages``). One exception: while the consumer is publishing (its publish may
need the network thread to write the packet or read the acknowledgement), the network
thread does not wait: what arrives meanwhile is kept beyond the bound (a publish lasts
milliseconds). Order is kept: one queue, first in, first out.
"""

from __future__ import annotations

import collections
import contextlib
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")

WAIT_SLICE_S = 0.1  # the network thread re-checks a stop this often while it waits for room


class Inbox(Generic[Item]):
    """A FIFO of at most ``limit`` items that holds its producer back instead of dropping."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: collections.deque[Item] = collections.deque()
        self._changed = threading.Condition()
        self._publishing = 0
        self._closed = False
        self.refused = 0  # items offered after close() when the inbox was full (counted, not kept)
        self.held_back = 0  # times the producer waited for room

    def put(self, item: Item) -> None:
        """Add ``item``; wait while the inbox is full (unless the consumer is publishing, or closed)."""
        with self._changed:
            if len(self._items) >= self.limit and not self._publishing and not self._closed:
                self.held_back += 1
                while len(self._items) >= self.limit and not self._publishing and not self._closed:
                    self._changed.wait(WAIT_SLICE_S)
            if self._closed and len(self._items) >= self.limit:
                self.refused += 1
                return
            self._items.append(item)
            self._changed.notify_all()

    def get(self, timeout: float) -> Item | None:
        """The oldest item, or None when none came within ``timeout`` seconds."""
        with self._changed:
            if not self._items:
                self._changed.wait(timeout)
                if not self._items:
                    return None
            item = self._items.popleft()
            self._changed.notify_all()
            return item

    @contextlib.contextmanager
    def publishing(self) -> Iterator[None]:
        """While the consumer publishes, the producer does not wait for room."""
        with self._changed:
            self._publishing += 1
            self._changed.notify_all()
        try:
            yield
        finally:
            with self._changed:
                self._publishing -= 1

    def close(self) -> None:
        """No more waiting: the consumer stopped. Items that do not fit are counted in ``refused``."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def __len__(self) -> int:
        with self._changed:
            return len(self._items)
