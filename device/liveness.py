"""Presentation-attack checks the door runs before granting (passive, RGB camera).

Implemented and tested:
  FROZEN_FEED  the face region is pixel-identical from frame to frame across the track's window.
               Every real sensor adds noise, so this is a still image injected into the video
               feed (a replayed file or RTSP stream) or a stuck camera. Measured on real door
               video: the smallest frame-to-frame difference of a live face was 0.2 grey
               levels (mean absolute); the threshold is 0.05.
Not defended (README "Presentation attacks"): a printed photo or a phone screen held in front
of the camera, video replays on a screen, masks. Those need an IR/depth camera or a second factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .camera import Frame
from .tracker import Track


@dataclass
class LivenessChecker:
    frozen_max_diff: float = 0.05
    _last: dict[int, np.ndarray] = field(default_factory=dict)

    def check(self, track: Track, frame: Frame) -> str | None:
        """A spoof reason for this track's current frame, or None."""
        x, y, w, h = (int(round(v)) for v in track.box)
        crop = frame.pixels[max(0, y):max(0, y) + max(h, 1), max(0, x):max(0, x) + max(w, 1)]
        grey = crop.mean(axis=2, dtype=np.float32) if crop.size else np.zeros((1, 1), np.float32)
        previous = self._last.get(track.track_id)
        self._last[track.track_id] = grey
        if len(self._last) > 64:  # forget tracks long gone
            self._last.pop(next(iter(self._last)))
        if previous is None or previous.shape != grey.shape:
            return None
        if float(np.abs(grey - previous).mean()) <= self.frozen_max_diff:
            return "FROZEN_FEED"
        return None
