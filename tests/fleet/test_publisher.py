"""The desk's publisher on a real database, real signatures and a real mosquitto: every change is
journaled before it is published, seq 1, 2, ... without gaps; a full batch is a Rebase; requests
are answered from the journal (the same bytes), bounded, rate-limited; snapshots are chunked and
consistent with their seq."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from facelink.config import MqttSettings
from facelink.enroll.store import Store
from facelink.fleet.acl import broker_acl
from facelink.fleet.changeset import ChangeSetVerifier
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import CHUNK_FACES, SyncRequest, decode_head, parse_body
from facelink.fleet.publisher import Publisher
from facelink.fleet.requests import Answer, Budget
from facelink.fleet.signing import verify
from facelink.mqtt.client import MqttClient, Will
from facelink.mqtt.topics import CollectionTopics, DeviceTopics
from tests.waiting import round_trip

from .conftest import PREFIX, V, add_faces, wait_for

T = CollectionTopics(PREFIX, "staff")


def own(device_id: str) -> str:
    """A door's own request topic for "staff" (<prefix>/<device_id>/sync/staff/request)."""
    return DeviceTopics(PREFIX, device_id).sync_request("staff")


class Desk:
    def __init__(self, db, key, port: int, changes_keep: int = 10_000, **options) -> None:
        self.store = Store(db, changes_keep=changes_keep)
        self.journal = Journal(db)
        self.publisher = Publisher(self.store, self.journal, key, ["staff"], PREFIX, **options)
        self.client = MqttClient(MqttSettings(port=port), client_id="test-desk",
                                 subscriptions=self.publisher.subscriptions(),
                                 on_message=self.publisher.on_message)

    def step(self) -> None:
        self.publisher.step(self.client)

    def close(self) -> None:
        self.client.stop()
        self.publisher.close()
        self.journal.close()
        self.store.close()


@pytest.fixture()
def desk(desk_db, keys, broker):
    made: list[Desk] = []

    def make(**options) -> Desk:
        made.append(Desk(desk_db, keys[0], broker.port, **options))
        assert made[-1].client.wait_connected(30)
        return made[-1]

    yield make
    for d in made:
        d.close()


def _verified(trusted, messages: list[bytes], applied: int = 0):
    """(seq, body) of each message as a door that has applied up to ``applied`` verifies them."""
    door = ChangeSetVerifier(trusted, "staff", V, applied_seq=applied)
    out = []
    for m in messages:
        cs = door.check(m)
        door.applied(cs)
        out.append((cs.seq, parse_body(cs.body)))
    return out


def test_changes_are_journaled_signed_and_published_in_order(desk, keys, listeners):
    d = desk(heartbeat_s=3600)
    door = listeners([T.changes, T.head], "door-a")
    d.step()
    assert d.journal.last("staff") is None  # no collection yet: nothing to publish
    d.store.insert_collection("staff", V)
    d.step()  # seq 1: a Rebase (doors take a snapshot)
    d.store.insert_user("staff", "ann")
    d.store.set_user_credential("staff", "ann", "H10301:1:7")
    ann = add_faces(d.store, "staff", 2, "ann")
    d.step()
    d.store.delete_faces("staff", [ann[0]])
    d.step()
    d.store.delete_user("staff", "ann")
    d.step()
    d.step()  # nothing new: no change set
    assert wait_for(lambda: len(door.on(T.changes)) == 4, 30)
    sent = door.on(T.changes)
    assert sent == [e.message for e in d.journal.entries("staff", 1, 10)]  # the journal's bytes
    (s1, rebase), (s2, add), (s3, dele), (s4, revoke) = _verified(keys[1], sent)
    assert [s1, s2, s3, s4] == [1, 2, 3, 4] and rebase.kind == "rebase"
    assert sorted(f.face_id for f in add.faces_put) == sorted(ann)
    assert [(u.user_id, u.credential) for u in add.users_put] == [("ann", "H10301:1:7")]
    assert dele.faces_deleted == [ann[0]] and dele.faces_put == []
    assert revoke.users_deleted == ["ann"] and [(f.face_id, f.user_id) for f in revoke.faces_put] == [(ann[1], None)]
    assert wait_for(lambda: door.on(T.head) and decode_head(keys[1], door.on(T.head)[-1]).seq == 4, 30)


def test_journal_is_written_before_publishing_and_sent_once_the_broker_is_back(desk, keys, broker, listeners):
    d = desk()
    d.store.insert_collection("staff", V)
    d.step()
    door = listeners([T.changes], "door-b")
    broker.stop()
    assert wait_for(lambda: not d.client.is_connected(), 30)
    d.store.insert_user("staff", "bob")
    d.step()  # broker down: journaled, not published
    assert d.journal.last("staff").seq == 2 and [e.seq for e in d.journal.unpublished("staff")] == [2]
    assert d.publisher.published["staff"] == 1
    assert stat.S_IMODE(os.stat(d.journal.path).st_mode) == 0o600  # the journal is in the 0600 desk DB
    broker.start()
    assert d.client.wait_connected(60)
    door.wait_live()  # resubscribed: the republished change set cannot fall into the gap
    d.step()
    assert d.journal.unpublished("staff") == [] and d.publisher.published["staff"] == 2
    assert wait_for(lambda: d.journal.entries("staff", 2, 2)[0].message in door.on(T.changes), 30)


def test_a_batch_the_feed_cannot_express_is_a_rebase(desk, keys, listeners):
    d = desk(changes_keep=3)
    d.store.insert_collection("staff", V)
    d.step()
    door = listeners([T.changes], "door-c")
    for i in range(5):  # more changes than the feed keeps: it can no longer say what changed
        add_faces(d.store, "staff", 1, seed=i)
    d.step()
    assert wait_for(lambda: len(door.on(T.changes)) == 1, 30)
    [(seq, body)] = _verified(keys[1], door.on(T.changes), applied=1)
    assert seq == 2 and body.kind == "rebase" and "cannot say" in body.reason


