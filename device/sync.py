"""The door's wiring of collection sync (``[sync]``; facelink.fleet.follower does the work).

- the follower's subscriptions ride on the door's MQTT client (a persistent session when sync is
  on, so change sets published while the door is offline wait at the broker);
- refusals become facelink.alarm/1 events on ``<prefix>/<device>/alarm``, through the outbox
  (durable, QoS 1, the one drainer);
- after every apply the daemon refreshes its matcher at once (:meth:`DoorSync.changed`);
- ``sync.on_stale = "deny"``: while the copy is stale every decision that depends on it becomes
  ERROR ``STALE_COLLECTION`` (a face's DENIED_SPOOF or DENIED_LOW_QUALITY does not: the stale gate
  publishes it as made, never asking :meth:`DoorSync.gate`; the door stays locked; a decision it stopped is withdrawn by the daemon,
  a DENIED's track decided again once :meth:`DoorSync.settled`: ``device/stale_gate.py``); ``"keep"``:
  decisions stand, health says stale;
- either way, a decision the matcher made before it loaded the change set last applied is not
  published as made (:meth:`DoorSync.gate`; made again, or ERROR: ``device/stale_gate.py``);
- health: ``"sync": {"<C>": {"applied_seq", "head_seq", "confirmed_at", "stale", "rejected", ...}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from facelink.config import Settings
from facelink.enroll.store import Store
from facelink.errors import ConfigError
from facelink.fleet.follower import Follower
from facelink.fleet.signing import load_trusted
from facelink.mqtt.client import Transport
from facelink.mqtt.outbox import Outbox
from facelink.mqtt.topics import DeviceTopics

from .decision import ACTUATION_FAILED, ERROR, Decision

log = logging.getLogger(__name__)

STALE = "STALE_COLLECTION"


class DoorSync:
    def __init__(self, settings: Settings, model_version: str, outbox: Outbox, topics: DeviceTopics) -> None:
        if not settings.fleet.trusted_keys:
            raise ConfigError("fleet.trusted_keys: required with sync.enabled (the desk's public key)")
        s = settings.sync
        trusted = load_trusted(settings.fleet.trusted_keys)
        self.collection_id = s.collection_id or settings.matching.collection_id
        self.on_stale, self.max_staleness_s = s.on_stale, s.max_staleness_s
        self.outbox, self.topics = outbox, topics
        self.store = Store(settings.store.database, group_access=settings.store.group_access)
        self.follower = Follower(self.store, self.collection_id, model_version, trusted, settings.mqtt.device_id,
                                 settings.mqtt.topic_prefix, alarm=self._alarm, max_staleness_s=s.max_staleness_s,
                                 request_retry_s=s.request_retry_s, challenge_every_s=s.challenge_every_s)
        self._was_stale: bool | None = None

    def _alarm(self, payload: dict) -> None:
        self.outbox.put(payload["event_id"], self.topics.alarm, payload)

    def subscriptions(self) -> list[str]:
        return self.follower.subscriptions()

    def on_message(self, topic: str, payload: bytes) -> None:
        self.follower.on_message(topic, payload)

    def start(self, transport: Transport) -> None:
        self.follower.transport = transport
        self.follower.start()
        log.info("following collection %s (applied seq %d; on_stale = %s after %.0f s)", self.collection_id,
                 self.follower.applied_seq, self.on_stale, self.max_staleness_s)

    def changed(self) -> bool:
        """True once after each apply: the matcher should refresh now."""
        if self.follower.applied_event.is_set():
            self.follower.applied_event.clear()
            return True
        return False

    @property
    def applied_seq(self) -> int:
        """The last change set applied to the database (the matcher may not have loaded it yet)."""
        return self.follower.applied_seq

    def settled(self) -> bool:
        """A decision made now passes :meth:`gate` as made: the matcher has loaded the last change
        set applied and, with on_stale = deny, the copy is confirmed up to date (fresh)."""
        loaded = not self.follower.applied_event.is_set()
        return loaded and (self.on_stale != "deny" or self.follower.stale_reason() is None)

    def gate(self, decision: Decision, *, again: bool = False, current: bool = False) -> Decision | None:
        """``decision``, or ERROR STALE_COLLECTION when the copy is stale and on_stale is deny (the
        reason says why: the follower's ``stale_reason``, e.g. an unanswered challenge);
        also, whatever on_stale says, when a change set was applied that the matcher has not loaded
        yet (:meth:`changed` not asked since): the decision was made on the copy before it
        (the worker applies and confirms on its own thread, between the daemon's housekeeping
        and a frame: a revocation applied must not grant on the old copy; found in review: with
        on_stale = keep nothing gated that gap, and a revoked person was granted at a door that
        said fresh). In that case, where the caller can make the decision again on the loaded
        copy (``again``: a face's track), None: nothing to publish (found in review: the ERROR
        said STALE_COLLECTION at a healthy door, at every change set that came while someone was
        being decided). ``current``: the caller knows the decision was made on the database's
        copy with every change set applied so far (a badge's, read from the database, not the
        matcher): that gap does not concern it."""
        stale_reason = self.follower.stale_reason()
        stale = stale_reason is not None
        if stale != self._was_stale:
            (log.warning if stale else log.info)("collection %s is %s", self.collection_id,
                                                 "STALE (not confirmed up to date)" if stale else "confirmed up to date")
            self._was_stale = stale
        if decision.decision in (ERROR, ACTUATION_FAILED):
            return decision
        if stale and self.on_stale == "deny":
            why = stale_reason
        elif self.follower.applied_event.is_set() and not current:
            if again:
                log.info("a %s made before the matcher loaded seq %d is made again", decision.decision,
                         self.follower.applied_seq)
                return None
            why = f"seq {self.follower.applied_seq} applied but not yet loaded by the matcher"
        else:
            return decision
        return Decision(ERROR, decision.device_id, decision.collection_id, decision.model_version,
                        decision.threshold, user_id=decision.user_id, similarity=decision.similarity,
                        track_id=decision.track_id, mode=decision.mode, factors=decision.factors,
                        reason=f"{STALE}: {self.collection_id}: {why} (sync.on_stale = {self.on_stale}; would "
                               f"have been {decision.decision})")

    def health(self) -> dict[str, Any]:
        return {self.collection_id: self.follower.health()}

    def close(self) -> None:
        self.follower.stop()
        self.store.close()
