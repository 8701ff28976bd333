"""`facelink` commands for collections, faces and users: one Rekognition operation each."""

from __future__ import annotations

from typing import Any

import click

from . import faces, search, users
from .cli_base import (
    ListOption,
    api_command,
    attributes_option,
    collection_opt,
    face_ids_opt,
    image_opt,
    image_value,
    paginate,
    paging_options,
    quality_opt,
    quality_option,
    split_ids,
    token_opt,
)
from .context import Context


# -- collections -----------------------------------------------------------------------------
@api_command("create-collection")
@collection_opt
def _create_collection(ctx: Context, collection_id: str) -> Any:
    """CreateCollection (records the engine's FaceModelVersion)."""
    return faces.create_collection(ctx, collection_id)


@api_command("describe-collection")
@collection_opt
def _describe_collection(ctx: Context, collection_id: str) -> Any:
    """DescribeCollection: FaceCount, UserCount, FaceModelVersion, CreationTimestamp."""
    return faces.describe_collection(ctx, collection_id)


@api_command("list-collections")
@paging_options(1000)
def _list_collections(ctx: Context, max_results: int | None, next_token: str | None, starting_token: str | None,
                      max_items: int | None, page_size: int | None) -> Any:
    """ListCollections (every page unless --max-results/--next-token, as the aws CLI)."""
    return paginate(lambda n, t: faces.list_collections(ctx, n, t), ("CollectionIds", "FaceModelVersions"),
                    max_results, next_token, starting_token, max_items, page_size)


@api_command("delete-collection")
@collection_opt
def _delete_collection(ctx: Context, collection_id: str) -> Any:
    """DeleteCollection with all its faces and users."""
    return faces.delete_collection(ctx, collection_id)


# -- faces -----------------------------------------------------------------------------------
@api_command("index-faces")
@collection_opt
@image_opt
@click.option("--external-image-id", default=None)
@click.option("--max-faces", type=int, default=None)
@quality_opt
@attributes_option("--detection-attributes")
@click.option("--user-id", default=None, help="FaceLink extension: associate the indexed faces with this user.")
def _index_faces(ctx: Context, collection_id: str, image: str | None, image_bytes: str | None,
                 external_image_id: str | None, max_faces: int | None, quality_filter: str,
                 detection_attributes: tuple[str, ...], user_id: str | None) -> Any:
    """IndexFaces: detect, filter by quality, embed and store faces of one image."""
    return faces.index_faces(ctx, collection_id, image_value("image", image, image_bytes), external_image_id,
                             max_faces, quality_filter, split_ids(detection_attributes) or None, user_id)


@api_command("list-faces")
@collection_opt
@paging_options(1000)
@click.option("--user-id", default=None)
@click.option("--face-ids", cls=ListOption, help="Only these faces: --face-ids F1 F2.")
def _list_faces(ctx: Context, collection_id: str, max_results: int | None, next_token: str | None,
                starting_token: str | None, max_items: int | None, page_size: int | None,
                user_id: str | None, face_ids: tuple[str, ...]) -> Any:
    """ListFaces (every page unless --max-results/--next-token), optionally by UserId or FaceIds."""
    ids = split_ids(face_ids) or None
    return paginate(lambda n, t: faces.list_faces(ctx, collection_id, n, t, user_id, ids), ("Faces",),
                    max_results, next_token, starting_token, max_items, page_size)


@api_command("delete-faces")
@collection_opt
@face_ids_opt
def _delete_faces(ctx: Context, collection_id: str, face_ids: tuple[str, ...]) -> Any:
    """DeleteFaces: DeletedFaces and UnsuccessfulFaceDeletions."""
    return faces.delete_faces(ctx, collection_id, split_ids(face_ids))


