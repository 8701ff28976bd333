"""FLAT_FACE: with a depth camera, a printed or displayed face has no face-shaped depth.

The depth frame (millimetres, aligned to the colour frame: ``camera_realsense``) is cut to the
face box's inner part and sampled on a GRID x GRID lattice (u, v from -1 to 1 across it). Only
depth within FACE_BAND_MM of the face centre's counts (a wall behind a print cut out along the
face is not the face). Six scores are measured per frame and a frame passes when all six do.
Most of the last few frames (2 of 3) must pass for LIVE; while every frame so far passed but
fewer than that, the face is CHECKING_DEPTH (pending); otherwise it is FLAT_FACE. A frame without
depth (NO_DEPTH) clears them: one frame that passed after it is not most of three. Scores of
different frames are never combined (each score's median, which the report shows, passed three
frames that each failed a different score). The nose is where the detector's nose landmark is
(YuNet's third point): a turned head moves it, and a print cannot choose another place for it.

- relief: a quadratic surface z = a + bu + cv + du^2 + euv + fv^2 is fitted to the face; a plane,
  a tilted plane and a bent sheet are fitted almost exactly, a face is not. The spread of the
  residual (98th minus 2nd percentile, mm) is at least ``min_relief_mm``.
- nose: the nose (the landmark's column, |u - nose| < 0.15) stands at least MIN_NOSE_MM in front
  of the cheeks.
- dome: the nose tip is a bump in every direction. A quadratic is fitted to the valid depth in a
  disk of DOME_R samples (~19 mm on a 140 mm face) around each sample within NOSE_REACH (~12 mm)
  of the nose landmark; the sag of the fitted surface in its flattest direction, at the disk's
  edge, is the dome (mm), and the largest one found is at least MIN_DOME_MM. Paper only bends one
  way at a time: a bent, folded or pleated print is straight along its crease (sag 0 along it), a
  flat print with its cheeks cut out is flat around the nose. Missing depth is left out of the
  fits, never filled in (a patch without depth beside a print's nose, filled from a fitted
  surface, made a perfect "dome"), so a fit counts only where it saw depth: at least
  MIN_DOME_VALID of its disk (the chosen fit's share is reported as ``dome_valid``), and
  MIN_BAND_SEEN of each half of a band along its flattest direction, out to the disk's edge on
  both sides of its centre (IR-black tape on a fold's crease above and below a print's nose let a
  fit of what was left "sag" where nothing was measured).
- dome fit: that fit explains the depth around the nose tip, dome >= MIN_DOME_FIT x the fit's
  RMS error. A nose is a smooth bump; holes cut around the nose of a print, with a body behind,
  make a "dome" of two flat layers and a step that a quadratic fits badly.
- step: a face is continuous between the nose and the cheeks. The largest depth step between
  neighbouring samples there and in the rows the dome's fits cover (rows v in STRIP or within
  DOME_R + NOSE_REACH of the nose, |u| < STRIP_U, after a 3x3 median) is at most MAX_STEP_MM: a
  deeper step is the cut edge of a hole or of a print trimmed above the nose. Invalid samples in
  a row are bridged by the next valid one, so an edge hidden behind missing depth still counts.

- bridge: a face's bridge of the nose slopes smoothly from the eyes to the nose tip. The largest
  step between neighbouring rows there (the nose landmark's column +-2, from the eyes' row to the
  nose tip's, the median over those columns, after a 3x3 median) is at most MAX_BRIDGE_MM: a
  print cut just above its nose and held close in front of a body (its other steps under
  MAX_STEP_MM) steps back to the body there. Missing depth there is carried down from above, never
  filled from a fitted surface (tape on the cut edge then hid the step), and a bridge mostly
  without depth fails.

The depth's noise (robust sigma around its 3x3 median) is measured too: above MAX_NOISE_MM (a face
too far from the camera: RealSense noise grows with distance squared) the scores cannot tell a
face from a print, so such a frame passes nothing; a face that is not live, and whose frames'
median noise is above it or whose other frames all passed, is DEPTH_TOO_NOISY: pending, never
live, not called a spoof.

Measured on synthetic depth only (no depth camera here): tests/device/test_liveness_depth.py,
tools/eval_depth_liveness.py and README "FLAT_FACE". No depth for the face (no depth camera, too
few valid pixels, a box or landmarks that are not a face's) is NO_DEPTH: pending, never live --
fail closed.
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
DEPTH_TOO_NOISY = "DEPTH_TOO_NOISY"
CHECKING_DEPTH = "CHECKING_DEPTH"  # every frame judged so far passed, but not yet most of ``frames``
INNER = 0.8  # central fraction of the face box that is measured (hair and background left out)
GRID = 48  # the face's depth is sampled on a GRID x GRID lattice
MIN_VALID = 0.5  # fraction of valid depth pixels (non-zero, within the face's depth band) needed
# Only depth within this of the face centre's (median of the central part) is the face: a wall or
# a room behind a print cut out along the face outline is not relief (it made a flat print "live")
FACE_BAND_MM = 120.0
MIN_NOSE_MM = 4.0  # the nose stands at least this far in front of the cheeks (faces measured 7-29 mm)
# The nose tip's dome (synthetic depth, README "FLAT_FACE"; faces: tools/eval_depth_liveness.py's
# 25 photos' face meshes x 9 poses up to 20 degrees, 0.5-1.2 m, before its 25-30 degree poses were
# added; those are refused more, mostly by the nose test): faces 11.0 mm and more at the 1st
# percentile (7.9 at least; 9.0 at least facing the camera); folds, pleats and bends are straight
# along their crease (the tests' prints: under 8, most near 0)
DOME_R = 8  # radius of the local fits, in grid samples
NOSE_REACH = 5  # the fits are centred within this many samples (~12 mm) of the nose landmark
MIN_DOME_MM = 8.0
MIN_DOME_VALID = 0.6  # share of a fit's disk that must have the face's depth (missing depth is not fitted)
MIN_BAND_SEEN = 0.8  # share of each half of each side's band along a fit's flattest direction seen
# dome / RMS fit error: faces 2.06 and more at the 1st percentile (1.56 at least, at 1.2 m); prints
# holed around the nose (two layers and a step) score lower
MIN_DOME_FIT = 2.0
STRIP, STRIP_U = (-0.1, 0.4), 0.78  # between the nose and the cheeks: the rows and |u| of both
# Largest step between neighbouring samples there: faces measured up to 38-43 mm (a nose or cheek
# hiding what is behind it on a turned head: 16 of the eval's 1,300 faces were refused by it), the
# cut edge of a hole is the body's depth behind it
MAX_STEP_MM = 30.0
# Depth noise (robust sigma of the depth around its 3x3 median) above which the scores cannot tell
# a face from a print (RealSense-like noise): faces measured 1.5 at 0.5 m, 4.4 at 0.8, 5.9 at 0.9-
# 0.95, 5.9 or 7.4 at 1.0, 7.4 at 1.05, 8.9-10.4 at 1.2 and 14.8-16.3 at 1.5 m (most refused by the
# step test there); crafted prints taped on the crease passed at 7.4 and more (0.9-1.25 m). Whole-mm
# depth makes it move in steps of ~0.74-1.5 mm (5.93, 6.67, 7.41, ...). Never live: PENDING
MAX_NOISE_MM = 7.0
# Largest depth step down the bridge of the nose (its landmark's column, from the eyes' row to the
# nose tip): at most this. Faces' frames that pass the other scores measured at most 12-14 mm at
# every distance, noise or not (tools/eval_depth_liveness.py's faces; a review measured it per
# frame: an allowance for noise, 12 + 1.0 x noise at first, only let prints through from ~0.6 m); a
# print cut just above its nose, held in front of a body, steps back to the body there
MAX_BRIDGE_MM = 14.0
MIN_BRIDGE_SEEN = 0.8  # share of the bridge's samples (its 5 columns) that must have the face's depth


class FaceDepth(NamedTuple):
    """What FLAT_FACE measured on one face (module docstring): mm, except ``dome_fit`` (a ratio)
    and ``dome_valid`` (a share)."""

    relief_mm: float
    nose_mm: float
    dome_mm: float
    dome_fit: float
    dome_valid: float
    step_mm: float
    noise_mm: float
    bridge_mm: float


def _disk(radius: int) -> tuple[np.ndarray, np.ndarray]:
    """A disk of ``radius`` samples: its mask and the design matrix of a quadratic fitted over it
    (1, i, j, i^2, ij, j^2 with i the column and j the row offset)."""
    j, i = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    disk = i * i + j * j <= radius * radius
    i, j = i[disk].astype(np.float64), j[disk].astype(np.float64)
    return disk, np.stack([np.ones_like(i), i, j, i * i, i * j, j * j], axis=1)


def _outer(design: np.ndarray) -> np.ndarray:
    """Each sample's row of a least-squares normal matrix, flattened: ``weights @ _outer(design)``
    is a masked fit's normal matrix (reshaped to 6 x 6)."""
    return (design[:, :, None] * design[:, None, :]).reshape(len(design), -1)


