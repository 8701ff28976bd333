"""Blink: the eyes of a live person close and reopen; a printed photo's or a still screen's don't.

The eye aspect ratio (EAR) comes from ``facelink.models.facemesh`` (face mesh, then the iris
model's eye contour at the mesh's EAR points). People's open-eye EAR differs widely (smiling or
squinting faces sit far below a wide-eyed one), so a blink is a *dip relative to the track's own
open-eye baseline* (the median of its recent readings), then a reopening, within
``max_closed_s``. A slow, lasting drop (looking down) is not a blink.

With ``require_blink`` a track's matches count only after a blink; until ``window_s`` has passed
since the track's first reading the door waits (WAITING_FOR_BLINK), after it the verdict is
NO_BLINK (DENIED_SPOOF). This deters printed photos and stills on a screen. It does NOT stop a
replayed video of the person (it blinks) -- README "Presentation attacks".

A closure is a blink only if it looks like one beyond the eye contour (``cover_check``): a finger
or strip swiped across a print's eyes collapses the contour just as well. In a blink only the
eyelids move, and both eyes close together, so a closure counts only when
  * both eyes dip: each below ``open_ratio`` of its own baseline in one of its frames (a cover
    over one eye dips the mean EAR alone), and
  * the skin round the eyes stays as it was: in every closed frame, registered to the last
    open one (similarity from the nose, mouth, chin, forehead and face-side mesh points), small
    patches at the glabella, the bridge of the nose and beside each eye's outer corner
    (``STILL_POINTS``) still match it (normalised cross-correlation, best within +-3 px, at least
    ``STILL_MIN_NCC``). A cover that crosses the bridge or reaches past the eyes' corners breaks
    that match.
Measured by tools/eval_blink_cover.py (README "Presentation attacks", NO_BLINK; 2026-12-06): the
sample videos' real blinks match 0.938-0.987; strips, skin and fingers swiped across a simulated
print's eyes at most 0.81 (0 of 48 prints blink, 48 before); a fingertip over one eye: 0 of 8 (3
before). Two fingertips placed exactly over the eyes (3 of 8 prints still blink), or a print with
closed eyes painted in, are NOT stopped by this.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelink.models.facemesh import EyeReading

from .liveness_frozen import LIVE, PENDING, SPOOF

NO_BLINK = "NO_BLINK"
WAITING = "WAITING_FOR_BLINK"
BASELINE_S = 3.0  # readings this recent make the open-eye baseline
MIN_BASELINE = 3  # readings needed before a dip can be judged
# Mesh points a blink leaves where they were: glabella, bridge of the nose (x2), below and beside each
# eye's outer corner (x2 each). Their patches are compared between a closed frame and the last open one.
STILL_POINTS = (168, 6, 197, 143, 372, 226, 446)
# Mesh points neither a blink nor a cover over the eyes moves (nose, mouth, chin, forehead, face
# sides): a closed frame's crop is registered to the open one's with them.
REGISTER_POINTS = (1, 4, 5, 195, 197, 2, 98, 327, 0, 17, 61, 291, 199, 152, 10, 151, 109, 338, 234, 454, 93, 323)
STILL_MIN_NCC = 0.9  # every still point's patch matches the open frame's at least this well
STILL_MIN_POINTS = 3  # textured patches needed to judge a closed frame (else it is not a blink)
SEARCH_PX = 3  # each patch's best match within +-3 px of the crop (192 px: the eye is ~20 px wide)
PATCH_OF_EYE = 0.22  # patch half-size as a fraction of the eye's width
FLAT_STD = 1.0  # a patch with less grey-level spread has nothing to match
GREY_WEIGHTS = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # B, G, R


@dataclass
class BlinkState:
    started: float | None = None
    readings: deque = field(default_factory=lambda: deque(maxlen=120))  # (time, ear, left, right)
    closed_since: float | None = None
    closed_min: float = 1.0
    blinks: int = 0
    first_blink_s: float | None = None
    last_baseline: float | None = None
    deepest_ratio: float | None = None  # smallest EAR / baseline seen
    unreadable: int = 0
    armed: bool = True  # False after a long closure, until the eyes are open again
    open_reading: EyeReading | None = None  # the last reading with the eyes open (cover check)
    closure_both: bool = False  # this closure: both eyes dipped together in one of its frames
    closure_still: float | None = 1.0  # this closure: its frames' lowest still-point match (None: not judged)
    not_blinks: dict[str, int] = field(default_factory=dict)  # closures that reopened in time but were no blink, per why
    last_still: float | None = None  # the last closure's lowest still-point match


@dataclass(frozen=True)
class Blink:
    window_s: float = 5.0
    close_ratio: float = 0.7  # EAR below this fraction of the baseline: eyes closing
    open_ratio: float = 0.85  # back above this fraction: reopened
    max_closed_s: float = 0.8  # a longer closure is not a blink
    min_face_score: float = 0.5
    cover_check: bool = True  # a closure counts only if both eyes dip and the skin round them stays

    def observe(self, state: BlinkState, reading: EyeReading | None, now: float) -> tuple[str, str | None]:
        if state.started is None:
            state.started = now
        if reading is None or reading.face_score < self.min_face_score:
            state.unreadable += 1
        else:
            self._update(state, reading, now)
        if state.blinks:
            return LIVE, None
        if now - state.started > self.window_s:
            return SPOOF, NO_BLINK
        return PENDING, WAITING

    def _update(self, state: BlinkState, reading: EyeReading, now: float) -> None:
        recent = [(e, le, ri) for t, e, le, ri in state.readings if now - t <= BASELINE_S]
        state.readings.append((now, reading.ear, reading.ear_left, reading.ear_right))
        if len(recent) < MIN_BASELINE:
            return
        baseline = statistics.median(e for e, _, _ in recent)
        if baseline <= 1e-6:
            return
        state.last_baseline = baseline
        ratio = reading.ear / baseline
        state.deepest_ratio = ratio if state.deepest_ratio is None else min(state.deepest_ratio, ratio)
        if state.closed_since is None:
            if ratio >= self.open_ratio:
                state.armed = True
                state.open_reading = reading
            elif ratio < self.close_ratio and state.armed:
                state.closed_since, state.closed_min = now, ratio
                state.closure_both, state.closure_still = False, 1.0
                self._closed_frame(state, reading, recent)
            return
        state.closed_min = min(state.closed_min, ratio)
        if ratio >= self.open_ratio:
            if now - state.closed_since <= self.max_closed_s:
                why = self._not_a_blink(state)
                if why is None:
                    state.blinks += 1
                    if state.first_blink_s is None:
                        state.first_blink_s = now - state.started
                else:
                    state.not_blinks[why] = state.not_blinks.get(why, 0) + 1
            state.closed_since = None
            state.open_reading = reading
        elif now - state.closed_since > self.max_closed_s:
            state.closed_since, state.armed = None, False  # eyes stayed low (looking down)
        else:
            self._closed_frame(state, reading, recent)

    def _closed_frame(self, state: BlinkState, reading: EyeReading,
                      recent: list[tuple[float, float, float]]) -> None:
        """What a frame of a closure says about it being a blink (``cover_check``)."""
        if not self.cover_check:
            return
        left = statistics.median(le for _, le, _ in recent)
        right = statistics.median(ri for _, _, ri in recent)
        if (left > 1e-6 and right > 1e-6 and reading.ear_left / left < self.open_ratio
                and reading.ear_right / right < self.open_ratio):
            state.closure_both = True
        if state.closure_still is not None:
            # not judged until this frame's match is in: a match that raises leaves the closure no blink
            so_far, state.closure_still = state.closure_still, None
            still = still_match(state.open_reading, reading)
            state.closure_still = None if still is None else min(so_far, still)

    def _not_a_blink(self, state: BlinkState) -> str | None:
        """Why a closure that reopened in time is no blink (None: it is one)."""
        if not self.cover_check:
            return None
        state.last_still = state.closure_still
        if not state.closure_both:
            return "one_eye"
        if state.closure_still is None:
            return "not_compared"
        if state.closure_still < STILL_MIN_NCC:
            return "face_changed"  # the skin round the eyes changed: covered, not blinked
        return None

    @staticmethod
    def report(state: BlinkState) -> dict:
        return {"blinks": state.blinks,
                "first_blink_s": None if state.first_blink_s is None else round(state.first_blink_s, 3),
                "baseline_ear": None if state.last_baseline is None else round(state.last_baseline, 4),
                "min_ear_ratio": None if state.deepest_ratio is None else round(state.deepest_ratio, 3),
                "readings": len(state.readings), "unreadable": state.unreadable,
                "not_blinks": dict(state.not_blinks),
                "last_still_match": None if state.last_still is None else round(state.last_still, 3)}


def _grey(crop: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(crop.astype(np.float32) @ GREY_WEIGHTS, (0, 0), 1.0)


def _best_ncc(template: np.ndarray, search: np.ndarray) -> float:
    """The best normalised cross-correlation of ``template`` over every shift within ``search``."""
    k = template.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(search, (k, k)).reshape(-1, k * k)
    t = template.reshape(-1) - template.mean()
    w = windows - windows.mean(axis=1, keepdims=True)
    denom = np.sqrt((w * w).sum(axis=1) * float(t @ t))
    ncc = np.where(denom > 1e-6, (w @ t) / np.maximum(denom, 1e-6), 0.0)
    return float(ncc.max())


def still_match(opened: EyeReading | None, closed: EyeReading) -> float | None:
    """The lowest match of the ``STILL_POINTS`` patches of ``opened`` (eyes open) in ``closed``
    (registered to it), or None where it cannot be judged (no crop or points, no registration,
    fewer than ``STILL_MIN_POINTS`` patches with texture inside the crop)."""
    if opened is None or opened.crop is None or opened.points is None or closed.crop is None \
            or closed.points is None:
        return None
    ref_pts = opened.points[:, :2].astype(np.float32)
    m, _ = cv2.estimateAffinePartial2D(closed.points[list(REGISTER_POINTS), :2].astype(np.float32),
                                       ref_pts[list(REGISTER_POINTS)], method=cv2.LMEDS)
    if m is None:
        return None
    size = opened.crop.shape[1], opened.crop.shape[0]
    ref = _grey(opened.crop)
    moved = _grey(cv2.warpAffine(closed.crop, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
    r = max(3, round(PATCH_OF_EYE * float(np.linalg.norm(ref_pts[33] - ref_pts[133]))))
    h, w = ref.shape
    scores = []
    for i in STILL_POINTS:
        x, y = (int(round(float(v))) for v in ref_pts[i])
        if not (r + SEARCH_PX <= x < w - r - SEARCH_PX and r + SEARCH_PX <= y < h - r - SEARCH_PX):
            continue
        template = ref[y - r:y + r + 1, x - r:x + r + 1]
        if float(template.std()) < FLAT_STD:
            continue
        e = r + SEARCH_PX
        scores.append(_best_ncc(template, moved[y - e:y + e + 1, x - e:x + e + 1]))
    return min(scores) if len(scores) >= STILL_MIN_POINTS else None
