"""When a door challenges the desk (found in review): after a slow answer, heads with ordinary
jitter draw none; after the desk was away, the door asks at once when heads come back. Real door
store, real Ed25519, the real Follower; the door's requests captured (no broker needed)."""

from __future__ import annotations

from facelink.fleet.changeset import encode
from facelink.fleet.protocol import SyncRequest, UserPut

from .conftest import V
from .test_follower import DOOR, Door, T, delta, door  # noqa: F401 - fixtures
from .test_freshness_challenge import answer
from .test_head_arrival_time import Sent
from .test_held_back_heads import HEARTBEAT_S, I0, MAX_STALENESS_S, head


def _nonces(sent: Sent) -> list[str]:
    return [r.nonce for r in (SyncRequest.decode(p.encode()) for _, p in sent.messages) if r.nonce is not None]


def _door(door, keys, **options) -> tuple[Door, Sent, float]:  # noqa: F811
    """ann enrolled, confirmed by a head issued at I0 as it arrived (door time t0)."""
    sent = Sent()
    d: Door = door(transport=sent, max_staleness_s=MAX_STALENESS_S, **options)
    d.feed(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    t0 = d.clock.now
    d.feed(head(keys[0], 1, I0), T.head)
    return d, sent, t0


def test_after_a_slow_answer_heads_jittering_half_a_second_draw_no_challenge(door, keys):  # noqa: F811
    """A 3 s answer (a loaded desk) leaves a doubt that wears off; meanwhile a head delivered 0.5 s
    later than the one before is ordinary jitter, not a hold. Once the slack was no longer credited
    to the anchor, the doubt still subtracted it: after a slow answer only 0.3 s of jitter
    (the rate slack) is tolerated, and every slow answer draws another challenge (with
    challenge_every_s 3600, a desk answering in 2-3 s and heads jittering up to 1 s: ~125
    challenges a day instead of 48 in simulation)."""
    d, sent, t0 = _door(door, keys)
    d.clock.now = t0 + 200  # CHALLENGE_AFTER of max_staleness_s: the door asks
    d.follower.tick()
    assert len(_nonces(sent)) == 1
    d.clock.now += 3
    d.feed(answer(keys[0], _nonces(sent)[0], 1, I0 + 203), T.reply(DOOR))  # issued as it left the desk
    start = d.clock.now
    for k, jitter in enumerate([0.0, 0.5, 0.5, 0.0, 0.8, 0.2], 1):
        d.clock.now = start + HEARTBEAT_S * k + jitter
        d.feed(head(keys[0], 1, I0 + 203 + HEARTBEAT_S * k), T.head)
        assert d.follower.challenges_sent == 1, f"head {k} (delivered {jitter} s late) drew a challenge"
    assert not d.follower.stale()


def test_a_door_is_fresh_soon_after_the_desk_comes_back(door, keys):  # noqa: F811
    """challenge_every_s: the desk is away for 15 minutes (no heads, no answers; the door's
    challenges back off to a minute); when it is back (heads on time again, challenges answered at
    once), the door must not stay locked for up to the whole back-off: on-time heads after a
    silence longer than the back-off let the door ask at once (one challenge per silence, not one
    per head: a broker that drops challenges still gets one every MAX_BACKOFF_S)."""
    d, sent, t0 = _door(door, keys, challenge_every_s=600.0)
    d.feed(answer(keys[0], _nonces(sent)[0], 1, I0 + 0.1), T.reply(DOOR))
    assert not d.follower.stale()
    for s in range(5, 900, 5):  # the desk is away from t0 + 1: heads stop, challenges go unanswered
        d.clock.now = t0 + s
        d.follower.tick()
    assert d.follower.stale()
    asked = len(_nonces(sent))
    back = d.clock.now + 1  # right after a challenge the door's back-off is a minute
    for k in range(1, 3):  # the desk's heads on time again; each challenge answered within 0.1 s
        d.clock.now = back + HEARTBEAT_S * (k - 1)
        d.feed(head(keys[0], 1, I0 + (d.clock.now - t0)), T.head)
        for n in _nonces(sent)[asked:]:
            d.feed(answer(keys[0], n, 1, I0 + (d.clock.now - t0)), T.reply(DOOR))
        asked = len(_nonces(sent))
        if k == 1:
            stale_after_first_head = d.follower.stale()
    assert not stale_after_first_head, "still stale with the desk back: waiting out the challenge back-off"
    assert not d.follower.stale()
