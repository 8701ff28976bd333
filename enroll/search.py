"""Search operations: SearchFaces and SearchFacesByImage (the sqlite-vec nearest-face query), and
the nearest-user query of SearchUsers and SearchUsersByImage; both map cosine to Similarity and
apply the threshold here."""

from __future__ import annotations

from typing import Any

import numpy as np

from facelink.errors import InvalidParameterException, ResourceNotFoundException
from facelink.models.image import ImageInput, decode_image
from facelink.models.manifest import Calibration
from facelink.models.shapes import bounding_box
from facelink.models.similarity import cosine_to_similarity, similarity_to_cosine

from . import validate
from .context import Context
from .quality_filter import QUALITY_FILTERS, rejection_reasons
from .store import FaceRow
from .views import face_json, public_model_version

MAX_SEARCH_FACES = 4096


def _min_cosine(threshold: float, cal: Calibration) -> float:
    """The lowest cosine that passes a Similarity threshold (0: every face)."""
    return similarity_to_cosine(threshold, cal) if threshold > 0 else -1.0


def nearest_faces(ctx: Context, collection_id: str, vector: np.ndarray, threshold: float,
                  max_faces: int, exclude_row: int | None = None) -> list[tuple[FaceRow, float]]:
    """sqlite-vec KNN, then the Similarity mapping and threshold: [(face, similarity)]. One KNN
    returns at most MAX_SEARCH_FACES faces; when ``exclude_row`` (the searched face) took one of
    them and the last still passed the threshold, the exact scan gives the one more asked for."""
    coll = ctx.collection(collection_id)
    cal = ctx.calibration(coll)
    min_cos = _min_cosine(threshold, cal)
    wanted = max_faces + (1 if exclude_row is not None else 0)
    k = min(MAX_SEARCH_FACES, wanted)
    found = ctx.store.knn(collection_id, vector, k)
    if k < wanted and len(found) == k and 1.0 - found[-1][1] >= min_cos and any(r == exclude_row for r, _ in found):
        found = ctx.store.nearest_faces_exact(collection_id, vector, wanted)
    hits = [(r, 1.0 - d) for r, d in found if r != exclude_row and 1.0 - d >= min_cos]
    rows = {f.id: f for f in ctx.store.faces_by_rows([r for r, _ in hits])}
    return [(rows[r], float(cosine_to_similarity(c, cal))) for r, c in hits if r in rows][:max_faces]


def nearest_users(ctx: Context, collection_id: str, vectors: list[np.ndarray], threshold: float,
                  max_users: int, exclude_user: str | None = None) -> list[tuple[str, float]]:
    """Users by the best Similarity of their associated faces to any of ``vectors`` (the door's
    rule: ``device.matcher.UserIndex``), best first, at most ``max_users``, those at or above
    ``threshold``: [(user id, similarity)]. Exact over every associated face
    (``Store.nearest_users``), so unassociated faces, however many and however close, change nothing."""
    cal = ctx.calibration(ctx.collection(collection_id))
    min_cos = _min_cosine(threshold, cal)
    ranked = ctx.store.nearest_users(collection_id, vectors, max_users, exclude_user)
    return [(u, float(cosine_to_similarity(1.0 - d, cal))) for u, d in ranked if 1.0 - d >= min_cos]


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
            "FaceModelVersion": public_model_version(coll.face_model_version)}


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
            "FaceModelVersion": public_model_version(coll.face_model_version)}
