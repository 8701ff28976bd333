"""A desk whose history went back (its database restored from an older copy) signs new change
sets under seqs its doors already applied. Those carry what the desk did since the restore — a
revocation among them — and every door refuses them as REPLAY; once the desk's seq is back at the
door's, its head named the door's seq and confirmed the door's copy of the *other* history, in
which the revoked user and her badge still open the door. Real door store, real Ed25519, the
real Follower (found in review 77)."""

from __future__ import annotations

from facelink.fleet.changeset import encode
from facelink.fleet.follower import Follower
from facelink.fleet.protocol import SnapshotChunk, UserPut

from .conftest import V
from .test_follower import DOOR, PREFIX, Door, T, delta, door, face  # noqa: F401 - fixtures
from .test_held_back_heads import I0, head

BADGE = "H10301:18:12345"


def _door_at_seq_2(door, keys) -> Door:  # noqa: F811
    key = keys[0]
    d: Door = door(max_staleness_s=300.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann", credential=BADGE)],
                                             faces_put=[face("11111111-1111-4111-8111-111111111111", "ann", 1)])))
    d.feed(encode(key, "staff", V, 2, delta(2, users_put=[UserPut(user_id="bob")])))
    d.feed(head(key, 2, I0), T.head)
    assert not d.follower.stale() and d.store.user_by_credential("staff", BADGE) == "ann"
    return d


def test_a_revocation_signed_under_a_seq_the_door_applied_leaves_it_stale(door, keys):  # noqa: F811
    key = keys[0]
    d = _door_at_seq_2(door, keys)
    # the desk's database is restored to seq 1; its operator revokes ann: signed as seq 2 again
    d.clock.now += 1
    d.feed(encode(key, "staff", V, 2, delta(2, users_deleted=["ann"])))
    assert d.follower.rejected.get("REPLAY") == 1 and d.store.user_exists("staff", "ann")
    d.clock.now += 1
    d.feed(head(key, 2, I0 + 2), T.head)  # the desk's head at its seq 2: not the door's seq 2
    assert d.follower.stale(), "a copy of another history was confirmed: the revoked badge opens the door"
    assert "diverged" in d.follower.stale_reason()
    # the desk goes on at seq 3: a delta of its history is not applied on top of the other one
    d.feed(encode(key, "staff", V, 3, delta(3, users_put=[UserPut(user_id="cat")])))
    d.feed(head(key, 3, I0 + 3), T.head)
    assert d.follower.stale() and d.follower.want_snapshot and not d.store.user_exists("staff", "cat")
    # so is a door started again on that store
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic)
    again.handle(T.head, head(key, 3, I0 + 4))
    assert again.stale() and again.want_snapshot
    # a snapshot of the desk past the door's seq replaces the copy: ann is gone, the door is fresh again
    snap = SnapshotChunk(snapshot_id="after", chunk=0, chunks=1, feed_position=30,
                         users_put=[UserPut(user_id="bob"), UserPut(user_id="cat")]).model_dump()
    d.feed(encode(key, "staff", V, 3, snap), T.reply(DOOR))
    assert d.follower.applied_seq == 3 and not d.store.user_exists("staff", "ann")
    assert d.store.user_by_credential("staff", BADGE) is None
    d.clock.now += 1
    d.feed(head(key, 3, I0 + 5), T.head)
    assert not d.follower.stale()


def test_a_head_behind_the_doors_seq_leaves_it_stale_until_a_snapshot(door, keys):  # noqa: F811
    """The desk restored to seq 1 and the door missed the sets it signed since (a door covered by a
    snapshot holds no hash to compare): its first head, behind the door, is the proof."""
    key = keys[0]
    d = _door_at_seq_2(door, keys)
    d.clock.now += 1
    d.feed(head(key, 1, I0 + 1), T.head)
    assert d.follower.rejected.get("HEAD_BEHIND") == 1 and d.follower.stale()
    d.feed(encode(key, "staff", V, 2, delta(2, users_deleted=["ann"])))  # (lost on the way, say)
    d.feed(head(key, 2, I0 + 2), T.head)
    assert d.follower.stale() and d.follower.want_snapshot
