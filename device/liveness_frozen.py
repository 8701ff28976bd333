"""FROZEN_FEED: is the face in the feed a still image (injected file/stream, stuck camera)?

Each frame's face is warped to the engine's fixed 112x112 aligned crop (so detector-box jitter
never changes what is compared), registered to the track's previous crop and to an older one
(ECC, affine, on a 56x56 blurred copy: any rigid 2-D motion or sub-pixel jitter of a still is
removed) and to its tone (a quadratic intensity curve per colour channel, clipped pixels left
out: exposure, gain or gamma changes are removed), and the residual is measured at a coarse scale (Gaussian sigma 2 px) minus a multiple
of the residual's own fine-scale noise level. Sensor or re-encoding noise is fine-grained and
mostly cancels; a live face changes shape and shading and leaves a coarse residual.

Measured (tools/eval_liveness.py, README "Presentation attacks", 2026-12-06): stills from real
photos with noise sigma 1 and JPEG re-encoding score at most 0.387; stills whose exposure hunts
(gain flickering 4 %, a 5 % step, gamma 0.95) at most 0.518, 6 of 444 frames above the threshold
(before the tone match: up to 3.66, every frame). The second largest of three consecutive
comparisons -- what the verdict compares -- is at most 0.351 for stills, 0.409 for the exposure-
hunting ones, and at least 0.366 for the sample door videos (1 of their 316 windows below).
Threshold 0.42.

States: a frame with no comparison yet (first frame of a track, registration failed) is
NOT_COMPARED -- it never counts as live; a track is live while ``live_needed`` (2) of its last
``comparisons`` (3) scores are at or above the threshold, CHECKING_MOTION while it is not and
has fewer than three, and FROZEN_FEED once it has three of which fewer reach it. (With one
score enough, each frame of a still whose exposure stepped made the next three frames live.)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from facelink.models.aligner import align_face

LIVE, PENDING, SPOOF = "live", "pending", "spoof"
NOT_COMPARED = "NOT_COMPARED"
FROZEN_FEED = "FROZEN_FEED"
CHECKING = "CHECKING_MOTION"  # compared, but too few comparisons to call it either way
NOISE_WEIGHT = 0.25  # how much of the fine-scale residual (noise) is subtracted from the coarse one
OLDER_GAP = 4  # the second reference: the oldest of the last few crops (up to this many frames back)
MARGIN = 14  # pixels of the 112 crop ignored at each border (registration edge effects)


GREY_WEIGHTS = np.array([0.114, 0.587, 0.299], dtype=np.float32)  # B, G, R: OpenCV's grey
SATURATED = (5.0, 250.0)  # a channel at or beyond these levels is clipped: no tone there to compare


def colour_crop(bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The 112x112 aligned crop as float32, its channels kept (a grey frame: one channel)."""
    crop = align_face(bgr, landmarks).astype(np.float32)
    return crop if crop.ndim == 3 else crop[:, :, None]


def _grey(crop: np.ndarray) -> np.ndarray:
    return crop[:, :, 0] if crop.shape[2] == 1 else crop @ GREY_WEIGHTS


def change_score(current: np.ndarray, previous: np.ndarray) -> float | None:
    """Coarse residual between two aligned crops after registration; None: could not compare."""
    small = [cv2.resize(cv2.GaussianBlur(_grey(g), (0, 0), 1.0), (56, 56), interpolation=cv2.INTER_AREA)
             for g in (current, previous)]
    if float(small[0].std()) < 1.0 or float(small[1].std()) < 1.0:
        return None  # a blank crop (face left the frame, lens covered): nothing to register
    warp = np.eye(2, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-5)
    try:
        _, warp = cv2.findTransformECC(small[0], small[1], warp, cv2.MOTION_AFFINE, criteria, None, 1)
    except cv2.error:
        return None  # registration did not converge: say so, never "live"
    warp[:, 2] *= 2.0  # 56 -> 112 pixels
    moved = cv2.warpAffine(previous, warp, (112, 112), flags=cv2.INTER_LINEAR + cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_REPLICATE).reshape(previous.shape)
    inner = (slice(MARGIN, -MARGIN), slice(MARGIN, -MARGIN))
    residual = _tone_matched_residual(current[inner], moved[inner])
    coarse = cv2.GaussianBlur(residual, (0, 0), 2.0)
    fine = residual - cv2.GaussianBlur(residual, (0, 0), 1.0)
    noise = 1.4826 * float(np.median(np.abs(fine - np.median(fine))))
    return float(np.abs(coarse - np.median(coarse)).mean()) - NOISE_WEIGHT * noise