GRID_U, GRID_V = np.meshgrid(np.linspace(-1, 1, GRID), np.linspace(-1, 1, GRID))
GRID_DESIGN = np.stack([np.ones_like(GRID_U), GRID_U, GRID_V, GRID_U ** 2, GRID_U * GRID_V, GRID_V ** 2],
                       axis=-1).reshape(GRID * GRID, 6)  # the face's quadratic surface (relief)
GRID_OUTER = _outer(GRID_DESIGN)
DISK, DISK_DESIGN = _disk(DOME_R)
DISK_OUTER = _outer(DISK_DESIGN)
REACH = _disk(NOSE_REACH)[0]  # the fits' centres around the nose landmark


def _lattice(box: np.ndarray) -> tuple[float, float, float, float]:
    """The sampling grid over the inner face box: the image position (x, y) of sample (0, 0) and
    the steps (x, y) between neighbouring samples."""
    x, y, bw, bh = (float(v) for v in box[:4])
    return x + bw * (1 - INNER) / 2, y + bh * (1 - INNER) / 2, bw * INNER / (GRID - 1), bh * INNER / (GRID - 1)


def _sample(depth_mm: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The face's depth on the grid (u, v: GRID_U, GRID_V, -1..1 across the inner box) and which
    samples are the face's (valid and within the face band); None when too few are."""
    h, w = depth_mm.shape
    x0, y0, step_x, step_y = _lattice(box)
    xs = np.clip(np.round(x0 + np.arange(GRID) * step_x).astype(int), 0, w - 1)
    ys = np.clip(np.round(y0 + np.arange(GRID) * step_y).astype(int), 0, h - 1)
    z = depth_mm[np.ix_(ys, xs)].astype(np.float64)
    valid = np.isfinite(z) & (z > 0)
    central = valid & (np.abs(GRID_U) < 0.4) & (np.abs(GRID_V) < 0.4)
    if not central.any():
        return None
    valid &= np.abs(z - np.median(z[central])) <= FACE_BAND_MM  # the face, not what is behind it
    if valid.mean() < MIN_VALID:
        return None
    return z, valid


def _relief(z: np.ndarray, valid: np.ndarray) -> tuple[float, np.ndarray]:
    """Spread (98th - 2nd percentile, mm) of the face's depth beyond a quadratic surface fitted
    to its valid samples, and that surface over the whole grid."""
    w = valid.ravel().astype(np.float64)
    rhs = (np.where(valid, z, 0.0).ravel() * w) @ GRID_DESIGN
    coef = np.linalg.solve((w @ GRID_OUTER).reshape(6, 6), rhs)  # _sample: at least half the grid
    surface = (GRID_DESIGN @ coef).reshape(z.shape)
    low, high = np.percentile(z[valid] - surface[valid], [2, 98])
    return float(high - low), surface


def _nose_in_front(z: np.ndarray, valid: np.ndarray, nose_u: float) -> float:
    """How far (mm) the nose stands in front of the cheeks (medians of both areas); the nose's
    area is centred on the nose landmark's column ``nose_u`` (a turned head moves it)."""
    u, v = GRID_U, GRID_V
    nose = valid & (np.abs(u - nose_u) < 0.15) & (v > -0.1) & (v < 0.3)
    cheeks = valid & (np.abs(u) > 0.45) & (np.abs(u) < 0.75) & (v > 0.0) & (v < 0.4)
    return float(np.median(z[cheeks]) - np.median(z[nose])) if nose.any() and cheeks.any() else 0.0


def _grid_position(box: np.ndarray, point: np.ndarray) -> tuple[float, float]:
    """(row, column) on the sampling grid (``_lattice``) of an image point."""
    x0, y0, step_x, step_y = _lattice(box)
    return (float(point[1]) - y0) / step_y, (float(point[0]) - x0) / step_x


def _flat_bands(directions: int) -> np.ndarray:
    """For each of ``directions`` directions (angle pi k / directions from the column axis): the
    disk samples in a band +-1.5 samples wide along it, over the outer half of the radius, on
    either side of the centre, each side in two halves (R/2..3R/4, 3R/4..R): directions x 4 x disk
    samples, 0/1. Tape on a band's outer end alone, where the sag is pinned, is not "seen"."""
    i, j = DISK_DESIGN[:, 1], DISK_DESIGN[:, 2]
    bands = np.zeros((directions, 4, len(i)))
    for k in range(directions):
        c, s = np.cos(np.pi * k / directions), np.sin(np.pi * k / directions)
        along, across = c * i + s * j, np.abs(c * j - s * i)
        near = across <= 1.5
        bands[k] = [(along > DOME_R / 2) & (along <= DOME_R * 3 / 4) & near, (along > DOME_R * 3 / 4) & near,
                    (along < -DOME_R / 2) & (along >= -DOME_R * 3 / 4) & near, (along < -DOME_R * 3 / 4) & near]
    return bands


FLAT_BANDS = _flat_bands(64)  # 2.8 degrees apart: 0.2 samples at the disk's edge


def _sag_seen(d: np.ndarray, e: np.ndarray, f: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Whether each fit saw depth where its sag is measured: along its flattest direction, on both
    sides of its centre and out to the disk's edge (FLAT_BANDS), at least MIN_BAND_SEEN of the
    samples of each half of each side's band are valid. Depth hidden there (IR-black tape on a
    fold's crease above and below a print's nose) lets a quadratic fitted on what is left "sag"
    where nothing was measured."""
    # Hessian [[2d, e], [e, 2f]]: its largest eigenvalue's vector is at angle atan2(2e, 2d - 2f) / 2
    # from the column axis, the smallest's (the flattest direction) a right angle from it
    flattest = 0.5 * np.arctan2(2 * e, 2 * d - 2 * f) + np.pi / 2
    bands = FLAT_BANDS[np.rint(flattest / np.pi * len(FLAT_BANDS)).astype(int) % len(FLAT_BANDS)]
    return (np.einsum("pk,psk->ps", w, bands) >= MIN_BAND_SEEN * bands.sum(axis=2)).all(axis=1)


def _dome(face: np.ndarray, valid: np.ndarray, nose: tuple[float, float]) -> tuple[float, float, float]:
    """(dome mm, dome / RMS fit error, valid fraction) at the nose tip: a quadratic fitted to the
    face's valid depth in a disk around each sample within NOSE_REACH of the nose landmark (grid
    row, column); the largest sag, in its flattest direction, of those whose disk is at least
    MIN_DOME_VALID valid (module docstring). Missing depth is left out of the fit, never filled:
    a patch without depth beside a print's nose must not make a "dome". ``face``: the depth after
    a 3x3 median."""
    r, s = DOME_R, NOSE_REACH
    if not np.isfinite(nose).all():
        return 0.0, 0.0, 0.0
    row, col = round(nose[0]), round(nose[1])
    if not (0 <= row < GRID and 0 <= col < GRID):
        return 0.0, 0.0, 0.0  # the nose landmark is not on the face's depth: no dome there
    pad = r + s
    patch = np.s_[row:row + 2 * pad + 1, col:col + 2 * pad + 1]
    depth = np.pad(face.astype(np.float64), pad)[patch]
    known = np.pad(valid, pad)[patch].astype(np.float64)
    windows = np.lib.stride_tricks.sliding_window_view
    z = windows(depth, DISK.shape)[REACH][:, DISK]  # (positions, disk samples)
    w = windows(known, DISK.shape)[REACH][:, DISK]
    share = w.mean(axis=1)
    usable = share >= MIN_DOME_VALID
    if not usable.any():
        return 0.0, 0.0, float(share.max())
    z, w = z[usable], w[usable]
    normal = (w @ DISK_OUTER).reshape(-1, 6, 6)
    try:
        coef = np.linalg.solve(normal, ((w * z) @ DISK_DESIGN)[..., None])[..., 0]
    except np.linalg.LinAlgError:
        return 0.0, 0.0, float(share.max())
    d, e, f = coef[:, 3], coef[:, 4], coef[:, 5]
    # Hessian [[2d, e], [e, 2f]]: smallest eigenvalue (d + f) - sqrt((d - f)^2 + e^2); sag = lambda R^2 / 2
    sag = 0.5 * r * r * ((d + f) - np.sqrt((d - f) ** 2 + e ** 2))
    sag = np.where(_sag_seen(d, e, f, w), sag, 0.0)  # the sag is measured where depth was seen
    best = int(np.argmax(sag))
    seen = w[best] > 0  # the fit's error over the depth it was fitted to
    error = z[best][seen] - DISK_DESIGN[seen] @ coef[best]
    rms = float(np.sqrt(np.mean(error * error)))
    return float(sag[best]), float(sag[best]) / max(rms, 0.5), float(share[usable][best])


def _bridged(z: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's invalid samples take the depth of the row's last valid sample before them (the
    next one at the row's start); rows without any stay NaN."""
    n = z.shape[1]
    rows = np.arange(z.shape[0])[:, None]
    before = np.maximum.accumulate(np.where(valid, np.arange(n), -1), axis=1)
    after = np.minimum.accumulate(np.where(valid, np.arange(n), n)[:, ::-1], axis=1)[:, ::-1]
    filled = np.where(before >= 0, z[rows, before.clip(0)], z[rows, after.clip(None, n - 1)])
    return np.where(valid.any(axis=1, keepdims=True), filled, np.nan)


