"""A user's badge credential (FaceLink extension): PutUserCredential, GetUserCredential,
DeleteUserCredential. The credential is what the door sends to an access panel on GRANTED and
what a badge read is matched against in the card + face modes (``facelink.access.wiegand``)."""

from __future__ import annotations

from typing import Any

from facelink.access.wiegand import Credential
from facelink.errors import ConflictException, ResourceNotFoundException

from . import validate
from .context import Context


def _user(ctx: Context, collection_id: str, user_id: str) -> None:
    ctx.collection(validate.collection_id(collection_id))
    if not ctx.store.user_exists(collection_id, validate.user_id(user_id)):
        raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")


def put_user_credential(ctx: Context, collection_id: str, user_id: str, credential: str) -> dict[str, Any]:
    """Give a user a badge; a badge already held by another user is a ConflictException."""
    _user(ctx, collection_id, user_id)
    cred = str(Credential.parse(credential))
    holder = ctx.store.user_by_credential(collection_id, cred)
    if holder is not None and holder != user_id:
        raise ConflictException(f"credential {cred} already belongs to user {holder!r}")
    ctx.store.set_user_credential(collection_id, user_id, cred)
    return {"UserId": user_id, "Credential": cred}


def get_user_credential(ctx: Context, collection_id: str, user_id: str) -> dict[str, Any]:
    _user(ctx, collection_id, user_id)
    return {"UserId": user_id, "Credential": ctx.store.user_credential(collection_id, user_id)}


def delete_user_credential(ctx: Context, collection_id: str, user_id: str) -> dict[str, Any]:
    _user(ctx, collection_id, user_id)
    ctx.store.set_user_credential(collection_id, user_id, None)
    return {}
