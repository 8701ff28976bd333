"""The desk's last answer to a freshness challenge is kept across a door restart
(``sync.challenge_every_s``, on by default): a door restarted while the broker is down stays
fresh as long as its confirmation and its last answer allow, and not longer. Real door store,
real Ed25519, the real Follower."""

from __future__ import annotations

from facelink.fleet.changeset import encode
from facelink.fleet.follower import Follower
from facelink.fleet.protocol import UserPut

from .conftest import V
from .test_creeping_hold import challenges
from .test_follower import DOOR, PREFIX, Door, T, delta, door  # noqa: F401 - fixtures
from .test_freshness_challenge import answer
from .test_head_arrival_time import Sent
from .test_held_back_heads import I0, head

EVERY_S = 3_600.0


def _answered(door, keys, max_staleness_s: float) -> Door:  # noqa: F811
    """A door that applied seq 1 and whose first challenge the desk answered."""
    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=max_staleness_s, challenge_every_s=EVERY_S)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(head(key, 1, I0), T.head)
    assert d.follower.stale() and len(challenges(sent)) == 1  # not answered yet: asked at once
    d.clock.now += 0.2
    d.feed(answer(key, challenges(sent)[0], 1, I0 + 0.1), T.reply(DOOR))
    assert not d.follower.stale()
    return d


def _restart(d: Door, keys, max_staleness_s: float) -> Follower:
    """The door started again on the same store; nothing arrives (the broker is down)."""
    return Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic,
                    max_staleness_s=max_staleness_s, challenge_every_s=EVERY_S)


def test_a_door_restarted_while_the_broker_is_down_stays_fresh_on_its_last_answer(door, keys):  # noqa: F811
    d = _answered(door, keys, max_staleness_s=300.0)
    answered_at = d.follower.answered_at
    assert answered_at == d.clock.now - 0.2  # as of when its challenge was sent
    d.clock.now += 200
    again = _restart(d, keys, 300.0)
    assert not again.stale(), again.stale_reason()
    assert again.health()["challenge_answered_at"] == round(answered_at, 3)
    d.clock.now += 101  # the confirmation (as of the challenge) is now past max_staleness_s
    assert again.stale()


def test_an_answer_older_than_the_period_is_not_restored(door, keys):  # noqa: F811
    d = _answered(door, keys, max_staleness_s=1e6)  # the confirmation alone would still count
    d.clock.now += EVERY_S + 1
    again = _restart(d, keys, 1e6)
    assert again.stale() and "challenges within sync.challenge_every_s" in again.stale_reason()
    assert again.health()["challenge_answered_at"] is None