def _largest_step(z: np.ndarray, valid: np.ndarray, nose_row: float) -> float:
    """Largest depth step (mm) between neighbouring samples between the nose and the cheeks and
    in the rows the dome's fits cover (around ``nose_row``)."""
    v = GRID_V[:, 0]
    rows = ((v >= STRIP[0]) & (v <= STRIP[1])) | \
        (np.abs(np.arange(GRID) - nose_row) <= DOME_R + NOSE_REACH)
    strip = _bridged(z[rows], valid[rows])
    strip = strip[np.isfinite(strip).all(axis=1)]
    if len(strip) < 3:
        return FACE_BAND_MM  # hardly any depth between the nose and the cheeks: not a face's
    smooth = cv2.medianBlur(strip.astype(np.float32), 3)[1:-1].astype(np.float64)  # edge rows: half a median
    cols = np.abs(GRID_U[0]) < STRIP_U
    across = np.abs(np.diff(smooth, axis=1))[:, cols[1:] & cols[:-1]]
    down = np.abs(np.diff(smooth, axis=0))[:, cols]
    return float(max(across.max(), down.max(initial=0.0)))


def _bridge_step(z: np.ndarray, valid: np.ndarray, surface: np.ndarray, nose: tuple[float, float],
                 eyes_row: float) -> float:
    """Largest depth step (mm) from one row to the next down the bridge of the nose: the median,
    over the 5 columns around the nose landmark's, of each step between the eyes' row and the
    nose tip's (after a 3x3 median). A face's bridge slopes smoothly; the cut edge of a print
    trimmed just above its nose, held in front of a body, is one step back to the body. Missing
    depth is never filled from the fitted surface here (IR-black tape on that cut edge, filled so,
    hid the step): down each column it takes the last valid sample above it, so a step behind it
    still counts, and a bridge with less than MIN_BRIDGE_SEEN of its samples valid is not a
    face's. Landmarks that leave no bridge between them (or lie off the face) measure FACE_BAND_MM."""
    if not (np.isfinite(nose).all() and np.isfinite(eyes_row)):
        return FACE_BAND_MM
    top, bottom = max(round(eyes_row), 0), min(round(nose[0]), GRID - 1)
    col = round(nose[1])
    if bottom - top < 2 or not 2 <= col < GRID - 2:
        return FACE_BAND_MM
    if valid[top:bottom + 1, col - 2:col + 3].mean() < MIN_BRIDGE_SEEN:
        return FACE_BAND_MM  # the bridge was not seen
    # the bridge's columns and one more each side (the 3x3 median's), every row down to one below it
    block = np.s_[:bottom + 2, max(col - 3, 0):col + 4]
    carried = _bridged(z[block].T, valid[block].T).T  # down each column; the next valid sample at its top
    face = cv2.medianBlur(np.where(np.isfinite(carried), carried, surface[block]).astype(np.float32), 3)
    first = col - 2 - max(col - 3, 0)
    steps = np.abs(np.diff(face[top:bottom + 1, first:first + 5].astype(np.float64), axis=0))
    return float(np.median(steps, axis=1).max())


