"""ClientRequestToken: a request repeated with the same token gets the first response, once
executed; the same token with different parameters is IdempotentParameterMismatchException.
Tokens are remembered for 24 hours (``store.REQUEST_TOKEN_TTL_S``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from facelink.errors import IdempotentParameterMismatchException

from . import validate
from .context import Context


def idempotent(ctx: Context, operation: str, token: str | None, params: dict[str, Any],
               run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    if validate.client_request_token(token) is None:
        return run()
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).hexdigest()
    seen = ctx.store.request_token(operation, token)
    if seen is not None:
        if seen[0] != digest:
            raise IdempotentParameterMismatchException(
                f"ClientRequestToken {token!r} was used for a {operation} with other parameters")
        return json.loads(seen[1])
    out = run()
    ctx.store.record_request_token(operation, token, digest, json.dumps(out))
    return out
