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
from .test_follower import DOOR, PREFIX, Door, T, delta, door  # noqa: F401 - fixtures
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
