"""Rekognition-shaped JSON for faces: BoundingBox, Landmarks, Pose, Quality, FaceDetail."""

from __future__ import annotations

from typing import Any

import numpy as np

from .engine import AnalyzedFace

LANDMARK_TYPES = ("eyeLeft", "eyeRight", "nose", "mouthLeft", "mouthRight")


def _r(v: float) -> float:
    return round(float(v), 6)


def bounding_box(box: np.ndarray, width: int, height: int) -> dict[str, float]:
    x, y, w, h = (float(v) for v in box)
    return {"Width": _r(w / width), "Height": _r(h / height), "Left": _r(x / width), "Top": _r(y / height)}


def landmarks(points: np.ndarray, width: int, height: int) -> list[dict[str, Any]]:
    return [{"Type": t, "X": _r(p[0] / width), "Y": _r(p[1] / height)}
            for t, p in zip(LANDMARK_TYPES, points)]


def face_detail(face: AnalyzedFace, width: int, height: int) -> dict[str, Any]:
    """FaceDetail with what FaceLink measures: BoundingBox, Confidence, Landmarks, Pose, Quality.

    Rekognition's ALL adds age, emotions etc.; FaceLink estimates none of those and says so in
    README rather than returning made-up values, so DEFAULT and ALL return the same fields.
    """
    d = face.detection
    detail: dict[str, Any] = {
        "BoundingBox": bounding_box(d.box, width, height),
        "Landmarks": landmarks(d.landmarks, width, height),
        "Pose": {"Roll": face.pose.roll, "Yaw": face.pose.yaw, "Pitch": face.pose.pitch},
        "Quality": {"Brightness": face.quality.brightness, "Sharpness": face.quality.sharpness},
        "Confidence": _r(d.score * 100.0),
    }
    return detail


def bounding_box_only(face: AnalyzedFace, width: int, height: int) -> dict[str, Any]:
    return {"BoundingBox": bounding_box(face.detection.box, width, height),
            "Confidence": _r(face.detection.score * 100.0)}
