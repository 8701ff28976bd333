"""A rogue broker that holds heads back a little longer each time (under the per-head
slack, so no head ever looks late and the door never challenges) walks the door's anchor forward:
each head could be credited 1 s + 1 % later than the one before, and that slack compounds
from head to head. After an hour of heads held back by 1.25 s more each, the door credits a head
issued 150 s ago as issued now; a revocation then keeps the revoked user grantable for
max_staleness_s + 150 s. What is left (the 1 % rate slack, compounding) is bounded by
sync.challenge_every_s, on by default since 2026-12-07. Real door store, real Ed25519, the real
Follower."""

from __future__ import annotations

import pytest

from facelink.config.settings import SyncSettings
from facelink.device.matcher import UserIndex
from facelink.fleet.changeset import encode
from facelink.fleet.protocol import SyncRequest, UserPut

from .conftest import V, wait_for
from .test_follower import ASK, DOOR, Door, T, delta, desk_client, door, face, unit  # noqa: F401 - fixtures
from .test_head_arrival_time import Sent
from .test_held_back_heads import HEARTBEAT_S, I0, MAX_STALENESS_S, head

DEFAULT_CHALLENGE_EVERY_S = SyncSettings().challenge_every_s  # what a door gets unless its installer changes it


def challenges(sent: Sent) -> list[str]:
    """The nonces of the challenges the door published, in order."""
    return [r.nonce for r in (SyncRequest.decode(p.encode()) for _, p in sent.messages) if r.nonce is not None]


def _creeping_hold(door, keys, heads: int, more_each: float, *, answered: str = "none",  # noqa: F811
                   challenge_every_s: float = 0.0):
    """ann enrolled and confirmed; then ``heads`` heartbeats, each held back ``more_each`` s
    longer than the one before; the desk revokes ann just after the last one and the broker
    withholds everything from there. The broker drops the door's challenges (``answered``
    "none"), lets only those sent before the creep through ("first": the desk answered the door
    once, at its install), or all of them ("all": the desk answers each at once with its head of
    then, at seq 2 once it revoked ann). Returns the door and the door's time of the revocation
    (the desk's and the door's clocks keep the same time)."""
    from .test_freshness_challenge import answer

    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=MAX_STALENESS_S, challenge_every_s=challenge_every_s)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    t0 = d.clock.now
    revoked_at, spent = t0 + HEARTBEAT_S * heads + 1, 0

    def desk_answers() -> None:  # the desk's clock keeps time with the door's: I0 at t0
        nonlocal spent
        for nonce in challenges(sent)[spent:]:
            d.feed(answer(key, nonce, 1 if d.clock.now < revoked_at else 2, I0 + d.clock.now - t0), T.reply(DOOR))
        spent = len(challenges(sent))

    d.feed(head(key, 1, I0), T.head)
    if answered != "none":
        desk_answers()
    for k in range(1, heads + 1):  # issued at t0 + 30 k (desk I0 + 30 k), delivered later by k * more_each
        d.clock.now = t0 + HEARTBEAT_S * k + k * more_each
        d.feed(head(key, 1, I0 + HEARTBEAT_S * k), T.head)
        if answered == "all":
            desk_answers()
    return d, revoked_at


def test_a_creeping_hold_does_not_keep_a_revoked_user_grantable(door, keys):  # noqa: F811
    d, revoked_at = _creeping_hold(door, keys, heads=120, more_each=1.25)  # an hour: held 150 s at the end
    index = UserIndex(d.store, "staff", V)
    index.load()
    assert index.best(unit(1)).user_id == "ann"  # the copy still grants ann ...
    assert d.follower.confirmed_at <= revoked_at + 60, \
        f"confirmed {d.follower.confirmed_at - revoked_at:.0f} s after the revocation by heads issued before it"
    d.clock.now = max(d.clock.now, revoked_at + MAX_STALENESS_S + 60)  # ... so by now (+ the clocks' slack) stale
    assert d.follower.stale(), f"fresh {d.clock.now - revoked_at:.0f} s after the revocation " \
                               f"(confirmed {d.follower.confirmed_at - revoked_at:.0f} s after it)"


@pytest.mark.xfail(strict=True, reason="known weakness with sync.challenge_every_s = 0 (README, held-back heads): HEAD_RATE_SLACK (1 %) "
                                       "compounds along the chain of heads; only answered challenges re-anchor it")
def test_a_slower_creeping_hold_over_a_day_without_challenges(door, keys):  # noqa: F811
    d, revoked_at = _creeping_hold(door, keys, heads=2_880, more_each=0.29)  # a day: held ~835 s at the end
    assert d.follower.confirmed_at <= revoked_at + 60
    d.clock.now = max(d.clock.now, revoked_at + MAX_STALENESS_S + 60)
    assert d.follower.stale()


def test_with_the_default_settings_a_day_long_creep_leaves_the_revoked_user_refused(door, keys):  # noqa: F811
    """The same day-long creep with the door's default settings: the desk answered the door once,
    at its install; the broker then drops every challenge. The door is stale an hour after that
    answer, whatever the heads say (before 2026-12-07 the default was 0: the revoked user stayed
    grantable ~14 min past max_staleness_s)."""
    assert DEFAULT_CHALLENGE_EVERY_S == 3_600.0
    d, revoked_at = _creeping_hold(door, keys, heads=2_880, more_each=0.29, answered="first",
                                   challenge_every_s=DEFAULT_CHALLENGE_EVERY_S)
    assert d.follower.answered_at is not None  # it was answered, once
    d.clock.now = max(d.clock.now, revoked_at + MAX_STALENESS_S + 60)
    assert d.follower.stale() and "answered no challenge for" in d.follower.stale_reason()


