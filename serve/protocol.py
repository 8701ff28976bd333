"""The HTTP connection: uvicorn's h11 protocol with a deadline for each request head.

uvicorn closes a kept-alive connection only after a first response, and never one that opens and
sends nothing (or half a request line): such connections would each hold a file descriptor for
ever, and a few hundred of them shut every caller out. Here a connection that has not sent a
complete request head within ``header_timeout_s`` of opening, or of its last response, is closed.
A request being read or answered is left alone (the body has its own deadline in the app)."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def with_header_deadline(header_timeout_s: float) -> type[H11Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``)."""

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
