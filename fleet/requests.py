"""The desk's gate for sync requests: any MQTT client that can publish can send one, so each is
validated, rate-limited per device (and overall) and bounded before anything is sent.

A request only ever makes the desk re-send what it already signed (journal bytes) or a signed
snapshot to ``reply/<device>``: nothing in it can change a door. :meth:`RequestGate.decide` says
what to send; every refusal is logged and counted by reason in :attr:`RequestGate.refused`.

The ``device_id`` in a request is whatever its sender wrote (requests are unsigned and MQTT does
not tell the desk who published one), so the per-device limit alone cannot stop one client that
invents ids. The desk therefore also (a) answers only doors it has seen publish on their own
status/health topics, which the broker's ACL ties to the door's username (``known``, see
``fleet.reply_to_seen_doors_only``), and (b) spends at most a global :class:`Budget` of snapshot
replies and bytes per minute (``fleet.snapshot_replies_per_minute``,
``fleet.snapshot_mb_per_minute``; the publisher defers what is over it).

A door asks on its own topic, ``<prefix>/<device_id>/sync/<C>/request``, which the same ACL lets
only that door's user publish: there the topic says who sent it (``sender``). A request on it that
names another device is refused (``DEVICE_MISMATCH``) before it touches any limit, so one door
cannot spend another's. Doors not yet upgraded still ask on the shared
``<prefix>/collections/<C>/request`` (while ``fleet.accept_shared_request_topic``), where the
payload's id is all there is; once a door has asked on its own topic (remembered in memory, for at
most :data:`MAX_TRACKED_DEVICES` doors), a shared-topic request naming it is refused
(``USE_DEVICE_TOPIC``), again before any limit.

A freshness challenge (a request with a ``nonce``) is answered with a head carrying the nonce on
the door's reply topic, after the same checks and within the same per-device limit (overall, its
own bucket: :data:`CHALLENGE_BURST`); it is answered only on
the door's own request topic (on the shared one, where anyone may name any door, it is refused:
``CHALLENGE_ON_SHARED_TOPIC``, before any limit; doors that challenge ask on their own topic).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from .protocol import MAX_REQUEST_RANGE, SyncMessageRejected, SyncRequest

log = logging.getLogger(__name__)

MAX_TRACKED_DEVICES = 10_000  # rate-limit state kept for this many device ids (least recent dropped)
# Challenges have their own overall bucket, sized for a whole site challenging at once (a desk
# started again with its clock stepped back; one large delta delaying every door's head): each
# answer is one signature and ~400 bytes, at most one queued per door (the publisher's
# MAX_QUEUED_CHALLENGES). In the range/snapshot bucket (burst 100) 1,000 doors retrying on the same
# back-off were answered 100 per wave, the last after ~6 minutes, and starved range requests.
CHALLENGE_BURST = 1_000


@dataclass
class _Bucket:
    tokens: float
    at: float

    def refill(self, now: float, capacity: float, per_second: float) -> float:
        """Add what accrued since the last look (at most ``capacity`` held); the tokens now."""
        self.tokens = min(capacity, self.tokens + (now - self.at) * per_second)
        self.at = now
        return self.tokens


class RateLimit:
    """Token buckets by key: ``burst`` at once, then one more per ``interval_s``."""

    def __init__(self, burst: int, interval_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_TRACKED_DEVICES) -> None:
        self.burst, self.interval_s, self.clock, self.max_keys = burst, interval_s, clock, max_keys
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def allow(self, key: str) -> bool:
        now = self.clock()
        b = self._buckets.pop(key, None) or _Bucket(float(self.burst), now)
        b.refill(now, float(self.burst), 1.0 / self.interval_s)
        self._buckets[key] = b
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True


class Budget:
    """A global allowance refilled continuously at ``per_minute`` per minute (at most that much
    banked). :meth:`spend` may overdraw it (a snapshot already under way is finished); nothing
    new starts until it is positive again."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute, self.clock = float(per_minute), clock
        self._bucket = _Bucket(self.per_minute, clock())

    def left(self) -> float:
        return self._bucket.refill(self.clock(), self.per_minute, self.per_minute / 60.0)

    def spend(self, amount: float) -> None:
        self.left()
        self._bucket.tokens -= amount


@dataclass(frozen=True)
class Answer:
    """What to send to ``device_id``: the journal's ``first..last``, (``snapshot``) a snapshot, or
    (``nonce``) a head answering that challenge."""

    device_id: str
    snapshot: bool
    first: int = 0
    last: int = 0
    nonce: str | None = None


