"""Follow faces across frames (greedy IoU). A track carries its per-frame outcomes; how many of
them are kept and counted is the decision policy's business (``DecisionPolicy.record``)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Observation:
    """What one frame said about one face."""

    kind: str  # "match" | "nomatch" | "lowquality" | "spoof" | "pending" (liveness not decided yet)
    user_id: str | None = None
    face_id: str | None = None
    external_image_id: str | None = None
    similarity: float | None = None
    reason: str | None = None
    landmarks: np.ndarray | None = None
    box: np.ndarray | None = None


@dataclass
class Track:
    track_id: int
    box: np.ndarray
    last_seen: float
    history: deque = field(default_factory=deque)  # sized by DecisionPolicy.record
    decided: str | None = None  # the decision made for this track (published or held back by a cooldown)
    anchor: np.ndarray | None = None  # the face it follows: the last one embedded; once decided, the decision's
    frames_since_check: int = 0


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


class Tracker:
    def __init__(self, *, min_iou: float = 0.3, max_age_s: float = 1.5) -> None:
        self.min_iou = min_iou
        self.max_age_s = max_age_s
        self._tracks: dict[int, Track] = {}
        self._next_id = 1

    def update(self, boxes: list[np.ndarray], now: float) -> list[Track]:
        """Assign each box (largest first) to the best free track or a new one."""
        for tid in [t for t, tr in self._tracks.items() if now - tr.last_seen > self.max_age_s]:
            del self._tracks[tid]
        free = dict(self._tracks)
        assigned: list[Track] = []
        for box in boxes:
            best = max(free.values(), key=lambda t: iou(t.box, box), default=None)
            if best is not None and iou(best.box, box) >= self.min_iou:
                del free[best.track_id]
                track = best
            else:
                track = Track(self._next_id, box, now)
                self._tracks[track.track_id] = track
                self._next_id += 1
            track.box, track.last_seen = box, now
            assigned.append(track)
        return assigned

    def adopt(self, previous: Tracker) -> None:
        """Carry the people being followed over from the tracker this one replaces (a reload):
        their ids and decisions. What an undecided track had observed is dropped: it was judged
        under the rules being replaced (another threshold, no liveness check), and must not count
        towards a decision under the new ones."""
        self._tracks, self._next_id = dict(previous._tracks), previous._next_id
        for track in self._tracks.values():
            if track.decided is None:
                track.history.clear()

    def restart(self, track: Track) -> None:
        """Someone else now stands where this track's person stood: a fresh track (new id)."""
        self._tracks.pop(track.track_id, None)
        track.track_id = self._next_id
        self._next_id += 1
        track.history.clear()
        track.decided, track.anchor, track.frames_since_check = None, None, 0
        self._tracks[track.track_id] = track

    def tracks(self) -> list[Track]:
        return list(self._tracks.values())

    def __len__(self) -> int:
        return len(self._tracks)
