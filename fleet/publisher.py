"""`facelink fleet publish`: the desk's side of collection sync (facelink.sync/1, fleet/protocol.py).

One worker thread does everything, in this order, every ``poll_interval_s`` (sooner when a
request arrives):

1. requests: each message on a door's own ``<prefix>/<device_id>/sync/<C>/request`` (the device
   id is the topic's: a payload naming another is refused) and, while ``accept_shared_topic``, on
   the shared ``<prefix>/collections/<C>/request`` of doors not yet upgraded goes through the
   :class:`~.requests.RequestGate` (validated; from a door seen on its status/health topic when
   ``seen_doors_only``; rate-limited, bounded); a range or a snapshot is queued (one entry per
   device, FIFO) for step 4. Only the requests already waiting when the step starts are decided:
   a flood arriving meanwhile waits for the next step, so it cannot hold steps 2-3 back.
2. per collection, inside ONE read transaction of the desk's store: read the change feed from
   the last journaled position; a batch becomes a Delta (or a Rebase when ``batch.full``), is
   signed (fleet/changeset.encode, with ``prev``: the fingerprint of the journal's change set
   before it) and journaled with the next seq (fleet/journal.py) BEFORE it
   is published; then every journaled but unacknowledged change set is published on ``changes``
   in seq order (QoS 1; a failure stops there and is retried, so order holds).
3. heads: the signed Head (newest published seq) is published retained after new change sets
   and every ``heartbeat_s``; then each door's freshness challenge decided in step 1 is answered
   with the same head carrying its nonce, on that door's ``reply/<device>`` (not retained).
4. ranges, then snapshots, each for at most ``slice_s`` per step: a range is re-sent on
   ``reply/<device>`` from the journal's bytes (paid from the reply byte budget), page by page,
   where it stopped; snapshots so that steps 2-3 (a revocation) never wait
   behind ranges and a snapshot for longer than twice that (plus a publish each): a snapshot is read on a second
   connection of the desk database whose read transaction stays open from chunk to chunk across
   steps; it starts by journaling (and publishing) whatever that transaction sees, so it shows
   exactly the state of the journal's newest seq, its base (each chunk carries the fingerprint of
   that seq's journaled change set as its ``position``). Queued doors are served within a
   global :class:`~.requests.Budget` of snapshot replies and bytes per minute; the rest wait
   their turn (deferred, not refused).

The first change set of a collection this desk never published is a Rebase: doors ask for a
snapshot. Nothing here raises into the loop: a failed step is logged and retried.

*A desk whose history went back* (its database restored from an older backup, or replaced). The
desk subscribes its collections' retained heads (first, so that they are handled before the last
SUBACK of its connection: nothing is journaled or published before that, see
:meth:`Publisher.step`). A head signed by its own key, for that collection, naming a seq beyond
the journal's newest is proof that change sets it published are lost here: the collection is
**held** (:meth:`~.journal.Journal.note_restore`, durable): CRITICAL in the log, nothing journaled,
published, re-sent or answered for it -- no change set, head, snapshot, range or challenge answer --
so the doors keep their newer copy (with the lost revocations) and go stale after
``sync.max_staleness_s`` (with ``on_stale = deny``: locked) until the site acts. Unsigned door
input never holds a collection (one rogue client would stop the desk): a request asking from beyond
the head only says so in the log (:class:`~.requests.RequestGate`). ``facelink fleet
accept-restore`` (:meth:`~.journal.Journal.accept_restore`) lets it go on: empty change sets are
journaled through the evidence seq + 1, each chained to the journal's own, so a door holding the
lost history finds another fingerprint at a seq it applied (DIVERGED, then the desk's snapshot)
and a door on the common prefix simply applies them.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facelink.enroll.feed import ChangeFeed
from facelink.enroll.store import Store
from facelink.mqtt.client import Transport
from facelink.mqtt.topics import (
    CollectionTopics,
    all_health,
    all_status,
    all_sync_requests,
    sync_request_sender,
)

from .bodies import body_for_batch, snapshot_chunks
from .changeset import encode, envelope_payload_sha256
from .journal import Journal, Restore
from .protocol import (
    DEVICE_ID,
    MAX_REQUEST_BYTES,
    SNAPSHOT_REPEAT_S,
    Delta,
    Head,
    Rebase,
    SnapshotChunk,
    decode_head,
    encode_head,
)
from .requests import MAX_TRACKED_DEVICES, Budget, RequestGate
from .signing import key_id

log = logging.getLogger(__name__)

INBOX_MAX = 10_000  # requests waiting; more are refused (OVERLOADED) instead of growing memory
MAX_QUEUED_SNAPSHOTS = 1_000  # doors waiting for a snapshot, per collection; more: OVERLOADED
MAX_QUEUED_RANGES = 1_000  # doors waiting for a range, per collection; more: OVERLOADED
MAX_QUEUED_CHALLENGES = 1_000  # doors waiting for a challenge's answer, per collection; more: OVERLOADED
RANGE_PAGE = 50  # journaled change sets read at once for a range reply
RESTORE_BATCH = 2_000  # empty change sets journaled past an accepted restore per step (one transaction)
MIN_HEAD_STEP_S = 0.001  # a desk started again issues its first head at least this after its last
# Range replies spend only the reply byte budget above this share of it: the rest is kept for
# snapshots, so requests for ranges (within the rate limits) cannot keep doors from their snapshots.
RANGE_RESERVE_SHARE = 0.5
BYTES_PER_FACE = 1_000  # a snapshot's size before one was measured (~0.9 KB per face on the wire)
_DEVICE = re.compile(DEVICE_ID)
SUBSCRIBED_WAIT_S = 5.0  # a step waits this long for the SUBACKs (the retained heads) after connecting
HELD_LOG_S = 60.0  # a held collection's CRITICAL is repeated this often


@dataclass
class _RangeReply:
    """The journal's change sets ``next..last`` still to be re-sent to one door."""

    first: int
    next: int
    last: int