class RequestGate:
    def __init__(self, burst: int, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_device = RateLimit(burst, interval_s, clock)
        self.overall = RateLimit(burst * 20, interval_s / 20, clock)
        self.overall_challenges = RateLimit(max(burst * 20, CHALLENGE_BURST), interval_s / 20, clock)
        self.refused: dict[str, int] = {}
        self._own_topic: OrderedDict[str, None] = OrderedDict()  # doors seen asking on their own topic

    def uses_own_topic(self, device_id: str) -> bool:
        """``device_id`` asked on its own request topic since this desk started."""
        return device_id in self._own_topic

    def _note_own_topic(self, device_id: str) -> None:
        if device_id not in self._own_topic:
            log.info("device %r asks on its own request topic: requests naming it on the shared topic "
                     "are refused from now on", device_id)
        self._own_topic.pop(device_id, None)
        self._own_topic[device_id] = None
        while len(self._own_topic) > MAX_TRACKED_DEVICES:
            self._own_topic.popitem(last=False)

    def count(self, reason: str) -> None:
        """One request refused for ``reason`` (without a log line: the caller's own refusals)."""
        self.refused[reason] = self.refused.get(reason, 0) + 1

    def _refuse(self, reason: str, collection_id: str, detail: str) -> None:
        self.count(reason)
        log.warning("sync request for %s refused (%s): %s [%d %s so far]", collection_id, reason,
                    detail, self.refused[reason], reason)

    def decide(self, collection_id: str, message: bytes, head_seq: int,
               known: Callable[[str], bool] | None = None, sender: str | None = None,
               listed: Callable[[str], bool] | None = None) -> Answer | None:
        """The answer to one request given the desk's newest published seq, or None (refused,
        counted, logged; or nothing to send). ``listed``: whether a device id is a door the desk
        serves this collection to (``fleet.doors``; None: any); another is refused (UNLISTED_DEVICE).
        ``known``: whether a device id was seen as a door (None: any id is answered); an unknown
        one is refused (UNKNOWN_DEVICE). Both before it can use up the rate limits. ``sender``: the device id of the door's own request topic it came on
        (None: the shared topic); a request naming another id is refused (DEVICE_MISMATCH), and
        one on the shared topic naming a door that asked on its own topic is refused
        (USE_DEVICE_TOPIC), as is a challenge there (CHALLENGE_ON_SHARED_TOPIC), all before any
        rate limit. A challenge within the limits is answered (``Answer.nonce``)."""
        try:
            req = SyncRequest.decode(message)
        except SyncMessageRejected as exc:
            self._refuse(exc.reason, collection_id, str(exc))
            return None
        if req.to_seq is not None and req.to_seq < req.from_seq:
            self._refuse("MALFORMED", collection_id, f"to_seq {req.to_seq} before from_seq {req.from_seq}")
            return None
        if sender is not None and req.device_id != sender:
            self._refuse("DEVICE_MISMATCH", collection_id, f"a request on {sender!r}'s own topic names "
                                                           f"{req.device_id!r}: not answered")
            return None
        if sender is None and req.device_id in self._own_topic:
            self._refuse("USE_DEVICE_TOPIC", collection_id, f"{req.device_id!r} asks on its own topic: a request "
                                                            "naming it on the shared topic is not answered")
            return None
        if sender is None and req.nonce is not None:
            self._refuse("CHALLENGE_ON_SHARED_TOPIC", collection_id, f"a challenge naming {req.device_id!r} on the "
                                                                     "shared topic: not answered")
            return None
        if listed is not None and not listed(req.device_id):
            self._refuse("UNLISTED_DEVICE", collection_id, f"{req.device_id!r} is not listed for {collection_id} "
                                                           "in fleet.doors: not answered")
            return None
        if known is not None and not known(req.device_id):
            self._refuse("UNKNOWN_DEVICE", collection_id, f"{req.device_id!r} was never seen on its status or "
                                                          "health topic: not answered")
            return None
        if sender is not None:
            self._note_own_topic(sender)
        if not self.per_device.allow(req.device_id):
            self._refuse("RATE_LIMITED", collection_id, f"device {req.device_id!r} asks too often")
            return None
        if not (self.overall_challenges if req.nonce is not None else self.overall).allow("*"):
            self._refuse("RATE_LIMITED", collection_id, "too many requests from all devices")
            return None
        if head_seq == 0:
            self._refuse("NOTHING_PUBLISHED", collection_id, f"asked by {req.device_id!r}")
            return None
        if req.nonce is not None:
            return Answer(req.device_id, False, nonce=req.nonce)
        if req.snapshot:
            return Answer(req.device_id, True)
        last = min(req.to_seq or head_seq, head_seq)
        if req.from_seq > last:
            # a door that applied more than the desk published: this desk's history went back?
            # Unsigned: said in the log only; a head signed by the desk holds the collection
            # (fleet/publisher.py), one rogue client must not stop the desk.
            ahead = (f" -- it claims to have applied seq {req.from_seq - 1}, beyond this desk's head: if the "
                     "desk database was restored, see `facelink fleet status`") if req.from_seq > head_seq + 1 else ""
            self._refuse("BEYOND_HEAD", collection_id, f"{req.device_id!r} asks from {req.from_seq}, "
                                                       f"head is {head_seq}{ahead}")
            return None
        if last - req.from_seq + 1 > MAX_REQUEST_RANGE:
            log.info("sync request from %r for %d change sets of %s: a snapshot instead",
                     req.device_id, last - req.from_seq + 1, collection_id)
            return Answer(req.device_id, True)
        return Answer(req.device_id, False, req.from_seq, last)
