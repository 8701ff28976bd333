"""Range replies never hold back a revocation (found in review 53).

Every range a door asked for was re-sent in full inside the step's first stage, before that step
journaled and published what had changed: a door's burst of five requests for 1,000 change sets
each made the desk publish 5,000 re-sent change sets (each waiting for its PUBACK) before the
DeleteUser made just before; more doors (or requests on the shared topic naming them), within
every rate limit and the byte budget, kept the worker in that stage for as long as they went on.
Now ranges go out like snapshots: queued, a slice at a time, after the step's change sets and
heads. Real desk store, journal, publisher, mosquitto and Ed25519."""

from __future__ import annotations

from facelink.fleet.changeset import ChangeSetVerifier
from facelink.fleet.protocol import SyncRequest, parse_body

from .conftest import V, wait_for
from .test_publisher import T, desk, own  # noqa: F401 - the desk fixture


class Recording:
    """The desk's real MQTT client, recording the topic of every publish in order."""

    def __init__(self, client) -> None:
        self.client, self.topics = client, []

    def publish(self, topic: str, payload: str, **kw) -> bool:
        ok = self.client.publish(topic, payload, **kw)
        if ok:
            self.topics.append(topic)
        return ok


def test_a_revocation_is_published_before_queued_range_replies(desk, keys, listeners):  # noqa: F811
    d = desk(heartbeat_s=3600, request_burst=5, slice_s=0.0)
    d.store.insert_collection("staff", V)
    for i in range(1000):  # a desk with a journal of 1,000 change sets
        d.store.insert_user("staff", f"u{i}")
        d.step()
    assert d.publisher.published["staff"] == 1000
    door = listeners([T.reply("door-1")], "door-1")
    for _ in range(5):  # one door's burst: each request the most a range may be
        door.client.publish(own("door-1"), SyncRequest(device_id="door-1", from_seq=1).encode().decode(), qos=1)
    assert wait_for(lambda: d.publisher._inbox.qsize() == 5, 30)
    d.store.delete_user("staff", "u1")  # the revocation
    sent = Recording(d.client)
    d.publisher.step(sent)
    assert d.journal.last("staff").seq == 1001 and T.changes in sent.topics
    before = sent.topics.index(T.changes)
    assert before <= 1, f"{before} re-sent change sets went out before the revocation"
    cs = ChangeSetVerifier(keys[1], "staff", V, applied_seq=1000).check(d.journal.entries("staff", 1001, 1001)[0].message)
    assert parse_body(cs.body).users_deleted == ["u1"]
    while any(d.publisher._ranges.values()):  # the range still goes out, whole and in order
        d.step()
    assert wait_for(lambda: len(door.on(T.reply("door-1"))) >= 1000, 60)
    assert door.on(T.reply("door-1"))[:1000] == [e.message for e in d.journal.entries("staff", 1, 1000)]


def test_one_step_sends_ranges_for_at_most_its_slice(desk, listeners):  # noqa: F811
    """The range slice is bounded like the snapshots': a revocation made while a step is re-sending
    ranges waits for one slice, not for every queued range (found in review: the test above still
    passed with the slice's deadline removed, the whole range going out in one step)."""
    d = desk(heartbeat_s=3600, slice_s=0.0)
    d.store.insert_collection("staff", V)
    for i in range(200):
        d.store.insert_user("staff", f"u{i}")
        d.step()
    door = listeners([T.reply("door-1")], "door-1")
    door.client.publish(own("door-1"), SyncRequest(device_id="door-1", from_seq=1).encode().decode(), qos=1)
    assert wait_for(lambda: d.publisher._inbox.qsize() == 1, 30)
    sent = Recording(d.client)
    d.publisher.step(sent)
    assert sent.topics.count(T.reply("door-1")) == 1, "slice_s 0: one change set per step (at least one)"
    assert d.publisher._ranges["staff"]["door-1"].next == 2  # the rest waits for the next steps, in order
    steps = 1
    while any(d.publisher._ranges.values()):
        d.publisher.step(sent)
        steps += 1
    assert steps == 200 and sent.topics.count(T.reply("door-1")) == 200