@dataclass
class _SnapshotRun:
    """One snapshot being sent to ``devices``, chunk after chunk, across steps (its read
    transaction on the snapshot connection stays open until :meth:`Publisher._end_run`)."""

    collection: str
    seq: int
    model_version: str
    devices: list[str]
    chunks: Iterator[SnapshotChunk]
    transaction: AbstractContextManager
    position: str  # the payload_sha256 of the journal's change set at ``seq`` (each chunk carries it)
    message: str | None = None  # the chunk being sent
    next_device: int = 0
    sent_chunks: int = 0
    total_chunks: int = 0
    bytes: int = 0  # bytes of one copy so far
    failed: set[str] = field(default_factory=set)


class Publisher:
    def __init__(self, store: Store, journal: Journal, key: Ed25519PrivateKey, collections: list[str],
                 prefix: str, *, heartbeat_s: float = 30.0, poll_interval_s: float = 0.2,
                 request_burst: int = 5, request_interval_s: float = 1.0,
                 snapshot_replies_per_minute: int = 600, snapshot_mb_per_minute: float = 6000.0,
                 seen_doors_only: bool = False, accept_shared_topic: bool = True,
                 doors: Mapping[str, Iterable[str]] | None = None, slice_s: float | None = None,
                 restore_batch: int = RESTORE_BATCH, clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic) -> None:
        """``seen_doors_only`` (the service: ``fleet.reply_to_seen_doors_only``, default on):
        answer only device ids seen on ``<prefix>/<id>/status`` or ``.../health`` (it subscribes
        them). ``accept_shared_topic`` (``fleet.accept_shared_request_topic``): also answer doors
        not yet upgraded, on the shared request topic; off, it is not even subscribed. Doors'
        own request topics are always subscribed. ``doors`` (``fleet.doors``, required by the
        service): the device ids answered, each for its collections only (None: any). ``slice_s``: the most time one step spends
        sending snapshots (``poll_interval_s``). ``restore_batch``: the most empty change sets one
        step journals past an accepted restore (:meth:`_journal_past`)."""
        self.store, self.journal, self.key, self.clock = store, journal, key, clock
        self.collections = list(dict.fromkeys(collections))
        self.topics = {c: CollectionTopics(prefix, c) for c in self.collections}
        self._by_request_topic = {t.request: c for c, t in self.topics.items()}
        self._feeds = {c: ChangeFeed(store, c) for c in self.collections}
        self.heartbeat_s, self.poll_interval_s = heartbeat_s, poll_interval_s
        self.gate = RequestGate(request_burst, request_interval_s, monotonic)
        self.monotonic = monotonic
        self.slice_s = poll_interval_s if slice_s is None else slice_s
        if restore_batch < 1:
            raise ValueError(f"restore_batch {restore_batch}")
        self.restore_batch = restore_batch
        self.snapshot_replies = Budget(snapshot_replies_per_minute, monotonic)
        self.reply_bytes = Budget(snapshot_mb_per_minute * 1e6, monotonic)
        self.seen_doors_only = seen_doors_only
        self.doors = None if doors is None else {d: frozenset(cs) for d, cs in doors.items()}
        self.accept_shared_topic = accept_shared_topic
        self._prefix = prefix.rstrip("/")
        self._seen: OrderedDict[str, None] = OrderedDict()  # device ids heard on status/health
        self._seen_lock = threading.Lock()
        self._snap_store: Store | None = None  # the snapshots' own connection (opened on first use)
        self._run: _SnapshotRun | None = None
        self._snapshot_size: dict[str, int] = {}  # bytes of the last snapshot of C (one copy)
        self.snapshots_sent = 0
        self._turn = 0
        self._inbox: queue.Queue[tuple[str, str | None, bytes]] = queue.Queue(INBOX_MAX)  # (C, sender, payload)
        self._wake = threading.Event()
        self._cursor: dict[str, int] = {}  # feed position read through (no unjournaled change of C before)
        self._snapshots: dict[str, dict[str, None]] = {c: {} for c in self.collections}  # FIFO
        self._ranges: dict[str, OrderedDict[str, _RangeReply]] = {c: OrderedDict() for c in self.collections}
        self._range_turn = 0
        # per collection, door -> the nonce of its latest challenge (answered in step 3)
        self._challenges: dict[str, OrderedDict[str, str]] = {c: OrderedDict() for c in self.collections}
        # per collection, door -> (seq, monotonic time) of the last snapshot it was sent
        self._served: dict[str, dict[str, tuple[int, float]]] = {c: {} for c in self.collections}
        self._last_rebase: dict[str, int] = {}  # the newest Rebase journaled by this process, per collection
        self._head_at: dict[str, float] = {}  # collection -> monotonic time of its last head
        self._issued: dict[str, tuple[float, float]] = {}  # collection -> (issued_at, monotonic) of its last head
        self._failures: dict[str, tuple[str, float, int]] = {}  # what -> (error, logged at, repeats)
        self._unpublished_logged: dict[str, float] = {}  # collection -> monotonic time "no head" was logged
        self.published: dict[str, int] = {c: journal.published_seq(c) for c in self.collections}
        public = key.public_key()
        self._key_id = key_id(public)
        self._own_key = {self._key_id: public}
        self._head_topics = {t.head: c for c, t in self.topics.items()}
        self._evidence: dict[str, int] = {}  # collection -> highest seq of a retained head signed by this key
        self._evidence_lock = threading.Lock()
        self._heads_heard = False  # the retained heads were handled (nothing is journaled before)
        # collections held (their history went back), or accepted and not yet journaled past it
        self._restores: dict[str, Restore] = {}
        for c in self.collections:
            r = journal.restore(c)
            last = journal.last(c)
            if r is not None and (r.held or (last.seq if last else 0) <= r.evidence_seq):
                self._restores[c] = r
        self._held_logged: dict[str, float] = {}
        self._absent_logged: dict[str, float] = {}  # an accepted restore of a collection not in the store

    # -- MQTT side (paho's thread) ------------------------------------------------------------
    def subscriptions(self) -> list[str | tuple[str, int]]:
        """What :class:`~facelink.mqtt.client.MqttClient` subscribes for the desk. The heads come
        first and at QoS 0, so that mosquitto sends their retained messages before the SUBACKs of
        the later ones: at QoS 1 those beyond its ``max_inflight_messages`` (20 by default; more
        collections, or a site's 1) waited behind the SUBACKs, and the desk journaled and
        published a collection before it read its head (found in review 87)."""
        seen = [all_status(self._prefix), all_health(self._prefix)] if self.seen_doors_only else []
        shared = [t.request for t in self.topics.values()] if self.accept_shared_topic else []
        heads: list[str | tuple[str, int]] = [(t.head, 0) for t in self.topics.values()]
        return heads + [all_sync_requests(self._prefix, c) for c in self.collections] + shared + seen

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic in self._head_topics:
            self._heard_head(self._head_topics[topic], payload)
            return
        c, sender = self._by_request_topic.get(topic), None
        if c is not None and not self.accept_shared_topic:
            return  # not subscribed: never answered
        if c is None:
            own = sync_request_sender(self._prefix, topic)
            if own is None or own[1] not in self.topics:
                self._saw(topic, payload)
                return
            sender, c = own
        if len(payload) > MAX_REQUEST_BYTES:  # refused now: the inbox holds no more than this per request
            self.gate.count("MALFORMED")
            return
        try:
            self._inbox.put_nowait((c, sender, payload))
        except queue.Full:
            self.gate.count("OVERLOADED")
            return
        self._wake.set()

    def _heard_head(self, c: str, payload: bytes) -> None:
        """A head on ``c``'s head topic (the retained one when the desk subscribes; then its own
        as it publishes them): one signed by this desk's key for ``c`` is evidence of the seq this
        desk published, checked against the journal by the worker (:meth:`_check_restore`).
        Anything else (another key, another collection, a challenge's answer, garbage) is ignored."""
        try:
            head = decode_head(self._own_key, payload)
        except Exception:  # noqa: BLE001 - untrusted input (FaceLinkError; anything the parser raises)
            return
        if head.collection_id != c or head.nonce is not None:
            return
        with self._evidence_lock:
            self._evidence[c] = max(head.seq, self._evidence.get(c, 0))
        self._wake.set()

    def held(self) -> dict[str, Restore]:
        """The collections held because their history went back (not yet accepted)."""
        return {c: r for c, r in self._restores.items() if r.held}

    def _saw(self, topic: str, payload: bytes) -> None:
        """A door's status or health: the broker's ACL lets only that door's user publish under
        ``<prefix>/<device_id>/``, so its id is one a snapshot may be sent to."""
        parts = topic[len(self._prefix) + 1:].split("/") if topic.startswith(self._prefix + "/") else []
        if len(parts) != 2 or parts[1] not in ("status", "health") or not payload or not _DEVICE.fullmatch(parts[0]):
            return
        with self._seen_lock:
            self._seen.pop(parts[0], None)
            self._seen[parts[0]] = None
            while len(self._seen) > MAX_TRACKED_DEVICES:
                self._seen.popitem(last=False)

    def _listed(self, collection_id: str, device_id: str) -> bool:
        """``device_id`` is listed in fleet.doors for ``collection_id``."""
        return self.doors is not None and collection_id in self.doors.get(device_id, ())

    def seen(self, device_id: str) -> bool:
        with self._seen_lock:
            return device_id in self._seen

    # -- the worker ---------------------------------------------------------------------------
    def run(self, transport: Transport, stop: threading.Event) -> None:
        log.info("publishing %s (heartbeat %.0f s); requests on the doors' own topics%s", ", ".join(self.collections),
                 self.heartbeat_s, " and the shared topic" if self.accept_shared_topic else " only")
        if self.doors is not None:
            log.info("answering sync requests from %d listed doors (fleet.doors)", len(self.doors))
        try:
            while not stop.is_set():
                self.step(transport)
                if self._run is None:  # a snapshot under way goes on at once (after steps 1-3)
                    self._wake.wait(self.poll_interval_s)
                self._wake.clear()
        finally:
            self._end_run(requeue=False)

    def close(self) -> None:
        """End a snapshot under way and close the snapshots' connection (not ``store``)."""
        self._end_run(requeue=False)
        if self._snap_store is not None:
            self._snap_store.close()
            self._snap_store = None

    def wake(self) -> None:
        self._wake.set()

    def step(self, transport: Transport) -> None:
        """One turn of the loop (module docstring). Nothing at all until the transport's
        subscriptions are acknowledged once (``wait_subscribed``, if it has one): the retained
        heads are handled by then, so a desk whose history went back is held before it journals
        or publishes anything."""
        if not self._heads_heard:
            wait = getattr(transport, "wait_subscribed", None)
            if wait is not None and not (transport.is_connected() and wait(SUBSCRIBED_WAIT_S)):
                return
            self._heads_heard = True
        try:
            self._requests(transport)
        except Exception as exc:  # noqa: BLE001 - the loop must go on; the request is dropped
            self._failed("requests", exc)
        for c in self.collections:
            try:
                if self._check_restore(c):
                    continue
                self._follow(c, transport)
                self._head(c, transport)
                self._answer_challenges(c, transport)
                self._failures.pop(c, None)
            except Exception as exc:  # noqa: BLE001 - logged, retried next step (nothing half-published)
                self._failed(c, exc)
        try:
            self._range_slice(transport)
            self._failures.pop("ranges", None)
        except Exception as exc:  # noqa: BLE001 - logged; the range is dropped, the door asks again
            self._failed("ranges", exc)
        try:
            self._snapshot_slice(transport)
            self._failures.pop("snapshots", None)
        except Exception as exc:  # noqa: BLE001 - the snapshot is dropped, its doors queued again
            self._end_run(requeue=True)
            self._failed("snapshots", exc)

    def _check_restore(self, c: str) -> bool:
        """Whether ``c`` is held: a head signed by this key beyond the journal's newest seq holds
        it (durably, CRITICAL); an accepted hold is journaled past, then ``c`` goes on."""
        with self._evidence_lock:
            seen = self._evidence.pop(c, None)
        if seen is not None:
            last = self.journal.last(c)
            if seen > (last.seq if last else 0):
                r = self.journal.note_restore(c, seen, self._key_id)
                if r is not None:
                    if c not in self.held():
                        self._held_logged.pop(c, None)
                    self._restores[c] = r
        r = self._restores.get(c)
        if r is None:
            return False
        if r.held:
            r = self.journal.restore(c) or r  # accepted meanwhile (`facelink fleet accept-restore`)?
            self._restores[c] = r
        if r.held:
            self._hold(c, r)
            return True
        if not self._journal_past(c, r):
            return True  # the next batch at the next step: the other collections are served meanwhile
        del self._restores[c]
        log.warning("%s: the restore was accepted: journaled through seq %d, publishing again; doors that "
                    "hold the lost history (seqs %d..%d) are DIVERGED and take the desk's snapshot", c,
                    self.journal.last(c).seq, *r.lost)  # type: ignore[union-attr]
        return False

    def _hold(self, c: str, r: Restore) -> None:
        """Nothing of ``c`` goes out: queued snapshots, ranges and challenges are dropped (the
        doors ask again; refused while held), a snapshot under way is ended."""
        run = self._run
        if run is not None and run.collection == c:
            self._end_run(requeue=False)
        self._snapshots[c].clear()
        self._ranges[c].clear()
        self._challenges[c].clear()
        now = self.monotonic()
        if now - self._held_logged.get(c, float("-inf")) >= HELD_LOG_S:
            self._held_logged[c] = now
            first, last = r.lost
            log.critical("%s: HELD, this desk's history went back: a head signed by this desk names seq %d, its "
                         "journal ends at %d -- change sets %d..%d (revocations among them) were published and are "
                         "lost here (database restored from an older backup?). Nothing of %s is published: doors "
                         "keep their copy and go stale after sync.max_staleness_s (locked with on_stale = deny). "
                         "Re-do the changes made after the backup (deletions, revocations; `facelink fleet "
                         "status` shows the range), then `facelink fleet accept-restore --collection %s`",
                         c, r.evidence_seq, r.journal_seq, first, last, c, c)

    def _journal_past(self, c: str, r: Restore) -> bool:
        """After an accepted restore: empty change sets through ``r.evidence_seq + 1``, chained to
        the journal (the first of a collection a Rebase, as always); True once journaled past it.
        A door on the common prefix applies them; one holding the lost history finds other bytes
        (or another ``prev``) at a seq it applied: DIVERGED, then the desk's snapshot past it.
        At most ``restore_batch`` per call, in one journal transaction (a lost range of 100k seqs
        took minutes in one step, every other collection waiting; review 90): each batch is
        durable, and a desk started again mid-way goes on from its journal (the accepted hold is
        kept in ``_restores`` until the journal is past it, see ``__init__``; a collection not in
        the store yet is waited for, the hold kept: :meth:`_absent`). Until then nothing
        of ``c`` goes out -- no change set, head or answer: a head naming a seq of the lost range
        would confirm a door's copy of the lost history."""
        with self.store.read_transaction():
            last = self.journal.last(c)
            if last is None:
                coll = self.store.get_collection(c)
                if coll is None:  # nothing to journal past yet: kept until the collection exists
                    self._absent(c, r)
                    return False
                position = self._feeds[c].position_in_transaction()
                self._journal(c, coll.face_model_version, position, Rebase(
                    feed_position=position, reason="the desk's history went back: take a snapshot"))
                last = self.journal.last(c)
                assert last is not None
            if last.seq > r.evidence_seq:
                return True
            count = min(self.restore_batch, r.evidence_seq + 1 - last.seq)
            self._journal(c, last.face_model_version, last.feed_position, Delta(feed_position=last.feed_position),
                          count=count)
            done = last.seq + count > r.evidence_seq
            if not done:
                log.info("%s: the restore was accepted: journaled empty change sets through seq %d of %d",
                         c, last.seq + count, r.evidence_seq + 1)
            return done

    def _absent(self, c: str, r: Restore) -> None:
        """An accepted restore of ``c``, which the desk's store does not hold (the backup is older
        than the collection): the hold stays (in ``_restores``, as a desk started again finds it
        in ``__init__``) until the collection is created and the journal is past the lost seqs.
        It used to be dropped here, and a collection created later in the same run was journaled
        and published from seq 1 -- seqs of the lost range, with heads naming them (review 97)."""
        now = self.monotonic()
        if now - self._absent_logged.get(c, float("-inf")) >= HELD_LOG_S:
            self._absent_logged[c] = now
            log.warning("%s: the restore was accepted, but the collection is not in the desk's database: once it "
                        "is created, empty change sets are journaled through seq %d before anything of %s is "
                        "published (the lost seqs %d..%d)", c, r.evidence_seq + 1, c, *r.lost)

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
        for _ in range(self._inbox.qsize()):  # those waiting now; later ones wait for the next step
            try:
                c, sender, payload = self._inbox.get_nowait()
            except queue.Empty:
                return
            if c in self.held():
                self.gate.count("HELD")  # answered once the restore is accepted: the door asks again
                continue
            answer = self.gate.decide(c, payload, self.published[c], self.seen if self.seen_doors_only else None,
                                      sender, None if self.doors is None else partial(self._listed, c))
            if answer is None:
                continue
            device = answer.device_id
            if answer.nonce is not None:  # answered in step 3
                self._queue(self._challenges[c], device, answer.nonce, MAX_QUEUED_CHALLENGES)
            elif not answer.snapshot:  # re-sent in step 4
                self._queue(self._ranges[c], device, _RangeReply(answer.first, answer.first, answer.last),
                            MAX_QUEUED_RANGES)
            elif self._has_snapshot(c, device):
                self.gate.count("ALREADY_SENT")
            else:
                self._queue(self._snapshots[c], device, None, MAX_QUEUED_SNAPSHOTS)

    def _queue(self, pending: dict[str, Any], device_id: str, item: Any, limit: int) -> None:
        """Queue ``item`` for ``device_id`` (a door's newer one replaces its older one, in its place);
        a new door beyond ``limit`` is refused (OVERLOADED)."""
        if device_id not in pending and len(pending) >= limit:
            self.gate.count("OVERLOADED")
            return
        pending[device_id] = item

    def _range_slice(self, transport: Transport) -> None:
        """Re-send queued ranges for at most ``slice_s`` (at least one change set when one is due),
        doors taking turns: the journal's change sets on the door's reply topic, paid from the same
        byte budget as snapshots (``fleet.snapshot_mb_per_minute``), but only from the part of it
        above ``RANGE_RESERVE_SHARE`` (the rest is the snapshots'). With that part spent nothing
        is sent (OVER_BUDGET); one that runs out part-way stops after the change set that spent
        it, and the door, having made progress, asks for the rest."""
        deadline = self.monotonic() + self.slice_s
        reserve = self.reply_bytes.per_minute * RANGE_RESERVE_SHARE
        while True:
            due = [c for c in self.collections if self._ranges[c] and c not in self._restores]
            if not due:
                return
            c = due[self._range_turn % len(due)]
            self._range_turn += 1
            device, r = self._ranges[c].popitem(last=False)
            reply, done = self.topics[c].reply(device), False
            for entry in self.journal.entries(c, r.next, min(r.last, r.next + RANGE_PAGE - 1)) or [None]:
                if entry is None:  # nothing journaled there (cannot happen below the head): done
                    done = True
                    break
                if self.reply_bytes.left() <= reserve:
                    if r.next == r.first:
                        self.gate.count("OVER_BUDGET")
                        log.warning("range %s %d..%d for %s not sent: the reply budget is spent "
                                    "(fleet.snapshot_mb_per_minute)", c, r.first, r.last, device)
                    else:
                        log.warning("re-sending %s %d..%d to %s stopped after %d: the reply budget is spent "
                                    "(fleet.snapshot_mb_per_minute)", c, r.first, r.last, device, r.next - 1)
                    done = True
                    break
                if not transport.publish(reply, entry.message.decode(), qos=1):
                    log.warning("re-sending %s %d..%d to %s stopped at %d: broker unavailable",
                                c, r.first, r.last, device, entry.seq)
                    done = True
                    break
                self.reply_bytes.spend(len(entry.message))
                r.next = entry.seq + 1
                if r.next > r.last:
                    log.info("re-sent %s change sets %d..%d to %s", c, r.first, r.last, device)
                    done = True
                    break
                if self.monotonic() >= deadline:
                    break
            if not done:
                self._ranges[c].setdefault(device, r)  # its turn again after the others'
            if self.monotonic() >= deadline:
                return

    def _has_snapshot(self, c: str, device: str) -> bool:
        """``device`` is being sent a snapshot of ``c`` now, or was sent one less than
        SNAPSHOT_REPEAT_S ago with no Rebase journaled since (deltas from there reach it on
        ``changes`` and by range): another one would be the same data again. It went to the door's
        own reply topic, so a request naming a real door's id again and again (requests are
        unsigned) makes the desk send it nothing more; a door that lost chunks asks again and is
        served once the window has passed."""
        run = self._run
        if run is not None and run.collection == c and device in run.devices and device not in run.failed:
            return True
        served = self._served[c].get(device)
        return served is not None and served[0] >= self._last_rebase.get(c, 0) \
            and self.monotonic() - served[1] < SNAPSHOT_REPEAT_S

    def _follow(self, c: str, transport: Transport) -> None:
        with self.store.read_transaction():
            self._catch_up(c, self.store, self._feeds[c])
            self._flush(c, transport)

    def _catch_up(self, c: str, store: Store, feed: ChangeFeed) -> None:
        """Journal what the feed shows since the last journaled position (inside ``store``'s
        read transaction)."""
        last = self.journal.last(c)
        if last is None:
            coll = store.get_collection(c)
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
                version = batch.collection.face_model_version if batch.collection else last.face_model_version
                self._journal(c, version, batch.position, body_for_batch(batch))

    def _journal(self, c: str, version: str, position: int, body: object, count: int = 1) -> None:
        """Journal ``body`` (``count`` times: one transaction, each chained to the one before)."""
        payload = body.model_dump()  # type: ignore[attr-defined]
        entry = self.journal.append(c, version, position, lambda seq, previous: encode(
            self.key, c, version, seq, payload,
            prev=None if previous is None else envelope_payload_sha256(previous)), count=count)
        self._cursor[c] = position
        if payload["kind"] == "rebase":
            self._last_rebase[c] = entry.seq
        log.info("journaled %s seq %d (%s)", c, entry.seq, payload["kind"])

    def _flush(self, c: str, transport: Transport) -> None:
        for entry in self.journal.unpublished(c):
            if not transport.publish(self.topics[c].changes, entry.message.decode(), qos=1):
                return  # in order: retried from here on the next step
            self.journal.published(c, entry.seq)
            self.published[c] = entry.seq
            self._head_at.pop(c, None)  # a new head is due now

    # -- snapshots (step 4) ----------------------------------------------------------------
    def _snapshot_slice(self, transport: Transport) -> None:
        """Send snapshot chunks for at most ``slice_s`` (at least one publish when one is due)."""
        deadline = self.monotonic() + self.slice_s
        if self._run is None:
            self._run = self._start_run(transport)
        run = self._run
        while run is not None:
            if run.message is None or run.next_device >= len(run.devices):
                chunk = next(run.chunks, None)
                if chunk is None:
                    self._finish_run(run)
                    return
                run.message = encode(self.key, run.collection, run.model_version, run.seq,
                                     chunk.model_dump(), position=run.position).decode()
                run.next_device, run.total_chunks = 0, chunk.chunks
                run.sent_chunks += 1
                run.bytes += len(run.message)
            d = run.devices[run.next_device]
            run.next_device += 1
            if d not in run.failed:
                self.reply_bytes.spend(len(run.message))
                if not transport.publish(self.topics[run.collection].reply(d), run.message, qos=1):
                    run.failed.add(d)
            if self.monotonic() >= deadline:
                return

    def _start_run(self, transport: Transport) -> _SnapshotRun | None:
        """The next queued snapshot within the budget, its read transaction open; or None."""
        due = [c for c in self.collections if self._snapshots[c] and c not in self._restores]
        if not due:
            return None
        if self.snapshot_replies.left() < 1 or self.reply_bytes.left() <= 0:
            return None  # the budget refills: they wait (logged when they were left waiting)
        c = due[self._turn % len(due)]  # collections take turns; doors FIFO within one
        self._turn += 1
        if self._snap_store is None:
            self._snap_store = Store(self.store.path, group_access=self.store.group_access)
        snap = self._snap_store
        transaction = snap.read_transaction()
        transaction.__enter__()
        try:
            # the state this transaction sees must be the journal's newest seq: journal what it sees
            self._catch_up(c, snap, ChangeFeed(snap, c))
            self._flush(c, transport)
            last = self.journal.last(c)
            if last is None or self.published[c] != last.seq:
                transaction.__exit__(None, None, None)
                return None  # not everything is published yet (broker away): retried next step
            estimate = self._snapshot_size.get(c) or (snap.count("faces", c) + 1) * BYTES_PER_FACE
            devices: list[str] = []
            for d in list(self._snapshots[c]):
                if self._has_snapshot(c, d):  # served while it waited in the queue
                    del self._snapshots[c][d]
                    self.gate.count("ALREADY_SENT")
                    continue
                if self.snapshot_replies.left() < 1 or (
                        devices and self.reply_bytes.left() - estimate * len(devices) <= 0):
                    break
                self.snapshot_replies.spend(1)
                devices.append(d)
                del self._snapshots[c][d]
            deferred = len(self._snapshots[c])
            if deferred:
                log.info("snapshot of %s: %d door(s) wait for the snapshot budget (fleet.snapshot_replies_per_minute"
                         ", fleet.snapshot_mb_per_minute)", c, deferred)
            return _SnapshotRun(c, last.seq, last.face_model_version, devices,
                                snapshot_chunks(snap, c, last.feed_position), transaction,
                                envelope_payload_sha256(last.message))
        except BaseException:
            transaction.__exit__(None, None, None)
            raise

    def _finish_run(self, run: _SnapshotRun) -> None:
        self._end_run(requeue=False)
        self._snapshot_size[run.collection] = run.bytes
        sent = [d for d in run.devices if d not in run.failed]
        self.snapshots_sent += len(sent)
        now = self.monotonic()
        served = self._served[run.collection]
        for d in sent:
            served.pop(d, None)
            served[d] = (run.seq, now)
        while len(served) > MAX_TRACKED_DEVICES:  # oldest first: bounded whatever ids come
            del served[next(iter(served))]
        for d in run.failed:  # the broker went away: asked again when it is back
            self._snapshots[run.collection].setdefault(d, None)
        log.info("snapshot of %s at seq %d (%d chunks, %.1f MB) sent to %s", run.collection, run.seq,
                 run.total_chunks, run.bytes / 1e6, ", ".join(sent) or "nobody")

    def _end_run(self, *, requeue: bool) -> None:
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.transaction.__exit__(None, None, None)
        finally:
            if requeue:
                for d in run.devices:
                    self._snapshots[run.collection].setdefault(d, None)

    def _head(self, c: str, transport: Transport) -> None:
        seq = self.published[c]
        mono = self.monotonic()  # the heartbeat's rhythm: a wall clock stepped back stops no head
        if seq == 0 or mono - self._head_at.get(c, float("-inf")) < self.heartbeat_s:
            return
        if self._unpublished(c):
            return
        issued = self._issued_at(c, mono)
        if transport.publish(self.topics[c].head, self._signed_head(c, issued).decode(), qos=1, retain=True):
            self._head_at[c] = mono
            self._note_issued(c, issued, mono)

    def _answer_challenges(self, c: str, transport: Transport) -> None:
        """Answer the challenges queued in step 1: the head of now, with the door's nonce, on its
        reply topic. A door whose answer cannot be sent (broker away) challenges again."""
        pending = self._challenges[c]
        if not pending or self.published[c] == 0 or self._unpublished(c):
            pending.clear()  # the doors challenge again
            return
        mono = self.monotonic()
        issued, sent = self._issued_at(c, mono), 0
        while pending:
            device, nonce = pending.popitem(last=False)
            if not transport.publish(self.topics[c].reply(device), self._signed_head(c, issued, nonce).decode(), qos=1):
                log.warning("answering %d challenge(s) of %s stopped: broker unavailable", len(pending) + 1, c)
                pending.clear()
                break
            sent += 1
        if sent:
            self._note_issued(c, issued, mono)

    def _unpublished(self, c: str) -> bool:
        """A change set of ``c`` is journaled but not acknowledged by the broker (it is away, or a
        rogue one withholds the PUBACK of a revocation): no head (nor a challenge's answer) is
        signed until it is, since one would confirm the doors' older copy as up to date now (found
        in review: a withheld PUBACK kept every door fresh without the revocation for good). The
        doors go stale after max_staleness_s: fail closed."""
        last = self.journal.last(c)
        if last is None or last.seq <= self.published[c]:
            return False
        now = self.monotonic()
        if now - self._unpublished_logged.get(c, float("-inf")) >= 60:
            self._unpublished_logged[c] = now
            log.warning("%s: seq %d is journaled but not acknowledged by the broker (published through %d): "
                        "no head is issued until it is", c, last.seq, self.published[c])
        return True

    def _signed_head(self, c: str, issued: float, nonce: str | None = None) -> bytes:
        """The signed head of ``c`` now (the newest published seq), answering ``nonce`` if given."""
        last = self.journal.last(c)
        assert last is not None
        return encode_head(self.key, Head(collection_id=c, face_model_version=last.face_model_version,
                                          seq=self.published[c], issued_at=issued, nonce=nonce))

    def _note_issued(self, c: str, issued: float, mono: float) -> None:
        """A head issued at ``issued`` went out: later ones go on from it, in this run and the next."""
        self._issued[c] = (issued, mono)
        self.journal.note_head(c, issued, self.clock())  # a desk started again goes on from it

    def _issued_at(self, c: str, mono: float) -> float:
        """A head's ``issued_at``: the wall clock, but never less than the previous head's plus the
        time since on this process's monotonic clock. A door bounds when a head was issued by the
        desk's time between heads (held-back heads confirm nothing new); a desk wall clock stepped
        back while this runs would otherwise make every door judge each later head late by the
        step, stale for hours (found in review). Forward steps are the wall clock's."""
        last = self._issued.get(c)
        now = self.clock()
        if last is not None:
            return max(now, last[0] + (mono - last[1]))
        # started again: the last head this desk published (journaled), plus the wall-clock time
        # since -- heads that ran ahead of a wall clock stepped back must not fall back to it
        # (a wall clock stepped back while it was down: at least a little after it, never equal --
        # a door drops a head whose issued_at is not past the last one it accepted)
        before = self.journal.last_head(c)
        return now if before is None else max(now, before[0] + max(MIN_HEAD_STEP_S, now - before[1]))


