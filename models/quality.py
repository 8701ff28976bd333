"""Face quality and pose from pixels and landmarks (Brightness, Sharpness, Yaw/Pitch/Roll), and
the one quality gate over them that the desk and the door share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .engine import AnalyzedFace


@dataclass(frozen=True)
class Pose:
    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True)
class Quality:
    brightness: float  # 0-100: mean luma of the face
    sharpness: float  # 0-100: saturating map of the Laplacian variance


def estimate_pose(landmarks: np.ndarray) -> Pose:
    """Rough head pose from the 5 landmarks (degrees); good enough to gate extreme poses."""
    eye_l, eye_r, nose, mouth_l, mouth_r = (landmarks[i].astype(np.float64) for i in range(5))
    dx, dy = eye_r - eye_l
    roll = math.degrees(math.atan2(dy, dx))
    eye_mid = (eye_l + eye_r) / 2
    mouth_mid = (mouth_l + mouth_r) / 2
    eye_dist = max(math.hypot(dx, dy), 1e-6)
    # project the nose on the eye line: its offset from the eye midpoint, relative to half the
    # eye distance, is sin(yaw) for a frontal-template face
    c, s = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    rel = nose - eye_mid
    along = rel[0] * c + rel[1] * s
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, along / (eye_dist * 0.5)))))
    # pitch: where the nose sits between the eye line and the mouth line (0.5 ~ frontal)
    face_h = max(float(np.linalg.norm(mouth_mid - eye_mid)), 1e-6)
    across = -rel[0] * s + rel[1] * c
    ratio = across / face_h
    pitch = (ratio - 0.55) * 120.0
    return Pose(round(yaw, 2), round(float(pitch), 2), round(roll, 2))


def measure_quality(bgr: np.ndarray, box: np.ndarray) -> Quality:
    h, w = bgr.shape[:2]
    x, y, bw, bh = (int(round(v)) for v in box)
    crop = bgr[max(0, y):min(h, y + bh), max(0, x):min(w, x + bw)]
    if crop.size == 0:
        return Quality(0.0, 0.0)
    grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
    if max(grey.shape) > 160:  # compare sharpness at a fixed scale
        scale = 160 / max(grey.shape)
        grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    brightness = float(grey.mean()) / 255.0 * 100.0
    lap_var = float(cv2.Laplacian(grey, cv2.CV_64F).var())
    sharpness = 100.0 * (1.0 - math.exp(-lap_var / 300.0))
    return Quality(round(brightness, 2), round(sharpness, 2))


@dataclass(frozen=True)
class QualityGate:
    """The one quality gate, for the desk (IndexFaces' QualityFilter) and the door (the frames a
    decision may use), with Rekognition's UnindexedFaces reason names."""

    min_face_px: float
    max_abs_yaw: float
    max_abs_pitch: float
    min_sharpness: float
    min_brightness: float
    min_confidence: float = 0.0

    def reasons(self, face: AnalyzedFace) -> list[str]:
        """Every reason this face fails the gate (empty: it passes). Two or more failed
        measurements add LOW_FACE_QUALITY, as Rekognition does."""
        out: list[str] = []
        if face.detection.score < self.min_confidence:
            out.append("LOW_CONFIDENCE")
        if min(face.detection.box[2], face.detection.box[3]) < self.min_face_px:
            out.append("SMALL_BOUNDING_BOX")
        if abs(face.pose.yaw) > self.max_abs_yaw or abs(face.pose.pitch) > self.max_abs_pitch:
            out.append("EXTREME_POSE")
        if face.quality.brightness < self.min_brightness:
            out.append("LOW_BRIGHTNESS")
        if face.quality.sharpness < self.min_sharpness:
            out.append("LOW_SHARPNESS")
        if len(out) >= 2:
            out.append("LOW_FACE_QUALITY")
        return out

    def reason(self, face: AnalyzedFace) -> str | None:
        """The first reason this face fails the gate, or None when it passes."""
        found = self.reasons(face)
        return found[0] if found else None
