"""The ASGI application: POST / with ``X-Amz-Target: RekognitionService.<Operation>`` and a
JSON 1.1 body, signed with SigV4. Requests are authenticated, rate-limited and checked against
the key's rights before the operation runs on a worker thread with its own database connection
and engine. Request bodies are never logged or written anywhere."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import queue
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from facelink.enroll.context import Context
from facelink.errors import (
    ConfigError,
    FaceLinkError,
    ModelError,
    StoreError,
    WireError,
)

from .credentials import AccessKey
from .limits import (
    DEFAULT_BODY_MEMORY_MIB,
    DEFAULT_BODY_MEMORY_PER_CLIENT_MIB,
    DEFAULT_BODY_TIMEOUT,
    client_key,
)
from .operations import MAX_IMAGE_BYTES, OPERATIONS
from .ratelimit import RateLimiter
from .sigv4 import Request, check_credential, verify

log = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."
CONTENT_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0", "application/json")
MAX_BODY = MAX_IMAGE_BYTES * 2 + 64 * 1024  # two base64 images (CompareFaces) and the JSON around them
SERVER_ERRORS = (StoreError, ModelError, ConfigError)
# JSON values a request body may hold, counted as its '[', '{' and ',' bytes before it is parsed
# (bytes.count, a few ms for the largest body): the biggest Rekognition request this serves is
# DeleteFaces' 4,096 FaceIds; a signed 10 MB body of a million small arrays cost ~250 MB and 1-2 s
# of the event loop to parse. Base64 image bytes and every id pattern hold none of these bytes.
MAX_JSON_VALUES = 20_000


def request_headers(scope: dict[str, Any]) -> dict[str, str]:
    """Lower-case names; a repeated header's values joined with ","."""
    headers: dict[str, str] = {}
    for k, v in scope["headers"]:
        name = k.decode("latin-1").lower()
        value = v.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


DEFAULT_BODY_BYTES_IN_FLIGHT = DEFAULT_BODY_MEMORY_MIB * 1024 * 1024
DEFAULT_BODY_BYTES_PER_CLIENT = DEFAULT_BODY_MEMORY_PER_CLIENT_MIB * 1024 * 1024


def error_payload(code: str, message: str) -> dict[str, str]:
    return {"__type": code, "message": message}


def encode_response(status: int, payload: dict[str, Any], request_id: str, close: bool = False):
    """(http.response.start, http.response.body) for a JSON 1.1 answer."""
    data = json.dumps(payload, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/x-amz-json-1.1"), (b"content-length", str(len(data)).encode()),
               (b"x-amzn-requestid", request_id.encode())]
    if status != 200:
        headers.append((b"x-amzn-errortype", payload["__type"].encode()))
    if close:  # the body was not read: do not wait for (or drain) the rest of it
        headers.append((b"connection", b"close"))
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": data})