def serve(settings: object, stop: threading.Event) -> Publisher:
    """Run the publisher of ``settings`` ([fleet] + [mqtt] + [store]) until ``stop`` is set.
    A missing key or collection list is a ConfigError naming the key (exit 78)."""
    from facelink.errors import ConfigError, FaceLinkError
    from facelink.mqtt.client import MqttClient

    from .acl import check_doors
    from .signing import load_private

    fleet, mqtt = settings.fleet, settings.mqtt  # type: ignore[attr-defined]
    if fleet.signing_key is None:
        raise ConfigError("fleet.signing_key: required to publish (create one with `facelink fleet keygen`)")
    if not fleet.publish:
        raise ConfigError("fleet.publish: name at least one collection to publish")
    try:  # only the listed doors are sent anything, each only its collections
        check_doors(fleet.doors, fleet.publish, [mqtt.username] if mqtt.username else [])
    except FaceLinkError as exc:
        raise ConfigError(exc.message) from exc
    key = load_private(fleet.signing_key)
    db = settings.store.database  # type: ignore[attr-defined]
    group = settings.store.group_access  # type: ignore[attr-defined]
    store = Store(db, group_access=group)
    journal = Journal(db, group_access=group)
    publisher = Publisher(store, journal, key, fleet.publish, mqtt.topic_prefix,
                          heartbeat_s=fleet.heartbeat_s, poll_interval_s=fleet.poll_interval_s,
                          request_burst=fleet.request_burst, request_interval_s=fleet.request_interval_s,
                          snapshot_replies_per_minute=fleet.snapshot_replies_per_minute,
                          snapshot_mb_per_minute=fleet.snapshot_mb_per_minute,
                          seen_doors_only=fleet.reply_to_seen_doors_only,
                          accept_shared_topic=fleet.accept_shared_request_topic, doors=fleet.doors)
    client = MqttClient(mqtt, client_id=fleet.client_id, subscriptions=publisher.subscriptions(),
                        on_message=publisher.on_message)
    try:
        publisher.run(client, stop)
    finally:
        client.stop()
        publisher.close()
        journal.close()
        store.close()
        log.info("stopped; sync requests refused: %s", publisher.gate.refused or "none")
    return publisher