def test_requests_are_answered_from_the_journal_bounded_and_rate_limited(desk, keys, broker, listeners):
    d = desk(request_burst=2, request_interval_s=3600)
    d.store.insert_collection("staff", V)
    for i in range(3):
        d.store.insert_user("staff", f"u{i}")
        d.step()
    door = listeners([T.reply("door-d")], "door-d")
    req = door.client
    journal_before = d.journal.entries("staff", 1, 100)
    for garbage in (b"", b"{not json", b'{"schema":"facelink.sync-request/1","device_id":"a/b"}',
                    b"x" * 5000, SyncRequest(device_id="door-d", from_seq=3, to_seq=2).encode()):
        req.publish(own("door-d"), garbage.decode(errors="replace"), qos=1)
    assert wait_for(lambda: (d.step(), d.publisher.gate.refused.get("MALFORMED", 0) >= 5)[1], 30)
    assert door.on(T.reply("door-d")) == [] and d.journal.entries("staff", 1, 100) == journal_before
    req.publish(own("door-d"), SyncRequest(device_id="door-d", from_seq=2, to_seq=3).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), len(door.on(T.reply("door-d"))) == 2)[1], 30)
    assert door.on(T.reply("door-d")) == [e.message for e in d.journal.entries("staff", 2, 3)]  # same bytes
    req.publish(own("door-d"), SyncRequest(device_id="door-d", from_seq=1).encode().decode(), qos=1)
    req.publish(own("door-d"), SyncRequest(device_id="door-d", from_seq=1).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), d.publisher.gate.refused.get("RATE_LIMITED", 0) >= 1)[1], 30)
    assert wait_for(lambda: len(door.on(T.reply("door-d"))) == 5, 30)  # 2 + 3 (1..head 3), the 3rd refused
    assert door.on(T.reply("door-d"))[2:] == [e.message for e in d.journal.entries("staff", 1, 3)]
    assert d.journal.entries("staff", 1, 100) == journal_before  # requests never change the journal


def test_snapshot_is_chunked_and_shows_the_state_of_its_seq(desk, keys, listeners):
    d = desk()
    d.store.insert_collection("staff", V)
    d.store.insert_user("staff", "ann")
    d.store.set_user_credential("staff", "ann", "H10301:2:9")
    ids = add_faces(d.store, "staff", CHUNK_FACES + 7, "ann")
    d.step()
    door = listeners([T.reply("door-e")], "door-e")
    d.store.delete_faces("staff", ids[:5])  # not journaled yet when the request arrives
    door.client.publish(own("door-e"), SyncRequest(device_id="door-e", snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), len(door.on(T.reply("door-e"))) >= 2)[1], 60)
    last = d.journal.last("staff")
    assert last.seq == 2 and parse_body(json.loads(json.loads(last.message)["payload"])["body"]).faces_deleted
    chunks = []
    for m in door.on(T.reply("door-e")):
        envelope = json.loads(m)
        assert verify(keys[1], envelope["payload"].encode(), envelope["signature"])  # signed by the desk
        payload = json.loads(envelope["payload"])
        assert payload["seq"] == last.seq  # every chunk at the journal's seq whose state it shows
        chunks.append(parse_body(payload["body"]))
    assert len(chunks) == 2 and {c.snapshot_id for c in chunks} == {chunks[0].snapshot_id}
    assert sorted(c.chunk for c in chunks) == [0, 1] and all(c.chunks == 2 for c in chunks)
    faces = {f.face_id for c in chunks for f in c.faces_put}
    assert faces == set(ids[5:])  # the deletion journaled as seq 2 is in the snapshot at seq 2
    assert [(u.user_id, u.credential) for c in chunks for u in c.users_put] == [("ann", "H10301:2:9")]


@pytest.mark.slow
def test_a_100k_face_snapshot_is_sent_in_chunks(desk, keys, listeners):
    """100,000 synthetic faces: 50 chunks, each within the protocol's bounds, all of them arrive."""
    d = desk()
    d.store.insert_collection("staff", V)
    for i in range(10):
        add_faces(d.store, "staff", 10_000, seed=i)
    d.step()
    door = listeners([T.reply("door-f")], "door-f")
    door.client.publish(own("door-f"), SyncRequest(device_id="door-f", snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), len(door.on(T.reply("door-f"))) >= 50)[1], 600)
    seen: set[str] = set()
    for m in door.on(T.reply("door-f")):
        chunk = parse_body(json.loads(json.loads(m)["payload"])["body"])
        assert chunk.chunks == 50 and len(chunk.faces_put) == CHUNK_FACES
        seen.update(f.face_id for f in chunk.faces_put)
    assert len(seen) == 100_000


def test_request_gate_bounds_ranges_and_refills_rate_limits():
    from facelink.fleet.protocol import MAX_REQUEST_RANGE
    from facelink.fleet.requests import RequestGate

    now = [0.0]
    gate = RequestGate(burst=1, interval_s=10, clock=lambda: now[0])
    far = SyncRequest(device_id="d1", from_seq=1).encode()
    assert gate.decide("staff", far, MAX_REQUEST_RANGE + 1).snapshot  # too far behind: a snapshot
    assert gate.decide("staff", SyncRequest(device_id="d2", from_seq=5).encode(), 4) is None
    assert gate.refused == {"BEYOND_HEAD": 1}
    assert gate.decide("staff", SyncRequest(device_id="d1", from_seq=2).encode(), 9) is None
    now[0] = 10.0  # one interval later the door may ask again
    a = gate.decide("staff", SyncRequest(device_id="d1", from_seq=2, to_seq=50).encode(), 9)
    assert (a.snapshot, a.first, a.last) == (False, 2, 9)  # clamped to the head
    assert gate.refused == {"BEYOND_HEAD": 1, "RATE_LIMITED": 1}


