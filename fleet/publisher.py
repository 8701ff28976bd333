"""`facelink fleet publish`: the desk's side of collection sync (facelink.sync/1, fleet/protocol.py).

One worker thread does everything, in this order, every ``poll_interval_s`` (sooner when a
request arrives):

1. requests: each message on ``<prefix>/collections/<C>/request`` goes through the
   :class:`~.requests.RequestGate` (validated, rate-limited, bounded); a range is answered at once
   on ``reply/<device>`` with the journal's bytes; a snapshot is queued for step 2.
2. per collection, inside ONE read transaction of the desk's store: read the change feed from
   the last journaled position; a batch becomes a Delta (or a Rebase when ``batch.full``), is
   signed (fleet/changeset.encode) and journaled with the next seq (fleet/journal.py) BEFORE it
   is published; then every journaled but unacknowledged change set is published on ``changes``
   in seq order (QoS 1; a failure stops there and is retried, so order holds); then queued
   snapshots are built from the same read transaction, so they show exactly the state of the
   journal's newest seq, their base.
3. heads: the signed Head (newest published seq) is published retained after new change sets
   and every ``heartbeat_s``.

The first change set of a collection this desk never published is a Rebase: doors ask for a
snapshot. Nothing here raises into the loop: a failed step is logged and retried.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facelink.enroll.feed import ChangeFeed
from facelink.enroll.store import Store
from facelink.mqtt.client import Transport
from facelink.mqtt.topics import CollectionTopics

from .bodies import body_for_batch, snapshot_chunks
from .changeset import encode
from .journal import Journal
from .protocol import Head, Rebase, encode_head
from .requests import RequestGate

log = logging.getLogger(__name__)

INBOX_MAX = 10_000  # requests waiting; more are refused (OVERLOADED) instead of growing memory


class Publisher:
    def __init__(self, store: Store, journal: Journal, key: Ed25519PrivateKey, collections: list[str],
                 prefix: str, *, heartbeat_s: float = 30.0, poll_interval_s: float = 0.2,
                 request_burst: int = 5, request_interval_s: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.journal, self.key, self.clock = store, journal, key, clock
        self.collections = list(dict.fromkeys(collections))
        self.topics = {c: CollectionTopics(prefix, c) for c in self.collections}
        self._by_request_topic = {t.request: c for c, t in self.topics.items()}
        self._feeds = {c: ChangeFeed(store, c) for c in self.collections}
        self.heartbeat_s, self.poll_interval_s = heartbeat_s, poll_interval_s
        self.gate = RequestGate(request_burst, request_interval_s)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(INBOX_MAX)
        self._wake = threading.Event()
        self._cursor: dict[str, int] = {}  # feed position read through (no unjournaled change of C before)
        self._snapshots: dict[str, set[str]] = {c: set() for c in self.collections}
        self._head_at: dict[str, float] = {}
        self._failures: dict[str, tuple[str, float, int]] = {}  # what -> (error, logged at, repeats)
        self.published: dict[str, int] = {c: journal.published_seq(c) for c in self.collections}

    # -- MQTT side (paho's thread) ------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        return [t.request for t in self.topics.values()]

    def on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait((topic, payload))
        except queue.Full:
            self.gate.refused["OVERLOADED"] = self.gate.refused.get("OVERLOADED", 0) + 1
            return
        self._wake.set()

    # -- the worker ---------------------------------------------------------------------------
    def run(self, transport: Transport, stop: threading.Event) -> None:
        log.info("publishing %s (heartbeat %.0f s)", ", ".join(self.collections), self.heartbeat_s)
        while not stop.is_set():
            self.step(transport)
            self._wake.wait(self.poll_interval_s)
            self._wake.clear()

    def wake(self) -> None:
        self._wake.set()

    def step(self, transport: Transport) -> None:
        try:
            self._requests(transport)
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the request is dropped
            self._failed("requests", exc)
        for c in self.collections:
            try:
                self._follow(c, transport)
                self._head(c, transport)
                self._failures.pop(c, None)
            except Exception as exc:  # noqa: BLE001 - logged, retried next step (nothing half-published)
                self._failed(c, exc)

    def _failed(self, what: str, exc: Exception) -> None:
        """Log a failure with its traceback the first time, then once a minute while it repeats
        (a step is retried every poll: an unreadable database must not flood the journal)."""
        now = time.monotonic()
        text = f"{type(exc).__name__}: {exc}"
        seen = self._failures.get(what)
        if seen is None or seen[0] != text:
            log.error("publishing %s failed (retrying every %.1f s): %s", what, self.poll_interval_s, text,
                      exc_info=exc)
            self._failures[what] = (text, now, 0)
        elif now - seen[1] >= 60:
            log.error("publishing %s still failing (%d more times): %s", what, seen[2] + 1, text)
            self._failures[what] = (text, now, 0)
        else:
            self._failures[what] = (text, seen[1], seen[2] + 1)

    def _requests(self, transport: Transport) -> None:
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            c = self._by_request_topic.get(topic)
            if c is None:
                continue
            answer = self.gate.decide(c, payload, self.published[c])
            if answer is None:
                continue
            if answer.snapshot:
                self._snapshots[c].add(answer.device_id)
                continue
            reply = self.topics[c].reply(answer.device_id)
            for entry in self.journal.entries(c, answer.first, answer.last):
                if not transport.publish(reply, entry.message.decode(), qos=1):
                    log.warning("re-sending %s %d..%d to %s stopped at %d: broker unavailable",
                                c, answer.first, answer.last, answer.device_id, entry.seq)
                    break
            else:
                log.info("re-sent %s change sets %d..%d to %s", c, answer.first, answer.last,
                         answer.device_id)

    def _follow(self, c: str, transport: Transport) -> None:
        feed = self._feeds[c]
        with self.store.read_transaction():
            last = self.journal.last(c)
            if last is None:
                coll = self.store.get_collection(c)
                if coll is None:
                    return  # nothing to publish until the collection exists
                position = feed.position_in_transaction()
                self._journal(c, coll.face_model_version, position, Rebase(
                    feed_position=position, reason="first change set from this desk: take a snapshot"))
            else:
                batch = feed.read_since_in_transaction(self._cursor.get(c, last.feed_position))
                if batch.empty:
                    self._cursor[c] = batch.position
                else:
                    version = batch.collection.face_model_version if batch.collection else \
                        last.face_model_version
                    self._journal(c, version, batch.position, body_for_batch(batch))
            self._flush(c, transport)
            if self._snapshots[c] and self.published[c] == self.journal.last(c).seq:  # type: ignore[union-attr]
                self._send_snapshots(c, transport)

    def _journal(self, c: str, version: str, position: int, body: object) -> None:
        payload = body.model_dump()  # type: ignore[attr-defined]
        entry = self.journal.append(c, version, position,
                                    lambda seq: encode(self.key, c, version, seq, payload))
        self._cursor[c] = position
        log.info("journaled %s seq %d (%s)", c, entry.seq, payload["kind"])

    def _flush(self, c: str, transport: Transport) -> None:
        for entry in self.journal.unpublished(c):
            if not transport.publish(self.topics[c].changes, entry.message.decode(), qos=1):
                return  # in order: retried from here on the next step
            self.journal.published(c, entry.seq)
            self.published[c] = entry.seq
            self._head_at.pop(c, None)  # a new head is due now

    def _send_snapshots(self, c: str, transport: Transport) -> None:
        """Inside the caller's read transaction: the state of the journal's newest seq."""
        last = self.journal.last(c)
        assert last is not None
        devices = sorted(self._snapshots[c])
        failed: set[str] = set()
        chunks = 0
        for chunk in snapshot_chunks(self.store, c, last.feed_position):
            message = encode(self.key, c, last.face_model_version, last.seq, chunk.model_dump()).decode()
            chunks = chunk.chunks
            for d in devices:
                if d not in failed and not transport.publish(self.topics[c].reply(d), message, qos=1):
                    failed.add(d)
        self._snapshots[c] = failed
        log.info("snapshot of %s at seq %d (%d chunks) sent to %s", c, last.seq, chunks,
                 ", ".join(d for d in devices if d not in failed) or "nobody")

    def _head(self, c: str, transport: Transport) -> None:
        seq = self.published[c]
        now = self.clock()
        if seq == 0 or now - self._head_at.get(c, float("-inf")) < self.heartbeat_s:
            return
        last = self.journal.last(c)
        assert last is not None
        head = Head(collection_id=c, face_model_version=last.face_model_version, seq=seq, issued_at=now)
        if transport.publish(self.topics[c].head, encode_head(self.key, head).decode(), qos=1, retain=True):
            self._head_at[c] = now


def serve(settings: object, stop: threading.Event) -> Publisher:
    """Run the publisher of ``settings`` ([fleet] + [mqtt] + [store]) until ``stop`` is set.
    A missing key or collection list is a ConfigError naming the key (exit 78)."""
    from facelink.errors import ConfigError
    from facelink.mqtt.client import MqttClient

    from .signing import load_private

    fleet, mqtt = settings.fleet, settings.mqtt  # type: ignore[attr-defined]
    if fleet.signing_key is None:
        raise ConfigError("fleet.signing_key: required to publish (create one with `facelink fleet keygen`)")
    if not fleet.publish:
        raise ConfigError("fleet.publish: name at least one collection to publish")
    key = load_private(fleet.signing_key)
    db = settings.store.database  # type: ignore[attr-defined]
    group = settings.store.group_access  # type: ignore[attr-defined]
    store = Store(db, group_access=group)
    journal = Journal(db, group_access=group)
    publisher = Publisher(store, journal, key, fleet.publish, mqtt.topic_prefix,
                          heartbeat_s=fleet.heartbeat_s, poll_interval_s=fleet.poll_interval_s,
                          request_burst=fleet.request_burst, request_interval_s=fleet.request_interval_s)
    client = MqttClient(mqtt, client_id=fleet.client_id, subscriptions=publisher.subscriptions(),
                        on_message=publisher.on_message)
    try:
        publisher.run(client, stop)
    finally:
        client.stop()
        journal.close()
        store.close()
        log.info("stopped; sync requests refused: %s", publisher.gate.refused or "none")
    return publisher
