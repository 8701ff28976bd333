"""FLAT_FACE: with a depth camera, a printed or displayed face has no face-shaped depth.

The depth frame (millimetres, aligned to the colour frame: ``camera_realsense``) is cut to the
face box's inner part and sampled on a GRID x GRID lattice (u, v from -1 to 1 across it). Only
depth within FACE_BAND_MM of the face centre's counts (a wall behind a print cut out along the
face is not the face). Five scores are measured per frame; the median of the last few frames'
each must pass, or it is FLAT_FACE:

- relief: a quadratic surface z = a + bu + cv + du^2 + euv + fv^2 is fitted to the face; a plane,
  a tilted plane and a bent sheet are fitted almost exactly, a face is not. The spread of the
  residual (98th minus 2nd percentile, mm) is at least ``min_relief_mm``.
- nose: the nose stands at least MIN_NOSE_MM in front of the cheeks.
- dome: the nose tip is a bump in every direction. A quadratic is fitted to the depth around
  each sample where the nose tip can be (a disk of DOME_R samples, ~19 mm on a 140 mm face); the
  sag of the fitted surface in its flattest direction, at the disk's edge, is the dome (mm), and
  the largest one found is at least MIN_DOME_MM. Paper only bends one way at a time: a bent,
  folded or pleated print is straight along its crease (sag 0 along it), a flat print with its
  cheeks cut out is flat around the nose.
- dome fit: that fit explains the depth around the nose tip, dome >= MIN_DOME_FIT x the fit's
  RMS error. A nose is a smooth bump; holes cut around the nose of a print, with a body behind,
  make a "dome" of two flat layers and a step that a quadratic fits badly.
- step: a face is continuous between the nose and the cheeks. The largest depth step between
  neighbouring samples there (rows v in STRIP, |u| < STRIP_U, after a 3x3 median) is at most
  MAX_STEP_MM: a deeper step is the cut edge of a hole. Invalid samples in a row are bridged by
  the next valid one, so an edge hidden behind a band of missing depth still counts.

Measured on synthetic depth only (no depth camera here): tests/device/test_liveness_depth.py
and README "FLAT_FACE". No depth for the face (no depth camera, too few valid pixels) is
NO_DEPTH: pending, never live -- fail closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
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
# The nose tip's dome (synthetic depth, README "FLAT_FACE"): faces (25 photos' face meshes, turned
# up to 20 degrees, tipped up to 15, noise) 14.7 mm and more at the 1st percentile, 19 facing the
# camera; prints folded, pleated or bent 2.6 mm at most
DOME_R = 8  # radius of the local fits, in grid samples
DOME_U, DOME_V = 0.45, (-0.35, 0.4)  # where the nose tip is looked for (a turned head moves it)
MIN_DOME_MM = 8.0
# dome / RMS fit error: faces 2.1 and more (1st percentile 3.7), prints holed at the cheeks or
# around the nose 1.4 at most
MIN_DOME_FIT = 2.0
STRIP, STRIP_U = (-0.1, 0.4), 0.78  # between the nose and the cheeks: the rows and |u| of both
# Largest step between neighbouring samples there: faces measured 26 mm at most (a nose or cheek
# hiding what is behind it on a turned head), the cut edge of a hole is the body's depth behind it
MAX_STEP_MM = 30.0


class FaceDepth(NamedTuple):
    """What FLAT_FACE measured on one face (module docstring): mm, except ``dome_fit`` (a ratio)."""

    relief_mm: float
    nose_mm: float
    dome_mm: float
    dome_fit: float
    step_mm: float


def _disk_fit(radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A quadratic fit over a disk of ``radius`` samples: the disk mask, its design matrix (1, i, j,
    i^2, ij, j^2 with i the column and j the row offset) and the least-squares pseudo-inverse."""
    j, i = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = i * i + j * j <= radius * radius
    i, j = i[disk].astype(np.float64), j[disk].astype(np.float64)
    design = np.stack([np.ones_like(i), i, j, i * i, i * j, j * j], axis=1)
    return disk, design, np.linalg.pinv(design)


DISK, DISK_DESIGN, DISK_PINV = _disk_fit(DOME_R)


def _disk_kernel(row: np.ndarray) -> np.ndarray:
    kernel = np.zeros(DISK.shape, np.float32)
    kernel[DISK] = row
    return kernel


# correlating the depth with these gives each sample's fitted d, e, f (i^2, ij, j^2 coefficients)
CURVATURE_KERNELS = tuple(_disk_kernel(DISK_PINV[k]) for k in (3, 4, 5))


