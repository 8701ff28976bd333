"""What happens to a decision the stale gate (``sync.on_stale = "deny"``, :meth:`DoorSync.gate`)
stopped, or that was made before the matcher loaded the change set last applied (whatever
on_stale says). The one owner of that policy: the daemon notes the copy each step begins on
(:meth:`StaleGate.mark`), asks :meth:`StaleGate.gate` what to publish, tells it what the outbox
refused (:meth:`StaleGate.refused`), has it restart held tracks at each housekeeping
(:meth:`StaleGate.release_when_fresh`) and, when it stops, publishes what it still keeps
(:meth:`StaleGate.at_shutdown`); the pipeline asks it each frame for the decisions not made again
(:meth:`StaleGate.not_made_again`). A door without sync has none.

- A face's DENIED_SPOOF (liveness refused the presentation) or DENIED_LOW_QUALITY (the quality gate
  refused a full window, before any match) never opens the door on any copy: published as made,
  stale or not, in the gap or not; never kept, made again nor withdrawn, its cooldown runs and its
  track stays decided (found in review: kept and made again, the attacker got a fresh liveness
  attempt and the spoof record was dropped if it decided otherwise). DENIED_LOW_QUALITY depends on
  no copy. DENIED_SPOOF does: only a frame that matched on the copy is recorded as a spoof (a
  non-matching one stays ``nomatch``, ``pipeline._record``), so a copy that no longer holds the
  face (a revocation in the gap) would have made the same presentation DENIED_UNKNOWN (review 99,
  ``::test_a_spoof_denial_in_the_gap_of_a_revoked_face_is_the_spoof``); it is published all the
  same: it opens nothing, and making it again is what gave the attacker the fresh attempt. Every
  other decision that depends on the match (GRANTED, DENIED_UNKNOWN, DENIED_WRONG_FACE) goes
  through the gate below.
- A GRANTED the gate stopped is withdrawn like one the outbox could not record (its cooldown
  goes, its track starts again): the person still at the door is granted as soon as the copy is
  fresh again. While it stays stale, the ERROR is published once per ``cooldown_s`` for that
  person (the policy's cooldown, keyed on the ERROR and its user; a badge read is always answered).
- A DENIED it stopped was not published either: its cooldown goes now and its track is held,
  decided again once the copy is fresh and loaded, not at once (an unknown face's ERROR names
  nobody whose cooldown could bound it: one per N-of-M window otherwise). If the outbox refused
  that ERROR, the track is released at once instead, so the next frames decide (and gate) it again.
- A face's decision made before the matcher loaded the last change set, at a door otherwise
  fresh (any door with on_stale = keep: that setting keeps deciding on a copy not confirmed, never
  on one older than the database's; found in review: a revocation applied in that gap let the old
  copy grant), is not published but made again: its cooldown goes, its track starts again and it
  is kept until the track decides again; a track that goes first publishes it as ERROR (``not made
  again``), and so does the door stopping first (found in review: a SIGTERM lost them, with nothing
  on record of the person at the door), and a track that cannot start again.
- A badge's decision alone (no face: a card_or_face GRANTED, DENIED_UNKNOWN_CARD, DENIED_NO_FACE)
  is made from the database, not the matcher: made in a step that began with every change set
  applied so far in the database (:meth:`mark`), it is published as made in that gap (found in
  review: a healthy door answered the tap with ERROR STALE_COLLECTION, and the holder had to tap
  again). Where a change set was applied while the step ran, its read may have come before it (a
  revocation): ERROR as before (that race is a step wide: the badge step, one lookup right after
  the housekeeping loads the matcher; a frame, for the verification window it closes).
- A card_and_face face verdict made in that gap is made again like a face's decision: the
  verification it closed opens again (its own window; each tick still checks its badge against the
  database, so a badge revoked in the change set closes it DENIED_UNKNOWN_CARD) and its track starts
  again, with every other undecided track in view, as the tap started them (found in review: a
  bystander's wrong-face frames from the first window closed it DENIED_WRONG_FACE before the
  holder's restarted track decided; a decided track does not observe, so it cannot close it). It is kept until the track decides again or the verification closes otherwise (its window,
  its badge revoked, another badge): that decision stands for it. The face leaving, or the door
  stopping, first publishes it as ERROR and closes the verification with it (one record per tap;
  until 2026-12-07 it was ERROR STALE_COLLECTION at once, and the holder tapped again).
- A badge read that starts a verification restarts the tracks in view for the same people: what is
  kept for a track follows it to its new id (:meth:`restarted`; until 2026-12-07 it was published
  as ERROR "the face left" while the person stood there, and then decided again: two records).
  Only a verification's verdict is kept in card_and_face (its face-only decisions, DENIED_SPOOF and
  DENIED_LOW_QUALITY, are published as made, above), so a tap's verdict never stands for a kept
  face-only decision from before it (review 92 found it did, before those were published at once).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from .assembly import Components
from .decision import DENIED_LOW_QUALITY, DENIED_SPOOF, ERROR, GRANTED, Decision
from .pipeline import withhold

if TYPE_CHECKING:  # the fleet's crypto is loaded only by a door with sync on
    from .factors import Claim, Factors
    from .sync import DoorSync

log = logging.getLogger(__name__)


class StaleGate:
    def __init__(self, sync: DoorSync, factors: Factors | None = None) -> None:
        self.sync = sync
        self.factors = factors  # the card modes' verifications (None: face only)
        self._held: set[int] = set()  # tracks whose DENIED the gate stopped: decided again once fresh
        # track -> the decision it is to make again, and the card_and_face verification it reopened
        self._remade: dict[int, tuple[Decision, Claim | None]] = {}

    def mark(self) -> int:
        """The copy a step begins on: the last change set applied to the database now (it grows with
        every apply: a snapshot at the applied seq is not applied again); handed back to
        :meth:`gate` as ``made_on`` for the step's decisions."""
        return self.sync.applied_seq

    def gate(self, c: Components, decision: Decision, now: float | None,
             made_on: int | None = None) -> Decision | None:
        """What to publish for ``decision``: itself, the ERROR STALE_COLLECTION standing for it, or
        None (nothing: it is made again by the next frames, or its ERROR is in its cooldown).
        ``now``: the decision clock's time of the step that made it (None: no cooldown for the ERROR);
        ``made_on``: :meth:`mark` before that step (None: not known)."""
        if _independent_of_copy(decision):  # liveness or quality refused it: no copy decides otherwise
            return decision
        current = made_on is not None and made_on == self.sync.applied_seq and _made_on_database(decision)
        claim = self.factors.closed_by(decision) if self.factors is not None else None
        gated = self.sync.gate(decision, again=_can_decide_again(decision, claim), current=current)
        if gated is None:  # made before the matcher loaded the last change set: made again on it
            if self._decide_again(c, decision, claim):
                return None
            return _not_made_again(decision, "its track could not start again")
        if gated is decision:
            return decision
        if decision.decision == GRANTED:
            withhold(c, decision)  # not carried out: granted once the copy is fresh again
        else:
            self._hold_until_fresh(c, decision)
        return gated if now is None or c.policy.admit(gated, now) else None

    def refused(self, c: Components, made: Decision, gated: Decision, now: float | None) -> None:
        """The outbox refused ``gated``, the ERROR :meth:`gate` published for ``made``: its cooldown
        must not hold back the next one, and a DENIED's held track starts again at once (found in
        review: nothing more was published for that person while stale)."""
        if now is not None:
            c.policy.withdraw(gated)
        if made.decision != GRANTED:
            self._held.discard(made.track_id)
            withhold(c, made)

    def release_when_fresh(self, c: Components) -> None:
        """Once the copy is loaded and (with on_stale = deny) fresh, the tracks
        :meth:`_hold_until_fresh` held start again (those still decided and in view), so the people
        still at the door are decided afresh."""
        if not self._held or not self.sync.settled():
            return
        held, self._held = self._held, set()
        for track in c.tracker.tracks():
            if track.track_id in held and track.decided is not None:
                c.tracker.restart(track)

    def not_made_again(self, c: Components) -> list[Decision]:
        """The decisions :meth:`_decide_again` kept whose track is gone (aged out, or restarted for
        someone else in its spot) without deciding again: each as ERROR, saying what it would have
        been. Those whose track has decided again are forgotten (that decision stands for them)."""
        if not self._remade:
            return []
        live = {t.track_id: t for t in c.tracker.tracks()}
        out: list[Decision] = []
        for track_id, (made, claim) in list(self._remade.items()):
            track = live.get(track_id)
            # a verification it reopened that closed otherwise (window, badge revoked, another
            # badge): that decision stands for it
            closed = claim is not None and (self.factors is None or self.factors.claim is not claim)
            if track is not None and track.decided is None and not closed:
                continue
            del self._remade[track_id]
            if track is None and not closed:
                out.append(self._not_made_again(made, claim, "the face left"))
        return out

    def restarted(self, was: int, now: int) -> None:
        """A track restarted for the same person (a badge read's new verification): what is kept
        for it is kept under its new id, made again by the next frames (found in review: its old
        id gone, it was published as ERROR "the face left" while the person stood there)."""
        if was in self._remade:
            self._remade[now] = self._remade.pop(was)

    def at_shutdown(self, c: Components) -> list[Decision]:
        """The door stops: every decision :meth:`_decide_again` still keeps, as ERROR (saying what
        it would have been), for the daemon to publish before its outbox closes; those whose track
        has decided again are forgotten, as in :meth:`not_made_again`."""
        out = self.not_made_again(c)
        kept, self._remade = self._remade, {}
        return out + [self._not_made_again(made, claim, "the door stopped") for made, claim in kept.values()]

    def _not_made_again(self, made: Decision, claim: Claim | None, why: str) -> Decision:
        """``made``'s ERROR; the verification it reopened closes with it (one record per tap)."""
        if claim is not None and self.factors is not None:
            self.factors.forget(claim)
        return _not_made_again(made, why)

    def _decide_again(self, c: Components, decision: Decision, claim: Claim | None = None) -> bool:
        """``decision`` is not published (made on a copy the matcher has replaced since): its
        cooldown goes and its track starts again, and it is kept under the track's new id until the
        next frames have made it afresh (:meth:`not_made_again`); a card_and_face verdict's
        verification (``claim``) opens again with it. False: not kept (its track is gone,
        or could not start again): the caller publishes its ERROR (found in review: it was lost)."""
        try:
            c.policy.withdraw(decision)
            own = next((t for t in c.tracker.tracks() if t.track_id == decision.track_id), None)
            if own is None:
                return False
            c.tracker.restart(own)
            if claim is not None:
                # the verification starts again as a tap starts it: every undecided track in view
                # starts again too, so that nothing seen in the first window (a bystander's wrong
                # face) closes it before the holder's restarted track decides (found in review). A
                # decided track does not observe: it cannot close it (and restarting it would make
                # its published decision a second time)
                for track in c.tracker.tracks():
                    if track is not own and track.decided is None:
                        was = track.track_id
                        c.tracker.restart(track)
                        self.restarted(was, track.track_id)
                self.factors.reopen(claim)
            self._remade[own.track_id] = (decision, claim)  # under its new id
            return True
        except Exception:  # noqa: BLE001 - its ERROR is published instead; the door stays locked
            log.exception("could not start again the track of a decision to be made again")
        return False

    def _hold_until_fresh(self, c: Components, decision: Decision) -> None:
        """A decision (not a GRANTED) the gate stopped: its cooldown goes now and its track is held
        until :meth:`release_when_fresh` finds the copy fresh. A badge's decision has no track: its read
        was answered by the ERROR."""
        try:
            c.policy.withdraw(decision)
        except Exception:  # noqa: BLE001 - the decision is not a grant; the door stays locked
            log.exception("could not withdraw the cooldown of a decision the stale gate stopped")
        if decision.track_id is not None:
            live = {t.track_id for t in c.tracker.tracks()}
            self._held = {t for t in self._held if t in live} | {decision.track_id}


