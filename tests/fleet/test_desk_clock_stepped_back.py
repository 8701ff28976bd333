"""The held-back-head anchor (found in review) must not turn a desk clock stepped back into hours
of staleness on every door. A desk that runs through the step keeps its heads' issued_at at pace
(test_publisher.py::test_heads_keep_their_pace_when_the_desks_wall_clock_is_stepped_back). What
was left (a strict xfail until the freshness challenge) is a desk *started again* with its clock
stepped back: the time it was down is not counted past the step, so its heads look held back by
that much (judged late; or, if its record of the last head is lost, older than the last one the
door accepted, then late), and with ``on_stale = deny`` every door of the site stayed locked for
hours while the heads caught up 1 % + 1 s each.

Now a door that cannot confirm its copy by an on-time head challenges the desk with a random
nonce; the desk's signed head carrying it cannot be older than the nonce, so it confirms the copy
and re-anchors the heads after it, whatever the desk's clock says. Real parts end to end: the
desk's Publisher (its own store, journal and Ed25519 key, on its own clocks) and the door's
Follower (its own store, on the door's clocks), through a real mosquitto."""

from __future__ import annotations

import sqlite3

import pytest

from facelink.enroll.store import Store
from tests.waiting import round_trip

from .conftest import V, add_faces, wait_for
from .test_follower import DOOR, Door, T, door  # noqa: F401 - the door fixture
from .test_publisher import Desk

HEARTBEAT_S = 30.0
MAX_STALENESS_S = 300.0
STEP_BACK_S = 600.0  # NTP corrects a desk clock that ran 10 minutes ahead


class Counting:
    """The door's real MQTT client, counting what the door publishes (its requests)."""

    def __init__(self, client) -> None:
        self.client, self.sent = client, 0

    def publish(self, topic: str, payload: str, **kw) -> bool:
        ok = self.client.publish(topic, payload, **kw)
        self.sent += bool(ok)
        return ok


class Site:
    """One desk process at a time (``start``/``stop``) and one door, over the broker. The door's
    MQTT client records what it receives (``inbox``); :meth:`exchange` hands it to the follower in
    order and lets the desk answer whatever the door asks, until neither has more to say."""

    def __init__(self, desk_db, keys, broker, inbox, d: Door, asks: Counting) -> None:
        self.db, self.keys, self.port, self.inbox, self.door, self.asks = desk_db, keys, broker.port, inbox, d, asks
        self.wall, self.mono = [10_000.0], [0.0]  # the desk's clocks
        self.desk: Desk | None = None
        self._seen = 0  # messages of the inbox handed to the door so far

    @classmethod
    def with_ann(cls, door, keys, broker, listeners, desk_db) -> Site:  # noqa: F811
        """A desk database holding ann (one face) in "staff", and a door following it (not started)."""
        with Store(desk_db) as seed:
            seed.insert_collection("staff", V)
            seed.insert_user("staff", "ann")
            add_faces(seed, "staff", 1, "ann")
        inbox = listeners([T.changes, T.head, T.reply(DOOR)], f"facelink-{DOOR}")
        asks = Counting(inbox.client)
        return cls(desk_db, keys, broker, inbox, door(asks, max_staleness_s=MAX_STALENESS_S), asks)

    def start(self) -> Desk:
        self.mono = [self.mono[0] + 1_000.0]  # another process: another monotonic clock
        self.desk = Desk(self.db, self.keys[0], self.port, heartbeat_s=HEARTBEAT_S,
                         clock=lambda: self.wall[0], monotonic=lambda: self.mono[0])
        assert self.desk.client.wait_connected(30)
        return self.desk

    def stop(self) -> None:
        assert self.desk is not None
        self.desk.close()
        self.desk = None

    def heartbeat(self) -> None:
        """HEARTBEAT_S pass on every clock, then the desk's step and the door's answer to it."""
        self.door.clock.now += HEARTBEAT_S
        self.wall[0] += HEARTBEAT_S
        self.mono[0] += HEARTBEAT_S
        self.exchange()

    def exchange(self) -> None:
        desk = self.desk
        assert desk is not None
        for _ in range(20):
            asked = self.asks.sent
            desk.step()
            self._deliver()
            new = self.asks.sent - asked
            if not new:
                return
            assert wait_for(lambda n=new: desk.publisher._inbox.qsize() >= n, 30), "the desk never got the request"
        raise AssertionError("the desk and the door never went quiet")

    def _deliver(self) -> None:
        """Everything the desk published so far reaches the door (one connection keeps its order:
        a probe from the desk's client arriving means all before it did), handled in order."""
        desk = self.desk
        assert desk is not None
        assert round_trip(lambda m: desk.client.publish(self.inbox.probe_topic, m, qos=1),
                          lambda m: (self.inbox.probe_topic, m.encode()) in self.inbox.snapshot(), 30)
        messages = self.inbox.snapshot()
        for topic, payload in messages[self._seen:]:
            if topic != self.inbox.probe_topic:
                self.door.follower.handle(topic, payload)
                self.door.follower.tick()
        self._seen = len(messages)


@pytest.mark.parametrize("down_s, forgets_last_head", [
    (STEP_BACK_S, False),  # down 10 min, clock stepped back 10 min: its heads look 10 min late
    (STEP_BACK_S / 2, True),  # and its record of the last head lost: heads go back, then look late
], ids=["started-again", "last-head-lost"])
def test_heads_on_time_confirm_again_after_the_desk_clock_was_stepped_back(door, keys, broker, listeners,  # noqa: F811
                                                                           desk_db, down_s, forgets_last_head):
    site = Site.with_ann(door, keys, broker, listeners, desk_db)
    d: Door = site.door
    asks = site.asks
    site.start()
    try:
        site.exchange()  # the first change set (a rebase): the door takes a snapshot
        for k in range(20):  # ten minutes of heartbeats, on time: the door confirmed by each
            site.heartbeat()
            assert d.follower.applied_seq == 1 and (k == 0 or not d.follower.stale()), k
    finally:
        site.stop()
    assert asks.sent == 1  # the snapshot; heads on time: nothing to challenge
    d.clock.now += down_s  # the desk is down (the door goes stale: deny, as it must) ...
    site.wall[0] += down_s - STEP_BACK_S  # ... and comes back with its clock stepped back
    if forgets_last_head:
        with sqlite3.connect(desk_db) as db:
            db.execute("DELETE FROM fleet_heads")
    site.start()
    stale_for = 0.0
    try:
        for _ in range(int(3_600 / HEARTBEAT_S)):  # an hour of heartbeats, each on time
            site.heartbeat()
            stale_for += HEARTBEAT_S if d.follower.stale() else 0.0
        refused = dict(site.desk.publisher.gate.refused)
    finally:
        site.stop()
    # before the challenge: every door stale for hours (all of this hour) after such a restart
    assert stale_for == 0.0, f"stale {stale_for:.0f} s of an hour of on-time heartbeats"
    assert refused == {}
    # heads confirm again on their own once re-anchored: a few challenges, not one per heartbeat
    assert 1 <= asks.sent - 1 == d.follower.challenges_sent <= 8, asks.sent
    assert d.follower.rejected == {} and d.alarms == []
