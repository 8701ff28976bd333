"""A rogue broker that withholds its PUBACK for the desk's change set (a revocation)
keeps the desk's ``published`` seq behind the journal; every head and every challenge answer the
desk signs afterwards names the older seq with a fresh issued_at, so the door is confirmed up to
date, on time, for as long as the broker likes: the revoked user is granted for good. The
challenge does not catch it (its answer names the same seq). The desk must not sign a head, nor
answer a challenge, while a journaled change set is not published: the door then goes stale
within max_staleness_s of the revocation (fail closed).

Real parts: the desk's Publisher (its own store, journal, Ed25519 key), the door's Follower (its
own store), through a real mosquitto; the rogue broker is the desk's MQTT client with the PUBACKs
of ``changes`` withheld (the message not forwarded) and, in the second case, the ordinary heads
acknowledged but not forwarded either (the door then lives on challenge answers alone)."""

from __future__ import annotations

import pytest

from facelink.enroll.store import Store

from .test_desk_clock_stepped_back import HEARTBEAT_S, MAX_STALENESS_S, Site
from .test_follower import DOOR, Door, T, door  # noqa: F401 - the door fixture


class RogueBroker:
    """The desk's real client, with what a rogue broker can do to its publishes."""

    def __init__(self, client) -> None:
        self.client = client
        self.withhold_changes = False  # no PUBACK for a change set, and it is not forwarded
        self.swallow_heads = False  # the retained head acknowledged but not forwarded
        self.withheld = 0

    def publish(self, topic: str, payload: str, **kw) -> bool:
        if self.withhold_changes and topic == T.changes:
            self.withheld += 1
            return False  # wait_for_publish timed out: the desk retries it next step
        if self.swallow_heads and topic == T.head:
            return True
        return self.client.publish(topic, payload, **kw)

    def __getattr__(self, name):
        return getattr(self.client, name)


class RogueSite(Site):
    def start(self):
        desk = super().start()
        self.rogue = RogueBroker(desk.client)
        desk.step = lambda: desk.publisher.step(self.rogue)  # type: ignore[method-assign]
        return desk

    def heartbeat(self) -> None:
        """As Site's, with the door's worker ticking (every 0.5 s in the daemon) though nothing came."""
        self.door.clock.now += HEARTBEAT_S
        self.wall[0] += HEARTBEAT_S
        self.mono[0] += HEARTBEAT_S
        self.door.follower.tick()
        self.exchange()


@pytest.mark.parametrize("swallow_heads", [False, True], ids=["heads", "challenge-answers-only"])
def test_a_withheld_puback_for_a_revocation_does_not_keep_the_door_fresh(door, keys, broker, listeners,  # noqa: F811
                                                                         desk_db, swallow_heads):
    site = RogueSite.with_ann(door, keys, broker, listeners, desk_db)
    d: Door = site.door
    desk_store = Store(desk_db)
    site.start()
    try:
        site.exchange()  # the rebase; the door takes a snapshot
        for _ in range(4):
            site.heartbeat()
        assert d.follower.applied_seq == 1 and not d.follower.stale()

        site.rogue.withhold_changes = True
        site.rogue.swallow_heads = swallow_heads
        desk_store.delete_user("staff", "ann")  # the revocation: seq 2, never acknowledged
        fresh_after = []
        for k in range(1, 61):  # half an hour of heartbeats after it
            site.heartbeat()
            if not d.follower.stale():
                fresh_after.append(k * HEARTBEAT_S)
        journaled = site.desk.journal.last("staff").seq
    finally:
        site.stop()
        desk_store.close()
    assert journaled == 2 and site.rogue.withheld > 0 and d.follower.applied_seq == 1  # ann still on the door
    late = [s for s in fresh_after if s > MAX_STALENESS_S + 2 * HEARTBEAT_S]
    assert not late, f"the door, without the revocation, was confirmed fresh {max(late):.0f} s after it"