def face_relief(depth_mm: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> FaceDepth | None:
    """What FLAT_FACE measures on the face in ``box`` (FaceDepth), or None without depth for it.
    ``landmarks``: the detector's five points (YuNet's order: the third is the nose tip)."""
    try:
        depth_mm = np.ma.filled(depth_mm, 0)  # a masked array's masked pixels have no depth
        box = np.asarray(box, np.float64).ravel()
        points = np.asarray(landmarks, np.float64)
    except (TypeError, ValueError):  # text, ragged lists, objects: not a box or points
        return None
    if depth_mm.ndim == 3 and depth_mm.shape[2] == 1:
        depth_mm = depth_mm[:, :, 0]
    if depth_mm.ndim != 2 or depth_mm.size == 0 or not np.issubdtype(depth_mm.dtype, np.number) \
            or box.size < 4 or not np.isfinite(box[:4]).all() or box[2] <= 0 or box[3] <= 0 \
            or points.ndim != 2 or points.shape[0] < 3 or points.shape[1] < 2:
        return None  # not a depth image, a face's box or its landmarks: no depth for the face
    sampled = _sample(depth_mm, box)
    if sampled is None:
        return None
    z, valid = sampled
    relief, surface = _relief(z, valid)
    # a 3x3 median against depth noise; gaps take the fitted surface there, but the dome's fits
    # leave them out
    face = cv2.medianBlur(np.where(valid, z, surface).astype(np.float32), 3)
    nose = _grid_position(box, points[2, :2])
    dome, dome_fit, dome_valid = _dome(face, valid, nose)
    nose_u = float(np.clip(nose[1] / (GRID - 1) * 2 - 1, -0.5, 0.5))
    noise = 1.4826 * float(np.median(np.abs(z - face)[valid]))  # robust sigma of the depth's noise
    # the higher eye's row; NaN if either eye is (Python's min() dropped a NaN second eye)
    eyes_row = float(np.min([_grid_position(box, points[0, :2])[0], _grid_position(box, points[1, :2])[0]]))
    return FaceDepth(relief, _nose_in_front(z, valid, nose_u), dome, dome_fit, dome_valid,
                     _largest_step(z, valid, nose[0]), noise, _bridge_step(z, valid, surface, nose, eyes_row))


class JudgedFrame(NamedTuple):
    depth: FaceDepth
    failures: tuple[str, ...] | None  # the scores it failed; None: too noisy to judge


@dataclass
class DepthState:
    frames: deque = field(default_factory=lambda: deque(maxlen=5))  # the last frames, each judged
    median: FaceDepth | None = None  # each score's median over ``frames`` (the report's figures)
    failed: tuple[str, ...] = ()  # a FLAT_FACE's scores that failed in any of those frames
    measured: int = 0
    no_depth: int = 0


@dataclass(frozen=True)
class DepthRelief:
    min_relief_mm: float = 20.0
    frames: int = 3  # most of the last few frames must each pass every score (depth noise)

    def new_state(self) -> DepthState:
        return DepthState(deque(maxlen=self.frames))

    def failures(self, m: FaceDepth) -> tuple[str, ...]:
        """The FaceDepth scores that say FLAT_FACE (none: a face)."""
        checks = {"relief_mm": m.relief_mm >= self.min_relief_mm, "nose_mm": m.nose_mm >= MIN_NOSE_MM,
                  "dome_mm": m.dome_mm >= MIN_DOME_MM, "dome_fit": m.dome_fit >= MIN_DOME_FIT,
                  "step_mm": m.step_mm <= MAX_STEP_MM,
                  "bridge_mm": m.bridge_mm <= MAX_BRIDGE_MM}
        return tuple(name for name, ok in checks.items() if not ok)  # a NaN score fails too

    def observe(self, state: DepthState, depth_mm: np.ndarray | None, box: np.ndarray,
                landmarks: np.ndarray) -> tuple[str, str | None]:
        measured = None if depth_mm is None else face_relief(depth_mm, box, landmarks)
        if measured is None:  # the scores so far are not this frame's: the report shows none
            state.no_depth += 1
            state.frames.clear()
            state.median, state.failed = None, ()
            return PENDING, NO_DEPTH
        state.measured += 1
        # Each frame is judged whole: a frame too noisy to tell passes nothing, and the scores of
        # different frames are never combined (with each score's median, three frames that each
        # failed a different score passed)
        state.frames.append(JudgedFrame(measured, self.failures(measured) if measured.noise_mm <= MAX_NOISE_MM
                                        else None))
        state.median = FaceDepth(*(float(x) for x in np.median(np.array([f.depth for f in state.frames]), axis=0)))
        verdicts = [f.failures for f in state.frames]
        # Most of the last ``frames`` frames must pass, each on its own; a frame not yet seen (a
        # track's start, or after NO_DEPTH, which clears them) passes nothing (one frame that
        # passed, after failed ones and a frame without depth, was LIVE). Any frame that failed
        # makes the rest FLAT_FACE: a print is refused soon, its track decided
        passed = sum(v == () for v in verdicts)
        state.failed = ()
        if passed > self.frames // 2:
            return LIVE, None
        if passed == len(verdicts):  # every frame so far passed, but too few of them yet
            return PENDING, CHECKING_DEPTH
        failed = {name for v in verdicts if v for name in v}
        if not failed or not state.median.noise_mm <= MAX_NOISE_MM:  # too far (or noisy) to tell: come closer
            return PENDING, DEPTH_TOO_NOISY
        state.failed = tuple(name for name in FaceDepth._fields if name in failed)
        return SPOOF, FLAT_FACE

    @staticmethod
    def report(state: DepthState) -> dict:
        m = state.median
        places = {"dome_fit": 2, "dome_valid": 2}  # a ratio of 1.96 fails 2.0: not rounded to pass
        scores = {k: None if m is None else round(getattr(m, k), places.get(k, 1)) for k in FaceDepth._fields}
        frames = [None if f.failures is None else list(f.failures) for f in state.frames]  # None: too noisy
        return {**scores, "failed": list(state.failed), "frames": frames, "measured": state.measured,
                "no_depth": state.no_depth}
