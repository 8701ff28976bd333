"""The HTTP connection: uvicorn's h11 protocol with a deadline for each request head and a cap
on the connections held at once.

uvicorn closes a kept-alive connection only after a first response, and never one that opens and
sends nothing (or half a request line): such connections would each hold a file descriptor for
ever, and a few hundred of them shut every caller out. Here a connection that has not sent a
complete request head within ``header_timeout_s`` of opening, or of its last response, is closed.
A request being read or answered is left alone (the body has its own deadline in the app).

Within the deadline a flood of new connections could still take every file descriptor the
process may open (the soft limit is often 1,024, and the store and the models need some): a
connection that would make more than ``max_connections`` open is closed at once, before it is
read, so the server keeps running (and the connections it holds keep being served)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
REFUSAL_LOG_EVERY_S = 10.0  # a flood is logged once in this long, with its count


def with_header_deadline(header_timeout_s: float, max_connections: int) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``)."""
    refused = {"count": 0, "logged_at": float("-inf")}

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: Any = None

        def _arm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
            self._armed_for = self.cycle  # the request before; a new request replaces it
            self._deadline = self.loop.call_later(header_timeout_s, self._expired)

        def _expired(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()  # no request head in time: nothing to answer

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.close()  # connection_lost takes it out of the set again
                refused["count"] += 1
                now = time.monotonic()
                if now - refused["logged_at"] >= REFUSAL_LOG_EVERY_S:
                    log.warning("%d connection(s) closed unread: %d open is the limit (--max-connections)",
                                refused["count"], max_connections)
                    refused.update(count=0, logged_at=now)
                return
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            super().connection_lost(exc)

    return HeaderDeadlineProtocol