def _sample(depth_mm: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """The face's depth on the grid, u and v (-1..1 across the inner box) and which samples are
    the face's (valid and within the face band); None when too few are."""
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
    return z, u, v, valid


def _relief(z: np.ndarray, u: np.ndarray, v: np.ndarray, valid: np.ndarray) -> tuple[float, np.ndarray]:
    """Spread (98th - 2nd percentile, mm) of the face's depth beyond a fitted quadratic surface,
    and that surface over the whole grid."""
    design = np.stack([np.ones_like(u), u, v, u * u, u * v, v * v], axis=-1)
    coef, *_ = np.linalg.lstsq(design[valid], z[valid], rcond=None)
    surface = design @ coef
    residual = z[valid] - surface[valid]
    return float(np.percentile(residual, 98) - np.percentile(residual, 2)), surface


def _nose_in_front(z: np.ndarray, u: np.ndarray, v: np.ndarray, valid: np.ndarray) -> float:
    """How far (mm) the nose stands in front of the cheeks (medians of both areas)."""
    nose = valid & (np.abs(u) < 0.15) & (v > -0.1) & (v < 0.3)
    cheeks = valid & (np.abs(u) > 0.45) & (np.abs(u) < 0.75) & (v > 0.0) & (v < 0.4)
    return float(np.median(z[cheeks]) - np.median(z[nose])) if nose.any() and cheeks.any() else 0.0


def _dome(face: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """(dome mm, dome / RMS fit error) of the nose tip: the largest sag, in its flattest direction,
    of a quadratic fitted around a sample where the nose tip can be (module docstring). ``face``
    is the face's depth with no gaps (3x3 median taken)."""
    d, e, f = (cv2.filter2D(face, -1, k, borderType=cv2.BORDER_REPLICATE) for k in CURVATURE_KERNELS)
    # Hessian [[2d, e], [e, 2f]]: smallest eigenvalue (d + f) - sqrt((d - f)^2 + e^2); sag = lambda R^2 / 2
    sag = 0.5 * DOME_R * DOME_R * ((d + f) - np.sqrt((d - f) ** 2 + e ** 2))
    area = (np.abs(u) <= DOME_U) & (v >= DOME_V[0]) & (v <= DOME_V[1])
    row, col = divmod(int(np.argmax(np.where(area, sag, -np.inf))), GRID)
    dome = float(sag[row, col])
    padded = np.pad(face, DOME_R, mode="edge")  # as filter2D's border
    window = padded[row:row + 2 * DOME_R + 1, col:col + 2 * DOME_R + 1][DISK].astype(np.float64)
    error = window - DISK_DESIGN @ (DISK_PINV @ window)
    return dome, dome / max(float(np.sqrt(np.mean(error * error))), 0.5)


def _bridged(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's invalid samples take the depth of the row's last valid sample before them (the
    next one at the row's start); rows without any stay NaN."""
    n = z.shape[1]
    rows = np.arange(z.shape[0])[:, None]
    before = np.maximum.accumulate(np.where(valid, np.arange(n), -1), axis=1)
    after = np.minimum.accumulate(np.where(valid, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    filled = np.where(before >= 0, z[rows, before.clip(0)], z[rows, after.clip(None, n - 1)])
    return np.where(valid.any(axis=1, keepdims=True), filled, np.nan)


def _largest_step(z: np.ndarray, u: np.ndarray, v: np.ndarray, valid: np.ndarray) -> float:
    """Largest depth step (mm) between neighbouring samples between the nose and the cheeks."""
    rows = (v[:, 0] >= STRIP[0]) & (v[:, 0] <= STRIP[1])
    strip = _bridged(z[rows], valid[rows])
    strip = strip[np.isfinite(strip).all(axis=1)]
    if len(strip) < 3:
        return FACE_BAND_MM  # hardly any depth between the nose and the cheeks: not a face's
    smooth = cv2.medianBlur(strip.astype(np.float32), 3)[1:-1].astype(np.float64)  # edge rows: half a median
    cols = np.abs(u[0]) < STRIP_U
    across = np.abs(np.diff(smooth, axis=1))[:, cols[1:] & cols[:-1]]
    down = np.abs(np.diff(smooth, axis=0))[:, cols]
    return float(max(across.max(), down.max(initial=0.0)))


def face_relief(depth_mm: np.ndarray, box: np.ndarray) -> FaceDepth | None:
    """What FLAT_FACE measures on the face in ``box`` (FaceDepth), or None without depth for it."""
    sampled = _sample(depth_mm, box)
    if sampled is None:
        return None
    z, u, v, valid = sampled
    relief, surface = _relief(z, u, v, valid)
    face = cv2.medianBlur(np.where(valid, z, surface).astype(np.float32), 3)  # gaps: the fitted surface
    dome, dome_fit = _dome(face, u, v)
    return FaceDepth(relief, _nose_in_front(z, u, v, valid), dome, dome_fit, _largest_step(z, u, v, valid))


@dataclass
class DepthState:
    recent: deque = field(default_factory=lambda: deque(maxlen=5))  # the last frames' FaceDepth
    median: FaceDepth | None = None  # each score's median over ``recent``
    failed: tuple[str, ...] = ()  # the scores that failed at the last frame
    measured: int = 0
    no_depth: int = 0


@dataclass(frozen=True)
class DepthRelief:
    min_relief_mm: float = 20.0
    frames: int = 3  # median of the last few frames' scores (depth noise)

    def new_state(self) -> DepthState:
        return DepthState(deque(maxlen=self.frames))

    def failures(self, m: FaceDepth) -> tuple[str, ...]:
        """The FaceDepth scores that say FLAT_FACE (none: a face)."""
        checks = {"relief_mm": m.relief_mm >= self.min_relief_mm, "nose_mm": m.nose_mm >= MIN_NOSE_MM,
                  "dome_mm": m.dome_mm >= MIN_DOME_MM, "dome_fit": m.dome_fit >= MIN_DOME_FIT,
                  "step_mm": m.step_mm <= MAX_STEP_MM}
        return tuple(name for name, ok in checks.items() if not ok)  # a NaN score fails too

    def observe(self, state: DepthState, depth_mm: np.ndarray | None, box: np.ndarray) -> tuple[str, str | None]:
        measured = None if depth_mm is None else face_relief(depth_mm, box)
        if measured is None:
            state.no_depth += 1
            return PENDING, NO_DEPTH
        state.measured += 1
        state.recent.append(measured)
        state.median = FaceDepth(*(float(x) for x in np.median(np.array(state.recent), axis=0)))
        state.failed = self.failures(state.median)
        return (SPOOF, FLAT_FACE) if state.failed else (LIVE, None)

    @staticmethod
    def report(state: DepthState) -> dict:
        m = state.median
        scores = {k: None if m is None else round(getattr(m, k), 1) for k in FaceDepth._fields}
        return {**scores, "failed": list(state.failed), "measured": state.measured, "no_depth": state.no_depth}