def test_request_gate_takes_the_device_id_from_the_doors_own_topic():
    """DEVICE_MISMATCH and USE_DEVICE_TOPIC are refused before any limit; a door is remembered as
    asking on its own topic from its first well-formed request there from a known door, even one
    that is rate-limited (its retry is then answered: the shared topic cannot drain it again)."""
    from facelink.fleet.requests import RequestGate

    now = [0.0]
    gate = RequestGate(burst=1, interval_s=10, clock=lambda: now[0])
    known = {"door-a", "door-b"}.__contains__

    def ask(device: str, sender: str | None = None):
        return gate.decide("staff", SyncRequest(device_id=device, from_seq=1).encode(), 3, known, sender)

    assert ask("door-b", sender="door-a") is None and gate.refused == {"DEVICE_MISMATCH": 1}
    assert not gate.uses_own_topic("door-a") and not gate.uses_own_topic("door-b")
    assert ask("door-x", sender="door-x") is None and not gate.uses_own_topic("door-x")  # UNKNOWN_DEVICE
    assert ask("door-b") is not None  # shared topic, door-b not on its own topic yet: served ...
    assert ask("door-b", sender="door-b") is None  # ... which spent its one request
    assert gate.uses_own_topic("door-b") and gate.refused["RATE_LIMITED"] == 1
    assert ask("door-b") is None and gate.refused["USE_DEVICE_TOPIC"] == 1
    now[0] = 10.0  # one interval: door-b's retry on its own topic is answered
    assert ask("door-b") is None and ask("door-b", sender="door-b") == Answer("door-b", False, 1, 3)
    assert gate.refused == {"DEVICE_MISMATCH": 1, "UNKNOWN_DEVICE": 1, "RATE_LIMITED": 1, "USE_DEVICE_TOPIC": 2}


def test_a_row_the_protocol_refuses_is_sent_as_deleted_and_later_changes_still_flow(desk, keys):
    """Fail closed at the desk without blocking revocations: a face the wire format cannot carry is
    named as deleted (a door never grants on it), the change sets after it go out as usual."""
    d = desk()
    d.store.insert_collection("staff", V)
    d.store.insert_user("staff", "ann")
    d.step()
    d.store.insert_faces([{"face_id": "bad-face", "collection_id": "staff", "image_id": "i", "user_id": "ann",
                           "image_sha256": "s", "bounding_box": {k: 0.1 for k in "abcde"},
                           "confidence": 99.0, "embedding": [128 ** -0.5] * 128}])
    good = add_faces(d.store, "staff", 1, "ann")
    d.step()
    d.store.delete_user("staff", "ann")
    d.step()
    bodies = [parse_body(json.loads(json.loads(e.message)["payload"])["body"])
              for e in d.journal.entries("staff", 2, 3)]
    assert [f.face_id for f in bodies[0].faces_put] == good and bodies[0].faces_deleted == ["bad-face"]
    assert bodies[1].users_deleted == ["ann"] and d.publisher.published["staff"] == 3


def test_a_failing_step_changes_nothing_and_is_logged_once_not_every_poll(desk, caplog):
    d = desk()
    d.store.insert_collection("staff", V)
    d.step()
    d.store.close()  # the publisher's database connection is gone: every step fails
    for _ in range(5):
        d.step()
    assert d.journal.last("staff").seq == 1 and d.journal.unpublished("staff") == []
    assert len([r for r in caplog.records if "publishing staff failed" in r.getMessage()]) == 1


class Monotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _snapshot_replies(listener) -> dict[str, int]:
    """Snapshot chunks received per reply/<device>."""
    out: dict[str, int] = {}
    for topic, _ in listener.snapshot():
        if "/reply/" in topic:
            out[topic.rsplit("/", 1)[1]] = out.get(topic.rsplit("/", 1)[1], 0) + 1
    return out


