"""The time the door decides on: track ages, N-of-M windows, cooldowns and card windows.

A camera's frames are decided on the monotonic clock. A replayed file or folder is handed over as
fast as the door can take it, so deciding it on the processing clock made the result depend on the
machine (a stall longer than ``track_max_age_s`` split a track; a slow replay outlived
``cooldown_s`` and granted again). A replay is decided on the scene's own time instead
(``Frame.scene_at``), and so is everything else while it runs (a badge read counts as presented
at the newest frame). The clock never goes backwards; the pipeline closes an expired card
window before it looks at a frame (``DoorPipeline.process``), whichever clock runs."""

from __future__ import annotations

import time

from .camera import Frame


class DecisionClock:
    def __init__(self, replay: bool) -> None:
        self.replay = replay
        self._t: float | None = None

    def frame(self, frame: Frame) -> float:
        """The time ``frame`` is decided on."""
        scene = frame.scene_at if self.replay else None
        return self._advance(time.monotonic() if scene is None else scene)

    def now(self) -> float:
        """The time for what happens between frames (badge reads, closing card windows). A
        replay stands still between frames; before its first one, real time (not kept: the
        first frame's own time may be a moment earlier)."""
        if self.replay:
            return time.monotonic() if self._t is None else self._t
        return self._advance(time.monotonic())

    def _advance(self, t: float) -> float:
        self._t = t if self._t is None else max(self._t, t)
        return self._t