def test_answered_challenges_keep_a_creeping_hold_from_gaining(door, keys):  # noqa: F811
    """A broker that lets the challenges through but creeps the heads gains nothing: each answer
    re-anchors the heads at the time its challenge was sent, so the door's confirmation stays with
    the desk's real time and the revoked user is refused max_staleness_s after the revocation."""
    d, revoked_at = _creeping_hold(door, keys, heads=2_880, more_each=0.29, answered="all",
                                   challenge_every_s=DEFAULT_CHALLENGE_EVERY_S)
    assert revoked_at - 60 <= d.follower.confirmed_at <= revoked_at + 60  # by answers until the revocation
    d.clock.now = max(d.clock.now, revoked_at + MAX_STALENESS_S + 60)
    assert d.follower.stale()


def test_a_slow_answers_doubt_wears_off(door, keys, desk_client, listeners):  # noqa: F811
    """After a slow answer (3 s), heads on time again wear its doubt off: a head then held back
    3 s is late again and draws a challenge (found in review: the doubt's wear-off was untested; kept
    for good, a broker could hold every later head back by the answer's round trip unchallenged)."""
    from .test_freshness_challenge import _confirmed, answer

    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    d.clock.now += 3
    d.feed(answer(keys[0], n1, 1, I0 + 203), T.reply(DOOR))
    issued = I0 + 203
    for _ in range(20):  # ten minutes of heads on time: the doubt is worn off
        d.clock.now += HEARTBEAT_S
        issued += HEARTBEAT_S
        d.feed(head(keys[0], 1, issued), T.head)
    assert d.follower.challenges_sent == 1
    d.clock.now += HEARTBEAT_S + 3  # the next one held back 3 s
    d.feed(head(keys[0], 1, issued + HEARTBEAT_S), T.head)
    assert wait_for(lambda: len(asks.nonces()) == 2, 30) and d.follower.challenges_sent == 2


def test_with_challenges_required_the_creep_is_bounded_by_their_period(door, keys):  # noqa: F811
    """sync.challenge_every_s: the copy is fresh only while the desk answered a challenge within
    that time. The broker of the day-long creep drops the challenges, so the door is stale an
    hour after its last answer (here: never answered), whatever the heads say: the revoked user
    is refused (ERROR STALE_COLLECTION with on_stale = deny)."""
    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=MAX_STALENESS_S, challenge_every_s=3_600.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    t0 = d.clock.now
    d.feed(head(key, 1, I0), T.head)
    assert d.follower.stale() and "challenges within sync.challenge_every_s" in d.follower.stale_reason()
    assert d.follower.challenges_sent == 1  # asked at once
    for k in range(1, 2_881):  # the day's creep, 0.29 s more each head
        d.clock.now = t0 + HEARTBEAT_S * k + k * 0.29
        d.feed(head(key, 1, I0 + HEARTBEAT_S * k), T.head)
    assert d.follower.stale()  # at the revocation


def test_with_challenges_required_answers_keep_the_door_fresh(door, keys, desk_client, listeners):  # noqa: F811
    """The desk answers: the door is fresh from the first answer, asks again from half the period
    on, stays fresh while answers come, and is stale once none came for the whole period."""
    from .test_freshness_challenge import Challenges, answer

    asks = Challenges(listeners([ASK], "request-listener"))
    d: Door = door(desk_client, max_staleness_s=MAX_STALENESS_S, challenge_every_s=600.0)
    d.feed(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(head(keys[0], 1, I0), T.head)
    assert d.follower.stale()
    n1 = asks.next(d, 0)
    d.feed(answer(keys[0], n1, 1, I0 + 0.5), T.reply(DOOR))
    assert not d.follower.stale()
    issued = I0 + 0.5
    for _ in range(10):  # 300 s of heads on time: fresh, nothing asked yet
        d.clock.now += HEARTBEAT_S
        issued += HEARTBEAT_S
        d.feed(head(keys[0], 1, issued), T.head)
        assert not d.follower.stale()
    assert d.follower.challenges_sent == 1
    d.clock.now += HEARTBEAT_S  # past half the period: the door asks
    issued += HEARTBEAT_S
    n2 = asks.next(d, 1)
    d.feed(answer(keys[0], n2, 1, issued), T.reply(DOOR))
    for _ in range(19):  # 570 s more of heads on time, no answer asked for is given
        d.clock.now += HEARTBEAT_S
        issued += HEARTBEAT_S
        d.feed(head(keys[0], 1, issued), T.head)
        assert not d.follower.stale()
    d.clock.now += HEARTBEAT_S + 5  # 605 s after the last answered challenge was sent
    d.feed(head(keys[0], 1, issued + HEARTBEAT_S + 5), T.head)
    assert d.follower.stale() and "answered no challenge for" in d.follower.stale_reason()
