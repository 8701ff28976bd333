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
read, so the server keeps running (and the connections it holds keep being served).

With TLS, FaceLink does the handshake itself (uvicorn is given no certificate): asyncio hands a
protocol the connection only after the handshake, and gives a handshake 60 s by default, so a
silent TLS connection was neither counted nor timed. Here a TLS connection counts from the moment
it is accepted, and its handshake has ``header_timeout_s``."""

from __future__ import annotations

import asyncio
import logging
import ssl
import sys
import time
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)
REFUSAL_LOG_EVERY_S = 10.0  # a flood is logged once in this long, with its count


def with_header_deadline(header_timeout_s: float, max_connections: int,
                         tls: ssl.SSLContext | None = None) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``); with ``tls``, uvicorn must be
    given no certificate of its own."""
    refused = {"count": 0, "logged_at": float("-inf")}
    handshaking = [0]  # TLS connections accepted whose handshake has not finished

    def refuse(transport: asyncio.BaseTransport) -> None:
        transport.close()
        refused["count"] += 1
        now = time.monotonic()
        if now - refused["logged_at"] >= REFUSAL_LOG_EVERY_S:
            log.warning("%d connection(s) closed unread: %d open is the limit (--max-connections)",
                        refused["count"], max_connections)
            refused.update(count=0, logged_at=now)

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: Any = None
        _made = False
        _early: list[bytes] | None = None  # TLS: what arrived between the handshake and connection_made

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
            self._made = True
            if len(self.connections) + handshaking[0] > max_connections:
                refuse(transport)  # connection_lost takes it out of the set again
                return
            self._arm()
            early, self._early = self._early or [], None
            for data in early:
                super().data_received(data)

        def data_received(self, data: bytes) -> None:
            if not self._made:  # TLS: decrypted before this protocol was handed its transport
                self._early = (self._early or []) + [data]
                return
            super().data_received(data)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            if self._made:  # TLS: a connection lost during its handshake never became one
                super().connection_lost(exc)

    if tls is None:
        return HeaderDeadlineProtocol

    tasks: set[asyncio.Task] = set()  # handshakes under way (asyncio keeps only weak references)
    # 3.11+: a close_notify is awaited at most this long, so a closed connection frees its slot
    # sooner than asyncio's 30 s (the argument does not exist on 3.10)
    shutdown = {"ssl_shutdown_timeout": header_timeout_s} if sys.version_info >= (3, 11) else {}

    class TlsHandshake(asyncio.Protocol):
        """What uvicorn's listener makes for each accepted TLS connection: counted at once
        (over the cap: closed before the handshake), then upgraded with ``loop.start_tls`` within
        ``header_timeout_s`` and handed to a :class:`HeaderDeadlineProtocol`."""

        def __init__(self, **uvicorn_args: Any) -> None:
            self._args = uvicorn_args
            self._loop = uvicorn_args.get("_loop") or asyncio.get_event_loop()

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            if sys.version_info >= (3, 11):
                # the ClientHello is start_tls's to read. Not on 3.10: there the transport adds its
                # reader after this call even when paused, start_tls's own pause is then a no-op,
                # and the ClientHello reaches the TLS protocol before it is set up and is lost
                # (found in review: 14 of 20 handshakes hung); on 3.10 the task below runs
                # start_tls before a read can be handled.
                transport.pause_reading()  # type: ignore[attr-defined]
            if len(self._args["server_state"].connections) + handshaking[0] >= max_connections:
                refuse(transport)
                return
            handshaking[0] += 1
            task = self._loop.create_task(self._handshake(transport, HeaderDeadlineProtocol(**self._args)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def _handshake(self, raw: asyncio.BaseTransport, http: HeaderDeadlineProtocol) -> None:
            try:
                wrapped = await self._loop.start_tls(raw, http, tls, server_side=True,  # type: ignore[arg-type]
                                                     ssl_handshake_timeout=header_timeout_s, **shutdown)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.CancelledError):
                raw.close()  # timed out, refused by TLS, hung up, or the server stops
                return
            except Exception:  # a fault of ours, not the client's: said, and the connection closed
                log.exception("TLS handshake failed")
                raw.close()
                return
            finally:
                handshaking[0] -= 1
            if wrapped is None or wrapped.is_closing():
                return
            http.connection_made(wrapped)  # type: ignore[arg-type]

    return TlsHandshake
