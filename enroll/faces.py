"""Collection and face operations, one function per Rekognition operation.

CreateCollection, DescribeCollection, ListCollections, DeleteCollection, IndexFaces, ListFaces,
DeleteFaces (the searches are in ``search``). Each takes a ``Context`` and returns a dict in
Rekognition's response shape; errors are the typed exceptions of ``facelink.errors``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from facelink.errors import (
    ConflictException,
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from facelink.models.engine import AnalyzedFace, FaceEngine
from facelink.models.image import ImageInput, decode_image, read_image_bytes
from facelink.models.risk import stranger_risk
from facelink.models.shapes import bounding_box, face_detail

from . import validate
from .context import Context
from .quality_filter import QUALITY_FILTERS, rejection_reasons
from .store import FaceRow
from .users import association_failures
from .views import face_json, public_model_version

INDEX_USER_MATCH_THRESHOLD = 75.0  # IndexFaces --user-id refuses a face unlike the user's (as AssociateFaces)


def _arn(collection_id: str) -> str:
    return f"facelink:collection/{collection_id}"


# -- collections -----------------------------------------------------------------------------
def create_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    validate.collection_id(collection_id)
    if ctx.store.get_collection(collection_id) is not None:
        raise ResourceAlreadyExistsException(f"collection {collection_id!r} already exists")
    coll = ctx.store.insert_collection(collection_id, ctx.engine.model_version)
    return {"StatusCode": 200, "CollectionArn": _arn(collection_id),
            "FaceModelVersion": public_model_version(coll.face_model_version)}


def describe_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    """DescribeCollection; CreationTimestamp in epoch seconds as on the wire. With ``ctx.extras``
    (`facelink --facelink-extras`) also FaceLink's own members under ``FaceLinkExtensions``: the
    door's expected stranger rate per attempt (README "What Similarity means") and the
    descriptive FaceModelVersion."""
    coll = ctx.collection(validate.collection_id(collection_id))
    face_count = ctx.store.count("faces", collection_id)
    out: dict[str, Any] = {
        "FaceCount": face_count, "UserCount": ctx.store.count("users", collection_id),
        "FaceModelVersion": public_model_version(coll.face_model_version), "CollectionARN": _arn(collection_id),
        "CreationTimestamp": round(coll.created_at, 3)}
    if ctx.extras:
        risk = stranger_risk(ctx.calibration(coll), ctx.similarity_threshold, face_count, ctx.max_stranger_rate)
        out["FaceLinkExtensions"] = {"StrangerRisk": risk, "FaceModelVersion": coll.face_model_version}
    return out


def list_collections(ctx: Context, max_results: int | None = None, next_token: str | None = None,
                     allowed: Collection[str] | None = None) -> dict[str, Any]:
    """ListCollections. ``allowed`` (a collection-limited serve key's collections; None: all):
    pages run over those collections only, so neither a page nor a NextToken names another."""
    max_results = validate.max_results(max_results, 1000, 4096)
    after = validate.decode_token(next_token, str) or ""
    if allowed is None:
        ids = ctx.store.list_collections(after, max_results + 1)
    else:
        ids = [c for c in sorted(allowed) if c > after and ctx.store.get_collection(c) is not None][:max_results + 1]
    out: dict[str, Any] = {"CollectionIds": ids[:max_results],
                           "FaceModelVersions": [public_model_version(ctx.store.get_collection(c).face_model_version)
                                                 for c in ids[:max_results]]}
    if len(ids) > max_results:
        out["NextToken"] = validate.encode_token(ids[max_results - 1])
    return out


def delete_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    ctx.store.delete_collection(collection_id)
    return {"StatusCode": 200}


# -- faces -----------------------------------------------------------------------------------
def image_bytes_and_digest(image: ImageInput) -> tuple[ImageInput, str]:
    if isinstance(image, np.ndarray):
        return image, hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    data = bytes(image) if isinstance(image, (bytes, bytearray)) else read_image_bytes(image)
    return data, hashlib.sha256(data).hexdigest()


def _thumbnail(bgr: np.ndarray, box: np.ndarray) -> bytes:
    x, y, w, h = (int(round(v)) for v in box)
    crop = bgr[max(0, y):y + h, max(0, x):x + w]
    crop = cv2.resize(crop, (96, max(1, int(96 * crop.shape[0] / max(crop.shape[1], 1)))))
    return cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


@dataclass(frozen=True)
class PreparedImage:
    """The compute half of IndexFaces (decode, detect, filter, embed): no database involved,
    so bulk enrollment can run it on several worker threads."""

    digest: str
    width: int
    height: int
    orientation: str | None
    kept: list[AnalyzedFace]
    unindexed: list[tuple[AnalyzedFace, list[str]]]
    thumbnails: list[bytes] | None


ENROLL_DECODE_SIDE = 1280  # badge photos: twice the detector's input is plenty for a 112 px crop


def prepare_index(engine: FaceEngine, data: ImageInput, digest: str, quality_filter: str,
                  max_faces: int | None, thumbnails: bool = False) -> PreparedImage:
    img = decode_image(data, max_side=ENROLL_DECODE_SIDE)
    keep, unindexed = [], []
    for face in engine.detect(img.pixels):
        reasons = rejection_reasons(face, quality_filter)
        if not reasons and max_faces is not None and len(keep) >= max_faces:
            reasons = ["EXCEEDS_MAX_FACES"]
        if reasons:
            unindexed.append((face, reasons))
        else:
            keep.append(face)
    embedded = engine.embed(img.pixels, keep)
    thumbs = [_thumbnail(img.pixels, f.detection.box) for f in embedded] if thumbnails else None
    return PreparedImage(digest, img.width, img.height, img.orientation_correction, embedded, unindexed, thumbs)


def validate_index_args(collection_id: str, external_image_id: str | None, max_faces: int | None,
                        quality_filter: str, user_id: str | None) -> None:
    validate.collection_id(collection_id)
    validate.external_image_id(external_image_id)
    validate.choice("QualityFilter", quality_filter, QUALITY_FILTERS)
    if max_faces is not None:  # the model sets no maximum; at most 100 faces are detected anyway
        validate.int_range("MaxFaces", max_faces, 1, 2**31 - 1)
    if user_id is not None:
        validate.user_id(user_id)


def _refuse_unlike(ctx: Context, collection_id: str, user_id: str, candidates: list[tuple[str, np.ndarray]]) -> None:
    low = association_failures(ctx, collection_id, user_id, candidates, INDEX_USER_MATCH_THRESHOLD)
    if low:
        sim = min(f["Confidence"] for f in low.values())
        raise InvalidParameterException(
            f"the face does not look like user {user_id!r}'s enrolled faces (Similarity {sim} < "
            f"{INDEX_USER_MATCH_THRESHOLD}): nothing indexed or associated")


def _associate_existing(ctx: Context, collection_id: str, existing: list[FaceRow], user_id: str,
                        unless_taken: bool = False) -> list[FaceRow]:
    """Re-indexing an indexed image with a UserId associates its faces (idempotently)."""
    if not ctx.store.user_exists(collection_id, user_id):
        raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")
    other = [f for f in existing if f.user_id not in (None, user_id)]
    if other:
        raise ConflictException(f"face {other[0].face_id} of this image is associated with user "
                                f"{other[0].user_id!r}; disassociate it first")
    free = [f for f in existing if f.user_id is None]
    if not free:
        return existing
    _refuse_unlike(ctx, collection_id, user_id, [(f.face_id, f.embedding) for f in free])
    if len(ctx.store.set_user(collection_id, free, user_id, unless_taken=unless_taken)) != len(free):  # another desk's write came first
        raise ConflictException("a face of this image was associated with another user or deleted meanwhile; "
                                "list its faces and try again")
    return ctx.store.faces_by_rows([f.id for f in existing])


def already_indexed(ctx: Context, collection_id: str, digest: str, external_image_id: str | None,
                    user_id: str | None = None, unless_taken: bool = False) -> dict[str, Any] | None:
    """IndexFaces' answer for an image indexed before with the same ExternalImageId, else None.
    With ``user_id`` its faces are associated with that user if they are not yet (``unless_taken``,
    a bulk run: not a photo taken from a user, ``Store.set_user``)."""
    existing = ctx.store.faces_by_image(collection_id, digest, external_image_id)
    if not existing:
        return None
    if user_id is not None:
        existing = _associate_existing(ctx, collection_id, existing, user_id, unless_taken)
    version = ctx.collection(collection_id).face_model_version
    return {"FaceModelVersion": public_model_version(version),
            "FaceRecords": [{"Face": face_json(f, version)} for f in existing], "UnindexedFaces": []}


def store_prepared(ctx: Context, collection_id: str, prepared: PreparedImage,
                   external_image_id: str | None, user_id: str | None, unless_taken: bool = False) -> dict[str, Any]:
    """The database half of IndexFaces: insert the kept faces (associated with ``user_id`` in the
    same transaction: both happen or neither) and build the response."""
    version = ctx.collection(collection_id).face_model_version
    p = prepared
    response: dict[str, Any] = {"FaceModelVersion": public_model_version(version), "FaceRecords": [],
                                "UnindexedFaces": []}
    if p.orientation:
        response["OrientationCorrection"] = p.orientation
    image_id = str(uuid.uuid4())
    rows = [{"face_id": str(uuid.uuid4()), "collection_id": collection_id, "image_id": image_id,
             "external_image_id": external_image_id, "user_id": user_id, "image_sha256": p.digest,
             "bounding_box": bounding_box(f.detection.box, p.width, p.height),
             "confidence": f.detection.score * 100.0, "embedding": f.embedding} for f in p.kept]
    if user_id is not None and rows:
        if not ctx.store.user_exists(collection_id, user_id):
            raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")
        _refuse_unlike(ctx, collection_id, user_id, [(r["face_id"], r["embedding"]) for r in rows])
    row_ids = ctx.store.insert_faces(rows, p.thumbnails, require_user=user_id,
                                     unless_taken=unless_taken) if rows else []
    for f, row in zip(p.kept, ctx.store.faces_by_rows(row_ids), strict=True):
        response["FaceRecords"].append({"Face": face_json(row, version),
                                        "FaceDetail": face_detail(f, p.width, p.height)})
    for f, reasons in p.unindexed:
        response["UnindexedFaces"].append({"Reasons": reasons, "FaceDetail": face_detail(f, p.width, p.height)})
    return response


def index_faces(ctx: Context, collection_id: str, image: ImageInput, external_image_id: str | None = None,
                max_faces: int | None = None, quality_filter: str = "AUTO",
                detection_attributes: str | list[str] | None = None, user_id: str | None = None) -> dict[str, Any]:
    """Detect faces, index those that pass QualityFilter (largest first, at most MaxFaces).

    Indexing the same image bytes with the same ExternalImageId again stores nothing new and
    returns the faces already indexed. ``user_id`` (FaceLink extension) associates the faces,
    new or already indexed, in the same transaction as the indexing (both or neither).
    """
    validate_index_args(collection_id, external_image_id, max_faces, quality_filter, user_id)
    validate.attributes("DetectionAttributes", detection_attributes)
    ctx.collection_for_engine(collection_id)
    if user_id is not None and not ctx.store.user_exists(collection_id, user_id):
        raise ResourceNotFoundException(f"user {user_id!r} does not exist in {collection_id!r}")
    data, digest = image_bytes_and_digest(image)
    done = already_indexed(ctx, collection_id, digest, external_image_id, user_id)
    if done is not None:
        return done
    prepared = prepare_index(ctx.engine, data, digest, quality_filter, max_faces, ctx.keep_thumbnails)
    return store_prepared(ctx, collection_id, prepared, external_image_id, user_id)


def list_faces(ctx: Context, collection_id: str, max_results: int | None = None, next_token: str | None = None,
               user_id: str | None = None, face_ids: list[str] | None = None) -> dict[str, Any]:
    coll = ctx.collection(validate.collection_id(collection_id))
    max_results = validate.max_results(max_results, 1000, 4096)
    if user_id is not None:
        validate.user_id(user_id)
    ids = validate.face_ids(face_ids) if face_ids is not None else None  # [], "", {}, 0: refused, not 'all'
    after = validate.decode_token(next_token, int) or 0
    rows = ctx.store.list_faces(collection_id, after, max_results + 1, user_id, ids)
    out: dict[str, Any] = {"Faces": [face_json(f, coll.face_model_version) for f in rows[:max_results]],
                           "FaceModelVersion": public_model_version(coll.face_model_version)}
    if len(rows) > max_results:
        out["NextToken"] = validate.encode_token(rows[max_results - 1].id)
    return out


def delete_faces(ctx: Context, collection_id: str, face_ids: list[str]) -> dict[str, Any]:
    """Faces still associated with a user are refused (disassociate first), as in Rekognition."""
    ctx.collection(validate.collection_id(collection_id))
    found, failed = ctx.lookup_faces(collection_id, validate.face_ids(face_ids))
    deletable = []
    for f in found:
        if f.user_id is not None:
            failed.append({"FaceId": f.face_id, "UserId": f.user_id, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]})
        else:
            deletable.append(f.face_id)
    deleted = ctx.store.delete_faces(collection_id, deletable) if deletable else []
    return {"DeletedFaces": deleted, "UnsuccessfulFaceDeletions": failed}
