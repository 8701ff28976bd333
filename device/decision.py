"""Access decisions: the N-of-M rule over a track's frames, cooldowns, and the event payload.

The policy owns N-of-M: ``record`` keeps a track's last M frames (``frames_window``) and
``decide`` counts N among them. GRANTED needs N of the last M frames of one track to match the
*same* user at or above the threshold. Anything else never opens the door: DENIED_UNKNOWN (N frames without a match),
DENIED_LOW_QUALITY (a full window of unusable frames), DENIED_SPOOF (liveness failed) and
ERROR (the pipeline failed: fail closed).

Deciding and publishing are different facts: ``decide`` settles a track once (the track keeps
its decision as long as the same person stands there); ``admit`` says whether that decision is
published or held back by the cooldown (the same decision for the same user within
``cooldown_s``).
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from facelink.mqtt import wall_clock
from facelink.mqtt.schema import (  # noqa: F401 - the decision kinds are defined with the schema
    ACTUATION_FAILED,
    DENIED_LOW_QUALITY,
    DENIED_NO_FACE,
    DENIED_SPOOF,
    DENIED_UNKNOWN,
    DENIED_UNKNOWN_CARD,
    DENIED_WRONG_FACE,
    ERROR,
    GRANTED,
    SCHEMA,
    DecisionMessage,
)

from .tracker import Observation, Track


def similarity_below(similarity: float, threshold: float) -> float:
    """A Similarity under ``threshold`` as published (4 decimals): rounded down, so that a
    denial never states the threshold it fell short of (98.99996 is 98.9999, not 99.0)."""
    shown = math.floor(similarity * 1e4) / 1e4
    return shown if shown < threshold else (math.ceil(threshold * 1e4) - 1) / 1e4


@dataclass(frozen=True)
class Decision:
    decision: str
    device_id: str
    collection_id: str
    model_version: str
    threshold: float
    user_id: str | None = None
    face_id: str | None = None
    external_image_id: str | None = None
    similarity: float | None = None
    track_id: int | None = None
    frames_matched: int = 0
    frames_window: int = 0
    reason: str | None = None
    mode: str = "face"  # matching.mode (facelink.device.factors)
    factors: tuple[str, ...] = ("face",)  # what was seen: "card", "face"
    liveness: dict[str, Any] | None = None  # presentation-attack checks run and what they measured
    refers_to: str | None = None
    event_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    clock_synchronized: bool | None = field(default_factory=wall_clock.synchronized)  # the timestamp's

    def with_factors(self, mode: str, factors: tuple[str, ...]) -> Decision:
        return replace(self, mode=mode, factors=factors)

    def payload(self) -> dict[str, Any]:
        """The versioned JSON published on <prefix>/<device>/decision (never image bytes), built
        through the schema the audit logger validates against (mqtt/schema.py)."""
        out = asdict(self)
        out["factors"] = list(self.factors)
        return DecisionMessage(schema=SCHEMA, **out).payload()


@dataclass
class DecisionPolicy:
    device_id: str
    collection_id: str
    model_version: str
    threshold: float
    frames_required: int
    frames_window: int
    cooldown_s: float
    # key -> the cooldowns running for it, (until, event id of the admitted decision that started it)
    _recent: dict[str, list[tuple[float, str]]] = field(default_factory=dict)

    def carry_cooldowns_from(self, other: DecisionPolicy) -> None:
        self._recent = {k: list(v) for k, v in other._recent.items()}

    def record(self, track: Track, obs: Observation) -> None:
        """Add a frame's outcome to the track, keeping only the last ``frames_window``."""
        track.history.append(obs)
        while len(track.history) > self.frames_window:
            track.history.popleft()

    def _make(self, kind: str, track: Track, window: list[Observation], **kw: Any) -> Decision:
        return Decision(kind, self.device_id, self.collection_id, self.model_version, self.threshold,
                        track_id=track.track_id, frames_window=len(window), **kw)

    def card_decision(self, kind: str, user_id: str | None, mode: str, factors: tuple[str, ...],
                      reason: str | None = None, now: float | None = None) -> Decision:
        """A decision made by a badge read alone (card modes); a GRANTED one starts the cooldown."""
        decision = Decision(kind, self.device_id, self.collection_id, self.model_version, self.threshold,
                            user_id=user_id, reason=reason, mode=mode, factors=factors)
        if kind == GRANTED and now is not None:
            self._start_cooldown(decision, now)
        return decision

    @staticmethod
    def _key(decision: Decision) -> str:
        return f"{decision.decision}:{decision.user_id or decision.track_id}"

    def withdraw(self, decision: Decision) -> None:
        """An admitted decision was not published after all (the step that made it failed, the
        stale gate stopped it): the cooldown it started goes, so the same decision made again is
        published. Only its own: a cooldown an earlier, published decision started stays, also
        one this decision's was started over (found in review: a card GRANTED, always admitted
        in card_or_face, replaced the running cooldown of the face GRANTED the door had opened
        for, and withdrawing it left none: a second GRANTED within cooldown_s)."""
        key = self._key(decision)
        running = [c for c in self._recent.get(key, []) if c[1] != decision.event_id]
        if running:
            self._recent[key] = running
        else:
            self._recent.pop(key, None)

    def _start_cooldown(self, decision: Decision, now: float) -> None:
        """``decision`` was admitted at ``now``: its cooldown runs beside any still running (each
        admitted decision's is its own, see :meth:`withdraw`); those that ended are forgotten."""
        self._recent = {k: live for k, v in self._recent.items() if (live := [c for c in v if c[0] > now])}
        self._recent.setdefault(self._key(decision), []).append((now + self.cooldown_s, decision.event_id))

    def _cooling(self, key: str, now: float) -> bool:
        return any(now < until for until, _ in self._recent.get(key, []))

    def decide(self, track: Track) -> Decision | None:
        """The track's decision once its last M frames settle it (at most one per track)."""
        if track.decided is not None:
            return None
        hist = list(track.history)[-self.frames_window:]
        matches = Counter(o.user_id for o in hist if o.kind == "match")
        decision: Decision | None = None
        if matches:
            user, n = matches.most_common(1)[0]
            if n >= self.frames_required:
                best = max((o for o in hist if o.kind == "match" and o.user_id == user),
                           key=lambda o: o.similarity or 0.0)
                decision = self._make(GRANTED, track, hist, user_id=user, face_id=best.face_id,
                                      external_image_id=best.external_image_id,
                                      similarity=round(best.similarity or 0.0, 4), frames_matched=n)
        wrong = [o for o in hist if o.kind == "wrongface"]
        if decision is None and len(wrong) >= self.frames_required:
            decision = self._make(DENIED_WRONG_FACE, track, hist, user_id=wrong[-1].user_id,
                                  similarity=max(o.similarity or 0.0 for o in wrong),
                                  frames_matched=len(wrong), reason="the face is not the badge holder's")
        if decision is None:
            spoof = [o for o in hist if o.kind == "spoof"]
            nomatch = [o for o in hist if o.kind == "nomatch"]
            if len(spoof) >= self.frames_required:
                decision = self._make(DENIED_SPOOF, track, hist, frames_matched=len(spoof), reason=spoof[-1].reason)
            elif len(nomatch) >= self.frames_required:
                best = max(nomatch, key=lambda o: o.similarity or 0.0)
                decision = self._make(DENIED_UNKNOWN, track, hist, similarity=best.similarity,
                                      frames_matched=len(nomatch))
            elif len(hist) >= self.frames_window and all(o.kind == "lowquality" for o in hist):
                decision = self._make(DENIED_LOW_QUALITY, track, hist, reason=hist[-1].reason)
        if decision is not None:
            track.decided = decision.decision
        return decision

    def admit(self, decision: Decision, now: float) -> bool:
        """Publish this decision? False when the same one was published within the cooldown.
        A decision on a badge read (factors include "card") is always published: each tap is one
        request and gets one answer (the badge's own claim is what debounces it)."""
        key = self._key(decision)
        if self._cooling(key, now) and "card" not in decision.factors:
            return False
        self._start_cooldown(decision, now)
        return True
