"""Which factors open the door (``matching.mode``), and the badge reads the card modes wait on.

- ``face``: 1:N face match (the default; badge reads are ignored).
- ``card_and_face``: a badge read starts a 1:1 verification against *that* user's faces for
  ``card_window_s``. GRANTED only if N of M frames match that user; N frames of a face that is
  not the holder: DENIED_WRONG_FACE; no usable face within the window: DENIED_NO_FACE. A face
  without a badge decides nothing. The false-accept risk per attempt is the 1:1 rate.
- ``card_or_face``: a known badge alone is GRANTED; a face alone is matched 1:N as in ``face``.

An unknown badge is DENIED_UNKNOWN_CARD in both card modes. Every decision says ``mode`` and the
``factors`` seen (``card``, ``face``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from facelink.access.badges import BadgeRead

from .decision import (
    DENIED_NO_FACE,
    DENIED_UNKNOWN_CARD,
    DENIED_WRONG_FACE,
    ERROR,
    GRANTED,
    Decision,
    DecisionPolicy,
    similarity_below,
)
from .tracker import Observation

log = logging.getLogger(__name__)

FACE, CARD_AND_FACE, CARD_OR_FACE = "face", "card_and_face", "card_or_face"


@dataclass
class Claim:
    """An open card_and_face verification: the holder's badge was read at ``at``."""

    credential: str
    user_id: str
    source: str
    at: float


class Factors:
    def __init__(self, mode: str, card_window_s: float, holder: Callable[[str], str | None]) -> None:
        self.mode = mode
        self.card_window_s = card_window_s
        self.holder = holder  # credential -> user id (None: unknown badge)
        self.claim: Claim | None = None
        self.verdict: tuple[str, Claim] | None = None  # the last face verdict's event id, the claim it closed

    # -- badge reads -----------------------------------------------------------------------
    def badge(self, read: BadgeRead, policy: DecisionPolicy, now: float) -> tuple[list[Decision], bool]:
        """A badge was read: the decisions it makes at once, and whether a verification started."""
        if self.mode == FACE:
            log.info("badge %s from %s ignored: matching.mode = face", read.credential, read.source)
            return [], False
        user = self.holder(read.credential)
        if user is None:
            return [policy.card_decision(DENIED_UNKNOWN_CARD, None, self.mode, ("card",),
                                         reason=f"badge {read.credential} ({read.source}) is not enrolled")], False
        if self.mode == CARD_OR_FACE:
            return [policy.card_decision(GRANTED, user, self.mode, ("card",), now=now)], False
        expired = self._expire(policy, now, replaced=True)
        self.claim = Claim(read.credential, user, read.source, now)
        log.info("badge %s of %s: verifying the face for %.0f s", read.credential, user, self.card_window_s)
        return expired, True

    def drop_claim(self) -> None:
        """Forget the open verification without a decision: the step that opened it failed (the
        daemon publishes that ERROR), so no face may be granted on it; the holder taps again."""
        if self.claim is not None:
            log.warning("badge %s of %s: verification dropped, the badge step failed", self.claim.credential,
                        self.claim.user_id)
        self.claim = None

    def closed_by(self, decision: Decision) -> Claim | None:
        """The verification ``decision`` (a face verdict) closed, if it is the last one and no
        other has opened since: what :meth:`reopen` may open again."""
        v = self.verdict
        return v[1] if v is not None and v[0] == decision.event_id and self.claim is None else None

    def reopen(self, claim: Claim) -> None:
        """The verdict that closed ``claim`` was not published (the stale gate: made before the
        matcher loaded a change set): it is open again, in its own window, for the next frames to
        decide on the loaded copy (each tick still checks its badge against the database)."""
        self.claim, self.verdict = claim, None

    def forget(self, claim: Claim) -> None:
        """``claim``, opened again, closes without a decision of its own: the verdict kept for it
        is published as ERROR instead (the face left, the door stopped)."""
        if self.claim is claim:
            self.claim = None

    def _expire(self, policy: DecisionPolicy, now: float, replaced: bool = False,
                reason: str | None = None) -> list[Decision]:
        c = self.claim
        if c is None or (not replaced and now - c.at < self.card_window_s):
            return []
        self.claim = None
        why = "another badge was read" if replaced else \
            reason or f"no matching face within {self.card_window_s:g} s"
        return [policy.card_decision(DENIED_NO_FACE, c.user_id, self.mode, ("card",), reason=why)]

    def tick(self, policy: DecisionPolicy, now: float, reason: str | None = None) -> list[Decision]:
        """Close a verification whose window has passed (DENIED_NO_FACE, with ``reason`` if given),
        or whose badge no longer belongs to its holder (revoked or given to someone else at the
        desk since it was read: DENIED_UNKNOWN_CARD), so that a badge revoked during its window
        opens nothing once the door has the change (before every frame: the pipeline ticks first)."""
        expired = self._expire(policy, now, reason=reason)
        c = self.claim
        if expired or c is None or self.holder(c.credential) == c.user_id:
            return expired
        self.claim = None
        log.warning("badge %s of %s: revoked during its verification window", c.credential, c.user_id)
        return [policy.card_decision(DENIED_UNKNOWN_CARD, c.user_id, self.mode, ("card",),
                                     reason=f"badge {c.credential} ({c.source}) was revoked during "
                                            "its verification window")]

    # -- faces -----------------------------------------------------------------------------
    def observe(self, index, similarity: Callable[[float], float], threshold: float,
                embedding: np.ndarray, box, landmarks) -> Observation | None:
        """card_and_face: the frame's verdict on the claimed holder (1:1); None: use 1:N."""
        if self.mode != CARD_AND_FACE:
            return None
        if self.claim is None:
            return Observation("nocard", box=box, landmarks=landmarks)
        match = index.best_of_user(self.claim.user_id, embedding)
        sim = 0.0 if match is None else float(similarity(match.cosine))
        if match is not None and sim >= threshold:
            return Observation("match", match.user_id, match.face_id, match.external_image_id, sim,
                               box=box, landmarks=landmarks)
        return Observation("wrongface", self.claim.user_id, similarity=similarity_below(sim, threshold), box=box,
                           landmarks=landmarks)

    def decided(self, decision: Decision) -> Decision:
        """Label a face decision with the mode and factors; a verdict on the claim closes it.

        One tap, one card+face verdict. A verdict (GRANTED, DENIED_WRONG_FACE) can only be made
        on a frame observed while the claim was open, and the pipeline observes and decides one
        track at a time, so a second face of the same frame is observed "nocard" once the first
        closed the claim and decides nothing. Should a verdict still arrive with no claim open (a
        caller that observed every track before deciding any: review 101), it is on a claim
        already closed: never a face-only GRANTED in card_and_face, it goes out as ERROR (opens
        nothing, and the audit log says why)."""
        if self.mode == CARD_AND_FACE and decision.decision in (GRANTED, DENIED_WRONG_FACE):
            if self.claim is not None:
                decision = decision.with_factors(self.mode, ("card", "face"))
                self.verdict, self.claim = (decision.event_id, self.claim), None
                return decision
            log.error("card_and_face: %s for %s with no verification open: published as ERROR",
                      decision.decision, decision.user_id)
            decision = replace(decision, decision=ERROR, reason=(
                f"not {'granted' if decision.decision == GRANTED else 'denied'}: {decision.decision} for "
                f"{decision.user_id} made with no badge verification open (its badge's verdict was "
                "already made)")[:300])
        return decision.with_factors(self.mode, ("face",))
