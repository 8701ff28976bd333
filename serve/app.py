"""The ASGI application: POST / with ``X-Amz-Target: RekognitionService.<Operation>`` and a
JSON 1.1 body, signed with SigV4. Requests are authenticated, rate-limited and checked against
the key's rights before the operation runs on a worker thread with its own database connection
and engine. Request bodies are never logged or written anywhere."""

from __future__ import annotations

import asyncio
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
from .operations import MAX_IMAGE_BYTES, OPERATIONS
from .ratelimit import RateLimiter
from .sigv4 import Request, verify

log = logging.getLogger(__name__)

TARGET_PREFIX = "RekognitionService."
CONTENT_TYPES = ("application/x-amz-json-1.1", "application/x-amz-json-1.0", "application/json")
MAX_BODY = MAX_IMAGE_BYTES * 2 + 64 * 1024  # two base64 images (CompareFaces) and the JSON around them
SERVER_ERRORS = (StoreError, ModelError, ConfigError)


class RekognitionApp:
    """ASGI app. ``make_context`` opens one Context (store connection + lazily loaded engine)
    per worker; ``workers`` operations run at once, the others wait their turn."""

    def __init__(self, keys: dict[str, AccessKey], make_context: Callable[[], Context], workers: int = 2) -> None:
        self.keys = keys
        self.limiter = RateLimiter()
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
            body = await self._read_body(scope, receive)
            status, payload = 200, await self.handle(scope, body)
        except WireError as exc:
            status, payload = exc.status, {"__type": exc.code, "message": exc.message}
        data = json.dumps(payload, separators=(",", ":")).encode()
        headers = [(b"content-type", b"application/x-amz-json-1.1"), (b"content-length", str(len(data)).encode()),
                   (b"x-amzn-requestid", request_id.encode())]
        if status != 200:
            headers.append((b"x-amzn-errortype", payload["__type"].encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    @staticmethod
    async def _read_body(scope: dict[str, Any], receive: Callable) -> bytes:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise WireError("ImageTooLargeException", f"the request body is larger than {MAX_BODY} bytes", 400)
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise WireError("InvalidParameterException", "client disconnected")
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise WireError("ImageTooLargeException", f"the request body is larger than {MAX_BODY} bytes", 400)
            chunks.append(chunk)
            if not msg.get("more_body"):
                return b"".join(chunks)

    async def handle(self, scope: dict[str, Any], body: bytes) -> dict[str, Any]:
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            value = v.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        req = Request(scope["method"], scope.get("raw_path", scope["path"].encode()).decode("latin-1").split("?")[0],
                      scope.get("query_string", b"").decode("latin-1"), headers, body)
        key = verify(req, self.keys)  # nothing is looked at before the signature checks out
        if not self.limiter.allow(key.access_key_id, key.requests_per_second):
            raise WireError("ThrottlingException", "Rate exceeded")
        op_name, op = self._operation(req)
        params = self._params(body, op_name, op.members)
        self._authorize(key, op_name, op.writes, op.collection, params)
        result = await asyncio.get_running_loop().run_in_executor(self.pool, self._run, op.call, params)
        if op_name == "ListCollections" and key.collections is not None:
            keep = [i for i, c in enumerate(result["CollectionIds"]) if key.may_use(c)]
            result["CollectionIds"] = [result["CollectionIds"][i] for i in keep]
            result["FaceModelVersions"] = [result["FaceModelVersions"][i] for i in keep]
        return result

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
        try:
            params = json.loads(body or b"{}")
        except (ValueError, UnicodeDecodeError):
            raise WireError("SerializationException", "the request body is not valid JSON") from None
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
