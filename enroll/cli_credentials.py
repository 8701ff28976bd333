"""`facelink` commands for users' badge credentials (FaceLink extension, not in Rekognition)."""

from __future__ import annotations

from typing import Any

import click

from . import credentials
from .cli_base import api_command, collection_opt
from .context import Context

user_opt = click.option("--user-id", required=True)


@api_command("put-user-credential")
@collection_opt
@user_opt
@click.option("--credential", required=True,
              help="FORMAT:FACILITY:CARD with FORMAT H10301 (26-bit), H10306 (34-bit) or H10304 (37-bit).")
def _put(ctx: Context, collection_id: str, user_id: str, credential: str) -> Any:
    """Give a user a badge credential (sent to the access panel on GRANTED; the card in card + face)."""
    return credentials.put_user_credential(ctx, collection_id, user_id, credential)


@api_command("get-user-credential")
@collection_opt
@user_opt
def _get(ctx: Context, collection_id: str, user_id: str) -> Any:
    """A user's badge credential (null when none)."""
    return credentials.get_user_credential(ctx, collection_id, user_id)


@api_command("delete-user-credential")
@collection_opt
@user_opt
def _delete(ctx: Context, collection_id: str, user_id: str) -> Any:
    """Remove a user's badge credential."""
    return credentials.delete_user_credential(ctx, collection_id, user_id)
