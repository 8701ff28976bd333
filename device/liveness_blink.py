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
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field

from facelink.models.facemesh import EyeReading

from .liveness_frozen import LIVE, PENDING, SPOOF

NO_BLINK = "NO_BLINK"
WAITING = "WAITING_FOR_BLINK"
BASELINE_S = 3.0  # readings this recent make the open-eye baseline
MIN_BASELINE = 3  # readings needed before a dip can be judged


@dataclass
class BlinkState:
    started: float | None = None
    readings: deque = field(default_factory=lambda: deque(maxlen=120))  # (time, ear)
    closed_since: float | None = None
    closed_min: float = 1.0
    blinks: int = 0
    first_blink_s: float | None = None
    last_baseline: float | None = None
    deepest_ratio: float | None = None  # smallest EAR / baseline seen
    unreadable: int = 0
    armed: bool = True  # False after a long closure, until the eyes are open again


@dataclass(frozen=True)
class Blink:
    window_s: float = 5.0
    close_ratio: float = 0.7  # EAR below this fraction of the baseline: eyes closing
    open_ratio: float = 0.85  # back above this fraction: reopened
    max_closed_s: float = 0.8  # a longer closure is not a blink
    min_face_score: float = 0.5

    def observe(self, state: BlinkState, reading: EyeReading | None, now: float) -> tuple[str, str | None]:
        if state.started is None:
            state.started = now
        if reading is None or reading.face_score < self.min_face_score:
            state.unreadable += 1
        else:
            self._update(state, reading.ear, now)
        if state.blinks:
            return LIVE, None
        if now - state.started > self.window_s:
            return SPOOF, NO_BLINK
        return PENDING, WAITING

    def _update(self, state: BlinkState, ear: float, now: float) -> None:
        recent = [e for t, e in state.readings if now - t <= BASELINE_S]
        state.readings.append((now, ear))
        if len(recent) < MIN_BASELINE:
            return
        baseline = statistics.median(recent)
        if baseline <= 1e-6:
            return
        state.last_baseline = baseline
        ratio = ear / baseline
        state.deepest_ratio = ratio if state.deepest_ratio is None else min(state.deepest_ratio, ratio)
        if state.closed_since is None:
            if ratio >= self.open_ratio:
                state.armed = True
            elif ratio < self.close_ratio and state.armed:
                state.closed_since, state.closed_min = now, ratio
            return
        state.closed_min = min(state.closed_min, ratio)
        if ratio >= self.open_ratio:
            if now - state.closed_since <= self.max_closed_s:
                state.blinks += 1
                if state.first_blink_s is None:
                    state.first_blink_s = now - state.started
            state.closed_since = None
        elif now - state.closed_since > self.max_closed_s:
            state.closed_since, state.armed = None, False  # eyes stayed low (looking down)

    @staticmethod
    def report(state: BlinkState) -> dict:
        return {"blinks": state.blinks,
                "first_blink_s": None if state.first_blink_s is None else round(state.first_blink_s, 3),
                "baseline_ear": None if state.last_baseline is None else round(state.last_baseline, 4),
                "min_ear_ratio": None if state.deepest_ratio is None else round(state.deepest_ratio, 3),
                "readings": len(state.readings), "unreadable": state.unreadable}
