"""A door marks its copy DIVERGED (persisted, stale until a snapshot of the desk past its seq,
so with on_stale = "deny" everyone is refused until the desk journals past it) only on proof that
the desk's history went back -- never on what a broker can do without the desk's key (found in
review 78): re-spacing a change set's envelope the door already applied (the signature covers
the payload, not the envelope), or holding back a head, or a challenge's answer, until the door
applied the next change set. Real door store, real Ed25519, the real Follower; the door's
requests captured (no broker needed)."""

from __future__ import annotations

import json

from facelink.fleet.changeset import encode
from facelink.fleet.follower import Follower
from facelink.fleet.protocol import UserPut

from .conftest import V
from .test_challenge_timing import _nonces
from .test_follower import DOOR, PREFIX, Door, T, delta, door  # noqa: F401 - fixtures
from .test_freshness_challenge import answer
from .test_head_arrival_time import Sent
from .test_held_back_heads import I0, head


def _door_at_seq_2(door, keys, sent=None) -> Door:  # noqa: F811
    key = keys[0]
    d: Door = door(transport=sent, max_staleness_s=300.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(head(key, 1, I0), T.head)
    d.clock.now += 1
    d.feed(encode(key, "staff", V, 2, delta(2, users_put=[UserPut(user_id="bob")])))
    d.feed(head(key, 2, I0 + 1), T.head)
    assert not d.follower.stale()
    return d


def test_a_change_set_re_spaced_by_the_broker_is_a_duplicate_not_a_divergence(door, keys):  # noqa: F811
    d = _door_at_seq_2(door, keys)
    genuine = encode(keys[0], "staff", V, 2, delta(2, users_put=[UserPut(user_id="bob")]))
    envelope = json.loads(genuine)
    for altered in (json.dumps(envelope).encode(),  # ", " and ": ": other bytes, the same signed payload
                    b" " + genuine + b"\n",
                    json.dumps({"signature": envelope["signature"], "payload": envelope["payload"]}).encode()):
        assert altered != genuine
        d.feed(altered)
    assert d.follower.diverged is None and "DIVERGED" not in d.follower.rejected
    assert not d.follower.stale() and d.follower.duplicates == 3
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic)
    assert again.diverged is None  # nothing persisted


def test_a_held_back_head_below_the_doors_seq_is_not_a_divergence(door, keys):  # noqa: F811
    """The desk issued head(2) at I0+2, then journaled seq 3; a broker holds that head back until
    the door applied seq 3. It is no proof: the door asks the desk (a challenge) instead, and the
    desk's answer at seq 3 settles it; nothing is persisted meanwhile."""
    key, sent = keys[0], Sent()
    d = _door_at_seq_2(door, keys, sent)
    d.clock.now += 1
    d.feed(encode(key, "staff", V, 3, delta(3, users_put=[UserPut(user_id="cat")])))
    d.feed(head(key, 2, I0 + 2), T.head)  # issued before seq 3 was published, delivered after
    assert d.follower.diverged is None
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic)
    assert again.diverged is None, "a held-back head left the door diverged for good (a site locked out)"
    assert _nonces(sent), "the door asks the desk itself"
    d.clock.now += 1
    d.feed(answer(key, _nonces(sent)[-1], 3, I0 + 4), T.reply(DOOR))
    assert not d.follower.stale() and d.follower.diverged is None


def test_a_late_answer_to_a_challenge_sent_before_the_last_apply_is_not_a_divergence(door, keys):  # noqa: F811
    key, sent = keys[0], Sent()
    d = _door_at_seq_2(door, keys, sent)
    d.clock.now += 200  # CHALLENGE_AFTER of max_staleness_s: the door asks
    d.follower.tick()
    nonce = _nonces(sent)[-1]
    # the desk answers at seq 2, then journals seq 3; the door gets seq 3 first
    d.feed(encode(key, "staff", V, 3, delta(3, users_put=[UserPut(user_id="cat")])))
    d.feed(answer(key, nonce, 2, I0 + 200), T.reply(DOOR))
    assert d.follower.diverged is None
    d.clock.now += 1
    d.follower.tick()
    d.feed(answer(key, _nonces(sent)[-1], 3, I0 + 202), T.reply(DOOR))
    assert not d.follower.stale() and d.follower.diverged is None


def test_an_answer_below_the_doors_seq_to_a_challenge_sent_after_it_is_a_divergence(door, keys):  # noqa: F811
    """The desk restored to seq 1: a head below the door's seq makes it stale and ask; the desk's
    answer to that challenge, signed after the door applied seq 2, is the proof."""
    key, sent = keys[0], Sent()
    d = _door_at_seq_2(door, keys, sent)
    d.clock.now += 1
    d.feed(head(key, 1, I0 + 2), T.head)
    assert d.follower.stale() and d.follower.rejected.get("HEAD_BEHIND") == 1
    d.clock.now += 1
    d.feed(answer(key, _nonces(sent)[-1], 1, I0 + 3), T.reply(DOOR))
    assert d.follower.diverged == 2 and d.follower.stale()
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic)
    assert again.diverged == 2 and again.stale()
