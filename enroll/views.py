"""Rekognition's JSON for stored faces (the Face object of ListFaces, IndexFaces, searches)."""

from __future__ import annotations

from typing import Any

from .store import FaceRow


def face_json(f: FaceRow, model_version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"FaceId": f.face_id, "BoundingBox": f.bounding_box, "ImageId": f.image_id,
                           "Confidence": round(f.confidence, 4), "IndexFacesModelVersion": model_version}
    if f.external_image_id is not None:
        out["ExternalImageId"] = f.external_image_id
    if f.user_id is not None:
        out["UserId"] = f.user_id
    return out