def test_snapshot_replies_are_capped_globally_whatever_ids_the_requests_invent(desk, keys, listeners):
    """Requests are unsigned and name any device_id: 10 invented ids, each within the per-device
    limit, get at most fleet.snapshot_replies_per_minute snapshots a minute all together (the
    rest wait their turn, FIFO), and the bytes are capped by fleet.snapshot_mb_per_minute."""
    clock = Monotonic()
    d = desk(snapshot_replies_per_minute=3, monotonic=clock)
    d.store.insert_collection("staff", V)
    add_faces(d.store, "staff", 20)
    d.step()
    watch = listeners([T.reply("#")], "watch")
    attacker = watch.client
    ids = [f"x{i}" for i in range(10)]
    for i in ids:
        attacker.publish(T.request, SyncRequest(device_id=i, snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), len(d.publisher._snapshots["staff"]) + d.publisher.snapshots_sent == 10)[1], 30)
    for _ in range(20):
        d.step()
    assert d.publisher.snapshots_sent == 3 and list(d.publisher._snapshots["staff"]) == ids[3:]
    assert wait_for(lambda: _snapshot_replies(watch) == {i: 1 for i in ids[:3]}, 30)  # the first three
    clock.now += 20  # a third of a minute: one more
    for _ in range(5):
        d.step()
    assert d.publisher.snapshots_sent == 4 and wait_for(lambda: "x3" in _snapshot_replies(watch), 30)

    # bytes: a budget smaller than two snapshots of this collection lets one through, then waits
    size = d.publisher._snapshot_size["staff"]
    d2 = desk(snapshot_replies_per_minute=1000, snapshot_mb_per_minute=1.5 * size / 1e6, monotonic=clock)
    d2.publisher._snapshot_size["staff"] = size
    for i in ids:
        attacker.publish(T.request, SyncRequest(device_id=f"y{i}", snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: (d2.step(), d2.publisher.snapshots_sent >= 1)[1], 30)
    for _ in range(20):
        d2.step()
    assert d2.publisher.snapshots_sent == 2  # 1.5 snapshots' worth: the second overdraws, then it waits
    clock.now += 60
    for _ in range(20):
        d2.step()
    assert d2.publisher.snapshots_sent == 3


def test_range_replies_are_paid_from_the_reply_byte_budget(desk, keys, listeners):
    """Re-sent change sets share fleet.snapshot_mb_per_minute with snapshots, from the part of it
    above the snapshots' reserve: a range stops after the change set that spends that part, a
    request while it is spent gets nothing (OVER_BUDGET), and once the budget refills the rest is
    sent; what went out is the journal's, in order. A snapshot is still sent at once: the
    ranges left it its reserve."""
    from facelink.fleet.publisher import RANGE_RESERVE_SHARE

    clock = Monotonic()
    d = desk(monotonic=clock, request_burst=10)
    _three_change_sets(d)
    entries = [e.message for e in d.journal.entries("staff", 1, 3)]
    # a desk whose ranges may spend one and a half change sets a minute (the rest is the reserve)
    d.publisher.reply_bytes = Budget((len(entries[0]) + len(entries[1]) // 2) / (1 - RANGE_RESERVE_SHARE), clock)
    watch = listeners([T.reply("#")], "watch")

    def ask_until(from_seq: int, done) -> None:
        watch.client.publish(T.request, _ask("door-r", from_seq=from_seq), qos=1)
        assert wait_for(lambda: (d.step(), done())[1], 30)

    ask_until(1, lambda: len(watch.on(T.reply("door-r"))) >= 2)  # the second overdraws: the range stops
    ask_until(3, lambda: d.publisher.gate.refused.get("OVER_BUDGET") == 1)  # spent: nothing sent
    clock.now += 60  # refilled: the door, having applied 1..2, asks for the rest
    ask_until(3, lambda: len(watch.on(T.reply("door-r"))) >= 3)
    assert watch.on(T.reply("door-r")) == entries  # each once, in order, nothing more
    sent = len(entries)
    ask_until(1, lambda: len(watch.on(T.reply("door-r"))) > sent)  # the door asks again: it spends the ranges' part
    ask_until(1, lambda: d.publisher.gate.refused.get("OVER_BUDGET") == 2)  # and then gets nothing
    watch.client.publish(T.request, _ask("door-s", snapshot=True), qos=1)  # but not the snapshots' reserve
    assert wait_for(lambda: (d.step(), "door-s" in _snapshot_replies(watch))[1], 30)
    assert d.publisher.gate.refused.get("OVER_BUDGET") == 2 and clock.now == 160  # no refill since


def test_a_door_is_not_sent_the_same_snapshot_again_at_once(desk, keys, listeners):
    """A request naming a real door's id again and again (anyone may publish requests) makes the
    desk send that door one snapshot: not again while it is being sent (a door retries after 5 s
    while a long snapshot is still coming), nor within SNAPSHOT_REPEAT_S after, nor after mere
    deltas (they reach the door on `changes`); later, or after a Rebase, it is sent again (a door
    that lost chunks asks again after its retry)."""
    from facelink.fleet.publisher import SNAPSHOT_REPEAT_S

    clock = Monotonic()
    d = desk(monotonic=clock, slice_s=0.0, changes_keep=3)  # one chunk to one door per step
    d.store.insert_collection("staff", V)
    add_faces(d.store, "staff", CHUNK_FACES + 1)  # two chunks
    d.step()
    watch = listeners([T.reply("#")], "watch")

    def ask(times: int) -> None:
        for _ in range(times):
            watch.client.publish(T.request, SyncRequest(device_id="door-r", snapshot=True).encode().decode(), qos=1)

    def refused() -> int:
        return d.publisher.gate.refused.get("ALREADY_SENT", 0)

    def settle(sent: int, already: int) -> bool:
        return wait_for(lambda: (d.step(), d.publisher._run is None and d.publisher.snapshots_sent == sent
                                 and refused() == already)[1], 30)

    ask(1)
    assert wait_for(lambda: (d.step(), d.publisher._run is not None)[1], 30)  # first chunk out
    ask(2)  # asked again while it is being sent
    assert settle(1, 2)
    ask(1)  # and right after
    assert settle(1, 3)
    add_faces(d.store, "staff", 1, seed=7)  # a delta: a newer seq, not a new snapshot
    d.step()
    ask(1)
    assert settle(1, 4)
    clock.now += SNAPSHOT_REPEAT_S + 1  # later: served again
    ask(1)
    assert settle(2, 4)
    for i in range(5):  # more changes than the feed keeps: a Rebase, every door needs a snapshot
        add_faces(d.store, "staff", 1, seed=10 + i)
    d.step()
    ask(1)
    assert settle(3, 4)
    assert wait_for(lambda: _snapshot_replies(watch).get("door-r", 0) >= 3 * 2, 30)  # 3 snapshots, 2 chunks each


def test_a_revocation_is_never_queued_behind_snapshots(desk, keys, listeners):
    """Snapshots go out a slice at a time (slice_s = 0: one chunk to one door per step); every step
    first journals and publishes what changed, so a DeleteUser made while three doors are still
    receiving a 4-chunk snapshot is on `changes` before the snapshot's last chunk."""
    d = desk(slice_s=0.0, heartbeat_s=3600)
    d.store.insert_collection("staff", V)
    d.store.insert_user("staff", "fired")
    faces = add_faces(d.store, "staff", CHUNK_FACES * 3 + 1, "fired")
    d.step()
    watch = listeners([T.changes, T.reply("#")], "watch")
    for i in range(3):
        watch.client.publish(T.request, SyncRequest(device_id=f"door-{i}", snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: d.publisher._inbox.qsize() == 3, 30)  # all three in before a step: one run
    assert wait_for(lambda: (d.step(), d.publisher._run is not None and len(d.publisher._run.devices) == 3)[1], 30)
    base = d.publisher._run.seq
    d.store.delete_user("staff", "fired")  # the revocation, while 12 chunk replies are due
    d.step()
    assert d.publisher._run is not None  # the snapshot is still going out ...
    assert d.journal.last("staff").seq == base + 1 and d.publisher.published["staff"] == base + 1  # ... after it
    while d.publisher._run is not None:
        d.step()
    assert wait_for(lambda: sum(_snapshot_replies(watch).values()) == 12, 30)
    order = [(t, p) for t, p in watch.snapshot() if t == T.changes or "/reply/" in t]
    revocation = next(i for i, (t, _) in enumerate(order) if t == T.changes)
    assert revocation < len(order) - 1 and all("/reply/" in t for t, _ in order[revocation + 1:])
    door = ChangeSetVerifier(keys[1], "staff", V, applied_seq=0)
    chunks = [door.check(p) for t, p in order if "/reply/door-0" in t]
    assert {c.seq for c in chunks} == {base}  # the snapshot shows the state of its base seq
    assert sum(len(parse_body(c.body).faces_put) for c in chunks) == len(faces)
    cs = ChangeSetVerifier(keys[1], "staff", V, applied_seq=base).check(order[revocation][1])
    assert cs.seq == base + 1 and parse_body(cs.body).users_deleted == ["fired"]


def _staff_and_a_seen_door(broker, desk_db, listeners):
    """The desk's database with 'staff' (ann, 3 faces); a listener on every reply; and door-real,
    connected with a retained "online" status (as a door does: the desk has seen it)."""
    store = Store(desk_db)
    store.insert_collection("staff", V)
    store.insert_user("staff", "ann")
    add_faces(store, "staff", 3, "ann")
    store.close()
    watch = listeners([T.reply("#")], "watch")
    real = MqttClient(MqttSettings(port=broker.port), client_id="facelink-door-real",
                      will=Will(f"{PREFIX}/door-real/status"))
    assert real.wait_connected(30)
    return watch, real


def test_the_desk_service_answers_only_doors_seen_on_their_own_topics(broker, keys, desk_db, listeners, start_desk):
    """`facelink fleet publish` (default fleet.reply_to_seen_doors_only): requests naming invented
    device ids are refused (UNKNOWN_DEVICE) and cost nothing; a door that published its status
    (a topic the broker ACL ties to its username) gets its snapshot."""
    watch, real = _staff_and_a_seen_door(broker, desk_db, listeners)
    ghosts = [f"ghost-{i}" for i in range(50)]  # listed, never seen
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"], ["door-real", *ghosts], fleet__heartbeat_s="0.5")
    try:
        ask = SyncRequest(device_id="door-real", snapshot=True).encode().decode()
        assert round_trip(lambda p: real.publish(own("door-real"), ask, qos=1),
                          lambda p: "door-real" in _snapshot_replies(watch), timeout=60, each=3.0)
        for ghost in ghosts:
            watch.client.publish(T.request, SyncRequest(device_id=ghost, snapshot=True).encode().decode(), qos=1)
        assert wait_for(lambda: desk.log().count("UNKNOWN_DEVICE") >= 50, 30)  # every ghost handled
        # the door that was seen is still answered after them (a range: its snapshot is fresh)
        since = len(watch.on(T.reply("door-real")))
        real.publish(own("door-real"), SyncRequest(device_id="door-real", from_seq=1).encode().decode(), qos=1)
        assert wait_for(lambda: len(watch.on(T.reply("door-real"))) > since, 60)
        assert set(_snapshot_replies(watch)) == {"door-real"}  # no ghost got anything
    finally:
        real.stop()
        desk.stop()


# -- requests tied to the sender: each door asks on its own topic --------------------------------


@pytest.fixture()
def doors(broker):
    """``doors("door-a")``: a client that publishes its retained ``online`` status, as a door does."""
    made: list[MqttClient] = []

    def make(device_id: str) -> MqttClient:
        made.append(MqttClient(MqttSettings(port=broker.port), client_id=f"facelink-{device_id}",
                               will=Will(f"{PREFIX}/{device_id}/status")))
        assert made[-1].wait_connected(30)
        return made[-1]

    yield make
    for m in made:
        m.stop()


def _ask(device_id: str, **fields) -> str:
    return SyncRequest(device_id=device_id, **fields).encode().decode()


def _refused(d: Desk, reason: str) -> int:
    return d.publisher.gate.refused.get(reason, 0)


def _desk_hears(d: Desk, client: MqttClient, topic: str) -> bool:
    """The desk's subscription to ``topic`` is through: a probe (not JSON) published there by
    ``client`` is refused as MALFORMED (it costs no rate limit)."""
    start = _refused(d, "MALFORMED")
    return round_trip(lambda p: client.publish(topic, p, qos=1),
                      lambda p: (d.step(), _refused(d, "MALFORMED") > start)[1], timeout=60)


def _three_change_sets(d: Desk) -> None:
    d.store.insert_collection("staff", V)
    for i in range(3):
        d.store.insert_user("staff", f"u{i}")
        d.step()
    assert d.publisher.published["staff"] == 3


def test_a_request_on_one_doors_topic_naming_another_is_refused_and_costs_that_door_nothing(
        desk, keys, listeners, doors):
    """The desk takes the device id from the door's own request topic: door-a asking on its topic
    in door-b's name is refused (DEVICE_MISMATCH) before any rate limit, so door-b (one request
    allowed) still gets its range afterwards; the seen-doors rule and the per-device limit apply
    unchanged, keyed by the topic's id."""
    d = desk(request_burst=1, request_interval_s=3600, seen_doors_only=True)
    _three_change_sets(d)
    watch = listeners([T.reply("#")], "watch")
    a, b = doors("door-a"), doors("door-b")
    assert wait_for(lambda: d.publisher.seen("door-a") and d.publisher.seen("door-b"), 30)
    assert _desk_hears(d, a, own("door-a"))
    for _ in range(5):
        a.publish(own("door-a"), _ask("door-b", from_seq=1), qos=1)
    assert wait_for(lambda: (d.step(), _refused(d, "DEVICE_MISMATCH") == 5)[1], 30)
    a.publish(own("door-c"), _ask("door-c", from_seq=1), qos=1)  # door-c's topic, but never seen
    assert wait_for(lambda: (d.step(), _refused(d, "UNKNOWN_DEVICE") == 1)[1], 30)
    assert "RATE_LIMITED" not in d.publisher.gate.refused
    b.publish(own("door-b"), _ask("door-b", from_seq=1), qos=1)
    assert wait_for(lambda: (d.step(), len(watch.on(T.reply("door-b"))) >= 3)[1], 30)
    assert watch.on(T.reply("door-b")) == [e.message for e in d.journal.entries("staff", 1, 3)]  # nothing else
    b.publish(own("door-b"), _ask("door-b", from_seq=1), qos=1)  # door-b's own limit: one, spent
    assert wait_for(lambda: (d.step(), _refused(d, "RATE_LIMITED") == 1)[1], 30)
    assert len(watch.on(T.reply("door-b"))) == 3 and _snapshot_replies(watch) == {"door-b": 3}


def test_only_the_listed_doors_are_answered(desk, keys, listeners, doors):
    """fleet.doors: a broker user that is not a door (the audit logger's account, under an ACL
    whose rules apply to every user) publishes a status under its own name and asks on its own
    topic for a snapshot: refused (UNLISTED_DEVICE) before any rate limit, nothing sent; a listed
    door seen the same way gets its snapshot."""
    d = desk(seen_doors_only=True, doors={"door-a": ["staff"]})
    _three_change_sets(d)
    watch = listeners([T.reply("#")], "watch")
    a, logger = doors("door-a"), doors("facelink-logger")
    assert wait_for(lambda: d.publisher.seen("door-a") and d.publisher.seen("facelink-logger"), 30)
    assert _desk_hears(d, logger, own("facelink-logger"))
    logger.publish(own("facelink-logger"), _ask("facelink-logger", snapshot=True), qos=1)
    assert wait_for(lambda: (d.step(), _refused(d, "UNLISTED_DEVICE") == 1)[1], 30)
    assert "facelink-logger" not in d.publisher.gate.per_device._buckets
    a.publish(own("door-a"), _ask("door-a", snapshot=True), qos=1)
    assert wait_for(lambda: (d.step(), "door-a" in _snapshot_replies(watch))[1], 30)
    assert set(_snapshot_replies(watch)) == {"door-a"} and d.publisher.snapshots_sent == 1


def test_once_a_door_asked_on_its_own_topic_the_shared_topic_cannot_spend_its_limit(
        desk, keys, listeners, doors):
    """Upgrading: the shared request topic still serves doors that never asked on their own topic
    (fleet.accept_shared_request_topic, on by default); once door-b has asked on its own topic,
    requests naming it on the shared topic are refused (USE_DEVICE_TOPIC) without touching its
    rate limit, so its next request is still answered."""
    d = desk(request_burst=2, request_interval_s=3600, seen_doors_only=True)
    _three_change_sets(d)
    watch = listeners([T.reply("#")], "watch")
    b, c = doors("door-b"), doors("door-c")
    assert wait_for(lambda: d.publisher.seen("door-b") and d.publisher.seen("door-c"), 30)
    assert _desk_hears(d, b, own("door-b"))
    b.publish(own("door-b"), _ask("door-b", from_seq=1), qos=1)  # 1 of its 2
    assert wait_for(lambda: (d.step(), len(watch.on(T.reply("door-b"))) == 3)[1], 30)
    for _ in range(5):  # anyone on the shared topic, in door-b's name
        watch.client.publish(T.request, _ask("door-b", from_seq=1), qos=1)
    assert wait_for(lambda: (d.step(), _refused(d, "USE_DEVICE_TOPIC") == 5)[1], 30)
    b.publish(own("door-b"), _ask("door-b", from_seq=2), qos=1)  # 2 of its 2: still there
    assert wait_for(lambda: (d.step(), len(watch.on(T.reply("door-b"))) == 5)[1], 30)
    assert "RATE_LIMITED" not in d.publisher.gate.refused
    assert watch.on(T.reply("door-b"))[3:] == [e.message for e in d.journal.entries("staff", 2, 3)]
    c.publish(T.request, _ask("door-c", from_seq=1), qos=1)  # never used its own topic: served
    assert wait_for(lambda: (d.step(), len(watch.on(T.reply("door-c"))) == 3)[1], 30)
    assert _refused(d, "USE_DEVICE_TOPIC") == 5 and "RATE_LIMITED" not in d.publisher.gate.refused


def test_with_the_shared_topic_off_the_desk_service_answers_only_doors_own_topics(
        broker, keys, desk_db, listeners, start_desk):
    """`facelink fleet publish` with fleet.accept_shared_request_topic = false does not subscribe
    the shared request topic: a request there gets nothing; the same door on its own topic is
    answered."""
    watch, real = _staff_and_a_seen_door(broker, desk_db, listeners)
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"], ["door-real"], fleet__heartbeat_s="0.5",
                      fleet__accept_shared_request_topic="false")
    try:
        snap = _ask("door-real", snapshot=True)
        assert round_trip(lambda p: real.publish(own("door-real"), snap, qos=1),
                          lambda p: "door-real" in _snapshot_replies(watch), timeout=60, each=3.0)
        assert "own topics only" in desk.log()
        since = len(watch.on(T.reply("door-real")))
        for _ in range(3):  # the shared topic: nobody listens (a range would be answered at once)
            real.publish(T.request, _ask("door-real", from_seq=1), qos=1)
        real.publish(own("door-real"), _ask("door-real", from_seq=1), qos=1)  # after them, on its own topic
        assert wait_for(lambda: len(watch.on(T.reply("door-real"))) > since, 60)
        assert wait_for(lambda: "re-sent staff change sets 1..1 to door-real" in desk.log(), 30)
        # everything the desk got before that reply is handled (one connection's messages stay in
        # order): only the own-topic request was answered
        assert desk.log().count("re-sent staff change sets 1..1 to door-real") == 1
    finally:
        real.stop()
        desk.stop()
    assert "USE_DEVICE_TOPIC" not in desk.log() and "RATE_LIMITED" not in desk.log()


def test_readme_shows_the_generated_broker_acl():
    """README's Broker ACL block is `facelink fleet acl`'s output for the configuration shown
    just before it."""
    from facelink.models.manifest import toml_loads

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("**Broker ACL**", 1)[1]
    config = toml_loads(section.split("```toml\n", 1)[1].split("```", 1)[0])["fleet"]
    block = section.split("it writes:\n\n```\n", 1)[1].split("```", 1)[0]
    assert config["doors"] == {"door-lobby": ["staff"], "door-lab": ["staff", "lab"]}
    assert block == broker_acl("facelink", config["doors"], "facelink-desk", "facelink-logger", True)
    assert not [ln for ln in block.splitlines() if ln.startswith("pattern")]


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_under_the_generated_broker_acl_only_listed_doors_get_the_collection(tmp_path, keys, desk_db):
    """mosquitto with `facelink fleet acl`'s ACL and a password per user; the desk publishes staff
    and lab, door-a is listed for staff, door-b for both. door-a cannot publish on door-b's own
    request topic (the broker drops it) and its own topic naming door-b is refused
    (DEVICE_MISMATCH); door-b gets its range. door-a reads staff's change sets and none of lab's,
    and its request for a lab snapshot is refused (UNLISTED_DEVICE). The audit logger's account
    (it used to count as a door: every `pattern` rule applied to it) cannot publish a status or a
    request, reads no change set and no reply: the desk never hears it, and it receives nothing."""
    from broker import Broker

    lab = CollectionTopics(PREFIX, "lab")
    acl = broker_acl(PREFIX, {"door-a": ["staff"], "door-b": ["staff", "lab"]}, "facelink-desk", "facelink-logger",
                     True)
    (tmp_path / "acl").write_text(acl)
    users = {"facelink-desk": "pw-desk", "facelink-logger": "pw-log", "door-a": "pw-a", "door-b": "pw-b"}
    for i, (user, pw) in enumerate(users.items()):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if i == 0 else []), str(tmp_path / "passwd"), user, pw],
                       check=True, capture_output=True)
    broker = Broker(tmp_path / "broker", allow_anonymous=False,
                    mosquitto_extra=f"password_file {tmp_path / 'passwd'}\nacl_file {tmp_path / 'acl'}\n").start()
    if broker.kind != "mosquitto":
        broker.stop()
        pytest.skip("needs mosquitto")
    made: list = []
    got: dict[str, list[tuple[str, bytes]]] = {"door-a": [], "door-b": [], "facelink-logger": []}

    def connect(user: str, **kw) -> MqttClient:
        made.append(MqttClient(MqttSettings(port=broker.port, username=user, password=users[user]), **kw))
        assert made[-1].wait_connected(30)
        return made[-1]

    def listen(user: str, topics: list[str]) -> MqttClient:
        return connect(user, client_id=f"facelink-{user}", subscriptions=topics, will=Will(f"{PREFIX}/{user}/status"),
                       on_message=lambda t, p: got[user].append((t, p)))

    def on(user: str, topic: str) -> list[bytes]:
        return [p for t, p in list(got[user]) if t == topic]

    try:
        store, journal = Store(desk_db), Journal(desk_db)
        made.append(type("closer", (), {"stop": lambda self: (journal.close(), store.close())})())
        publisher = Publisher(store, journal, keys[0], ["staff", "lab"], PREFIX, request_burst=1,
                              request_interval_s=3600, seen_doors_only=True,
                              doors={"door-a": ["staff"], "door-b": ["staff", "lab"]})
        desk = connect("facelink-desk", client_id="facelink-desk", subscriptions=publisher.subscriptions(),
                       on_message=publisher.on_message)
        decisions = f"{PREFIX}/+/decision"
        logger = connect("facelink-logger", client_id="facelink-logger",
                         subscriptions=[T.changes, T.head, T.reply("#"), lab.changes, decisions],
                         on_message=lambda t, p: got["facelink-logger"].append((t, p)))
        a_probe, b_probe = DeviceTopics(PREFIX, "door-a").credential, DeviceTopics(PREFIX, "door-b").credential
        a = listen("door-a", [T.changes, lab.changes, lab.reply("door-a"), a_probe])
        b = listen("door-b", [T.reply("door-b"), lab.changes, b_probe])
        # every subscription is through once a probe published after it comes back (one connection
        # keeps its order): door-a and door-b read their own credential topics, the logger decisions
        for client, user, topic in ((a, "door-a", a_probe), (b, "door-b", b_probe),
                                    (a, "facelink-logger", f"{PREFIX}/door-a/decision")):
            assert round_trip(lambda p, c=client, t=topic: c.publish(t, p, qos=1),
                              lambda p, u=user, t=topic: p.encode() in on(u, t))
        store.insert_collection("lab", V)
        store.insert_user("lab", "lab-0")
        publisher.step(desk)
        store.insert_collection("staff", V)
        for i in range(3):
            store.insert_user("staff", f"u{i}")
            publisher.step(desk)
        assert wait_for(lambda: len(on("door-a", T.changes)) == 3 and len(on("door-b", lab.changes)) == 1, 30)
        assert wait_for(lambda: publisher.seen("door-a") and publisher.seen("door-b"), 30)
        assert round_trip(lambda p: a.publish(own("door-a"), p, qos=1),  # the desk hears door-a's topic
                          lambda p: (publisher.step(desk), publisher.gate.refused.get("MALFORMED", 0) > 0)[1])
        # each acknowledged by the broker (which drops them) before door-b's request below is sent:
        # the broker forwards in the order it processes, so the desk would have had them first
        assert logger.publish(f"{PREFIX}/facelink-logger/status", "online", qos=1, retain=True)
        assert logger.publish(own("facelink-logger"), _ask("facelink-logger", snapshot=True), qos=1)
        assert logger.publish(T.request, _ask("door-a", snapshot=True), qos=1)  # not a door: no shared topic
        assert a.publish(own("door-a").replace("/staff/", "/lab/"), _ask("door-a", snapshot=True), qos=1)
        a.publish(own("door-b"), _ask("door-b", from_seq=1), qos=1)  # not door-a's topic: dropped by the broker
        a.publish(own("door-a"), _ask("door-b", from_seq=1), qos=1)  # its own topic, door-b's name
        assert wait_for(lambda: (publisher.step(desk), publisher.gate.refused.get("DEVICE_MISMATCH", 0) == 1)[1], 30)
        assert "door-b" not in publisher.gate.per_device._buckets  # nothing reached door-b's limit
        assert round_trip(lambda p: b.publish(own("door-b"), _ask("door-b", from_seq=1), qos=1),
                          lambda p: (publisher.step(desk), len(on("door-b", T.reply("door-b"))) >= 3)[1],
                          timeout=60, each=3.0)
        assert on("door-b", T.reply("door-b"))[:3] == [e.message for e in journal.entries("staff", 1, 3)]
        assert set(publisher.gate.refused) <= {"MALFORMED", "DEVICE_MISMATCH", "RATE_LIMITED", "UNLISTED_DEVICE"}
        assert publisher.gate.refused["DEVICE_MISMATCH"] == 1 and not publisher.seen("facelink-logger")
        assert publisher.gate.refused["UNLISTED_DEVICE"] == 1  # door-a's lab request
        assert publisher.snapshots_sent == 0
        assert [t for t, _ in got["facelink-logger"] if t != f"{PREFIX}/door-a/decision"] == []  # nothing else
        assert {t for t, _ in got["door-a"]} == {T.changes, a_probe}  # staff's, none of lab's
    finally:
        for m in reversed(made):
            m.stop()
        broker.stop()


