"""Rekognition's JSON for stored faces (the Face object of ListFaces, IndexFaces, searches) and
the numeric FaceModelVersion that Rekognition's clients expect."""

from __future__ import annotations

import zlib
from typing import Any

from .store import FaceRow

# FaceLink's descriptive FaceModelVersion (what the database records, what `facelink models`
# and DescribeCollection's FaceLink extras show) -> Rekognition's numeric form ([0-9.]+).
NUMERIC_MODEL_VERSIONS = {
    "yunet-2023mar+sface-2021dec/int8bq": "1.0",
    "yunet-2023mar+sface-2021dec/int8qdq": "1.1",
}


def public_model_version(descriptive: str) -> str:
    """The numeric FaceModelVersion for a descriptive one; unknown versions get a stable
    ``0.<crc32>`` so that different models never share a number."""
    return NUMERIC_MODEL_VERSIONS.get(descriptive) or f"0.{zlib.crc32(descriptive.encode())}"


def face_json(f: FaceRow, model_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"FaceId": f.face_id, "BoundingBox": f.bounding_box, "ImageId": f.image_id,
                           "Confidence": round(f.confidence, 4),
                           "IndexFacesModelVersion": public_model_version(model_version)}
    if f.external_image_id is not None:
        out["ExternalImageId"] = f.external_image_id
    if f.user_id is not None:
        out["UserId"] = f.user_id
    return out
