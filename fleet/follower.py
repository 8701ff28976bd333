"""The door's side of collection sync (facelink.sync/1): one :class:`Follower` per collection.

Messages arrive on paho's thread (:meth:`Follower.on_message` only queues them); one worker
thread handles them in order (:meth:`Follower.handle`):

- change sets (``changes`` and ``reply/<device>``): ``ChangeSetVerifier`` (signature, collection,
  FaceModelVersion, seq) -> ``protocol.parse_body`` -> apply through :class:`~.replica.Replica`
  (one transaction with the seq) -> only then ``verifier.applied``. A QoS 1 re-delivery (a seq
  already applied with the same bytes, or covered by the snapshot applied) is dropped quietly; a
  different message with an old seq is REPLAY. A GAP asks the desk for the missing range (never
  guessed); a Rebase, or a door that has nothing yet, asks for a snapshot. A change set whose
  ``prev`` (the desk's fingerprint of the change set before it) is not this copy's position marks
  the copy diverged (:meth:`Follower._diverge`), like other bytes signed at a seq it applied.
- heads: a verified head newer than the last one accepted, whose seq is the applied one,
  confirms the copy is up to date as of when the desk issued it (bounded, below); a head beyond
  it asks for the range.
- freshness challenges: a door that cannot confirm its copy by an on-time head asks the desk for
  a head carrying a random nonce (below); the answer arrives on ``reply/<device>``.

Every refusal changes nothing, is counted (``health()["rejected"]``), logged and handed to
``alarm`` (the daemon puts a facelink.alarm/1 event in its outbox). A copy that was not confirmed
for ``max_staleness_s`` is stale (:meth:`stale`, why: :meth:`stale_reason`); what the door then
does is ``sync.on_stale``. Requests (on the door's own ``<prefix>/<device_id>/sync/<C>/request``,
which the broker ACL lets only this door write, so the desk knows who asks) are retried with
back-off while the door is behind and nothing arrives.

Freshness is measured on the monotonic clock (``monotonic``, default ``time.monotonic``), never on
the wall clock: a wall clock stepped back (NTP correcting a clock that ran ahead, fake-hwclock, a
spoofed NTP server) must not make an old confirmation look recent. The wall-clock time of the
last confirmation is still kept (``confirmed_at``, persisted, shown on health); after a restart it
is the only record, and it makes the copy fresh only if its age on the wall clock is within
``[0, max_staleness_s]`` -- a confirmation "in the future" (the clock went back) or older than that
is stale until a new head confirms the copy. Such a restored confirmation is then carried on the
monotonic clock: it expires ``max_staleness_s`` after the confirmation at the latest.

A head confirms the copy as of when the desk issued it: no later than the previous accepted head's
time (the *anchor*: its issued_at and the door's monotonic time it was issued at, at the latest)
plus the desk's own time between the two (and :data:`HEAD_RATE_SLACK` of it), so heads
held back (a broker's queue, a rogue broker's recording) confirm nothing new. A desk started again
with its clock stepped back issues heads that look held back the same way. So when the door cannot
confirm its copy by an on-time head -- the last new head was late by more than LATE_AFTER_S or older
than the last accepted one, or the confirmation is older than :data:`CHALLENGE_AFTER` of
``max_staleness_s`` -- and it is not behind, it sends a *freshness challenge*: a SyncRequest with a
random nonce (at most :data:`MAX_CHALLENGES` outstanding, each with the monotonic time it was
sent; retried on the same back-off as requests). The desk answers on ``reply/<device>`` with its
signed head carrying that nonce, which cannot have been signed before the nonce was sent: it
confirms the copy as of that send time, whatever any clock says, and becomes the anchor (its
issued_at, the send time) for the heads after it. An answer naming a nonce the door has not
outstanding (never sent, already answered, forgotten by a restart) confirms nothing. An older
desk refuses the challenge (MALFORMED, on its side): the door says so in its log after
:data:`UNANSWERED_WARN` unanswered challenges in a row; with ``challenge_every_s`` 0 it stays as
it was, stale until heads catch up (with it set: below).

``challenge_every_s`` > 0 (``sync.challenge_every_s``: 3600, or max_staleness_s if larger, by default) asks more of the desk: the
copy is fresh only while it answered one of this door's challenges sent within that time (the
door asks from half of it on), so heads a broker holds back a little longer each time gain at
most HEAD_RATE_SLACK of it, and a broker dropping challenges makes the door stale. The last
answer's send time is persisted (wall clock) and restored after a restart only if its age is
within ``[0, challenge_every_s]``, then carried on the monotonic clock. An older desk never
answers: with it, such a door is stale.
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from facelink.enroll.store import Store
from facelink.errors import FaceLinkError
from facelink.models.embedder import EMBEDDING_DIM
from facelink.mqtt.client import Transport
from facelink.mqtt.schema import SyncAlarmMessage
from facelink.mqtt.topics import CollectionTopics, DeviceTopics
from facelink.mqtt.wall_clock import stamp

from .changeset import ChangeSet, ChangeSetRejected, ChangeSetVerifier, message_sha256
from .protocol import (
    NONCE_HEX,
    SNAPSHOT_REPEAT_S,
    Delta,
    Head,
    Rebase,
    SnapshotChunk,
    SyncMessageRejected,
    SyncRequest,
    decode_head,
    is_head,
    parse_body,
)
from .replica import PositionUnreadable, Replica

log = logging.getLogger(__name__)

INBOX_MAX = 5_000  # queued messages; more are dropped (counted: OVERLOADED) and repaired as a gap
ALARMS_PER_MINUTE = 10  # per reason: a flood of garbage must not push decisions out of the outbox
MAX_BACKOFF_S = 60.0
# A head confirms the copy as of when the desk issued it: at most the desk's own time since the
# last accepted head (plus this share of it: clocks that run at slightly different rates) after
# that head was issued; one that arrives more than LATE_AFTER_S after that is late (a head
# delivered a little late is not). The slack is never credited: it compounded from head to head.
HEAD_RATE_SLACK = 0.01
MAX_CHALLENGES = 3  # outstanding nonces kept (the newest): an answer to any other confirms nothing
UNANSWERED_WARN = 5  # challenges unanswered in a row before the door says so (once per streak)
CHALLENGE_AFTER = 0.5  # share of max_staleness_s after which a confirmation is renewed by a challenge
LATE_AFTER_S = 2.0  # a head arriving this long after its bound is late (delivery delay below it)


@dataclass
class Backoff:
    """When an unanswered ask (a request, a challenge) goes out again, on the monotonic clock:
    ``first`` s after the first, doubling up to MAX_BACKOFF_S."""

    first: float
    delay: float = 0.0  # the wait after the next ask
    at: float = 0.0  # no ask before this

    def __post_init__(self) -> None:
        self.delay = self.first

    def reset(self, at: float = 0.0) -> None:
        self.delay, self.at = self.first, at

    def asked(self, now: float) -> None:
        self.at = now + self.delay
        self.delay = min(self.delay * 2, MAX_BACKOFF_S)


class Follower:
    def __init__(self, store: Store, collection_id: str, model_version: str,
                 trusted: dict[str, Ed25519PublicKey], device_id: str, prefix: str, *,
                 transport: Transport | None = None, alarm: Callable[[dict], None] | None = None,
                 max_staleness_s: float = 300.0, request_retry_s: float = 5.0, challenge_every_s: float = 0.0,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        """``clock``: the wall clock (recorded times, ``confirmed_at``); ``monotonic``: every
        duration (freshness, retries, the alarm budget)."""
        self.collection_id, self.device_id, self.clock, self.monotonic = collection_id, device_id, clock, monotonic
        self.topics = CollectionTopics(prefix, collection_id)
        # requests go on the door's own topic: the broker ACL lets only this door's user write it
        self.request_topic = DeviceTopics(prefix, device_id).sync_request(collection_id)
        self.replica = Replica(store, collection_id, model_version)
        state = self.replica.state()
        try:
            position = self.replica.position()
        except PositionUnreadable as exc:  # fail closed: diverged (a snapshot replaces the copy), not unknown
            # marked one below its seq: the desk's snapshot at the door's own seq replaces it (a desk
            # that has not moved since, the common case, answers with one there; marked at its seq,
            # that one was dropped as already applied and the door stayed stale until the desk's next
            # change, review 93). A copy found on another history stays marked at its seq (_diverge).
            mark = max(state.seq - 1, 0)
            log.error("sync %s: %s: the copy is treated as diverged (stale, no delta applied) until the desk's "
                      "snapshot at seq %d or later replaces it", collection_id, exc, mark + 1)
            self.replica.mark_diverged(mark)
            position = None
        self.verifier = ChangeSetVerifier(trusted, collection_id, model_version, applied_seq=state.seq,
                                          position=position)
        self.snapshot_seq, self.head_issued_at, self.confirmed_at = \
            state.snapshot_seq, state.head_issued_at, state.confirmed_at
        self.transport, self.alarm = transport, alarm
        self.max_staleness_s, self.request_retry_s = max_staleness_s, request_retry_s
        # > 0: the copy is fresh only while the desk answered a challenge within this (sent at most
        # this long ago): heads between answers can then creep by at most 1 % of it (held back a
        # little longer each, never late); an answer is asked for from half of it on
        self.challenge_every_s = challenge_every_s
        self._answered_mono: float | None = None  # when the nonce of the last answered challenge was sent
        self.answered_at: float | None = None  # the same on the wall clock (persisted: restored like confirmed_at)
        self._confirmed_mono: float | None = None  # monotonic time of the confirmation that counts
        # (issued_at of the last accepted head, the latest monotonic time it can have been issued at)
        self._anchor: tuple[float, float] | None = None
        self._late_logged_at = float("-inf")  # a held-back head is logged at most once a minute
        self._restored_stale: str | None = None  # why the persisted confirmation was not believed
        self._restore_confirmation()
        self._logged_stale: str | None = None
        self.head_seq: int | None = None
        self.highest_seen = state.seq  # the newest seq any verified message named
        # the seq this copy held when the desk was found signing another history under the seqs it
        # applied (a desk database restored from an older copy): stale, and deltas are not applied,
        # until a snapshot past it replaces the copy (persisted: a restart does not forget it)
        self.diverged = self.replica.diverged()
        self.want_snapshot = self.diverged is not None
        # monotonic time a head (or an answer) below this copy's seq came, not yet settled: stale
        # (not persisted) until the desk answers a challenge sent since. Such a head is no proof
        # that the desk went back: a broker can hold a head back until the door applied the next
        # change set (found in review: it marked the door DIVERGED, persisted, the site locked out
        # until the desk journaled past it). The answer to a challenge sent after the door's last
        # apply is the proof either way (:meth:`_answer`).
        self._suspect: float | None = None
        self._applied_mono = float("-inf")  # when the last change set was applied (this run)
        self.rejected: dict[str, int] = {}
        self.duplicates = 0
        self.alarms_suppressed = 0  # refusals beyond ALARMS_PER_MINUTE (still counted and logged once)
        self._alarm_window: dict[str, tuple[float, int]] = {}  # reason -> (window start, alarms in it)
        self.requests_sent = 0
        self.error: str | None = None  # the last apply failure (None after a successful apply)
        self.applied_event = threading.Event()  # set after every apply: the matcher refreshes now
        self._outstanding = False  # a request was sent and is not answered yet
        self._asked_at = 0.0  # monotonic time of the last request sent
        self._requests = Backoff(request_retry_s)  # while a request is outstanding
        self._nonces: OrderedDict[str, float] = OrderedDict()  # outstanding challenges -> monotonic time sent
        self._head_late = False  # the last new head did not confirm on time (late, or older than the last)
        # how late heads may look and still be on time: after an answer, the anchor is when its nonce
        # was sent, earlier than the desk issued it by up to the answer's round trip; that lag wears
        # off (each head's bound is set by the one before) and must not draw the next challenge
        self._anchor_doubt = 0.0
        self._head_came = monotonic()  # monotonic time the last new head arrived (the start: asks at once anyway)
        self._challenges = Backoff(request_retry_s)
        self._challenges_unanswered = 0  # challenges sent since the last answer
        self.challenges_sent = 0
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(INBOX_MAX)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _restore_confirmation(self) -> None:
        """After a restart: the persisted (wall-clock) confirmation counts only if its age is in
        [0, max_staleness_s], the last answered challenge only if its age is in [0,
        challenge_every_s]; each is then carried on the monotonic clock (the head anchor too)."""
        anchor = self.replica.head_anchor()
        if anchor is not None and 0 <= self.clock() - anchor[1]:  # a wall clock gone back: no anchor
            self._anchor = (anchor[0], self._on_monotonic(anchor[1]))
        answered = self.replica.answered_at()
        if answered is not None and self.challenge_every_s > 0 and 0 <= self.clock() - answered <= self.challenge_every_s:
            self._answered_mono, self.answered_at = self._on_monotonic(answered), answered
        if self.confirmed_at is None:
            return
        age = self.clock() - self.confirmed_at
        if age < 0:
            self._restored_stale = (f"the clock is {-age:.0f} s behind the last confirmation (stepped back?): "
                                    "waiting for a new head")
            log.warning("sync %s: %s", self.collection_id, self._restored_stale)
        elif age > self.max_staleness_s:
            self._restored_stale = f"last confirmed {age:.0f} s ago, before this start"
        else:
            self._confirmed_mono = self._on_monotonic(self.confirmed_at)

    def _on_monotonic(self, wall: float) -> float:
        """A wall-clock time of the past (restored from the store) as a monotonic one."""
        return self.monotonic() - (self.clock() - wall)

    @property
    def applied_seq(self) -> int:
        return self.verifier.applied_seq

    # -- MQTT side (paho's thread) ---------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return [self.topics.changes, self.topics.head, self.topics.reply(self.device_id)]

    def on_message(self, topic: str, payload: bytes) -> None:
        """Queue it with the monotonic time it arrived (a head was issued before that, however long
        it then waits behind a large change set being applied)."""
        try:
            self._inbox.put_nowait((topic, payload, self.monotonic()))
        except queue.Full:
            self._count("OVERLOADED")

    # -- the worker ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"sync-{self.collection_id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.work_one(0.5)

    def work_one(self, timeout: float) -> None:
        """The worker's step: the next queued message (waiting up to ``timeout`` for one), then
        :meth:`tick`. Never raises: the door keeps its copy."""
        try:
            topic, payload, arrived = self._inbox.get(timeout=timeout) if timeout > 0 else self._inbox.get_nowait()
        except queue.Empty:
            topic, payload, arrived = "", b"", None
        try:
            if topic:
                self.handle(topic, payload, arrived)
            self.tick()
        except Exception:  # noqa: BLE001 - the worker never dies; the door keeps its copy
            log.exception("sync %s: unexpected failure (the copy is unchanged)", self.collection_id)

    def handle(self, topic: str, payload: bytes, arrived: float | None = None) -> None:
        """One message, synchronously (the worker's step; tests call it directly). ``arrived``:
        the monotonic time it arrived (None: now)."""
        reply = self.topics.reply(self.device_id)
        if topic == self.topics.head or (topic == reply and is_head(payload)):
            self._head(topic, payload, arrived)
        elif topic in (self.topics.changes, reply):
            self._change_set(topic, payload)

    # -- change sets -----------------------------------------------------------------------
    def _change_set(self, topic: str, payload: bytes) -> None:
        try:
            cs = self.verifier.check(payload)
            body = parse_body(cs.body)
            _check_vectors(body)
        except ChangeSetRejected as exc:
            self._refused(topic, payload, exc)
            return
        self.highest_seen = max(self.highest_seen, cs.seq)
        if isinstance(body, Rebase):
            log.info("sync %s: seq %d is a rebase (%s): asking for a snapshot", self.collection_id, cs.seq,
                     body.reason)
            self.want_snapshot, self._outstanding = True, False
            return
        if self.diverged is not None and isinstance(body, Delta):
            # a delta of the desk's history on top of a copy of another one would be confirmed by
            # the next head and keep what the desk revoked in between: only a snapshot will do
            self._count("DIVERGED")
            self.want_snapshot = True
            return
        try:
            if isinstance(body, Delta):
                self.replica.apply_delta(cs, body, message_sha256(payload))
            elif cs.seq == self.applied_seq and (self.diverged is None or cs.seq <= self.diverged):
                return  # a chunk of a snapshot already applied (a diverged copy: only one past the mark)
            else:
                before = self.replica.staging()
                if not self.replica.stage_chunk(cs, body):  # more chunks to come, or superseded
                    if (after := self.replica.staging()) is not None and after[0] == cs.seq and after != before:
                        self._snapshot_coming()
                    return
                self.replica.apply_snapshot(cs.position)
                self.snapshot_seq, self.want_snapshot = cs.seq, False
                if self.diverged is not None:
                    log.warning("sync %s: the desk's snapshot at seq %d replaced the copy that diverged at "
                                "seq %d", self.collection_id, cs.seq, self.diverged)
                    self.diverged = None
        except ChangeSetRejected as exc:
            self._refused(topic, payload, exc)
            return
        except FaceLinkError as exc:  # StoreError: the transaction rolled back, the copy is as it was
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            self._refused(topic, payload, ChangeSetRejected("APPLY_FAILED", self.error, seq=cs.seq))
            return
        self._applied(cs, body)

    def _snapshot_coming(self) -> None:
        """A new chunk of the snapshot being sent arrived: ask again only once the desk would send
        another (a chunk lost: a reconnect with a clean session), not on the growing back-off,
        which could leave the door waiting minutes more. A replayed chunk makes no progress and
        does not come here. Never later than the longest back-off after the door's own last
        request: signed chunks of two runs at one seq, replayed in turn by anyone who can publish
        there, each look like progress."""
        self._requests.reset(min(self.monotonic() + SNAPSHOT_REPEAT_S + 1.0,
                                 self._asked_at + SNAPSHOT_REPEAT_S + 1.0 + MAX_BACKOFF_S))

    def _applied(self, cs: ChangeSet, body: Delta | SnapshotChunk) -> None:
        self.verifier.applied(cs)
        self._applied_mono = self.monotonic()
        self.error = None
        self._requests.reset(self.monotonic() + self.request_retry_s)  # progress
        self.applied_event.set()
        if isinstance(body, Delta):
            log.info("sync %s: applied seq %d (+%d/-%d faces, +%d/-%d users)", self.collection_id, cs.seq,
                     len(body.faces_put), len(body.faces_deleted), len(body.users_put), len(body.users_deleted))
        else:
            log.info("sync %s: snapshot at seq %d applied (%d chunks)", self.collection_id, cs.seq, body.chunks)
            self._outstanding = False  # change sets after its base may have been dropped meanwhile: ask now

    def _refused(self, topic: str, payload: bytes, exc: ChangeSetRejected) -> None:
        if exc.reason == "DIVERGED":  # the desk's next change set names another one before it
            self.highest_seen = max(self.highest_seen, exc.seq or 0)
            if self.diverged is not None:
                self._count("DIVERGED")  # (as a delta on a diverged copy: counted, alarmed once)
            self._diverge(exc.message.split(": ", 1)[-1], topic, payload)
            return
        # the envelope as the desk spelled it: a broker's re-spacing is a re-delivery, not another change set
        sha = message_sha256(payload) if exc.reason == "REPLAY" else ""
        if exc.reason == "REPLAY" and exc.seq is not None and not _is_snapshot(payload) and (
                exc.seq <= self.snapshot_seq or self.replica.seen(exc.seq) == sha):
            self.duplicates += 1  # QoS 1 re-delivery, or covered by the snapshot applied: harmless
            return
        if exc.reason == "REPLAY" and exc.seq is not None and not _is_snapshot(payload) and \
                self.replica.seen(exc.seq) not in (None, sha):
            # the desk signed other bytes under a seq this door applied (it re-sends the journal's
            # own bytes, never rebuilt): its history went back, and what it signed since (a
            # revocation among it) is refused here
            self._diverge(f"the desk signed another change set at seq {exc.seq} than the one this door applied")
        if exc.reason == "GAP" and exc.seq is not None:
            self.highest_seen = max(self.highest_seen, exc.seq)
            if self.applied_seq == 0 or self.want_snapshot:
                return  # a snapshot is due anyway: it covers this set (no alarm for a new door)
            if self._outstanding:  # the missing sets are asked for and may come over several of the
                self._count("GAP")  # desk's steps while new ones go out: counted, not alarmed again
                return
        self._reject(topic, payload, exc.reason, str(exc), exc.seq)

    # -- heads -----------------------------------------------------------------------------
    def _head(self, topic: str, payload: bytes, arrived: float | None = None) -> None:
        try:
            head = decode_head(self.verifier.trusted, payload)
        except SyncMessageRejected as exc:
            self._reject(topic, payload, exc.reason, str(exc), None)
            return
        except FaceLinkError as exc:  # InvalidSignatureException: "UNSIGNED: ...", "BAD_SIGNATURE: ..."
            self._reject(topic, payload, exc.message.split(":", 1)[0], exc.message, None)
            return
        if head.collection_id != self.collection_id or head.face_model_version != self.verifier.model_version:
            reason = "WRONG_COLLECTION" if head.collection_id != self.collection_id else "WRONG_MODEL"
            self._reject(topic, payload, reason, f"head of {head.collection_id} ({head.face_model_version})", head.seq)
            return
        if (head.nonce is not None) != (topic != self.topics.head):
            self._reject(topic, payload, "MALFORMED", "a head with a nonce comes on reply/<device> only, "
                                                      "and every head there answers a challenge", head.seq)
            return
        if head.nonce is not None:
            self._answer(topic, payload, head)
            return
        if head.issued_at <= self.head_issued_at:
            # the retained head already seen confirms nothing; an older one (replayed, or a desk
            # clock gone back) neither, and the door asks the desk itself
            self._head_late = self._head_late or head.issued_at < self.head_issued_at
            return
        if head.seq < self.applied_seq:
            self._reject(topic, payload, "HEAD_BEHIND", f"head at seq {head.seq}, the door applied "
                                                        f"{self.applied_seq}", head.seq)
            self._behind_suspected()
            return
        # when the desk issued it, on this door's monotonic clock: not later than the desk's own time
        # since the previous head allows. A head held back (a broker's queue while the door was cut
        # off; recorded and fed to the door later) confirms the copy as of then, not now.
        # (it was issued before it arrived: a wait in the door's own queue makes it no later)
        # Delivery delay is tolerated (LATE_AFTER_S), never credited: a second a head once was, and it
        # compounded from head to head (the anchor is this head's credit), so a broker holding each head
        # back a little longer (never late) walked the anchor forward by it a head (found in review)
        now = self.monotonic()
        came = now if arrived is None else min(arrived, now)
        issued = came
        if self._anchor is not None:
            prev_issued, prev_mono = self._anchor
            issued = min(came, prev_mono + (head.issued_at - prev_issued) * (1 + HEAD_RATE_SLACK))
        lag = came - issued  # how long after the latest time it can have been issued it arrived
        self._head_late = lag > LATE_AFTER_S + self._anchor_doubt
        if self._head_late and now - self._late_logged_at >= 60:
            self._late_logged_at = now
            log.warning("sync %s: head at seq %d arrived %.0f s after the desk issued it (held back or "
                        "replayed, or the desk's clock went back): it confirms the copy as of then; "
                        "asking the desk for a fresh head", self.collection_id, head.seq, lag)
        # the doubt left is this head's own lag (the next head is anchored at the bound, not credited):
        # a head later than this one by the usual jitter is not late either
        self._anchor_doubt = 0.0 if self._head_late else min(self._anchor_doubt, lag)
        # after a silence longer than the longest back-off the desk is back: ask at once (once per
        # silence; a broker that drops challenges still gets one per back-off, not one per head)
        quiet, self._head_came = now - self._head_came > MAX_BACKOFF_S, now
        if quiet or (not self._head_late and not self._answer_due(now)):
            self._challenges.reset()  # heads on time again
        self._accept_head(head, head.issued_at, issued, now)

    def _answer(self, topic: str, payload: bytes, head: Head) -> None:
        """A head answering a challenge: issued no earlier than the door sent its nonce."""
        sent = self._nonces.get(head.nonce or "")
        if sent is None:  # never sent, already answered (a re-delivery), or forgotten: nothing
            self._count("UNKNOWN_NONCE")
            log.info("sync %s: a head answering a challenge this door has not outstanding: ignored", self.collection_id)
            return
        while self._nonces:  # this one and every older one are done (their answers would confirm less)
            if self._nonces.popitem(last=False)[0] == head.nonce:
                break
        if head.seq < self.applied_seq:
            self._reject(topic, payload, "HEAD_BEHIND", f"head at seq {head.seq}, the door applied "
                                                        f"{self.applied_seq}", head.seq)
            if sent > self._applied_mono:  # signed after this door applied its seq: the desk went back
                self._diverge(f"the desk's answer to a challenge sent after this door applied seq "
                              f"{self.applied_seq} names seq {head.seq}")
            else:  # asked before the last apply (an answer late, or held back): ask again
                self._behind_suspected()
            return
        if self._suspect is not None and sent >= self._suspect:
            log.info("sync %s: the desk's answer at seq %d settles the head below this copy's seq: it was "
                     "held back or late", self.collection_id, head.seq)
            self._suspect = None
        self._head_late, self._challenges_unanswered = False, 0
        now = self.monotonic()
        newest = self._answered_mono is None or sent > self._answered_mono
        if newest:
            self._answered_mono = sent
        self._anchor_doubt = now - sent  # the answer was issued somewhere in that round trip
        log.info("sync %s: the desk answered a challenge sent %.1f s ago: head at seq %d", self.collection_id,
                 now - sent, head.seq)
        # the anchor is (its issued_at, when the nonce was sent): it was issued after that, so later
        # heads are bounded by the desk's time since it, never credited beyond their own issue.
        # head_issued_at keeps the newest accepted (a desk clock gone back: older heads still confirm nothing)
        self._accept_head(head, max(self.head_issued_at, head.issued_at), sent, now, answer=True,
                          newest_answer=newest)

    def _accept_head(self, head: Head, newest_issued_at: float, issued: float, now: float,
                     answer: bool = False, newest_answer: bool = False) -> None:
        """``head`` was issued at the monotonic time ``issued`` at the latest: the anchor from now on;
        it confirms the copy as of then if it names the applied seq (never moving a confirmation back).
        An ``answer`` (to a challenge, perhaps held back) never lowers the seq a newer head named:
        the door goes on asking for it; ``newest_answer``: its challenge is the latest answered (on
        the monotonic clock, like the confirmation), whose wall-clock send time is persisted."""
        self._anchor = (head.issued_at, issued)
        seq = max(head.seq, self.head_seq or 0) if answer else head.seq
        self.head_seq, self.head_issued_at = seq, newest_issued_at
        issued_wall = self.clock() - (now - issued)
        confirmed = issued_wall if head.seq == self.applied_seq and (
            self._confirmed_mono is None or issued > self._confirmed_mono) else None
        # by the monotonic clock, not the wall clock: after a wall clock set back, the newer answer's
        # wall time is below the older one's, and keeping that one restored it as fresher than it is
        answered = issued_wall if newest_answer else None
        self.replica.note_head(newest_issued_at, confirmed, (head.issued_at, issued_wall), answered)
        if confirmed is not None:
            self.confirmed_at, self._confirmed_mono, self._restored_stale = confirmed, issued, None
        if answered is not None:
            self.answered_at = answered

    # -- requests --------------------------------------------------------------------------
    def behind(self) -> bool:
        return self.want_snapshot or max(self.head_seq or 0, self.highest_seen) > self.applied_seq

    def tick(self) -> None:
        """Ask the desk for what is missing, again with back-off while nothing arrives; not behind,
        challenge it when heads do not keep the copy confirmed (:meth:`_challenge`)."""
        now = self.monotonic()
        if not self.behind():
            self._outstanding = False
            self._requests.reset()
            self._challenge(now)
            return
        if (self._outstanding and now < self._requests.at) or self.transport is None:
            return
        snapshot = self.want_snapshot or self.applied_seq == 0
        request = SyncRequest(device_id=self.device_id, from_seq=self.applied_seq + 1, snapshot=snapshot)
        sent = self.transport.publish(self.request_topic, request.encode().decode(), qos=1, timeout=5.0)
        self.requests_sent += bool(sent)
        log.info("sync %s: %s %s (retry in %.0f s)", self.collection_id, "asked for" if sent else "could not ask for",
                 "a snapshot" if snapshot else f"seq {self.applied_seq + 1}..", self._requests.delay)
        self._outstanding, self._asked_at = True, now
        self._requests.asked(now)

    def _wants_challenge(self, now: float) -> bool:
        """Heads do not confirm the copy on time: the last new one was late (or older than the last
        accepted), or the confirmation is past CHALLENGE_AFTER of max_staleness_s (stale soon)."""
        if self.applied_seq == 0:
            return False  # a door with nothing waits for its snapshot
        if self._head_late or self._suspect is not None:
            return True
        if self._answer_due(now):
            return True
        return self._confirmed_mono is not None and \
            now - self._confirmed_mono > self.max_staleness_s * CHALLENGE_AFTER

    def _answer_due(self, now: float) -> bool:
        """``challenge_every_s`` asks for an answered challenge: none yet, or the last is past half of it."""
        return self.challenge_every_s > 0 and (self._answered_mono is None
                                               or now - self._answered_mono > self.challenge_every_s / 2)

    def _challenge(self, now: float) -> None:
        """Send a freshness challenge (a SyncRequest with a new random nonce) when one is wanted and
        due; retried on the requests' back-off while unanswered."""
        if self.transport is None or now < self._challenges.at or not self._wants_challenge(now):
            return
        nonce = secrets.token_hex(NONCE_HEX // 2)
        self._nonces[nonce] = now  # before it can be answered: the answer was signed after this
        while len(self._nonces) > MAX_CHALLENGES:
            self._nonces.popitem(last=False)
        request = SyncRequest(device_id=self.device_id, nonce=nonce)
        sent = self.transport.publish(self.request_topic, request.encode().decode(), qos=1, timeout=5.0)
        self.challenges_sent += bool(sent)
        self._challenges_unanswered += 1
        log.info("sync %s: %s the desk for a fresh head (challenge; retry in %.0f s)", self.collection_id,
                 "asked" if sent else "could not ask", self._challenges.delay)
        if self._challenges_unanswered == UNANSWERED_WARN:
            log.warning("sync %s: %d challenges unanswered: the desk is unreachable, or older than this door "
                        "(it refuses them); %s", self.collection_id, self._challenges_unanswered,
                        "the copy goes stale sync.challenge_every_s after the last answer (upgrade the desk, or "
                        "set it to 0)" if self.challenge_every_s > 0 else "the copy is confirmed by on-time heads only")
        self._challenges.asked(now)

    # -- refusals, staleness, health -------------------------------------------------------
    def _behind_suspected(self) -> None:
        """A head (or a late answer) names a seq below this copy's: stale until the desk answers a
        challenge sent from now on, asked at once (:attr:`_suspect`)."""
        if self._suspect is None:
            self._suspect = self.monotonic()
            self._challenges.reset()

    def _diverge(self, why: str, topic: str | None = None, payload: bytes = b"") -> None:
        """The desk's signed messages show that its history went back behind this copy (its
        database restored from an older copy): the seqs it signs from now on name other change
        sets than those this door applied, so neither its deltas nor a head at this door's seq
        say anything about this copy. Stale (persisted) until a snapshot past the door's seq
        replaces it; asks for one now. Found in review: the desk's revocation signed under a
        reused seq was refused as REPLAY, and its head at that seq confirmed the door's copy. The
        proofs: other bytes signed at a seq it applied, an answer to a challenge below its seq, and
        (the history fingerprint, ``changeset``) a change set at its next seq whose ``prev`` is not
        this copy's position -- a door that missed the whole new history up to its seq (offline)
        took such sets as deltas on the other history's copy (found in review: a user the restored
        desk never knew stayed granted there, revocable by no one). ``topic``/``payload``: the
        message that shows it (the alarm's)."""
        self.want_snapshot, self._outstanding = True, False
        if self.diverged is not None:
            return
        self.diverged = self.applied_seq
        self.replica.mark_diverged(self.applied_seq)
        log.error("sync %s: %s: the desk's history went back (its database restored?); the copy is stale "
                  "until a snapshot past seq %d replaces it", self.collection_id, why, self.applied_seq)
        self._reject(topic or self.topics.head, payload, "DIVERGED", why, self.applied_seq)

    def _count(self, reason: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1

    def _reject(self, topic: str, payload: bytes, reason: str, detail: str, seq: int | None) -> None:
        reason = reason if reason.replace("_", "").isalpha() and reason.isupper() else "MALFORMED"
        self._count(reason)
        now = self.monotonic()
        start, sent = self._alarm_window.get(reason, (now, 0))
        if now - start >= 60:
            if sent > ALARMS_PER_MINUTE:
                log.warning("sync %s: %d more %s refusals in the last minute (no alarm, counted on health)",
                            self.collection_id, sent - ALARMS_PER_MINUTE, reason)
            start, sent = now, 0
        self._alarm_window[reason] = (start, sent + 1)
        if sent >= ALARMS_PER_MINUTE:
            self.alarms_suppressed += 1
            return
        log.warning("sync %s: refused a message on %s (%d bytes): %s", self.collection_id, topic, len(payload),
                    detail[:300])
        if self.alarm is None:
            return
        message = SyncAlarmMessage(event_id=str(uuid.uuid4()), **stamp(),
                                   device_id=self.device_id, collection_id=self.collection_id, reason=reason[:40],
                                   detail=detail[:500], topic=topic[:300], seq=seq, size=len(payload))
        try:
            self.alarm(message.payload())
        except Exception:  # noqa: BLE001 - the refusal stands; the alarm's failure is logged
            log.exception("sync %s: cannot record the alarm", self.collection_id)

    def stale_reason(self) -> str | None:
        """Why the copy is stale (None: confirmed up to date within ``max_staleness_s``). A change
        of kind (fresh, never confirmed, expired, clock went back, ...) is logged once."""
        kind, reason = None, None
        if self.diverged is not None:
            kind, reason = "diverged", (
                f"the desk's change sets diverged from this copy at seq {self.diverged} (the desk's database "
                "restored from an older copy?): stale until a snapshot of the desk past that seq replaces it")
        elif self._suspect is not None:
            kind, reason = "behind", (
                f"a head named a seq below this copy's ({self.applied_seq}): stale until the desk answers a "
                "challenge (held back by the broker, or the desk's history went back)")
        elif self._confirmed_mono is None:
            kind, reason = "restored" if self._restored_stale else "never", \
                self._restored_stale or "never confirmed up to date by a signed head"
        else:
            age = self.monotonic() - self._confirmed_mono
            if age < 0:  # time.monotonic does not go back; a clock that does must not mean fresh
                kind, reason = "negative", f"the last confirmation is {-age:.0f} s in the future (the clock went back)"
            elif age > self.max_staleness_s:
                kind, reason = "expired", f"not confirmed for {age:.0f} s (max_staleness_s {self.max_staleness_s:g})"
        if reason is None and self.challenge_every_s > 0:
            answered = None if self._answered_mono is None else self.monotonic() - self._answered_mono
            if answered is None or not 0 <= answered <= self.challenge_every_s:  # (a clock gone back: stale)
                kind = "unanswered"
                reason = ("the desk answered none of this door's challenges within sync.challenge_every_s "
                          f"({self.challenge_every_s:g} s; a desk older than this door's release does not answer: "
                          "upgrade it first, or set sync.challenge_every_s = 0)" if answered is None
                          else f"the desk answered no challenge for {answered:.0f} s "
                               f"(sync.challenge_every_s {self.challenge_every_s:g})")
        if kind != self._logged_stale:
            if reason is not None:
                log.warning("sync %s: the copy is stale: %s", self.collection_id, reason)
            self._logged_stale = kind
        return reason

    def stale(self) -> bool:
        """Not confirmed up to date within ``max_staleness_s`` on the monotonic clock (or never;
        or, after a restart, a persisted confirmation whose wall-clock age is not in
        [0, max_staleness_s]); with ``challenge_every_s``, also no challenge answered within it.
        Fail closed: a negative age is stale."""
        return self.stale_reason() is not None

    def health(self) -> dict[str, Any]:
        stale_reason = self.stale_reason()
        return {"applied_seq": self.applied_seq, "head_seq": self.head_seq,
                "confirmed_at": round(self.confirmed_at, 3) if self.confirmed_at is not None else None,
                "stale": stale_reason is not None, "stale_reason": stale_reason,
                "challenge_answered_at": round(self.answered_at, 3) if self.answered_at is not None else None,
                "rejected": dict(self.rejected), "duplicates": self.duplicates,
                "alarms_suppressed": self.alarms_suppressed,
                "waiting_for": ("snapshot" if self.want_snapshot or self.applied_seq == 0 else "range")
                if self.behind() else None, "error": self.error}


def _check_vectors(body: object) -> None:
    for f in getattr(body, "faces_put", ()):
        if f.vector().shape != (EMBEDDING_DIM,):
            raise ChangeSetRejected("MALFORMED", f"face {f.face_id}: embedding of {f.vector().shape[0]} values, "
                                                 f"expected {EMBEDDING_DIM}")


def _is_snapshot(message: bytes) -> bool:
    """A (verified) change set's body is a snapshot chunk: an older one is never a re-delivery."""
    try:
        return json.loads(json.loads(message)["payload"])["body"]["kind"] == "snapshot"
    except (ValueError, TypeError, KeyError, RecursionError):
        return False
