"""A thread that hands items to a slow consumer in order, so that whoever produces them never waits.

The OSDP reader's verdict thread keeps the card reads' clock (expiry, flushes to libosdp); what
it hands on -- verdicts to record, openings to carry out -- ends in an outbox commit, which a
slow disk can hold up. Each such stream gets a :class:`HandOver`: one thread, one queue, the
items handled in the order put, a failing item logged and the next still handled.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class HandOver(Generic[T]):
    """Hands each item ``put`` to ``handle`` on its own thread (``name``), in order; an item
    whose ``handle`` raises is logged with ``failed`` and the next one is still handled.
    ``finish()`` ends the thread after the items put before it; ``wait_done`` joins it for as
    long as it makes progress."""

    def __init__(self, name: str, handle: Callable[[T], None], failed: str) -> None:
        self._queue: queue.SimpleQueue[T | None] = queue.SimpleQueue()
        self._handle, self._failed = handle, failed
        self.handed = 0  # items handle() has finished with (wait_done watches it for progress)
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def finish(self) -> None:
        """No more items: the thread ends once those put before are handled."""
        self._queue.put(None)

    def running_here(self) -> bool:
        """Whether the caller is this hand-over's own thread (inside ``handle``)."""
        return threading.current_thread() is self.thread

    def wait_done(self, wait_s: float) -> bool:
        """Join the thread while it makes progress, each wait at most ``wait_s``: every item is
        handled unless one handle() stalls longer than a wait. True when the thread has ended."""
        handed = -1
        while self.thread.is_alive() and self.handed != handed:
            handed = self.handed
            self.thread.join(wait_s)
        return not self.thread.is_alive()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self._handle(item)
            except BaseException:  # noqa: BLE001 - one failing item must not stop the next ones
                log.exception(self._failed)
            self.handed += 1
