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
read, so the server keeps running (and the connections it holds keep being served). One client
(an IPv4 address, an IPv6 /64: ``limits.client_key``) may hold at most ``max_per_client`` of
them; one more from it is closed the same way, so a single client cannot take every place and
shut others out until its connections time out.

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

from .limits import client_key

log = logging.getLogger(__name__)
REFUSAL_LOG_EVERY_S = 10.0  # a flood is logged once in this long, with its count


class Flood:
    """Something that may come in a flood from untrusted callers, logged at most once per
    REFUSAL_LOG_EVERY_S with how many came since the last line (the event loop's thread only)."""

    def __init__(self) -> None:
        self.count = 0
        self.logged_at = float("-inf")

    def add(self, message: str, *args: object) -> None:
        """One more; ``message``'s first %d is the count."""
        self.count += 1
        now = time.monotonic()
        if now - self.logged_at >= REFUSAL_LOG_EVERY_S:
            log.warning(message, self.count, *args)
            self.count, self.logged_at = 0, now


def with_header_deadline(header_timeout_s: float, max_connections: int, tls: ssl.SSLContext | None = None,
                         max_per_client: int | None = None) -> type[asyncio.Protocol]:
    """The protocol class to give uvicorn (``Config(http=...)``); with ``tls``, uvicorn must be
    given no certificate of its own. ``max_per_client``: None, ``max_connections``."""
    per_client_cap = max_connections if max_per_client is None else max_per_client
    refused, upgrades = Flood(), Flood()
    handshaking = [0]  # TLS connections accepted whose handshake has not finished
    held: dict[str, int] = {}  # connections held (accepted, not yet lost) per client key

    def refuse(transport: asyncio.BaseTransport, what: str) -> None:
        transport.close()
        refused.add("%d connection(s) closed unread: %s", what)

    def take(transport: asyncio.BaseTransport, open_now: int) -> str | None:
        """Count a new connection against both caps: its client key, or None when it was refused
        (closed; nothing counted)."""
        if open_now > max_connections:
            refuse(transport, f"{max_connections} open is the limit (--max-connections)")
            return None
        key = client_key(transport.get_extra_info("peername"))
        if held.get(key, 0) >= per_client_cap:
            refuse(transport, f"{per_client_cap} open from one client is the limit "
                              f"(--max-connections-per-client; the last from {key})")
            return None
        held[key] = held.get(key, 0) + 1
        return key

    def give_back(key: str) -> None:
        left = held.get(key, 0) - 1
        if left > 0:
            held[key] = left
        else:
            held.pop(key, None)

    class HeaderDeadlineProtocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: Any = None
        _made = False
        _early: list[bytes] | None = None  # TLS: what arrived between the handshake and connection_made
        _client: str | None = None  # its client's key while it holds a place (give it back once)
        _counted = False  # TLS: counted when accepted, before the handshake

        def release(self) -> None:
            """Give its client's place back (once; a connection refused never took one)."""
            if self._client is not None:
                give_back(self._client)
                self._client = None

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
            if not self._counted:  # (plain HTTP; TLS counted it at its accept)
                self._counted = True
                self._client = take(transport, len(self.connections) + handshaking[0])
                if self._client is None:  # closed; and out of the set now, not when connection_lost
                    self.connections.discard(self)  # runs: a burst of refused ones held the global
                    return  # cap full for a loop turn and shut other clients out
            self._arm()
            early, self._early = self._early or [], None
            for data in early:
                super().data_received(data)

        def data_received(self, data: bytes) -> None:
            if not self._made:  # TLS: decrypted before this protocol was handed its transport
                self._early = (self._early or []) + [data]
                return
            super().data_received(data)

        def _unsupported_upgrade_warning(self) -> None:
            """uvicorn's two warnings for each upgrade request (WebSocket, h2c), one suggesting to
            install a WebSocket library: the API has none (``ws="none"``), and anyone could flood
            the log with them. Counted here instead, logged once per REFUSAL_LOG_EVERY_S. The
            request itself is answered as any other."""
            upgrades.add("%d upgrade request(s) (WebSocket, h2c) answered without switching: %s",
                         "the API has no WebSocket or HTTP/2")

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self.release()
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
            client = take(transport, len(self._args["server_state"].connections) + handshaking[0] + 1)
            if client is None:
                return
            http = HeaderDeadlineProtocol(**self._args)
            http._counted, http._client = True, client  # its place is given back when it is lost
            handshaking[0] += 1
            task = self._loop.create_task(self._handshake(transport, http))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

        async def _handshake(self, raw: asyncio.BaseTransport, http: HeaderDeadlineProtocol) -> None:
            try:
                wrapped = await self._loop.start_tls(raw, http, tls, server_side=True,  # type: ignore[arg-type]
                                                     ssl_handshake_timeout=header_timeout_s, **shutdown)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, asyncio.CancelledError):
                raw.close()  # timed out, refused by TLS, hung up, or the server stops
                http.release()
                return
            except Exception:  # a fault of ours, not the client's: said, and the connection closed
                log.exception("TLS handshake failed")
                raw.close()
                http.release()
                return
            finally:
                handshaking[0] -= 1
            if wrapped is None or wrapped.is_closing():
                http.release()  # (idempotent: connection_lost may give it back too)
                return
            http.connection_made(wrapped)  # type: ignore[arg-type]

    return TlsHandshake
