"""Simulated door conditions for `facelink evaluate --conditions`: what a door camera does to a
face that a badge photo does not. Each is applied to the probe image before the door's full
pipeline (detect -> align -> embed); the enrolled side stays the clean photo.

- ``face60`` / ``face80``: the whole image scaled down so the face is 60 / 80 px wide (area
  interpolation, as a camera further away); images whose face is already smaller are left as is;
- ``jpeg40``: JPEG re-encoding at quality 40 (a cheap IP camera stream);
- ``grey``: single-channel (an IR/night camera), fed as 3 equal channels;
- ``blur``: horizontal motion blur, a 9 px line kernel (a person walking; ~10 % of a typical
  face width in this data).
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

MIN_SIDE = 32  # decode_image's smallest accepted side


def _face_width(width: int) -> Callable[[np.ndarray, float], np.ndarray]:
    def apply(bgr: np.ndarray, clean_face_width: float) -> np.ndarray:
        if clean_face_width <= width:
            return bgr
        scale = width / clean_face_width
        h, w = bgr.shape[:2]
        size = (max(MIN_SIDE, round(w * scale)), max(MIN_SIDE, round(h * scale)))
        return cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)

    return apply


def _jpeg(quality: int) -> Callable[[np.ndarray, float], np.ndarray]:
    def apply(bgr: np.ndarray, _w: float) -> np.ndarray:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        return cv2.imdecode(buf, cv2.IMREAD_COLOR) if ok else bgr

    return apply


def _grey(bgr: np.ndarray, _w: float) -> np.ndarray:
    return cv2.cvtColor(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def _blur(bgr: np.ndarray, _w: float, length: int = 9) -> np.ndarray:
    kernel = np.zeros((length, length), np.float32)
    kernel[length // 2, :] = 1.0 / length
    return cv2.filter2D(bgr, -1, kernel)


CONDITIONS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "face60": _face_width(60), "face80": _face_width(80), "jpeg40": _jpeg(40), "grey": _grey, "blur": _blur,
}
