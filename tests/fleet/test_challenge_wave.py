"""1,000 doors whose heads are late at the same moment (the feature's own case: a desk
started again with its clock stepped back; also every door that applies one large delta before
the head behind it) all challenge the desk within a second. Challenges spent the overall request
bucket of range and snapshot requests (burst request_burst * 20 = 100, then 20/s): 100 were
answered, the other 900 refused RATE_LIMITED (a WARNING each), and since every door retries on
the same back-off (5, 10, 20, 40, 60 s) they come back in waves of which the bucket, capped at
100, again answers 100: the last door was re-anchored 375 s later (stale, locked with
on_stale = deny, all that time), and range requests (a door that missed a revocation) were refused
with them. A challenge's answer is one signature and ~400 bytes to one listed door's own topic, at
most one queued per door (MAX_QUEUED_CHALLENGES): its own bucket, sized for the queue, answers the
whole site at once and leaves the range/snapshot bucket to ranges and snapshots.

The desk is its real Publisher (its store, journal, Ed25519 key and RequestGate with the service's
default limits); the doors are their requests on their own topics as the Follower sends them
(a random nonce, again on the Follower's back-off while unanswered)."""

from __future__ import annotations

import secrets

from facelink.fleet.follower import MAX_BACKOFF_S
from facelink.fleet.protocol import SyncRequest, decode_head

from .conftest import V
from .test_publisher import T, desk, own  # noqa: F401 - the desk fixture

DOORS = 1_000
RETRY_S = 5.0  # sync.request_retry_s default


class Replies:
    """The desk's transport: acknowledges everything, keeps what went to the doors' reply topics."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: str, **kw) -> bool:
        self.sent.append((topic, payload.encode()))
        return True


def test_a_thousand_doors_challenging_at_once_are_all_answered_at_once(desk, keys):  # noqa: F811
    wall, mono = [50_000.0], [0.0]
    d = desk(heartbeat_s=30.0, clock=lambda: wall[0], monotonic=lambda: mono[0])  # request limits: defaults
    d.store.insert_collection("staff", V)
    out = Replies()
    d.publisher.step(out)  # seq 1 and its head
    doors = [f"door-{i:04d}" for i in range(DOORS)]
    nonces: dict[str, set[str]] = {k: set() for k in doors}
    due = dict.fromkeys(doors, 0.0)  # the monotonic time of each door's next challenge
    backoff = dict.fromkeys(doors, RETRY_S)
    answered_at: dict[str, float] = {}
    t = 0.0
    while t <= 600 and len(answered_at) < DOORS:
        mono[0], wall[0] = t, 50_000.0 + t
        for k in doors:  # the doors whose challenge is due send it (each within the same second)
            if k not in answered_at and due[k] <= t:
                nonce = secrets.token_hex(16)
                nonces[k].add(nonce)
                d.publisher.on_message(own(k), SyncRequest(device_id=k, nonce=nonce).encode())
                due[k], backoff[k] = t + backoff[k], min(backoff[k] * 2, MAX_BACKOFF_S)
        seen = len(out.sent)
        d.publisher.step(out)
        for topic, payload in out.sent[seen:]:
            if topic != T.head and topic != T.changes:
                head = decode_head(keys[1], payload)
                k = topic.rsplit("/", 1)[1]
                assert head.nonce in nonces[k] and topic == T.reply(k)
                answered_at.setdefault(k, t)
        t += 1.0
    late = sorted(answered_at.values())
    assert len(answered_at) == DOORS, f"{DOORS - len(answered_at)} doors unanswered after 600 s"
    # the whole site re-anchored within a few of the desk's steps, not in waves over minutes
    assert late[-1] <= 10.0, (f"the last door answered {late[-1]:.0f} s after the first challenge "
                              f"(half of them by {late[DOORS // 2]:.0f} s); refused: {d.publisher.gate.refused}")