def test_heads_keep_their_pace_when_the_desks_wall_clock_is_stepped_back(desk, keys, listeners):
    """NTP steps the desk's wall clock back 10 minutes while it runs: heartbeats go on at their
    pace (they are timed on the monotonic clock) and each head's issued_at still advances by the
    time between heads, so a door (which bounds when a head was issued by the desk's time between
    heads) does not judge every later head 10 minutes late and go stale for hours. Before, the
    heads stopped for the 10 minutes and then carried the stepped clock. A step forward is the
    wall clock's."""
    wall, mono = [10_000.0], [0.0]
    d = desk(heartbeat_s=30, clock=lambda: wall[0], monotonic=lambda: mono[0])
    door = listeners([T.head], "door-heads")
    d.store.insert_collection("staff", V)
    d.step()  # seq 1 and its first head
    issued = []
    for step_s in (0, -600, 0, 0, 3600):
        mono[0] += 30
        wall[0] += 30 + step_s
        d.step()
        assert wait_for(lambda: len(door.on(T.head)) == len(issued) + 2, 30), "no head on its heartbeat"
        issued.append(decode_head(keys[1], door.on(T.head)[-1]).issued_at)
    assert issued == [10_030.0, 10_060.0, 10_090.0, 10_120.0, 10_150.0 + 3600 - 600]