def _tone_matched_residual(current: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """The grey residual of ``current`` minus ``previous`` passed, channel by channel, through the
    tone curve (quadratic in intensity, least squares) that best maps one to the other: a change
    of exposure, gain or gamma over the whole crop (auto-exposure hunting, a still whose
    brightness is stepped) leaves nothing, while a face that moves, changes expression or is lit
    differently in parts does. Pixels clipped in a channel (either crop) are left out of that
    channel: a brighter exposure clips a colour channel where the grey level is far from white."""
    channels = []
    for c in range(current.shape[2]):
        cur, prev = current[:, :, c], previous[:, :, c]
        ok = ((prev > SATURATED[0]) & (prev < SATURATED[1]) & (cur > SATURATED[0]) & (cur < SATURATED[1])).ravel()
        x = prev.ravel() / 255.0
        basis = np.stack([x * x, x, np.ones_like(x)], axis=1)
        if ok.sum() < basis.shape[1] * 10:  # almost all clipped: nothing to fit, nothing to compare
            channels.append(np.zeros_like(cur))
            continue
        fit = basis[ok]  # least squares through its 3x3 normal equations (same fit, a third of the time)
        coef, *_ = np.linalg.lstsq(fit.T @ fit, fit.T @ cur.ravel()[ok], rcond=None)
        r = (cur.ravel() - basis @ coef).astype(np.float32)
        r[~ok] = 0.0
        channels.append(r.reshape(cur.shape))
    stack = np.stack(channels, axis=2)
    return stack[:, :, 0] if stack.shape[2] == 1 else stack @ GREY_WEIGHTS


@dataclass
class FrozenFeedState:
    crops: deque = field(default_factory=lambda: deque(maxlen=OLDER_GAP + 1))
    scores: deque = field(default_factory=deque)
    compared: int = 0
    not_compared: int = 0
    max_score: float | None = None


@dataclass(frozen=True)
class FrozenFeed:
    min_change: float = 0.42
    comparisons: int = 3  # the last few comparisons judged together
    live_needed: int = 2  # how many of them must reach min_change (one let a still's exposure step through)

    def new_state(self) -> FrozenFeedState:
        return FrozenFeedState(scores=deque(maxlen=self.comparisons))

    def recent_change(self, state: FrozenFeedState) -> float | None:
        """The change the verdict compares with ``min_change``: the ``live_needed``-th largest of
        the last comparisons (None: fewer comparisons than that so far)."""
        if len(state.scores) < self.live_needed:
            return None
        return sorted(state.scores)[-self.live_needed]

    def observe(self, state: FrozenFeedState, bgr: np.ndarray, landmarks: np.ndarray) -> tuple[str, str | None]:
        crop = colour_crop(bgr, landmarks)
        refs = list({id(c): c for c in (state.crops[-1], state.crops[0])}.values()) if state.crops else []
        state.crops.append(crop)
        scores = [s for s in (change_score(crop, r) for r in refs) if s is not None]
        if not scores:
            state.not_compared += 1
            return PENDING, NOT_COMPARED
        score = max(scores)
        state.compared += 1
        state.scores.append(score)
        state.max_score = score if state.max_score is None else max(state.max_score, score)
        recent = self.recent_change(state)
        if recent is not None and recent >= self.min_change:
            return LIVE, None
        if len(state.scores) >= self.comparisons:
            return SPOOF, FROZEN_FEED
        return PENDING, CHECKING

    def report(self, state: FrozenFeedState) -> dict:
        recent = self.recent_change(state)
        return {"compared": state.compared, "not_compared": state.not_compared,
                "recent_change": None if recent is None else round(recent, 3),
                "max_change": None if state.max_score is None else round(state.max_score, 3)}