class RekognitionApp:
    """ASGI app. ``make_context`` opens one Context (store connection + lazily loaded engine)
    per worker; ``workers`` operations run at once, the others wait their turn.

    A request is refused before any of its body is read unless its Authorization header names a
    known key with a date within 5 minutes; its body must then arrive within ``body_timeout``
    seconds, and the bodies of all requests being read or run together may not exceed
    ``max_body_bytes_in_flight``, nor those of one client (``limits.client_key``: an IPv4 address,
    an IPv6 /64) ``max_body_bytes_per_client`` (a request that would go over either is
    ThrottlingException): a key id is no secret, so whoever knows one can trickle bodies, but one
    address alone cannot hold every caller's room for ``body_timeout``."""

    def __init__(self, keys: dict[str, AccessKey], make_context: Callable[[], Context], workers: int = 2, *,
                 body_timeout: float = DEFAULT_BODY_TIMEOUT,
                 max_body_bytes_in_flight: int = DEFAULT_BODY_BYTES_IN_FLIGHT,
                 max_body_bytes_per_client: int = DEFAULT_BODY_BYTES_PER_CLIENT) -> None:
        self.keys = keys
        self.limiter = RateLimiter()
        self.body_timeout = body_timeout
        self.max_body_bytes_in_flight = max_body_bytes_in_flight
        self.max_body_bytes_per_client = min(max_body_bytes_per_client, max_body_bytes_in_flight)
        # reserved by requests now being read or run, all and per client (event loop only: no lock;
        # a client's entry goes when its last request is done, so the dict holds active clients only)
        self.body_bytes_in_flight = 0
        self.body_bytes_by_client: dict[str, int] = {}
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="serve")
        self.contexts: queue.Queue[Context] = queue.Queue()
        for _ in range(workers):
            self.contexts.put(make_context())

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        while not self.contexts.empty():
            self.contexts.get_nowait().store.close()

    # -- ASGI ------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        request_id = str(uuid.uuid4())
        try:
            status, payload, close = await self._answer(scope, receive)
            start, body = encode_response(status, payload, request_id, close)
        except Exception:  # a bug: logged once, answered as Rekognition's InternalServerError (no traceback)
            log.exception("unexpected error answering request %s", request_id)
            start, body = encode_response(500, error_payload("InternalServerError", "internal error"), request_id,
                                          close=True)
        await send(start)
        await send(body)

    async def _answer(self, scope: dict[str, Any], receive: Callable) -> tuple[int, dict[str, Any], bool]:
        """(status, payload, close the connection)."""
        headers = request_headers(scope)
        try:
            check_credential(headers, self.keys)  # nothing of the body is read for an unknown caller
            reserve = self._declared_length(headers)
        except WireError as exc:
            return exc.status, error_payload(exc.code, exc.message), True
        client = client_key(scope.get("client"))
        if self.body_bytes_in_flight + reserve > self.max_body_bytes_in_flight:
            log.warning("request bodies in flight at their limit (%d bytes): request refused",
                        self.max_body_bytes_in_flight)
            return 503, error_payload("ThrottlingException", "the server is busy: too much request data in flight"), True
        if self.body_bytes_by_client.get(client, 0) + reserve > self.max_body_bytes_per_client:
            log.warning("request bodies in flight from %s at their limit (%d bytes): request refused",
                        client, self.max_body_bytes_per_client)
            return 503, error_payload("ThrottlingException", "too much request data in flight from your address"), True
        self.body_bytes_in_flight += reserve
        self.body_bytes_by_client[client] = self.body_bytes_by_client.get(client, 0) + reserve
        try:
            try:
                body = await asyncio.wait_for(self._read_body(receive), self.body_timeout)
            except asyncio.TimeoutError:
                return 408, error_payload("RequestTimeoutException",
                                          f"the request body did not arrive within {self.body_timeout:g} s"), True
            except WireError as exc:
                return exc.status, error_payload(exc.code, exc.message), True
            try:
                return 200, await self.handle(scope, body, headers), False
            except WireError as exc:
                return exc.status, error_payload(exc.code, exc.message), False
        finally:
            self.body_bytes_in_flight -= reserve
            left = self.body_bytes_by_client.pop(client) - reserve
            if left:
                self.body_bytes_by_client[client] = left

    @staticmethod
    def _declared_length(headers: dict[str, str]) -> int:
        """The bytes to reserve for the body: its Content-Length, or the most allowed without one."""
        length = headers.get("content-length")
        if length is None:
            return MAX_BODY
        if not length.isdigit() or int(length) > MAX_BODY:
            raise WireError("ImageTooLargeException", f"the request body is larger than {MAX_BODY} bytes", 400)
        return int(length)

    @staticmethod
    async def _read_body(receive: Callable) -> bytes:
        body = bytearray()
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise WireError("InvalidParameterException", "client disconnected")
            body += msg.get("body", b"")
            if len(body) > MAX_BODY:
                raise WireError("ImageTooLargeException", f"the request body is larger than {MAX_BODY} bytes", 400)
            if not msg.get("more_body"):
                return bytes(body)

    async def handle(self, scope: dict[str, Any], body: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
        headers = request_headers(scope) if headers is None else headers
        req = Request(scope["method"], scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0],
                      scope.get("query_string", b"").decode("latin-1"), headers, body)
        key = verify(req, self.keys)  # nothing is looked at before the signature checks out
        if not self.limiter.allow(key.access_key_id, key.requests_per_second):
            raise WireError("ThrottlingException", "Rate exceeded")
        op_name, op = self._operation(req)
        params = self._params(body, op_name, op.members)
        self._authorize(key, op_name, op.writes, op.collection, params)
        call = op.call
        if op.lists_collections:  # a collection-limited key pages through its own collections only
            call = functools.partial(op.call, allowed=key.collections)
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._run, call, params)

    # -- steps -----------------------------------------------------------------------------
    @staticmethod
    def _operation(req: Request):
        if req.method != "POST" or req.path != "/":
            raise WireError("UnknownOperationException", "only POST / is served", 404)
        content_type = req.headers.get("content-type", "").split(";")[0].strip()
        if content_type not in CONTENT_TYPES:
            raise WireError("SerializationException", f"Content-Type must be {CONTENT_TYPES[0]}")
        target = req.headers.get("x-amz-target", "")
        op = OPERATIONS.get(target.removeprefix(TARGET_PREFIX)) if target.startswith(TARGET_PREFIX) else None
        if op is None:
            raise WireError("UnknownOperationException", f"unknown or unsupported operation {target[:80]!r}")
        return target.removeprefix(TARGET_PREFIX), op

    @staticmethod
    def _params(body: bytes, op_name: str, members: frozenset[str]) -> dict[str, Any]:
        if sum(body.count(c) for c in (b"[", b"{", b",")) > MAX_JSON_VALUES:
            raise WireError("SerializationException",
                            f"the request body holds more than {MAX_JSON_VALUES} JSON values (no request needs as many)")
        try:
            params = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise WireError("SerializationException", "the request body is not valid JSON") from None
        except RecursionError:
            raise WireError("SerializationException", "the request body is nested too deeply") from None
        if not isinstance(params, dict):
            raise WireError("SerializationException", "the request body must be a JSON object")
        unknown = sorted(set(params) - members)
        if unknown:
            raise WireError("InvalidParameterException", f"{op_name} has no member(s) {unknown}")
        return params

    @staticmethod
    def _authorize(key: AccessKey, op_name: str, writes: bool, has_collection: bool, params: dict[str, Any]) -> None:
        if writes and key.read_only:
            raise WireError("AccessDeniedException", f"key {key.access_key_id} is read-only: {op_name} refused")
        collection = params.get("CollectionId")
        if has_collection and key.collections is not None and not (
                isinstance(collection, str) and key.may_use(collection)):  # a non-string id is denied, never skipped
            raise WireError("AccessDeniedException", f"key {key.access_key_id} may not use collection {collection!r}")

    def _run(self, call: Callable[[Context, dict[str, Any]], dict[str, Any]], params: dict[str, Any]) -> dict[str, Any]:
        ctx = self.contexts.get()
        try:
            return call(ctx, params)
        except SERVER_ERRORS as exc:
            log.error("operation failed: %s: %s", exc.code, exc.message)
            raise WireError("InternalServerError", f"{exc.code}: {exc.message}", 500) from None
        except FaceLinkError as exc:
            raise WireError(exc.code, exc.message) from None
        except Exception:
            log.exception("unexpected error")  # parameters (image bytes) are not logged
            raise WireError("InternalServerError", "internal error", 500) from None
        finally:
            self.contexts.put(ctx)