def _desk_runs(desk_db, keys, broker, door, issued: list[float]):
    """A desk of collection ``staff`` on a wall clock starting at 10,000 s: ``run(mono, steps)``
    starts it on the monotonic clock ``mono``, and for each step (seconds the wall clock is
    stepped by, beside the heartbeat's 30 s) adds the head ``door`` receives to ``issued``."""
    wall = [10_000.0]
    seed = Store(desk_db)
    seed.insert_collection("staff", V)
    seed.close()

    def run(mono: list[float], steps: list[float]) -> None:
        d = Desk(desk_db, keys[0], broker.port, heartbeat_s=30, clock=lambda: wall[0], monotonic=lambda: mono[0])
        try:
            assert d.client.wait_connected(30)
            for step_s in steps:
                mono[0] += 30
                wall[0] += 30 + step_s
                d.step()
                assert wait_for(lambda: len(door.on(T.head)) >= len(issued) + 1, 30), "no head on its heartbeat"
                issued.append(decode_head(keys[1], door.on(T.head)[-1]).issued_at)
        finally:
            d.close()

    return run


def test_a_desk_started_again_after_its_clock_was_stepped_back_goes_on_from_its_last_head(desk_db, keys, broker,
                                                                                           listeners):
    """The desk's heads run ahead of its wall clock once it was stepped back while it ran (above).
    Started again (an upgrade, a crash, a reboot: days later), its first head must not fall back to
    the wall clock: a door drops every head whose issued_at is not past the last one it accepted
    (``issued_at <= head_issued_at``) and, after the step, judges the later ones late -- every
    door stale for hours, long after the step (found in review)."""
    issued: list[float] = []
    run = _desk_runs(desk_db, keys, broker, listeners([T.head], "door-heads"), issued)
    run([0.0], [0, -600, 0])  # seq 1's first head, then the clock stepped back 10 minutes while it runs
    assert issued == [10_030.0, 10_060.0, 10_090.0]
    run([5.0], [0])  # started again 30 s later: a new monotonic clock, the wall clock as NTP left it
    assert issued[-1] >= 10_090.0 + 30, f"the desk started again went back to its wall clock: {issued}"


def test_the_first_head_of_a_desk_started_again_is_after_its_last_one(desk_db, keys, broker, listeners):
    """Started again after its wall clock was stepped back by at least the time it was down (NTP
    correcting a clock that ran ahead, at the reboot), the desk's first head must still be issued
    after the last one it published: a door drops a head whose issued_at is not past the last it
    accepted, so a head equal to it confirms nothing, nor names the new seq (found in review)."""
    issued: list[float] = []
    run = _desk_runs(desk_db, keys, broker, listeners([T.head], "door-heads"), issued)
    run([0.0], [0, 0])
    assert issued == [10_030.0, 10_060.0]
    run([5.0], [-600])  # down 30 s, the clock stepped back 10 minutes meanwhile
    assert issued[-1] > issued[-2], f"the first head after the start repeats the last one: {issued}"
