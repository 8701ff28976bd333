"""Collection and face operations, one function per Rekognition operation.

CreateCollection, DescribeCollection, ListCollections, DeleteCollection, IndexFaces, ListFaces,
DeleteFaces, SearchFaces, SearchFacesByImage. Each takes a ``Context`` and returns a dict in
Rekognition's response shape; errors are the typed exceptions of ``facelink.models.errors``.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np
from facelink.models.errors import (
    InvalidParameterException,
    ResourceAlreadyExistsException,
    ResourceNotFoundException,
)
from facelink.models.image import ImageInput, decode_image, read_image_bytes
from facelink.models.shapes import bounding_box, face_detail
from facelink.models.similarity import cosine_to_similarity, similarity_to_cosine

from . import validate
from .context import Context
from .quality_filter import QUALITY_FILTERS, rejection_reasons
from .store import FaceRow

MAX_SEARCH_FACES = 4096


def _arn(collection_id: str) -> str:
    return f"facelink:collection/{collection_id}"


def face_json(f: FaceRow, model_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"FaceId": f.face_id, "BoundingBox": f.bounding_box, "ImageId": f.image_id,
                           "Confidence": round(f.confidence, 4), "IndexFacesModelVersion": model_version}
    if f.external_image_id is not None:
        out["ExternalImageId"] = f.external_image_id
    if f.user_id is not None:
        out["UserId"] = f.user_id
    return out


# -- collections -----------------------------------------------------------------------------
def create_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    validate.collection_id(collection_id)
    if ctx.store.get_collection(collection_id) is not None:
        raise ResourceAlreadyExistsException(f"collection {collection_id!r} already exists")
    coll = ctx.store.insert_collection(collection_id, ctx.engine.model_version)
    return {"StatusCode": 200, "CollectionArn": _arn(collection_id),
            "FaceModelVersion": coll.face_model_version}


def describe_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    coll = ctx.collection(validate.collection_id(collection_id))
    return {"FaceCount": ctx.store.count("faces", collection_id),
            "UserCount": ctx.store.count("users", collection_id),
            "FaceModelVersion": coll.face_model_version, "CollectionARN": _arn(collection_id),
            "CreationTimestamp": datetime.fromtimestamp(coll.created_at, timezone.utc).isoformat()}


def list_collections(ctx: Context, max_results: int = 1000, next_token: str | None = None) -> dict[str, Any]:
    validate.int_range("MaxResults", max_results, 1, 4096)
    after = validate.decode_token(next_token, str) or ""
    ids = ctx.store.list_collections(after, max_results + 1)
    out: dict[str, Any] = {"CollectionIds": ids[:max_results],
                           "FaceModelVersions": [ctx.store.get_collection(c).face_model_version
                                                 for c in ids[:max_results]]}
    if len(ids) > max_results:
        out["NextToken"] = validate.encode_token(ids[max_results - 1])
    return out


def delete_collection(ctx: Context, collection_id: str) -> dict[str, Any]:
    ctx.collection(validate.collection_id(collection_id))
    ctx.store.delete_collection(collection_id)
    return {"StatusCode": 200}


# -- faces -----------------------------------------------------------------------------------
def _image_bytes_and_digest(image: ImageInput) -> tuple[ImageInput, str]:
    if isinstance(image, np.ndarray):
        return image, hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()
    data = bytes(image) if isinstance(image, (bytes, bytearray)) else read_image_bytes(image)
    return data, hashlib.sha256(data).hexdigest()


def _thumbnail(bgr: np.ndarray, box: np.ndarray) -> bytes:
    x, y, w, h = (int(round(v)) for v in box)
    crop = bgr[max(0, y):y + h, max(0, x):x + w]
    crop = cv2.resize(crop, (96, max(1, int(96 * crop.shape[0] / max(crop.shape[1], 1)))))
    return cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()


def index_faces(ctx: Context, collection_id: str, image: ImageInput, external_image_id: str | None = None,
                max_faces: int | None = None, quality_filter: str = "AUTO",
                detection_attributes: str = "DEFAULT", user_id: str | None = None) -> dict[str, Any]:
    """Detect faces, index those that pass QualityFilter (largest first, at most MaxFaces).

    Indexing the same image bytes with the same ExternalImageId again stores nothing new and
    returns the faces already indexed.
    """
    validate.collection_id(collection_id)
    validate.external_image_id(external_image_id)
    validate.choice("QualityFilter", quality_filter, QUALITY_FILTERS)
    validate.choice("DetectionAttributes", detection_attributes, ("DEFAULT", "ALL"))
    if max_faces is not None:
        validate.int_range("MaxFaces", max_faces, 1, 100)
    if user_id is not None:
        validate.user_id(user_id)
    coll = ctx.collection_for_engine(collection_id)
    data, digest = _image_bytes_and_digest(image)
    img = decode_image(data)
    response: dict[str, Any] = {"FaceModelVersion": coll.face_model_version, "FaceRecords": [],
                                "UnindexedFaces": []}
    if img.orientation_correction:
        response["OrientationCorrection"] = img.orientation_correction
    existing = ctx.store.faces_by_image(collection_id, digest, external_image_id)
    if existing:
        response["FaceRecords"] = [{"Face": face_json(f, coll.face_model_version)} for f in existing]
        return response
    faces = ctx.engine.detect(img.pixels)
    keep, unindexed = [], []
    for face in faces:
        reasons = rejection_reasons(face, quality_filter)
        if not reasons and max_faces is not None and len(keep) >= max_faces:
            reasons = ["EXCEEDS_MAX_FACES"]
        (unindexed if reasons else keep).append((face, reasons))
    embedded = ctx.engine.embed(img.pixels, [f for f, _ in keep])
    image_id = str(uuid.uuid4())
    rows = [{"face_id": str(uuid.uuid4()), "collection_id": collection_id, "image_id": image_id,
             "external_image_id": external_image_id, "user_id": None, "image_sha256": digest,
             "bounding_box": bounding_box(f.detection.box, img.width, img.height),
             "confidence": f.detection.score * 100.0, "embedding": f.embedding} for f in embedded]
    thumbs = [_thumbnail(img.pixels, f.detection.box) for f in embedded] if ctx.keep_thumbnails else None
    row_ids = ctx.store.insert_faces(rows, thumbs) if rows else []
    if user_id is not None and row_ids:
        from .users import associate_faces

        response["UserAssociation"] = associate_faces(
            ctx, collection_id, user_id, [r["face_id"] for r in rows])
    stored = ctx.store.faces_by_rows(row_ids)
    for f, row in zip(embedded, stored, strict=True):
        response["FaceRecords"].append({"Face": face_json(row, coll.face_model_version),
                                        "FaceDetail": face_detail(f, img.width, img.height)})
    for f, reasons in unindexed:
        response["UnindexedFaces"].append({"Reasons": reasons,
                                           "FaceDetail": face_detail(f, img.width, img.height)})
    return response


def list_faces(ctx: Context, collection_id: str, max_results: int = 1000, next_token: str | None = None,
               user_id: str | None = None, face_ids: list[str] | None = None) -> dict[str, Any]:
    coll = ctx.collection(validate.collection_id(collection_id))
    validate.int_range("MaxResults", max_results, 1, 4096)
    if user_id is not None:
        validate.user_id(user_id)
    ids = validate.face_ids(face_ids) if face_ids else None
    after = validate.decode_token(next_token, int) or 0
    rows = ctx.store.list_faces(collection_id, after, max_results + 1, user_id, ids)
    out: dict[str, Any] = {"Faces": [face_json(f, coll.face_model_version) for f in rows[:max_results]],
                           "FaceModelVersion": coll.face_model_version}
    if len(rows) > max_results:
        out["NextToken"] = validate.encode_token(rows[max_results - 1].id)
    return out


def delete_faces(ctx: Context, collection_id: str, face_ids: list[str]) -> dict[str, Any]:
    """Faces still associated with a user are refused (disassociate first), as in Rekognition."""
    ctx.collection(validate.collection_id(collection_id))
    wanted = validate.face_ids(face_ids)
    found = {f.face_id: f for f in ctx.store.get_faces(collection_id, wanted)}
    failed, deletable = [], []
    for fid in dict.fromkeys(wanted):
        f = found.get(fid)
        if f is None:
            failed.append({"FaceId": fid, "Reasons": ["FACE_NOT_FOUND"]})
        elif f.user_id is not None:
            failed.append({"FaceId": fid, "UserId": f.user_id, "Reasons": ["ASSOCIATED_TO_AN_EXISTING_USER"]})
        else:
            deletable.append(fid)
    deleted = ctx.store.delete_faces(collection_id, deletable) if deletable else []
    return {"DeletedFaces": deleted, "UnsuccessfulFaceDeletions": failed}


# -- search ----------------------------------------------------------------------------------
def nearest_faces(ctx: Context, collection_id: str, vector: np.ndarray, threshold: float,
                  max_faces: int, exclude_row: int | None = None) -> list[tuple[FaceRow, float]]:
    """sqlite-vec KNN, then the Similarity mapping and threshold: [(face, similarity)]."""
    coll = ctx.collection(collection_id)
    cal = ctx.calibration(coll)
    min_cos = similarity_to_cosine(threshold, cal) if threshold > 0 else -1.0
    k = min(MAX_SEARCH_FACES, max_faces + (1 if exclude_row is not None else 0))
    hits = [(r, 1.0 - d) for r, d in ctx.store.knn(collection_id, vector, k)
            if r != exclude_row and 1.0 - d >= min_cos]
    rows = {f.id: f for f in ctx.store.faces_by_rows([r for r, _ in hits])}
    return [(rows[r], float(cosine_to_similarity(c, cal))) for r, c in hits if r in rows][:max_faces]


def _match_json(matches: list[tuple[FaceRow, float]], model_version: str) -> list[dict[str, Any]]:
    return [{"Similarity": round(s, 4), "Face": face_json(f, model_version)} for f, s in matches]


def search_faces(ctx: Context, collection_id: str, face_id: str, face_match_threshold: float = 80.0,
                 max_faces: int = 4096) -> dict[str, Any]:
    coll = ctx.collection(validate.collection_id(collection_id))
    fid = validate.face_id(face_id)
    threshold = validate.float_range("FaceMatchThreshold", face_match_threshold, 0, 100)
    validate.int_range("MaxFaces", max_faces, 1, MAX_SEARCH_FACES)
    found = ctx.store.get_faces(collection_id, [fid])
    if not found:
        raise ResourceNotFoundException(f"face {fid} is not in collection {collection_id!r}")
    matches = nearest_faces(ctx, collection_id, found[0].embedding, threshold, max_faces, found[0].id)
    return {"SearchedFaceId": fid, "FaceMatches": _match_json(matches, coll.face_model_version),
            "FaceModelVersion": coll.face_model_version}


def search_faces_by_image(ctx: Context, collection_id: str, image: ImageInput,
                          face_match_threshold: float = 80.0, max_faces: int = 4096,
                          quality_filter: str = "NONE") -> dict[str, Any]:
    """Search with the largest face of the image."""
    validate.collection_id(collection_id)
    threshold = validate.float_range("FaceMatchThreshold", face_match_threshold, 0, 100)
    validate.int_range("MaxFaces", max_faces, 1, MAX_SEARCH_FACES)
    validate.choice("QualityFilter", quality_filter, QUALITY_FILTERS)
    coll = ctx.collection_for_engine(collection_id)
    img = decode_image(image)
    faces = ctx.engine.detect(img.pixels)
    if not faces:
        raise InvalidParameterException("no face found in the image")
    if rejection_reasons(faces[0], quality_filter):
        raise InvalidParameterException("the largest face does not pass QualityFilter "
                                        + quality_filter + ": " + ", ".join(rejection_reasons(faces[0], quality_filter)))
    face = ctx.engine.embed(img.pixels, faces[:1])[0]
    matches = nearest_faces(ctx, collection_id, face.embedding, threshold, max_faces)
    return {"SearchedFaceBoundingBox": bounding_box(face.detection.box, img.width, img.height),
            "SearchedFaceConfidence": round(face.detection.score * 100.0, 4),
            "FaceMatches": _match_json(matches, coll.face_model_version),
            "FaceModelVersion": coll.face_model_version}
