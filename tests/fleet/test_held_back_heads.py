"""A signed head confirms the door's copy as of when the desk issued it, not as of when it
arrived (review 44). Heads the door never saw -- heartbeats queued at the broker while the door
was cut off, or recorded by anyone who can read the head topic and fed to a door whose cable was
moved to a rogue broker -- are all "newer than the last one accepted", and each one confirmed the
copy *now*: a door cut off before a revocation stayed fresh (and granted the revoked user) for
max_staleness_s after each held-back head, i.e. hours after the revocation, not max_staleness_s.
"""

from __future__ import annotations

from facelink.device.matcher import UserIndex
from facelink.fleet.changeset import encode
from facelink.fleet.follower import Follower
from facelink.fleet.protocol import Head, UserPut, encode_head

from .conftest import PREFIX, V
from .test_follower import DOOR, Door, T, delta, door, face, unit  # noqa: F401 - the door fixture

MAX_STALENESS_S = 300.0
HEARTBEAT_S = 30.0
I0 = 10_000.0  # the desk's clock when it issued the head that last confirmed the door


def head(key, seq: int, issued_at: float) -> bytes:
    return encode_head(key, Head(collection_id="staff", face_model_version=V, seq=seq, issued_at=issued_at))


def _door_cut_off_an_hour_before_a_revocation(door, keys):  # noqa: F811
    """ann enrolled (seq 1), the door confirmed by a head, then cut off from the desk. The desk
    keeps issuing heartbeats (seq 1) for an hour, then deletes ann (seq 2): the door gets neither."""
    key = keys[0]
    d: Door = door(max_staleness_s=MAX_STALENESS_S)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    d.feed(head(key, 1, I0), T.head)
    assert not d.follower.stale()
    held_back = [head(key, 1, I0 + HEARTBEAT_S * k) for k in range(1, 121)]  # the hour's heartbeats
    revoked_at = d.clock.now + 3_600 + 1  # door clock: ann is deleted at the desk (seq 2)
    return d, held_back, revoked_at


def test_heads_held_back_cannot_keep_a_revoked_user_grantable(door, keys):  # noqa: F811
    d, held_back, revoked_at = _door_cut_off_an_hour_before_a_revocation(door, keys)
    d.clock.now = revoked_at
    fresh_after = []
    for message in held_back:  # fed one every 250 s (a rogue broker; or a broker's queue, all at once)
        d.clock.now += 250
        d.feed(message, T.head)
        if not d.follower.stale():
            fresh_after.append(d.clock.now - revoked_at)
    index = UserIndex(d.store, "staff", V)
    index.load()
    assert index.best(unit(1)).user_id == "ann"  # the door's copy still grants ann ...
    # ... so it must be stale within max_staleness_s of the revocation (plus the clocks' slack)
    assert not [s for s in fresh_after if s > MAX_STALENESS_S + 60], \
        f"fresh {max(fresh_after):.0f} s after the revocation ({len(fresh_after)} times)"
    assert d.follower.stale()


def test_a_queued_hour_of_heartbeats_delivered_at_once_confirms_nothing_now(door, keys):  # noqa: F811
    d, held_back, revoked_at = _door_cut_off_an_hour_before_a_revocation(door, keys)
    d.clock.now = revoked_at + 7 * 3_600  # the door comes back 7 hours later; the queue is full of old heads
    for message in held_back:
        d.feed(message, T.head)
    assert d.follower.stale()
    assert "not confirmed for" in d.follower.health()["stale_reason"]


def test_nor_after_a_restart_of_the_door(door, keys):  # noqa: F811
    d, held_back, revoked_at = _door_cut_off_an_hour_before_a_revocation(door, keys)
    d.clock.now = revoked_at + 600  # powered off meanwhile
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic,
                     max_staleness_s=MAX_STALENESS_S)
    for message in held_back:
        again.handle(T.head, message)
    assert again.stale()


def test_heads_on_time_still_confirm_whatever_their_delay_jitter(door, keys):  # noqa: F811
    """What must not change: heartbeats that arrive (late or early by seconds) keep the door fresh
    for days; a desk clock running 0.5% slow does too."""
    key = keys[0]
    d: Door = door(max_staleness_s=MAX_STALENESS_S)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    start = d.clock.now
    for k in range(3 * 2_880):  # three days of heartbeats
        d.clock.now = start + HEARTBEAT_S * k + (7.0 if k % 5 == 0 else 0.2)  # every 5th one 7 s late
        d.feed(head(key, 1, I0 + HEARTBEAT_S * k * 0.995), T.head)
        assert not d.follower.stale(), k
    d.clock.now += MAX_STALENESS_S - 40
    assert not d.follower.stale()
