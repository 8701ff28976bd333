"""Users (badge holders): CreateUser, DeleteUser, ListUsers, AssociateFaces, DisassociateFaces,
SearchUsers, SearchUsersByImage. A user is matched by the best of its enrolled faces."""

from __future__ import annotations

from typing import Any

import numpy as np

from facelink.errors import (
    ConflictException,
    InvalidParameterException,
    ResourceNotFoundException,
)
from facelink.models.image import ImageInput, decode_image
from facelink.models.shapes import face_detail
from facelink.models.similarity import cosine_to_similarity

from . import validate
from .context import Context
from .idempotency import idempotent
from .quality_filter import QUALITY_FILTERS, rejection_reasons
from .search import nearest_users
from .store import FaceRow
from .views import public_model_version

ACTIVE = {"UserStatus": "ACTIVE"}


def _status(ctx: Context, collection_id: str, user_id: str) -> dict[str, str]:
    """ACTIVE once a user has faces; CREATED (Rekognition's state for a new user) before."""
    has_faces = bool(ctx.store.list_faces(collection_id, 0, 1, user_id=user_id))
    return ACTIVE if has_faces else {"UserStatus": "CREATED"}


def _require_user(ctx: Context, collection_id: str, user_id: str) -> None:
    if not ctx.store.user_exists(collection_id, user_id):
        raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")


def create_user(ctx: Context, collection_id: str, user_id: str,
                client_request_token: str | None = None) -> dict[str, Any]:
    """CreateUser; an existing UserId is ConflictException (as in Rekognition)."""
    ctx.collection(validate.collection_id(collection_id))
    validate.user_id(user_id)

    def run() -> dict[str, Any]:
        if ctx.store.user_exists(collection_id, user_id):
            raise ConflictException(f"user {user_id!r} already exists in {collection_id!r}")
        ctx.store.insert_user(collection_id, user_id)
        return {}

    return idempotent(ctx, "CreateUser", client_request_token,
                      {"CollectionId": collection_id, "UserId": user_id}, run)


def delete_user(ctx: Context, collection_id: str, user_id: str,
                client_request_token: str | None = None) -> dict[str, Any]:
    """Deletes the user; its faces stay in the collection, no longer associated."""
    ctx.collection(validate.collection_id(collection_id))
    validate.user_id(user_id)

    def run() -> dict[str, Any]:
        _require_user(ctx, collection_id, user_id)
        ctx.store.delete_user(collection_id, user_id)
        return {}

    return idempotent(ctx, "DeleteUser", client_request_token,
                      {"CollectionId": collection_id, "UserId": user_id}, run)


def list_users(ctx: Context, collection_id: str, max_results: int | None = None,
               next_token: str | None = None) -> dict[str, Any]:
    """ListUsers. With ``ctx.extras`` each user also carries FaceLink's FaceCount."""
    ctx.collection(validate.collection_id(collection_id))
    max_results = validate.int_range("MaxResults", 500 if max_results is None else max_results, 1, 500)
    after = validate.decode_token(next_token, str) or ""
    rows = ctx.store.list_users(collection_id, after, max_results + 1)
    users = []
    for u, n in rows[:max_results]:
        user: dict[str, Any] = {"UserId": u, "UserStatus": "ACTIVE" if n else "CREATED"}
        if ctx.extras:
            user["FaceCount"] = n
        users.append(user)
    out: dict[str, Any] = {"Users": users}
    if len(rows) > max_results:
        out["NextToken"] = validate.encode_token(rows[max_results - 1][0])
    return out


