"""The freshness challenge: a door that cannot confirm its copy by an on-time head sends the desk a
random nonce on its own request topic; the desk's signed head carrying it (on ``reply/<door>``)
confirms the copy as of when the nonce was sent, whatever any clock says. What it must not open:
a recorded answer cannot answer a new challenge, an answer held back confirms only as of its
challenge, a nonce the door never sent (or no longer holds) confirms nothing, and held-back heads
still keep a door whose challenges nobody answers (a rogue broker; an older desk) stale. Real
door store, real Ed25519, the door's requests through a real mosquitto; the desk's side is its
real Publisher."""

from __future__ import annotations

import json
import secrets

from facelink.fleet.changeset import encode
from facelink.fleet.follower import MAX_CHALLENGES, UNANSWERED_WARN
from facelink.fleet.protocol import Head, SyncRequest, UserPut, decode_head, encode_head
from facelink.fleet.signing import generate_keypair, load_private

from .conftest import V, wait_for
from .test_follower import ASK, DOOR, Door, T, delta, desk_client, door  # noqa: F401 - fixtures
from .test_held_back_heads import HEARTBEAT_S, MAX_STALENESS_S, head
from .test_publisher import desk, own  # noqa: F401 - the desk fixture

I0 = 10_000.0  # the desk's clock at the head that confirmed the door


def answer(key, nonce: str, seq: int, issued_at: float) -> bytes:
    """The desk's signed head answering ``nonce``."""
    return encode_head(key, Head(collection_id="staff", face_model_version=V, seq=seq, issued_at=issued_at,
                                 nonce=nonce))


class Challenges:
    """The door's requests as the broker delivered them; the nonces of its challenges, in order."""

    def __init__(self, listener) -> None:
        self.listener = listener

    def nonces(self) -> list[str]:
        return [r.nonce for r in map(SyncRequest.decode, self.listener.on(ASK)) if r.nonce is not None]

    def next(self, d: Door, seen: int) -> str:
        """Tick the door and return the nonce of the challenge it sends (the ``seen + 1``-th)."""
        d.follower.tick()
        assert wait_for(lambda: len(self.nonces()) > seen, 30), "the door sent no challenge"
        return self.nonces()[seen]


