"""A head's lateness is judged from when it arrived, not from when the door's sync worker got to
it (found in review): a head queued behind a large change set being applied (seconds on a Pi) was
judged late on every door at once, and every door challenged the desk."""

from __future__ import annotations

from facelink.fleet.changeset import encode
from facelink.fleet.protocol import UserPut

from .conftest import V
from .test_follower import Door, T, delta, door, face  # noqa: F401 - the door fixture
from .test_held_back_heads import I0, head


class Sent:
    """What the door publishes (its requests and challenges)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def publish(self, topic: str, payload: str, **kw) -> bool:
        self.messages.append((topic, payload))
        return True


def test_a_head_that_waited_in_the_doors_queue_is_not_late(door, keys):  # noqa: F811
    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=300.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    d.feed(head(key, 1, I0), T.head)  # the anchor: issued as it arrived
    d.clock.now += 30
    d.follower.on_message(T.head, head(key, 1, I0 + 30))  # the next heartbeat, on time
    arrived = d.clock.now
    d.clock.now += 5  # the worker was applying a large change set meanwhile
    d.follower.work_one(0)
    assert d.follower.confirmed_at == arrived  # as of its arrival, not 1.3 s later nor "now"
    assert d.follower.challenges_sent == 0 and sent.messages == []  # on time: nothing to ask


def test_a_head_held_back_before_it_arrived_is_still_late(door, keys):  # noqa: F811
    """The arrival time bounds a head's issue only from above: one held back before it reached
    the door (a broker's queue) is judged by the desk's own time since the anchor, as before."""
    key, sent = keys[0], Sent()
    d: Door = door(transport=sent, max_staleness_s=300.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    d.feed(head(key, 1, I0), T.head)
    confirmed = d.follower.confirmed_at
    d.clock.now += 600
    d.follower.on_message(T.head, head(key, 1, I0 + 30))  # issued 30 s after the anchor, arrives 600 s after
    d.follower.work_one(0)
    assert d.follower.confirmed_at <= confirmed + 31.3  # as of its issue (30 s, +1 %, +1 s), not its arrival
    assert d.follower.challenges_sent == 1  # late: the door asks the desk itself