def _not_made_again(made: Decision, why: str) -> Decision:
    """The ERROR recorded for ``made``, kept to be made again, when ``why`` came first."""
    return replace(made, decision=ERROR, reason=(
        f"not made again: made before the matcher loaded a change set, and {why} before it was "
        f"decided on the loaded copy (would have been {made.decision})")[:300])


def _independent_of_copy(decision: Decision) -> bool:
    """Is ``decision`` published as made, whatever the copy? A face's DENIED_LOW_QUALITY (a full
    window of frames the quality gate refused before any match: no copy decides it otherwise) and
    DENIED_SPOOF (liveness refused the presentation: it names nobody, and the frames it refused
    grant on no copy; but only frames that matched on the copy count as spoofs, so another copy may
    have made it DENIED_UNKNOWN: a denial all the same, see the module docstring). Every other
    decision depends on the match: GRANTED, DENIED_UNKNOWN, DENIED_WRONG_FACE."""
    return decision.track_id is not None and decision.decision in (DENIED_SPOOF, DENIED_LOW_QUALITY)


def _made_on_database(decision: Decision) -> bool:
    """Was ``decision`` made from the database alone, not the matcher? A badge's decision without a
    face (the holder's lookup, a verification window that closed)."""
    return decision.track_id is None and "face" not in decision.factors


def _can_decide_again(decision: Decision, claim: Claim | None) -> bool:
    """Can the next frames make ``decision`` again? A face's, by its track; a card_and_face
    verdict's if the verification it closed (``claim``) can open again; not a badge's alone (its
    read is gone)."""
    return decision.track_id is not None and ("card" not in decision.factors or claim is not None)
