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



def test_after_the_wall_clock_was_set_back_the_newest_answer_is_the_one_kept(door, keys):  # noqa: F811
    """The wall clock ran 3,000 s ahead at the first answer and NTP then set it right; the desk
    answers again half an hour later, then the broker drops every challenge. Restarted, the door
    must count from that newest answer, not from the first one's wall-clock time (found in review:
    the newer answer was persisted only once its wall-clock time passed the older one's, so the
    restart restored the older, ahead-of-time record: fresh ~1,200 s past the period)."""
    d = _answered(door, keys, max_staleness_s=86_400.0)
    first = d.clock.monotonic() - 0.2  # when the first answered challenge was sent
    d.clock.step_wall(-3_000)  # NTP corrects a clock that ran ahead
    d.clock.now += 1_800.5  # past half the period: the door asks again; the desk answers at once
    d.follower.tick()
    d.clock.now += 0.2
    d.feed(answer(keys[0], challenges(d.follower.transport)[-1], 1, I0 + 1_800.7), T.reply(DOOR))
    newest = d.clock.monotonic() - 0.2
    assert newest > first and not d.follower.stale()
    d.clock.now = d.clock.now + (first + 3_400 - d.clock.monotonic())  # the broker now drops every challenge
    again = _restart(d, keys, 86_400.0)
    assert not again.stale(), again.stale_reason()  # the newest answer is 1,600 s old
    d.clock.now += (newest + EVERY_S + 1) - d.clock.monotonic()  # the period after the newest answer
    assert d.follower.stale()  # the door that never restarted
    assert again.stale(), "a restart must not buy time past the period after the newest answer"


def test_a_damaged_or_future_record_of_the_last_answer_is_not_restored(door, keys):  # noqa: F811
    """Fail closed on whatever the meta row holds: NaN, infinities, text, a list, or a time ahead
    of the wall clock (set back while the door was off) restore nothing."""
    d = _answered(door, keys, max_staleness_s=300.0)
    d.clock.now += 10
    key = "sync_challenge_answered:staff"
    for value in ("NaN", "Infinity", "-Infinity", '"soon"', "[1]", "{}", "null", str(d.clock.now + 5)):
        with d.store.transaction() as c:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))
        again = _restart(d, keys, 300.0)
        assert again.stale() and again.health()["challenge_answered_at"] is None, value


def test_an_answer_behind_the_doors_copy_is_not_kept(door, keys):  # noqa: F811
    """An answer naming a seq below the door's (HEAD_BEHIND: a desk restored from an old backup)
    counts for nothing, in memory or in the store."""
    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=300.0, challenge_every_s=EVERY_S)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(encode(key, "staff", V, 2, delta(2, users_put=[UserPut(user_id="bob")])))
    d.feed(head(key, 2, I0), T.head)
    d.clock.now += 0.2
    d.feed(answer(key, challenges(sent)[0], 1, I0 + 0.1), T.reply(DOOR))
    assert d.follower.rejected.get("HEAD_BEHIND") == 1
    assert d.follower.stale() and d.follower.answered_at is None
    assert _restart(d, keys, 300.0).health()["challenge_answered_at"] is None
