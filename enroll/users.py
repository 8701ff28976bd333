"""Users (badge holders): CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces,
SearchUsers, SearchUsersByImage. A user is matched by the best of its enrolled faces."""

from __future__ import annotations

from typing import Any

import numpy as np

from facelink.errors import (
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from facelink.models.image import ImageInput, decode_image
from facelink.models.shapes import face_detail
from facelink.models.similarity import cosine_to_similarity

from . import validate
from .context import Context
from .search import MAX_SEARCH_FACES, nearest_faces

ACTIVE = {"UserStatus": "ACTIVE"}


def _require_user(ctx: Context, collection_id: str, user_id: str) -> None:
    if not ctx.store.user_exists(collection_id, user_id):
        raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")


def create_user(ctx: Context, collection_id: str, user_id: str) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    validate.user_id(user_id)
    if ctx.store.user_exists(collection_id, user_id):
        raise ResourceAlreadyExistsException(f"user {user_id!r} already exists in {collection_id!r}")
    ctx.store.insert_user(collection_id, user_id)
    return {}


def delete_user(ctx: Context, collection_id: str, user_id: str) -> dict[str, Any]:
    """Deletes the user; its faces stay in the collection, no longer associated."""
    ctx.collection(validate.collection_id(collection_id))
    _require_user(ctx, collection_id, validate.user_id(user_id))
    ctx.store.delete_user(collection_id, user_id)
    return {}


def list_users(ctx: Context, collection_id: str, max_results: int = 500,
               next_token: str | None = None) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    validate.int_range("MaxResults", max_results, 1, 500)
    after = validate.decode_token(next_token, str) or ""
    rows = ctx.store.list_users(collection_id, after, max_results + 1)
    out: dict[str, Any] = {"Users": [{"UserId": u, **ACTIVE, "FaceCount": n} for u, n in rows[:max_results]]}
    if len(rows) > max_results:
        out["NextToken"] = validate.encode_token(rows[max_results - 1][0])
    return out


def associate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: list[str],
                    user_match_threshold: float = 75.0) -> dict[str, Any]:
    """Associate faces with a user. Once a user has faces, a new face must look like them
    (Similarity >= UserMatchThreshold to the user's best face): a wrong photo is refused."""
    coll = ctx.collection(validate.collection_id(collection_id))
    _require_user(ctx, collection_id, validate.user_id(user_id))
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    found, failed = ctx.lookup_faces(collection_id, validate.face_ids(face_ids, max_len=100))
    current = ctx.store.list_faces(collection_id, 0, 4096, user_id=user_id)
    user_matrix = np.stack([f.embedding for f in current]) if current else None
    cal = ctx.calibration(coll)
    ok = []
    for f in found:
        fid = f.face_id
        if f.user_id == user_id:
            continue
        if f.user_id is not None:
            failed.append({"FaceId": fid, "UserId": f.user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
            continue
        if user_matrix is not None:
            sim = float(cosine_to_similarity(float((user_matrix @ f.embedding).max()), cal))
            if sim < threshold:
                failed.append({"FaceId": fid, "UserId": user_id, "Confidence": round(sim, 4),
                               "Reasons": ["LOW_MATCH_CONFIDENCE"]})
                continue
        ok.append(f)
    if ok:
        ctx.store.set_user(collection_id, ok, user_id)
    return {"AssociatedFaces": [{"FaceId": f.face_id} for f in ok],
            "UnsuccessfulFaceAssociations": failed, **ACTIVE}


def disassociate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: list[str]) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    _require_user(ctx, collection_id, validate.user_id(user_id))
    found, failed = ctx.lookup_faces(collection_id, validate.face_ids(face_ids, max_len=100))
    ok = []
    for f in found:
        if f.user_id != user_id:
            failed.append({"FaceId": f.face_id, "UserId": user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
        else:
            ok.append(f)
    if ok:
        ctx.store.set_user(collection_id, ok, None)
    return {"DisassociatedFaces": [{"FaceId": f.face_id} for f in ok],
            "UnsuccessfulFaceDisassociations": failed, **ACTIVE}


def _user_matches(ctx: Context, collection_id: str, vector: np.ndarray, threshold: float,
                  max_users: int, exclude_user: str | None = None) -> list[dict[str, Any]]:
    best: dict[str, float] = {}
    for face, sim in nearest_faces(ctx, collection_id, vector, threshold, MAX_SEARCH_FACES):
        if face.user_id is not None and face.user_id != exclude_user:
            best[face.user_id] = max(best.get(face.user_id, 0.0), sim)
    ranked = sorted(best.items(), key=lambda t: -t[1])[:max_users]
    return [{"Similarity": round(s, 4), "User": {"UserId": u, **ACTIVE}} for u, s in ranked]


def search_users(ctx: Context, collection_id: str, user_id: str | None = None, face_id: str | None = None,
                 user_match_threshold: float = 80.0, max_users: int = 500) -> dict[str, Any]:
    """Search users with a face (FaceId) or with a user's faces (UserId, best of its faces)."""
    coll = ctx.collection(validate.collection_id(collection_id))
    if (user_id is None) == (face_id is None):
        raise InvalidParameterException("give exactly one of UserId or FaceId")
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    validate.int_range("MaxUsers", max_users, 1, 500)
    out: dict[str, Any] = {"FaceModelVersion": coll.face_model_version}
    if face_id is not None:
        found = ctx.store.get_faces(collection_id, [validate.face_id(face_id)])
        if not found:
            raise ResourceNotFoundException(f"face {face_id} is not in collection {collection_id!r}")
        out["SearchedFace"] = {"FaceId": found[0].face_id}
        vectors, exclude = [found[0].embedding], found[0].user_id
    else:
        _require_user(ctx, collection_id, validate.user_id(user_id))
        faces = ctx.store.list_faces(collection_id, 0, 4096, user_id=user_id)
        if not faces:
            raise InvalidParameterException(f"user {user_id!r} has no faces to search with")
        out["SearchedUser"] = {"UserId": user_id}
        vectors, exclude = [f.embedding for f in faces], user_id
    merged: dict[str, dict[str, Any]] = {}
    for v in vectors:
        for m in _user_matches(ctx, collection_id, v, threshold, max_users, exclude):
            uid = m["User"]["UserId"]
            if uid not in merged or merged[uid]["Similarity"] < m["Similarity"]:
                merged[uid] = m
    out["UserMatches"] = sorted(merged.values(), key=lambda m: -m["Similarity"])[:max_users]
    return out


def search_users_by_image(ctx: Context, collection_id: str, image: ImageInput,
                          user_match_threshold: float = 80.0, max_users: int = 500) -> dict[str, Any]:
    validate.collection_id(collection_id)
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    validate.int_range("MaxUsers", max_users, 1, 500)
    coll = ctx.collection_for_engine(collection_id)
    img = decode_image(image)
    faces = ctx.engine.detect(img.pixels)
    if not faces:
        raise InvalidParameterException("no face found in the image")
    face = ctx.engine.embed(img.pixels, faces[:1])[0]
    return {"UserMatches": _user_matches(ctx, collection_id, face.embedding, threshold, max_users),
            "FaceModelVersion": coll.face_model_version,
            "SearchedFace": {"FaceDetail": face_detail(face, img.width, img.height)},
            "UnsearchedFaces": [{"FaceDetails": face_detail(f, img.width, img.height),
                                 "Reasons": ["FACE_NOT_LARGEST"]} for f in faces[1:]]}