def _confirmed(door, keys, desk_client, listeners) -> tuple[Door, Challenges]:  # noqa: F811
    asks = Challenges(listeners([ASK], "request-listener"))
    d: Door = door(desk_client, max_staleness_s=MAX_STALENESS_S)
    d.feed(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(head(keys[0], 1, I0), T.head)
    assert not d.follower.stale() and asks.nonces() == []
    return d, asks


def test_an_answer_confirms_the_copy_as_of_its_challenge_and_re_anchors_the_heads(door, keys, desk_client,  # noqa: F811
                                                                                  listeners):
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200  # no head for 200 s: stale at 300, so the door asks now (past half of it)
    n1 = asks.next(d, 0)
    sent = d.clock.now
    d.clock.now += 250  # the answer comes late (held back by a broker): it confirms as of the challenge
    d.feed(answer(keys[0], n1, 1, I0 + 205), T.reply(DOOR))
    assert not d.follower.stale() and d.follower.rejected == {}
    assert d.follower.confirmed_at == sent  # not when it arrived
    d.clock.now += 51  # 301 s after the challenge
    assert d.follower.stale()
    # the heads after it are bounded from the answer: issued_at I0 + 205 at the challenge at the latest
    d.feed(head(keys[0], 1, I0 + 205 + 310), T.head)
    assert not d.follower.stale()
    assert d.follower.confirmed_at <= sent + 310 * 1.01 + 1


def test_an_answer_held_back_for_an_hour_confirms_nothing_now(door, keys, desk_client, listeners):  # noqa: F811
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    d.clock.now += 3_600  # a rogue broker keeps the desk's answer for an hour
    d.feed(answer(keys[0], n1, 1, I0 + 200), T.reply(DOOR))
    assert d.follower.stale() and "not confirmed for 3600 s" in d.follower.health()["stale_reason"]


def test_a_recorded_answer_cannot_answer_a_new_challenge(door, keys, desk_client, listeners):  # noqa: F811
    """A rogue broker that recorded the desk's answer to one challenge (and every head) cannot
    make a door cut off from the desk fresh again: the nonce is spent, and nothing the desk signed
    earlier carries the new one."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    recorded = answer(keys[0], n1, 1, I0 + 200)
    d.feed(recorded, T.reply(DOOR))
    assert not d.follower.stale()
    d.feed(recorded, T.reply(DOOR))  # its re-delivery: nothing, no alarm
    assert d.follower.rejected == {"UNKNOWN_NONCE": 1} and d.alarms == []

    d.clock.now += 3_600  # cut off for an hour; the desk revoked ann meanwhile (seq 2): the door got nothing
    assert d.follower.stale()
    n2 = asks.next(d, 1)
    assert n2 != n1
    d.feed(recorded, T.reply(DOOR))  # the recorded answer, replayed
    forged = json.loads(recorded)
    forged["payload"] = forged["payload"].replace(n1, n2)  # the old answer made to name the new nonce
    d.feed(json.dumps(forged).encode(), T.reply(DOOR))
    generate_keypair(d.store.path.parent / "evil.key", d.store.path.parent / "evil.pub")
    d.feed(answer(load_private(d.store.path.parent / "evil.key"), n2, 1, I0 + 3_800), T.reply(DOOR))
    d.feed(head(keys[0], 1, I0), T.head)  # and the recorded heads
    d.feed(head(keys[0], 1, I0 + HEARTBEAT_S), T.head)
    assert d.follower.stale()
    assert d.follower.rejected == {"UNKNOWN_NONCE": 2, "BAD_SIGNATURE": 1, "UNKNOWN_KEY": 1}
    # the desk's own answer to n2 names seq 2: the door is behind, not confirmed, and asks for it
    d.feed(answer(keys[0], n2, 2, I0 + 3_800), T.reply(DOOR))
    assert d.follower.stale() and d.follower.health()["waiting_for"] == "range"
    assert wait_for(lambda: [r for r in map(SyncRequest.decode, asks.listener.on(ASK))
                             if r.nonce is None and r.from_seq == 2], 30)


def test_heads_from_before_the_desk_clock_went_back_cannot_ride_the_answers_anchor(door, keys, desk_client,  # noqa: F811
                                                                                    listeners):
    """A desk whose clock went back answers with an issued_at below heads the door accepted. The
    answer re-anchors the heads after it, but heads signed before the step (recorded by a rogue
    broker) claim to be later than the answer: they must confirm nothing (the door keeps the newest
    issued_at it accepted), or an hour-old head would count as issued up to the step after the
    challenge."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    recorded = []
    for k in range(1, 21):  # ten minutes of heads on time, recorded by a rogue broker
        d.clock.now += HEARTBEAT_S
        recorded.append(head(keys[0], 1, I0 + HEARTBEAT_S * k))
        d.feed(recorded[-1], T.head)
    assert not d.follower.stale() and asks.nonces() == []
    d.clock.now += HEARTBEAT_S
    d.feed(head(keys[0], 1, I0 + HEARTBEAT_S), T.head)  # the desk, started again 10 minutes back
    nonce = asks.next(d, 0)  # older than the last head: the door asks
    d.feed(answer(keys[0], nonce, 1, I0 + HEARTBEAT_S), T.reply(DOOR))
    assert not d.follower.stale()
    d.clock.now += MAX_STALENESS_S + 1  # cut off from the desk now
    for message in recorded:
        d.feed(message, T.head)
    assert d.follower.stale()


def test_a_nonce_the_door_never_sent_confirms_nothing(door, keys, desk_client, listeners):  # noqa: F811
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += MAX_STALENESS_S + 1
    assert d.follower.stale()
    d.feed(answer(keys[0], secrets.token_hex(16), 1, I0 + 400), T.reply(DOOR))  # signed, but not asked for
    assert d.follower.stale() and d.follower.rejected == {"UNKNOWN_NONCE": 1}
    # heads with a nonce come on the door's reply topic only, and only those come there
    nonces = [asks.next(d, 0)]
    d.feed(answer(keys[0], nonces[0], 1, I0 + 400), T.head)
    d.feed(head(keys[0], 1, I0 - 1), T.reply(DOOR))
    assert d.follower.stale() and d.follower.rejected == {"UNKNOWN_NONCE": 1, "MALFORMED": 2}
    assert [a["topic"] for a in d.alarms] == [T.head, T.reply(DOOR)]
    # only the newest MAX_CHALLENGES challenges are kept: an answer to an older one confirms nothing
    for _ in range(MAX_CHALLENGES):
        d.clock.now += 61  # past the back-off
        nonces.append(asks.next(d, len(nonces)))
    d.feed(answer(keys[0], nonces[0], 1, I0 + 600), T.reply(DOOR))
    assert d.follower.stale() and d.follower.rejected["UNKNOWN_NONCE"] == 2
    d.feed(answer(keys[0], nonces[1], 1, I0 + 600), T.reply(DOOR))  # the oldest one kept: as of its sending
    assert d.follower.confirmed_at == d.clock.now - 61 * (MAX_CHALLENGES - 1)
    assert not d.follower.stale()


def test_held_back_heads_keep_a_door_stale_when_its_challenges_go_unanswered(door, keys, desk_client, listeners,  # noqa: F811
                                                                             caplog):
    """The held-back-head case of test_held_back_heads.py with the door challenging: a rogue broker
    (or a desk older than the challenge, which refuses it) answers none, and the hour of heads it
    held back still leaves the door stale within max_staleness_s of the revocation. The door's
    challenges back off like its requests, and it says once that they go unanswered."""
    caplog.set_level("INFO", logger="facelink.fleet.follower")
    d, asks = _confirmed(door, keys, desk_client, listeners)
    held_back = [head(keys[0], 1, I0 + HEARTBEAT_S * k) for k in range(1, 121)]  # the hour's heartbeats
    revoked_at = d.clock.now + 3_600 + 1  # ann deleted at the desk (seq 2): the door never gets it
    d.clock.now = revoked_at
    fresh_after = []
    for message in held_back:  # fed one every 250 s, each followed by the door's tick
        d.clock.now += 250
        d.feed(message, T.head)
        if not d.follower.stale():
            fresh_after.append(d.clock.now - revoked_at)
    assert not [s for s in fresh_after if s > MAX_STALENESS_S + 60], f"fresh {max(fresh_after):.0f} s after"
    assert d.follower.stale()
    sent = len(asks.nonces())
    assert wait_for(lambda: len(asks.nonces()) == d.follower.challenges_sent, 30)
    assert sent >= UNANSWERED_WARN and d.follower.challenges_sent <= len(held_back)  # at most one per tick
    warned = [r for r in caplog.records if "challenges unanswered" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"


def test_challenges_back_off_while_unanswered(door, keys, desk_client, listeners):  # noqa: F811
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    asks.next(d, 0)
    for step, expected in ((4.0, 1), (1.5, 2), (5.0, 2), (5.5, 3)):  # again after 5 s, then 10 s
        d.clock.now += step
        d.follower.tick()
        assert wait_for(lambda n=expected: len(asks.nonces()) >= n)
    assert len(asks.nonces()) == 3 and d.follower.challenges_sent == 3
    d.feed(head(keys[0], 1, I0 + 227), T.head)  # a head on time: no more challenges
    d.clock.now += 61
    d.follower.tick()
    assert d.follower.challenges_sent == 3


# -- the desk's side ------------------------------------------------------------------------


def test_the_desk_answers_a_challenge_on_the_doors_reply_topic_within_its_limits(desk, keys, listeners):  # noqa: F811
    wall, mono = [50_000.0], [0.0]
    d = desk(heartbeat_s=3_600, request_burst=2, clock=lambda: wall[0], monotonic=lambda: mono[0])
    d.store.insert_collection("staff", V)
    d.step()  # seq 1 and its (retained) head
    door_a = listeners([T.head, T.reply("door-a"), T.reply("door-b")], "door-a")
    assert wait_for(lambda: door_a.on(T.head), 30)
    retained = decode_head(keys[1], door_a.on(T.head)[-1])
    assert set(json.loads(json.loads(door_a.on(T.head)[-1])["payload"])) == \
        {"schema", "collection_id", "face_model_version", "seq", "issued_at"}  # as before: old doors read it

    def ask(topic: str, **fields) -> None:
        door_a.client.publish(topic, json.dumps({"schema": "facelink.sync-request/1", **fields}), qos=1)

    nonces = [secrets.token_hex(16) for _ in range(3)]
    mono[0] += 5
    wall[0] -= 600  # the desk's wall clock stepped back: the answer does not fall behind its last head
    ask(own("door-a"), device_id="door-a", nonce=nonces[0])
    ask(T.request, device_id="door-b", nonce=nonces[1])  # on the shared topic: anyone may name anyone
    ask(own("door-a"), device_id="door-a", nonce="0" * 31)  # not a nonce
    ask(own("door-a"), device_id="door-a", nonce=nonces[2], snapshot=True)  # a challenge asks for nothing else
    assert wait_for(lambda: d.publisher._inbox.qsize() == 4, 30)
    d.step()
    assert wait_for(lambda: door_a.on(T.reply("door-a")), 30)
    got = decode_head(keys[1], door_a.on(T.reply("door-a"))[0])
    assert (got.nonce, got.seq) == (nonces[0], 1) and got.issued_at >= retained.issued_at + 5
    assert d.publisher.gate.refused == {"CHALLENGE_ON_SHARED_TOPIC": 1, "MALFORMED": 2}
    assert len(door_a.on(T.head)) == 1  # the answer went to door-a only, not on the head topic

    mono[0] += 10  # door-a's burst (2) is back; three challenges at once: the third is refused
    for n in nonces:
        ask(own("door-a"), device_id="door-a", nonce=n)
    assert wait_for(lambda: d.publisher._inbox.qsize() == 3, 30)
    d.step()
    assert d.publisher.gate.refused["RATE_LIMITED"] == 1
    assert wait_for(lambda: len(door_a.on(T.reply("door-a"))) == 2, 30)
    assert decode_head(keys[1], door_a.on(T.reply("door-a"))[1]).nonce == nonces[1]  # the newer replaced the older
    assert door_a.on(T.reply("door-b")) == []


def test_a_held_back_answer_does_not_lower_the_seq_a_newer_head_named(door, keys, desk_client, listeners):  # noqa: F811
    """An answer naming seq 1 that arrives after a head naming seq 2 (found in review): the door
    still knows it is behind and goes on asking for seq 2 (the answer set head_seq back to 1, and
    the door stopped asking until the next head)."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    d.clock.now += 1
    d.feed(head(keys[0], 2, I0 + 201), T.head)  # the desk published seq 2 (a revocation)
    assert d.follower.behind()
    d.feed(answer(keys[0], n1, 1, I0 + 200.5), T.reply(DOOR))  # the answer, held back until now
    assert d.follower.head_seq == 2 and d.follower.behind()


def test_a_slow_answer_does_not_make_the_next_heads_draw_challenges(door, keys, desk_client, listeners):  # noqa: F811
    """An answer that took 3 s (a loaded desk) anchors the heads at the challenge, 3 s before the
    desk issued it: the next on-time heads look up to 3 s late until that wears off. They must not
    draw another challenge (found in review: the door challenged about once a minute for good);
    they still confirm only as of the anchor allows."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    sent = d.clock.now
    d.clock.now += 3
    d.feed(answer(keys[0], n1, 1, I0 + 203), T.reply(DOOR))  # issued as it left the desk
    assert d.follower.confirmed_at == sent
    for k in range(1, 6):  # on-time heartbeats after the answer
        d.clock.now += HEARTBEAT_S
        d.feed(head(keys[0], 1, I0 + 203 + HEARTBEAT_S * k), T.head)
        assert d.follower.confirmed_at <= sent + (HEARTBEAT_S * k) * 1.01 + k  # never beyond the anchor's bound
    assert asks.nonces() == [n1] and d.follower.challenges_sent == 1


def test_an_answer_spends_the_older_nonces_too(door, keys, desk_client, listeners):  # noqa: F811
    """Two challenges outstanding (the first unanswered within its back-off): the answer to the
    newer one spends both; the older one's answer, arriving after, confirms nothing."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    d.clock.now += 6  # past the first back-off: the door asks again
    n2 = asks.next(d, 1)
    d.feed(answer(keys[0], n2, 1, I0 + 206), T.reply(DOOR))
    confirmed = d.follower.confirmed_at
    d.feed(answer(keys[0], n1, 1, I0 + 206.5), T.reply(DOOR))
    assert d.follower.rejected == {"UNKNOWN_NONCE": 1} and d.follower.confirmed_at == confirmed


def test_an_answer_behind_the_applied_seq_confirms_nothing(door, keys, desk_client, listeners):  # noqa: F811
    """An answer naming a seq below the one the door applied (a desk database restored from an
    older copy) is HEAD_BEHIND: refused, counted, and it confirms nothing."""
    d, asks = _confirmed(door, keys, desk_client, listeners)
    d.feed(encode(keys[0], "staff", V, 2, delta(2, users_put=[UserPut(user_id="bob")])))
    d.feed(head(keys[0], 2, I0 + 1), T.head)
    d.clock.now += 200
    n1 = asks.next(d, 0)
    confirmed = d.follower.confirmed_at
    d.feed(answer(keys[0], n1, 1, I0 + 201), T.reply(DOOR))
    assert d.follower.rejected.get("HEAD_BEHIND") == 1 and d.follower.confirmed_at == confirmed
