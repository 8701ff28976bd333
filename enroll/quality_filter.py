"""IndexFaces' QualityFilter: which detected faces are good enough to enroll, and why not."""

from __future__ import annotations

from facelink.models.engine import AnalyzedFace

# level -> (min confidence 0-1, min box side px, max |yaw|/|pitch| deg, min brightness, min sharpness)
LEVELS: dict[str, tuple[float, float, float, float, float]] = {
    "LOW": (0.6, 24, 60, 8, 2),
    "AUTO": (0.75, 40, 45, 15, 4),
    "MEDIUM": (0.75, 40, 45, 15, 4),
    "HIGH": (0.85, 64, 30, 25, 8),
}
QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


def rejection_reasons(face: AnalyzedFace, level: str) -> list[str]:
    """Rekognition's UnindexedFaces Reasons for this face at this QualityFilter level."""
    if level == "NONE":
        return []
    conf, side, pose, bright, sharp = LEVELS[level]
    reasons: list[str] = []
    if face.detection.score < conf:
        reasons.append("LOW_CONFIDENCE")
    if min(face.detection.box[2], face.detection.box[3]) < side:
        reasons.append("SMALL_BOUNDING_BOX")
    if abs(face.pose.yaw) > pose or abs(face.pose.pitch) > pose:
        reasons.append("EXTREME_POSE")
    if face.quality.brightness < bright:
        reasons.append("LOW_BRIGHTNESS")
    if face.quality.sharpness < sharp:
        reasons.append("LOW_SHARPNESS")
    if len(reasons) >= 2:
        reasons.append("LOW_FACE_QUALITY")
    return reasons
