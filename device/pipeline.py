"""One frame through the door's pipeline: detect -> quality gate -> align/embed -> match ->
track -> decision. No I/O here: the daemon feeds frames in and publishes what comes out."""

from __future__ import annotations

from dataclasses import dataclass, replace

from facelink.models.engine import AnalyzedFace, FaceEngine

from .camera import Frame
from .decision import Decision, DecisionPolicy
from .factors import BadgeRead, Factors
from .matcher import UserIndex
from .tracker import Observation, Tracker


@dataclass(frozen=True)
class Gate:
    min_face_px: int
    max_abs_yaw: float
    max_abs_pitch: float
    min_sharpness: float
    min_brightness: float

    @classmethod
    def from_settings(cls, m) -> Gate:
        return cls(m.min_face_px, m.max_abs_yaw, m.max_abs_pitch, m.min_sharpness, m.min_brightness)

    def reason(self, face: AnalyzedFace) -> str | None:
        """Why this face can't be used for a decision, or None when it can."""
        if min(face.detection.box[2], face.detection.box[3]) < self.min_face_px:
            return "SMALL_FACE"
        if abs(face.pose.yaw) > self.max_abs_yaw or abs(face.pose.pitch) > self.max_abs_pitch:
            return "EXTREME_POSE"
        if face.quality.sharpness < self.min_sharpness:
            return "LOW_SHARPNESS"
        if face.quality.brightness < self.min_brightness:
            return "LOW_BRIGHTNESS"
        return None


class DoorPipeline:
    MAX_FACES = 3  # the people nearest the door; farther faces are ignored
    RECHECK_EVERY = 5  # frames between identity checks of a track that already has its decision
    SAME_PERSON_COSINE = 0.363  # below this (OpenCV Zoo's SFace same-person threshold): someone else

    def __init__(self, engine: FaceEngine, index: UserIndex, tracker: Tracker, policy: DecisionPolicy,
                 gate: Gate, liveness=None, presence=None) -> None:
        self.engine = engine
        self.presence = presence  # optional BlazeFaceDetector: no face in view -> skip the rest
        self.index = index
        self.tracker = tracker
        self.policy = policy
        self.gate = gate
        self.liveness = liveness
        self.factors: Factors | None = None  # the card modes (matching.mode); None: face only

    def badge(self, read: BadgeRead, now: float) -> list[Decision]:
        """A badge read (card modes): decisions it makes at once; a new verification restarts
        the tracks in view so that the person at the door gets a decision of their own."""
        if self.factors is None:
            return []
        decisions, started = self.factors.badge(read, self.policy, now)
        if started:
            for track in self.tracker.tracks():
                self.tracker.restart(track)
        return decisions

    def tick(self, now: float) -> list[Decision]:
        """Close a card_and_face verification whose window passed (DENIED_NO_FACE)."""
        return self.factors.tick(self.policy, now) if self.factors is not None else []

    def process(self, frame: Frame, now: float) -> list[Decision]:
        if self.presence is not None and not self.presence.detect(frame.pixels):
            self.tracker.update([], now)
            return []
        faces = self.engine.detect(frame.pixels)[: self.MAX_FACES]
        tracks = self.tracker.update([f.detection.box for f in faces], now)
        todo, recheck = [], []
        for face, track in zip(faces, tracks, strict=True):
            reason = self.gate.reason(face)
            if track.decided is None:
                todo.append((face, track, reason))
            elif reason is None:  # decided: only check now and then that it is still the same person
                track.frames_since_check += 1
                if track.anchor is None or track.frames_since_check >= self.RECHECK_EVERY:
                    recheck.append((face, track))
        wanted = [f for f, _, r in todo if r is None] + [f for f, _ in recheck]
        embedded = {id(f): e for f, e in zip(wanted, self.engine.embed(frame.pixels, wanted), strict=True)}
        for face, track in recheck:
            track.frames_since_check = 0
            emb = embedded[id(face)].embedding
            if track.anchor is None or float(track.anchor @ emb) < self.SAME_PERSON_COSINE:
                self.tracker.restart(track)  # the next person stepped into the same spot
                todo.append((face, track, None))
        decisions = []
        for face, track, reason in todo:
            if reason is not None:
                obs = Observation("lowquality", reason=reason, box=face.detection.box)
            else:
                obs = self._observe(embedded[id(face)], frame)
            track.history.append(obs)
            if self.liveness is not None and obs.kind in ("match", "nomatch"):
                verdict = self.liveness.check(track.track_id, face, frame, now)
                if obs.kind == "match" and verdict.state != "live":  # pending/spoof never grants
                    track.history[-1] = Observation(verdict.state, reason=verdict.reason, box=face.detection.box)
            decision = self.policy.decide(track, now)
            if decision is not None and self.factors is not None:
                decision = self.factors.decided(decision)
            if decision is not None:
                if self.liveness is not None:  # which checks ran and what they measured
                    decision = replace(decision, liveness=self.liveness.report(track.track_id))
                    self.liveness.decided(decision.decision, decision.reason)
                track.anchor = embedded[id(face)].embedding if reason is None else None
                decisions.append(decision)
        return decisions

    def _observe(self, face: AnalyzedFace, frame: Frame) -> Observation:
        box, lm = face.detection.box, face.detection.landmarks
        if self.factors is not None:
            verdict = self.factors.observe(self.index, self.engine.similarity, self.policy.threshold,
                                           face.embedding, box, lm)
            if verdict is not None:
                return verdict
        match = self.index.best(face.embedding)
        if match is None:
            return Observation("nomatch", similarity=0.0, box=box, landmarks=lm)
        similarity = float(self.engine.similarity(match.cosine))
        if similarity >= self.policy.threshold:
            return Observation("match", match.user_id, match.face_id, match.external_image_id,
                               similarity, box=box, landmarks=lm)
        return Observation("nomatch", similarity=round(similarity, 4), box=box, landmarks=lm)