def _lost(ctx: Context, collection_id: str, wanted: list[FaceRow], done: list[FaceRow],
          user_id: str | None = None) -> list[dict[str, Any]]:
    """Unsuccessful* entries for the faces of ``wanted`` that ``Store.set_user`` left alone
    because another write changed them first: FACE_NOT_FOUND when deleted, else
    ASSOCIATED_TO_A_DIFFERENT_USER (with ``user_id``, or the face's user now)."""
    changed = {f.id for f in done}
    missed = [f.face_id for f in wanted if f.id not in changed]
    now = {f.face_id: f for f in ctx.store.get_faces(collection_id, missed)}
    return [{"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]} if fid not in now else
            {"FaceId": fid, "UserId": user_id or now[fid].user_id, "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]}
            for fid in missed]


def association_failures(ctx: Context, collection_id: str, user_id: str, candidates: list[tuple[str, np.ndarray]],
                         threshold: float) -> dict[str, dict[str, Any]]:
    """UnsuccessfulFaceAssociation entries (by FaceId) for candidate faces that do not look like
    the user's existing faces: Similarity to the user's best face below ``threshold``."""
    current = ctx.store.list_faces(collection_id, 0, 4096, user_id=user_id)
    if not current:
        return {}
    user_matrix = np.stack([f.embedding for f in current])
    cal = ctx.calibration(ctx.collection(collection_id))
    failed = {}
    for fid, embedding in candidates:
        sim = float(cosine_to_similarity(float((user_matrix @ embedding).max()), cal))
        if sim < threshold:
            failed[fid] = {"FaceId": fid, "UserId": user_id, "Confidence": round(sim, 4),
                           "Reasons": ["LOW_MATCH_CONFIDENCE"]}
    return failed


def associate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: list[str],
                    user_match_threshold: float = 75.0, client_request_token: str | None = None) -> dict[str, Any]:
    """Associate faces with a user. Once a user has faces, a new face must look like them
    (Similarity >= UserMatchThreshold to the user's best face): a wrong photo is refused."""
    ctx.collection(validate.collection_id(collection_id))
    validate.user_id(user_id)
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    ids = validate.face_ids(face_ids, max_len=100)

    def run() -> dict[str, Any]:
        _require_user(ctx, collection_id, user_id)
        found, failed = ctx.lookup_faces(collection_id, ids)
        free = []
        for f in found:
            if f.user_id is not None and f.user_id != user_id:
                failed.append({"FaceId": f.face_id, "UserId": f.user_id,
                               "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
            elif f.user_id is None:
                free.append(f)
        low = association_failures(ctx, collection_id, user_id, [(f.face_id, f.embedding) for f in free],
                                   threshold)
        ok = [f for f in free if f.face_id not in low]
        failed += list(low.values())
        if ok:  # a face another desk associated or deleted since it was read is not taken
            done = ctx.store.set_user(collection_id, ok, user_id)
            failed += _lost(ctx, collection_id, ok, done)
            ok = done
        return {"AssociatedFaces": [{"FaceId": f.face_id} for f in ok],
                "UnsuccessfulFaceAssociations": failed, **_status(ctx, collection_id, user_id)}

    return idempotent(ctx, "AssociateFaces", client_request_token,
                      {"CollectionId": collection_id, "UserId": user_id, "FaceIds": ids,
                       "UserMatchThreshold": threshold}, run)


def disassociate_faces(ctx: Context, collection_id: str, user_id: str, face_ids: list[str],
                       client_request_token: str | None = None) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    validate.user_id(user_id)
    ids = validate.face_ids(face_ids, max_len=100)

    def run() -> dict[str, Any]:
        _require_user(ctx, collection_id, user_id)
        found, failed = ctx.lookup_faces(collection_id, ids)
        ok = []
        for f in found:
            if f.user_id != user_id:
                failed.append({"FaceId": f.face_id, "UserId": user_id,
                               "Reasons": ["ASSOCIATED_TO_A_DIFFERENT_USER"]})
            else:
                ok.append(f)
        if ok:
            done = ctx.store.set_user(collection_id, ok, None)
            failed += _lost(ctx, collection_id, ok, done, user_id)
            ok = done
        return {"DisassociatedFaces": [{"FaceId": f.face_id} for f in ok],
                "UnsuccessfulFaceDisassociations": failed, **_status(ctx, collection_id, user_id)}

    return idempotent(ctx, "DisassociateFaces", client_request_token,
                      {"CollectionId": collection_id, "UserId": user_id, "FaceIds": ids}, run)


def _user_matches(ctx: Context, collection_id: str, vectors: list[np.ndarray], threshold: float,
                  max_users: int, exclude_user: str | None = None) -> list[dict[str, Any]]:
    """UserMatches: every user found has an associated face, so is ACTIVE."""
    return [{"Similarity": round(s, 4), "User": {"UserId": u, **ACTIVE}}
            for u, s in nearest_users(ctx, collection_id, vectors, threshold, max_users, exclude_user)]


def search_users(ctx: Context, collection_id: str, user_id: str | None = None, face_id: str | None = None,
                 user_match_threshold: float = 80.0, max_users: int = 500) -> dict[str, Any]:
    """Search users with a face (FaceId) or with a user's faces (UserId, best of its faces)."""
    coll = ctx.collection(validate.collection_id(collection_id))
    if (user_id is None) == (face_id is None):
        raise InvalidParameterException("give exactly one of UserId or FaceId")
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    validate.int_range("MaxUsers", max_users, 1, 500)
    out: dict[str, Any] = {"FaceModelVersion": public_model_version(coll.face_model_version)}
    if face_id is not None:
        found = ctx.store.get_faces(collection_id, [validate.face_id(face_id)])
        if not found:
            raise ResourceNotFoundException(f"face {face_id} is not in collection {collection_id!r}")
        out["SearchedFace"] = {"FaceId": found[0].face_id}
        vectors, exclude = [found[0].embedding], found[0].user_id
    else:
        _require_user(ctx, collection_id, validate.user_id(user_id))
        faces = _all_faces_of(ctx, collection_id, user_id)
        if not faces:
            raise InvalidParameterException(f"user {user_id!r} has no faces to search with")
        out["SearchedUser"] = {"UserId": user_id}
        vectors, exclude = [f.embedding for f in faces], user_id
    out["UserMatches"] = _user_matches(ctx, collection_id, vectors, threshold, max_users, exclude)
    return out


def _all_faces_of(ctx: Context, collection_id: str, user_id: str, page: int = 4096) -> list[FaceRow]:
    """Every face associated with ``user_id``, read a page at a time."""
    out: list[FaceRow] = []
    while True:
        rows = ctx.store.list_faces(collection_id, out[-1].id if out else 0, page, user_id=user_id)
        out += rows
        if len(rows) < page:
            return out


def search_users_by_image(ctx: Context, collection_id: str, image: ImageInput,
                          user_match_threshold: float = 80.0, max_users: int = 500,
                          quality_filter: str = "NONE") -> dict[str, Any]:
    """The image's largest face against users; the other faces are UnsearchedFaces. With a
    QualityFilter, a largest face that fails it is InvalidParameterException."""
    validate.collection_id(collection_id)
    threshold = validate.float_range("UserMatchThreshold", user_match_threshold, 0, 100)
    validate.int_range("MaxUsers", max_users, 1, 500)
    validate.choice("QualityFilter", quality_filter, QUALITY_FILTERS)
    coll = ctx.collection_for_engine(collection_id)
    img = decode_image(image)
    faces = ctx.engine.detect(img.pixels)
    if not faces:
        raise InvalidParameterException("no face found in the image")
    reasons = rejection_reasons(faces[0], quality_filter)
    if reasons:
        raise InvalidParameterException(f"the largest face does not pass QualityFilter {quality_filter}: "
                                        + ", ".join(reasons))
    face = ctx.engine.embed(img.pixels, faces[:1])[0]
    return {"UserMatches": _user_matches(ctx, collection_id, [face.embedding], threshold, max_users),
            "FaceModelVersion": public_model_version(coll.face_model_version),
            "SearchedFace": {"FaceDetail": face_detail(face, img.width, img.height)},
            "UnsearchedFaces": [{"FaceDetails": face_detail(f, img.width, img.height),
                                 "Reasons": ["FACE_NOT_LARGEST", *rejection_reasons(f, quality_filter)]}
                                for f in faces[1:]]}
