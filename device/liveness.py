"""Presentation-attack checks the door runs before granting, one per track (config [liveness]).

  FROZEN_FEED  the face is a still image (injected file/stream, stuck camera): liveness_frozen.py
  NO_BLINK     with require_blink, no blink within blink_window_s: liveness_blink.py
  FLAT_FACE    with a depth camera, the face has no depth relief: liveness_depth.py

Each check says, per frame, ``live``, ``pending`` (not decided yet: could not compare, waiting
for a blink -- never counts as live) or ``spoof`` with a reason. A frame whose face matched
counts toward GRANTED only when every enabled check says live; a spoof verdict makes it a spoof
frame (N of them: DENIED_SPOOF with that reason). What each check measured goes into the
decision payload (``report``) and how often each fired into the health topic (``counters``).
Measured APCER/BPCER per attack: README "Presentation attacks" (tools/eval_liveness.py).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facelink.errors import ModelError
from facelink.models.facemesh import FaceMesh
from facelink.models.manifest import verify_model
from facelink.models.runtime import TFLiteBackend

from .camera_realsense import depth_of
from .liveness_blink import Blink, BlinkState
from .liveness_depth import DepthRelief
from .liveness_frozen import LIVE, PENDING, SPOOF, FrozenFeed, FrozenFeedState

log = logging.getLogger(__name__)

MAX_TRACKS = 64  # per-track state kept for this many most recently seen tracks
MESH_FILES = ("face_landmark.tflite", "iris_landmark.tflite")


@dataclass(frozen=True)
class Verdict:
    state: str  # live | pending | spoof
    reason: str | None = None


@dataclass
class TrackLiveness:
    frozen: FrozenFeedState | None = None
    blink: BlinkState | None = None
    depth: Any = None
    last: dict[str, Verdict] = field(default_factory=dict)


def load_face_mesh(models_dir: Path, threads: int = 0) -> FaceMesh:
    """The face-mesh + iris TFLite models (`facelink models --tflite`)."""
    missing = [n for n in MESH_FILES if not (Path(models_dir) / n).is_file()]
    if missing:
        raise ModelError(f"{', '.join(missing)} missing in {models_dir}: run `facelink models --tflite` "
                         "(liveness.require_blink needs the face-mesh and iris models)")
    for name in MESH_FILES:
        verify_model(models_dir, name)
    return FaceMesh(TFLiteBackend(Path(models_dir) / MESH_FILES[0], threads=threads),
                    TFLiteBackend(Path(models_dir) / MESH_FILES[1], threads=threads))


def combined(verdicts: Iterable[Verdict]) -> Verdict:
    """A frame's verdict from its checks' verdicts: the first spoof, else the first pending
    (never counts as live), else live (the door's rule; the evaluation tools judge with it)."""
    verdicts = list(verdicts)
    return (next((v for v in verdicts if v.state == SPOOF), None)
            or next((v for v in verdicts if v.state == PENDING), None) or Verdict(LIVE))


def frozen_feed_check(ls) -> FrozenFeed:
    """FROZEN_FEED as ``[liveness]`` configures it (the door's, and the evaluation tools')."""
    return FrozenFeed(ls.frozen_feed_min_change)


def blink_check(ls) -> Blink:
    """NO_BLINK as ``[liveness]`` configures it (the door's, and the evaluation tools')."""
    return Blink(window_s=ls.blink_window_s, close_ratio=ls.blink_close_ratio)


class LivenessChecker:
    def __init__(self, frozen: FrozenFeed | None = None, blink: Blink | None = None,
                 mesh: FaceMesh | None = None, depth: DepthRelief | None = None) -> None:
        if blink is not None and mesh is None:
            raise ModelError("the blink check needs the face-mesh models")
        self.frozen = frozen
        self.blink = blink
        self.mesh = mesh
        self.depth = depth
        self._tracks: OrderedDict[int, TrackLiveness] = OrderedDict()
        self.fired: Counter = Counter()  # spoof frames per reason
        self.denied: Counter = Counter()  # DENIED_SPOOF decisions per reason
        self.blinks = 0

    @classmethod
    def from_settings(cls, ls, ms) -> LivenessChecker | None:
        if not ls.enabled:
            return None
        frozen = frozen_feed_check(ls) if ls.frozen_feed else None
        depth = DepthRelief(ls.min_depth_relief_mm) if ls.depth_check else None
        blink = mesh = None
        if ls.require_blink:
            blink = blink_check(ls)
            mesh = load_face_mesh(ms.models_dir, ms.threads)
        return cls(frozen, blink, mesh, depth)

    @property
    def checks(self) -> list[str]:
        names = [("frozen_feed", self.frozen), ("blink", self.blink), ("depth", self.depth)]
        return [n for n, c in names if c is not None]

    def _state(self, track_id: int) -> TrackLiveness:
        st = self._tracks.get(track_id)
        if st is not None:
            self._tracks.move_to_end(track_id)  # the least recently seen are forgotten, not the oldest
        else:
            st = TrackLiveness(self.frozen.new_state() if self.frozen else None,
                               BlinkState() if self.blink else None,
                               self.depth.new_state() if self.depth else None)
            self._tracks[track_id] = st
            while len(self._tracks) > MAX_TRACKS:
                self._tracks.popitem(last=False)
        return st

    def check(self, track_id: int, face, frame, now: float) -> Verdict:
        """This frame's verdict for the face of ``track_id`` (``face``: an AnalyzedFace)."""
        st = self._state(track_id)
        det = face.detection
        if self.frozen is not None:
            st.last["frozen_feed"] = Verdict(*self.frozen.observe(st.frozen, frame.pixels, det.landmarks))
        if self.blink is not None:
            reading = self.mesh.read_eyes(frame.pixels, det.box, det.landmarks)
            before = st.blink.blinks
            st.last["blink"] = Verdict(*self.blink.observe(st.blink, reading, now))
            self.blinks += st.blink.blinks - before
        if self.depth is not None:
            st.last["depth"] = Verdict(*self.depth.observe(st.depth, depth_of(frame.pixels), det.box, det.landmarks))
        verdict = combined(st.last.values())
        if verdict.state == SPOOF:
            self.fired[verdict.reason] += 1
        return verdict

    def report(self, track_id: int) -> dict[str, Any]:
        """Which checks ran for this track and what they measured (decision payload)."""
        st = self._tracks.get(track_id)
        out: dict[str, Any] = {"checks": self.checks}
        if st is None:
            return out
        if self.frozen is not None:
            out["frozen_feed"] = {**self.frozen.report(st.frozen), **_verdict(st.last.get("frozen_feed"))}
        if self.blink is not None:
            out["blink"] = {**self.blink.report(st.blink), **_verdict(st.last.get("blink"))}
        if self.depth is not None:
            out["depth"] = {**self.depth.report(st.depth), **_verdict(st.last.get("depth"))}
        return out

    def decided(self, decision: str, reason: str | None) -> None:
        if decision == "DENIED_SPOOF" and reason:
            self.denied[reason] += 1

    def counters(self) -> dict[str, Any]:
        """For the health topic: how often each check fired (frames and decisions)."""
        return {"checks": self.checks, "spoof_frames": dict(self.fired), "denied": dict(self.denied),
                "blinks": self.blinks}


def _verdict(v: Verdict | None) -> dict[str, Any]:
    return {"state": None, "reason": None} if v is None else {"state": v.state, "reason": v.reason}