@api_command("search-faces")
@collection_opt
@click.option("--face-id", required=True)
@click.option("--face-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-faces", type=int, default=4096, show_default=True)
def _search_faces(ctx: Context, collection_id: str, face_id: str, face_match_threshold: float, max_faces: int) -> Any:
    """SearchFaces: faces similar to an indexed face."""
    return search.search_faces(ctx, collection_id, face_id, face_match_threshold, max_faces)


@api_command("search-faces-by-image")
@collection_opt
@image_opt
@click.option("--face-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-faces", type=int, default=4096, show_default=True)
@quality_option("NONE")
def _search_faces_by_image(ctx: Context, collection_id: str, image: str | None, image_bytes: str | None,
                           face_match_threshold: float, max_faces: int, quality_filter: str) -> Any:
    """SearchFacesByImage: the image's largest face against the collection."""
    return search.search_faces_by_image(ctx, collection_id, image_value("image", image, image_bytes),
                                        face_match_threshold, max_faces, quality_filter)


# -- users -----------------------------------------------------------------------------------
user_opt = click.option("--user-id", required=True)


@api_command("create-user")
@collection_opt
@user_opt
@token_opt
def _create_user(ctx: Context, collection_id: str, user_id: str, client_request_token: str | None) -> Any:
    """CreateUser: a badge holder."""
    return users.create_user(ctx, collection_id, user_id, client_request_token)


@api_command("delete-user")
@collection_opt
@user_opt
@token_opt
def _delete_user(ctx: Context, collection_id: str, user_id: str, client_request_token: str | None) -> Any:
    """DeleteUser (its faces stay, unassociated)."""
    return users.delete_user(ctx, collection_id, user_id, client_request_token)


@api_command("list-users")
@collection_opt
@paging_options(500)
def _list_users(ctx: Context, collection_id: str, max_results: int | None, next_token: str | None,
                starting_token: str | None, max_items: int | None, page_size: int | None) -> Any:
    """ListUsers (every page unless --max-results/--next-token, as the aws CLI)."""
    return paginate(lambda n, t: users.list_users(ctx, collection_id, n, t), ("Users",),
                    max_results, next_token, starting_token, max_items, page_size)


@api_command("associate-faces")
@collection_opt
@user_opt
@face_ids_opt
@click.option("--user-match-threshold", type=float, default=75.0, show_default=True)
@token_opt
def _associate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: tuple[str, ...],
                     user_match_threshold: float, client_request_token: str | None) -> Any:
    """AssociateFaces with a user."""
    return users.associate_faces(ctx, collection_id, user_id, split_ids(face_ids), user_match_threshold,
                                 client_request_token)


@api_command("disassociate-faces")
@collection_opt
@user_opt
@face_ids_opt
@token_opt
def _disassociate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: tuple[str, ...],
                        client_request_token: str | None) -> Any:
    """DisassociateFaces from a user."""
    return users.disassociate_faces(ctx, collection_id, user_id, split_ids(face_ids), client_request_token)


@api_command("search-users")
@collection_opt
@click.option("--user-id", default=None)
@click.option("--face-id", default=None)
@click.option("--user-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-users", type=int, default=500, show_default=True)
def _search_users(ctx: Context, collection_id: str, user_id: str | None, face_id: str | None,
                  user_match_threshold: float, max_users: int) -> Any:
    """SearchUsers by UserId or FaceId."""
    return users.search_users(ctx, collection_id, user_id, face_id, user_match_threshold, max_users)


@api_command("search-users-by-image")
@collection_opt
@image_opt
@click.option("--user-match-threshold", type=float, default=80.0, show_default=True)
@click.option("--max-users", type=int, default=500, show_default=True)
@quality_option("NONE")
def _search_users_by_image(ctx: Context, collection_id: str, image: str | None, image_bytes: str | None,
                           user_match_threshold: float, max_users: int, quality_filter: str) -> Any:
    """SearchUsersByImage: the image's largest face against users."""
    return users.search_users_by_image(ctx, collection_id, image_value("image", image, image_bytes),
                                       user_match_threshold, max_users, quality_filter)
