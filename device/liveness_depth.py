"""FLAT_FACE: with a depth camera, a printed or displayed face has no depth relief.

The depth frame (millimetres, aligned to the colour frame: ``camera_realsense``) is cut to the
face box's inner part and a quadratic surface z = a + bx + cy + dx^2 + exy + fy^2 is fitted to
it. A plane, a tilted plane and a bent sheet (a print curved in the hand) are all fitted almost
exactly; a real face is not: the nose stands out of it and the eye sockets sink in. The relief is
the spread of the residual (98th minus 2nd percentile, mm), measured only over depth within
FACE_BAND_MM of the face centre's (a wall behind a print cut out along the face is not relief).
Below ``min_relief_mm``, or a nose less than MIN_NOSE_MM in front of the cheeks, is FLAT_FACE.
No depth for the face (no depth camera, too few valid pixels) is NO_DEPTH: pending, never live
-- fail closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

from .liveness_frozen import LIVE, PENDING, SPOOF

FLAT_FACE = "FLAT_FACE"
NO_DEPTH = "NO_DEPTH"
INNER = 0.8  # central fraction of the face box that is measured (hair and background left out)
GRID = 48  # the face's depth is sampled on a GRID x GRID lattice
MIN_VALID = 0.5  # fraction of valid depth pixels (non-zero, within the face's depth band) needed
# Only depth within this of the face centre's (median of the central part) is the face: a wall or
# a room behind a print cut out along the face outline is not relief (it made a flat print "live")
FACE_BAND_MM = 120.0
MIN_NOSE_MM = 4.0  # the nose stands at least this far in front of the cheeks (faces measured 7-29 mm)


@dataclass
class DepthState:
    reliefs: deque = field(default_factory=lambda: deque(maxlen=5))
    noses: deque = field(default_factory=lambda: deque(maxlen=5))
    nose_mm: float | None = None  # median of the last frames' nose-in-front-of-cheeks depth
    measured: int = 0
    no_depth: int = 0


def face_relief(depth_mm: np.ndarray, box: np.ndarray) -> tuple[float, float] | None:
    """(relief mm, nose-in-front-of-cheeks mm) of the face in ``box``, or None without depth."""
    h, w = depth_mm.shape[:2]
    x, y, bw, bh = (float(v) for v in box[:4])
    cx, cy = x + bw / 2, y + bh / 2
    xs = np.clip(np.round(cx + (np.linspace(-0.5, 0.5, GRID) * bw * INNER)).astype(int), 0, w - 1)
    ys = np.clip(np.round(cy + (np.linspace(-0.5, 0.5, GRID) * bh * INNER)).astype(int), 0, h - 1)
    z = depth_mm[np.ix_(ys, xs)].astype(np.float64)
    u, v = np.meshgrid(np.linspace(-1, 1, GRID), np.linspace(-1, 1, GRID))
    valid = np.isfinite(z) & (z > 0)
    central = valid & (np.abs(u) < 0.4) & (np.abs(v) < 0.4)
    if not central.any():
        return None
    valid &= np.abs(z - np.median(z[central])) <= FACE_BAND_MM  # the face, not what is behind it
    if valid.mean() < MIN_VALID:
        return None
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)
    coef, *_ = np.linalg.lstsq(design[valid], z[valid], rcond=None)
    residual = z[valid] - design[valid] @ coef
    relief = float(np.percentile(residual, 98) - np.percentile(residual, 2))
    nose = valid & (np.abs(u) < 0.15) & (v > -0.1) & (v < 0.3)
    cheeks = valid & (np.abs(u) > 0.45) & (np.abs(u) < 0.75) & (v > 0.0) & (v < 0.4)
    nose_mm = float(np.median(z[cheeks]) - np.median(z[nose])) if nose.any() and cheeks.any() else 0.0
    return relief, nose_mm


@dataclass(frozen=True)
class DepthRelief:
    min_relief_mm: float = 20.0
    frames: int = 3  # median of the last few frames' relief (depth noise)

    def new_state(self) -> DepthState:
        return DepthState(deque(maxlen=self.frames), deque(maxlen=self.frames))

    def observe(self, state: DepthState, depth_mm: np.ndarray | None, box: np.ndarray) -> tuple[str, str | None]:
        measured = None if depth_mm is None else face_relief(depth_mm, box)
        if measured is None:
            state.no_depth += 1
            return PENDING, NO_DEPTH
        state.measured += 1
        state.reliefs.append(measured[0])
        state.noses.append(measured[1])
        state.nose_mm = float(np.median(state.noses))
        relief = float(np.median(state.reliefs))
        live = relief >= self.min_relief_mm and state.nose_mm >= MIN_NOSE_MM
        return (LIVE, None) if live else (SPOOF, FLAT_FACE)

    @staticmethod
    def report(state: DepthState) -> dict:
        relief = float(np.median(state.reliefs)) if state.reliefs else None
        return {"relief_mm": None if relief is None else round(relief, 1),
                "nose_mm": None if state.nose_mm is None else round(state.nose_mm, 1),
                "measured": state.measured, "no_depth": state.no_depth}
