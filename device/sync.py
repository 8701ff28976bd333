"""The door's wiring of collection sync (``[sync]``; facelink.fleet.follower does the work).

- the follower's subscriptions ride on the door's MQTT client (a persistent session when sync is
  on, so change sets published while the door is offline wait at the broker);
- refusals become facelink.alarm/1 events on ``<prefix>/<device>/alarm``, through the outbox
  (durable, QoS 1, the one drainer);
- after every apply the daemon refreshes its matcher at once (:meth:`DoorSync.changed`);
- ``sync.on_stale = "deny"``: while the copy is stale every decision becomes ERROR
  ``STALE_COLLECTION`` (the door stays locked; a decision it stopped is withdrawn by the daemon,
  a DENIED's track decided again once :meth:`DoorSync.fresh`: ``device/stale_gate.py``); ``"keep"``:
  decisions stand, health says stale;
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

    def fresh(self) -> bool:
        """Confirmed up to date, and the matcher has loaded the last change set applied."""
        return self.follower.stale_reason() is None and not self.follower.applied_event.is_set()

    def gate(self, decision: Decision, *, again: bool = False) -> Decision | None:
        """``decision``, or ERROR STALE_COLLECTION when the copy is stale and on_stale is deny (the
        reason says why: the follower's ``stale_reason``, e.g. an unanswered challenge);
        also when a change set was applied that the matcher has not loaded yet (:meth:`changed`
        not asked since): the decision was made on the copy before it, which no head confirmed
        (the worker applies and confirms on its own thread, between the daemon's housekeeping
        and a frame: a revocation that made the copy fresh must not grant on the old copy).
        In that case, where the copy is otherwise fresh and the caller can make the decision
        again on the loaded copy (``again``: a face's track), None: nothing to publish (found in
        review: the ERROR said STALE_COLLECTION at a healthy door, at every change set that came
        while someone was being decided)."""
        stale_reason = self.follower.stale_reason()
        stale = stale_reason is not None
        if stale != self._was_stale:
            (log.warning if stale else log.info)("collection %s is %s", self.collection_id,
                                                 "STALE (not confirmed up to date)" if stale else "confirmed up to date")
            self._was_stale = stale
        unloaded = not stale and self.follower.applied_event.is_set()
        if not (stale or unloaded) or self.on_stale != "deny" or decision.decision in (ERROR, ACTUATION_FAILED):
            return decision
        if unloaded and again:
            log.info("a %s made before the matcher loaded seq %d is made again", decision.decision,
                     self.follower.applied_seq)
            return None
        why = f"seq {self.follower.applied_seq} applied but not yet loaded by the matcher" if unloaded else stale_reason
        return Decision(ERROR, decision.device_id, decision.collection_id, decision.model_version,
                        decision.threshold, user_id=decision.user_id, similarity=decision.similarity,
                        track_id=decision.track_id, mode=decision.mode, factors=decision.factors,
                        reason=f"{STALE}: {self.collection_id}: {why} (sync.on_stale = deny; would have been "
                               f"{decision.decision})")

    def health(self) -> dict[str, Any]:
        return {self.collection_id: self.follower.health()}

    def close(self) -> None:
        self.follower.stop()
        self.store.close()
