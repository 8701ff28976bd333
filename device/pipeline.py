"""One frame through the door's pipeline: detect -> quality gate -> align/embed -> match ->
track -> decision. No I/O here: the daemon feeds frames in and publishes what comes out.
What the decision rules are comes from ``Components`` (``device/assembly.py``), swapped whole
on a reload."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from facelink.models.engine import AnalyzedFace, FaceEngine

from .assembly import Components
from .camera import Frame
from .decision import ERROR, GRANTED, Decision, similarity_below
from .factors import BadgeRead, Factors
from .matcher import UserIndex
from .tracker import Observation, Track

if TYPE_CHECKING:
    from .stale_gate import StaleGate

log = logging.getLogger(__name__)


class DecidedThenFailed(Exception):
    """A step (a frame, a badge read) failed after it had made decisions: ``decisions`` are
    those (a card window it closed, a face decided before the one that failed). Their state has
    moved on (the track is decided, the claim closed, the cooldown started), so dropping them
    would lose them for good: the daemon publishes them, then reports ``cause`` (ERROR).

    No GRANTED is among them: a step that failed leaves doubt, and doubt keeps the door locked.
    A GRANTED it made comes out as ERROR (same user, track and event id, the reason saying why),
    its cooldown is withdrawn and its track starts again, so the next frames that work decide
    that person afresh."""

    def __init__(self, decisions: list[Decision], cause: Exception) -> None:
        super().__init__(describe_error(cause))
        self.decisions = decisions
        self.cause = cause


class DoorPipeline:
    MAX_FACES = 3  # the people nearest the door; farther faces are ignored
    RECHECK_EVERY = 5  # frames between identity checks of a track that already has its decision

    def __init__(self, engine: FaceEngine, index: UserIndex, components: Components, presence=None) -> None:
        self.engine = engine
        self.presence = presence  # optional BlazeFaceDetector: no face in view -> skip the rest
        self.index = index
        self.components = components
        self.factors: Factors | None = None  # the card modes (matching.mode); None: face only
        self.stale: StaleGate | None = None  # with sync: the decisions it kept and did not make again

    def badge(self, read: BadgeRead, now: float) -> list[Decision]:
        """A badge read (card modes): decisions it makes at once; a new verification restarts
        the tracks in view so that the person at the door gets a decision of their own. If that
        restart fails, the verification is dropped (faces seen before the badge must not decide it)."""
        if self.factors is None:
            return []
        c = self.components
        decisions, started = self.factors.badge(read, c.policy, now)
        try:
            if started:
                for track in c.tracker.tracks():
                    was = track.track_id
                    c.tracker.restart(track)
                    if self.stale is not None:  # the same person: what is kept for them follows
                        self.stale.restarted(was, track.track_id)
        except Exception as exc:
            self.factors.drop_claim()
            raise _failed(c, decisions, exc) from exc
        return decisions

    def not_carried_out(self, decision: Decision) -> None:
        """``decision`` was made but could not be recorded (the outbox refused it: the door stayed
        locked). A GRANTED's cooldown is withdrawn and its track starts again, as for a step that
        failed (:class:`DecidedThenFailed`): the person is decided afresh by the next frames,
        never held back by the cooldown of a GRANTED that nobody saw and that opened nothing."""
        if decision.decision == GRANTED:
            withhold(self.components, decision)

    def tick(self, now: float, reason: str | None = None) -> list[Decision]:
        """Close a card_and_face verification whose window passed (DENIED_NO_FACE)."""
        return self.factors.tick(self.components.policy, now, reason) if self.factors is not None else []

    def process(self, frame: Frame, now: float) -> list[Decision]:
        """The decisions this frame makes. If it fails after making some,
        :class:`DecidedThenFailed` carries them (no GRANTED); if before, the error itself is raised."""
        c = self.components  # one consistent set for the whole frame
        decisions: list[Decision] = []
        try:
            self._process(c, frame, now, decisions)
            if self.stale is not None:
                decisions += self.stale.not_made_again(c)
        except Exception as exc:
            if decisions:
                raise _failed(c, decisions, exc) from exc
            raise
        return decisions

    def _process(self, c: Components, frame: Frame, now: float, decisions: list[Decision]) -> None:
        decisions += self.tick(now)  # a card window that closed before this frame: it can't match
        if self.presence is not None and not self.presence.detect(frame.pixels):
            c.tracker.update([], now)
            return
        faces = self.engine.detect(frame.pixels)[: self.MAX_FACES]
        tracks = c.tracker.update([f.detection.box for f in faces], now)
        todo, recheck = [], []
        for face, track in zip(faces, tracks, strict=True):
            reason = c.gate.reason(face)
            if track.decided is None:
                todo.append((face, track, reason))
            elif reason is None:  # decided: only check now and then that it is still the same person
                track.frames_since_check += 1
                if track.anchor is None or track.frames_since_check >= self.RECHECK_EVERY:
                    recheck.append((face, track))
        wanted = [f for f, _, r in todo if r is None] + [f for f, _ in recheck]
        embedded = {id(f): e for f, e in zip(wanted, self.engine.embed(frame.pixels, wanted), strict=True)}
        for face, track, reason in todo:  # undecided: whose face is this, frame after frame?
            if reason is None:
                self._follow(c, track, embedded[id(face)].embedding)
        for face, track in recheck:
            track.frames_since_check = 0
            emb = embedded[id(face)].embedding
            if track.anchor is None or float(track.anchor @ emb) < c.same_person_cosine:
                c.tracker.restart(track)  # the next person stepped into the same spot
                track.anchor = emb
                todo.append((face, track, None))
        for face, track, reason in todo:
            self._observe(c, track, face, embedded.get(id(face)), reason, frame, now)
            decision = c.policy.decide(track)
            if decision is None:
                continue
            self._settle(c, track, decision, embedded.get(id(face)), now, decisions)

    def _settle(self, c: Components, track: Track, decision: Decision, embedded: AnalyzedFace | None,
                now: float, decisions: list[Decision]) -> None:
        """Label a track's decision (factors, liveness) and add it to ``decisions`` unless the
        cooldown holds it back. The track is decided already: if a step here fails, the decision
        (labelled as far as it got) is added all the same and the error raised, so it is carried
        out with the error, never lost."""
        try:
            if self.factors is not None:
                decision = self.factors.decided(decision)
            if c.liveness is not None:  # which checks ran and what they measured
                decision = replace(decision, liveness=c.liveness.report(track.track_id))
            # decided, whether published or held back by the cooldown: the track keeps it
            track.anchor = embedded.embedding if embedded is not None else None
            if not c.policy.admit(decision, now):
                return
            if c.liveness is not None:
                c.liveness.decided(decision.decision, decision.reason)
        except Exception:
            decisions.append(decision)
            raise
        decisions.append(decision)

    @staticmethod
    def _follow(c: Components, track: Track, embedding) -> None:
        """An undecided track follows one face: when the face in its spot is no longer the same
        person (below ``same_person_cosine`` to the track's last embedded face), it restarts — new
        id, empty history, fresh liveness state — so that nothing one face showed (a blink, a
        live motion, a match) counts for another (a print held up, lowered for one frame, held
        up again). The same person's consecutive frames stay far above that level (the sample
        door videos: cosine ≥ 0.87 against 0.37)."""
        if track.anchor is not None and float(track.anchor @ embedding) < c.same_person_cosine:
            c.tracker.restart(track)
        track.anchor = embedding

    def _observe(self, c: Components, track: Track, face: AnalyzedFace, embedded: AnalyzedFace | None,
                 reason: str | None, frame: Frame, now: float) -> None:
        box, lm = face.detection.box, face.detection.landmarks
        if reason is not None:
            c.policy.record(track, Observation("lowquality", reason=reason, box=box))
            return
        verdict = None if self.factors is None else self.factors.observe(
            self.index, self.engine.similarity, c.policy.threshold, embedded.embedding, box, lm)
        if verdict is not None:
            self._record(c, track, face, verdict, frame, now)
            return
        match = self.index.best(embedded.embedding)
        if match is None:
            obs = Observation("nomatch", similarity=0.0, box=box, landmarks=lm)
        else:
            similarity = float(self.engine.similarity(match.cosine))
            if similarity >= c.policy.threshold:
                obs = Observation("match", match.user_id, match.face_id, match.external_image_id,
                                  similarity, box=box, landmarks=lm)
            else:
                obs = Observation("nomatch", similarity=similarity_below(similarity, c.policy.threshold),
                                  box=box, landmarks=lm)
        self._record(c, track, face, obs, frame, now)

    def _record(self, c: Components, track: Track, face: AnalyzedFace, obs: Observation, frame: Frame,
                now: float) -> None:
        # the liveness verdict first, then the frame is recorded: a check that raises records
        # nothing, so a match that never passed liveness never counts toward GRANTED
        if c.liveness is not None and obs.kind in ("match", "nomatch"):
            verdict = c.liveness.check(track.track_id, face, frame, now)
            if obs.kind == "match" and verdict.state != "live":  # pending/spoof never grants
                obs = Observation(verdict.state, reason=verdict.reason, box=obs.box)
        c.policy.record(track, obs)


def _failed(c: Components, decisions: list[Decision], cause: Exception) -> DecidedThenFailed:
    """What a step that failed part-way hands the daemon: its decisions, each GRANTED turned into
    ERROR (see :class:`DecidedThenFailed`); the GRANTED's cooldown is withdrawn and its track
    restarted where that still works (a failure there is logged: the ERROR goes out regardless)."""
    kept: list[Decision] = []
    for d in decisions:
        if d.decision == GRANTED:
            withheld = d
            d = replace(d, decision=ERROR, reason=f"not granted: {d.user_id} matched but the step failed "
                                                  f"({describe_error(cause)})"[:300])
            withhold(c, withheld)
        kept.append(d)
    return DecidedThenFailed(kept, cause)


def withhold(c: Components, granted: Decision) -> None:
    """A GRANTED (or a DENIED the stale gate released: ``StaleGate.refused``) that was not carried
    out: its cooldown goes and its track starts again where that still works (a failure here is
    logged: the door stays locked regardless)."""
    try:
        c.policy.withdraw(granted)
        for track in c.tracker.tracks():
            if track.track_id == granted.track_id:
                c.tracker.restart(track)
    except Exception:  # noqa: BLE001 - the decision is not a grant; the door stays locked
        log.exception("could not start the track of a withheld GRANTED again")


def describe_error(exc: Exception) -> str:
    """``Type: message`` of an error, or its type alone if even its message fails."""
    try:
        return f"{type(exc).__name__}: {exc}"
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the step's decisions
        return type(exc).__name__
