"""IndexFaces' QualityFilter levels: which detected faces are good enough to enroll, and why not.
The gate itself (and its reason names) is ``facelink.models.quality.QualityGate``, shared with
the door."""

from __future__ import annotations

from facelink.models.engine import AnalyzedFace
from facelink.models.quality import QualityGate

LEVELS: dict[str, QualityGate] = {
    "LOW": QualityGate(min_face_px=24, max_abs_yaw=60, max_abs_pitch=60, min_sharpness=2,
                       min_brightness=8, min_confidence=0.6),
    "AUTO": QualityGate(min_face_px=40, max_abs_yaw=45, max_abs_pitch=45, min_sharpness=4,
                        min_brightness=15, min_confidence=0.75),
    "MEDIUM": QualityGate(min_face_px=40, max_abs_yaw=45, max_abs_pitch=45, min_sharpness=4,
                          min_brightness=15, min_confidence=0.75),
    "HIGH": QualityGate(min_face_px=64, max_abs_yaw=30, max_abs_pitch=30, min_sharpness=8,
                        min_brightness=25, min_confidence=0.85),
}
QUALITY_FILTERS = ("NONE", "AUTO", "LOW", "MEDIUM", "HIGH")


def rejection_reasons(face: AnalyzedFace, level: str) -> list[str]:
    """Rekognition's UnindexedFaces Reasons for this face at this QualityFilter level."""
    return [] if level == "NONE" else LEVELS[level].reasons(face)
