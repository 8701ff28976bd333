"""YuNet face detector: image -> faces with a box, 5 landmarks and a confidence.

The decoding follows OpenCV's ``FaceDetectorYN`` for the 2023mar model (strides 8/16/32, one
anchor per cell, score = sqrt(cls * obj)), so the onnxruntime path and the OpenCV reference
produce the same boxes.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .runtime import Backend

STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x, y, w, h in pixels of the original image
    landmarks: np.ndarray  # 5 x 2: eye (image-left), eye (image-right), nose, mouth l, mouth r
    score: float  # 0..1

    @property
    def area(self) -> float:
        return float(self.box[2] * self.box[3])


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression over x, y, w, h boxes; returns kept indices."""
    order = np.argsort(-scores)
    x1, y1 = boxes[:, 0], boxes[:, 1]
    x2, y2 = x1 + boxes[:, 2], y1 + boxes[:, 3]
    areas = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    while order.size:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return keep


class YuNetDetector:
    """Runs YuNet on a resized, 32-padded copy of the frame and maps results back."""

    def __init__(self, backend: Backend, *, max_side: int = 640, score_threshold: float = 0.6,
                 nms_threshold: float = 0.3, top_k: int = 100) -> None:
        self.backend = backend
        self.max_side = max_side
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k

    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, float]:
        h, w = bgr.shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        if scale < 1.0:
            bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        rh, rw = bgr.shape[:2]
        ph, pw = (rh + 31) // 32 * 32, (rw + 31) // 32 * 32
        tensor = np.zeros((1, 3, ph, pw), dtype=np.float32)
        tensor[0, :, :rh, :rw] = bgr.transpose(2, 0, 1)
        return tensor, scale

    def decode(self, outputs: list[np.ndarray], pad_h: int, pad_w: int) -> tuple[np.ndarray, ...]:
        cls, obj, bbox, kps = outputs[0:3], outputs[3:6], outputs[6:9], outputs[9:12]
        all_boxes, all_kps, all_scores = [], [], []
        for i, stride in enumerate(STRIDES):
            cols = pad_w // stride
            c = np.clip(cls[i].reshape(-1), 0, 1)
            o = np.clip(obj[i].reshape(-1), 0, 1)
            score = np.sqrt(c * o)
            keep = score >= self.score_threshold
            if not keep.any():
                continue
            idx = np.nonzero(keep)[0]
            gy, gx = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            b = bbox[i].reshape(-1, 4)[idx]
            k = kps[i].reshape(-1, 10)[idx]
            cx, cy = (gx + b[:, 0]) * stride, (gy + b[:, 1]) * stride
            bw, bh = np.exp(b[:, 2]) * stride, np.exp(b[:, 3]) * stride
            all_boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
            lx = (k[:, 0::2] + gx[:, None]) * stride
            ly = (k[:, 1::2] + gy[:, None]) * stride
            all_kps.append(np.stack([lx, ly], axis=2))
            all_scores.append(score[idx])
        if not all_scores:
            return np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros((0,))
        return np.concatenate(all_boxes), np.concatenate(all_kps), np.concatenate(all_scores)

    def detect(self, bgr: np.ndarray) -> list[Detection]:
        tensor, scale = self.preprocess(bgr)
        outputs = self.backend.run(tensor)
        boxes, kps, scores = self.decode(outputs, tensor.shape[2], tensor.shape[3])
        if scores.size == 0:
            return []
        keep = nms(boxes, scores, self.nms_threshold)[: self.top_k]
        h, w = bgr.shape[:2]
        faces = []
        for i in keep:
            box = boxes[i] / scale
            x1, y1 = np.clip(box[0], 0, w), np.clip(box[1], 0, h)
            x2, y2 = np.clip(box[0] + box[2], 0, w), np.clip(box[1] + box[3], 0, h)
            if x2 - x1 < 2 or y2 - y1 < 2:
                continue
            faces.append(Detection(np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32),
                                   (kps[i] / scale).astype(np.float32), float(scores[i])))
        faces.sort(key=lambda f: f.area, reverse=True)
        return faces
