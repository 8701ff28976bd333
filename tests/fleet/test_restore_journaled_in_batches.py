"""Review 90: `facelink fleet accept-restore` over a lost range larger than one batch. The desk
journals the empty change sets past the lost seqs ``restore_batch`` at a time (one journal
transaction each), serving its other collections between batches, publishes nothing of the
collection until it is past the lost range (a head naming a lost seq would confirm a door's copy of
the lost history), and a desk stopped mid-way goes on from its journal. Before, the whole range was
journaled in one step (100k seqs: minutes, every other collection waiting). Real parts: the desk's
Publisher and journal on a real desk database, a real mosquitto (retained head, listener)."""

from __future__ import annotations

import json

from facelink.config import MqttSettings
from facelink.enroll.store import Store
from facelink.fleet.changeset import envelope_payload_sha256
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import Head, encode_head
from facelink.fleet.publisher import Publisher
from facelink.mqtt.client import MqttClient
from facelink.mqtt.topics import CollectionTopics
from tests.waiting import round_trip

from .conftest import PREFIX, V, add_faces

STAFF, LAB = CollectionTopics(PREFIX, "staff"), CollectionTopics(PREFIX, "lab")
EVIDENCE = 7  # the retained head the desk signed before its database went back (to an empty journal)
BATCH = 3


def _payload(message: bytes) -> dict:
    return json.loads(json.loads(message)["payload"])


def retain_evidence_head(port: int, key, client_id: str) -> None:
    """The broker keeps staff's head at seq ``EVIDENCE``, signed by the desk's ``key``: what the desk
    published before its database went back."""
    setup = MqttClient(MqttSettings(port=port), client_id=client_id)
    try:
        assert setup.wait_connected(30)
        head = encode_head(key, Head(collection_id="staff", face_model_version=V, seq=EVIDENCE, issued_at=1.0))
        assert setup.publish(STAFF.head, head.decode(), qos=1, retain=True)
    finally:
        setup.stop()


class Desk:
    """The desk's Publisher over the broker, as `facelink fleet publish` runs it (one process)."""

    def __init__(self, db, key, port: int) -> None:
        self.store, self.journal = Store(db), Journal(db)
        self.publisher = Publisher(self.store, self.journal, key, ["staff", "lab"], PREFIX, restore_batch=BATCH)
        self.client = MqttClient(MqttSettings(port=port), client_id="rv90-desk",
                                 subscriptions=self.publisher.subscriptions(), on_message=self.publisher.on_message)
        assert self.client.wait_connected(30)

    def step(self, inbox) -> None:
        """One step, then everything it published has reached ``inbox`` (one connection keeps order)."""
        self.publisher.step(self.client)
        assert round_trip(lambda m: self.client.publish(inbox.probe_topic, m, qos=1),
                          lambda m: (inbox.probe_topic, m.encode()) in inbox.snapshot(), 30)

    def close(self) -> None:
        self.client.stop()
        self.publisher.close()
        self.journal.close()
        self.store.close()


def test_accept_restore_journals_a_long_lost_range_in_batches_across_a_restart(broker, listeners, desk_db, keys):
    with Store(desk_db) as s:
        for c in ("staff", "lab"):
            s.insert_collection(c, V)
            s.insert_user(c, "ann")
            add_faces(s, c, 1, "ann")
    retain_evidence_head(broker.port, keys[0], "rv90-setup")
    inbox = listeners([STAFF.changes, STAFF.head, LAB.changes, LAB.head], "rv90-door")
    desk = Desk(desk_db, keys[0], broker.port)
    try:
        desk.step(inbox)
        assert desk.publisher.held()["staff"].lost == (1, EVIDENCE)
        assert desk.journal.last("staff") is None and desk.journal.last("lab").seq == 1
        desk.journal.accept_restore("staff")  # the operator (the desk's own connection: the same database)
        with Store(desk_db) as s:
            s.insert_user("lab", "bob")
        desk.step(inbox)  # the rebase and one batch of staff; lab's change journaled and published meanwhile
        assert desk.journal.last("staff").seq == 1 + BATCH and desk.journal.published_seq("staff") == 0
        assert [_payload(m)["seq"] for m in inbox.on(LAB.changes)] == [1, 2]
        assert desk.publisher.held() == {}  # accepted, not held: requests are taken, answered once past
    finally:
        desk.close()
    assert inbox.on(STAFF.changes) == [] and [_payload(m)["seq"] for m in inbox.on(STAFF.head)] == [EVIDENCE]
    desk = Desk(desk_db, keys[0], broker.port)  # started again mid-way: goes on from its journal
    try:
        steps = 0
        while desk.journal.published_seq("staff") == 0:
            assert inbox.on(STAFF.changes) == [], "published before the journal was past the lost seqs"
            desk.step(inbox)
            steps += 1
            assert steps <= 3
        assert steps == 2  # 5..7, then 8 (the evidence seq + 1) and everything published
        journaled = [e.message for e in desk.journal.entries("staff", 1, EVIDENCE + 1)]
        assert [_payload(m)["seq"] for m in journaled] == list(range(1, EVIDENCE + 2))
        assert [_payload(m).get("prev") for m in journaled] == \
            [None] + [envelope_payload_sha256(m) for m in journaled[:-1]]  # one chain across batches and the restart
        assert [_payload(m)["body"]["kind"] for m in journaled] == ["rebase"] + ["delta"] * EVIDENCE
        assert inbox.on(STAFF.changes) == journaled  # in order, each once
        assert [_payload(m)["seq"] for m in inbox.on(STAFF.head)] == [EVIDENCE, EVIDENCE + 1]
        assert desk.journal.restores()[0].accepted_at is not None and desk.publisher.held() == {}
    finally:
        desk.close()
