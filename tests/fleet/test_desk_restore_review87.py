"""Review 87 of the restore hold (test_desk_restore_held.py): what the desk reads before it
journals, with more than one collection, on a broker that holds QoS 1 messages back; and the
operator's `facelink fleet accept-restore` run while the desk runs."""

from __future__ import annotations

import json
import socket
import time

from broker import Broker

from facelink.config import MqttSettings
from facelink.enroll.store import Store
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import Head, encode_head
from facelink.fleet.publisher import Publisher
from facelink.mqtt.client import MqttClient
from facelink.mqtt.topics import CollectionTopics

from .conftest import PREFIX, V, add_faces
from .test_desk_restore_held import BADGE, _accept_restore, _held_at_restart
from .test_follower import door  # noqa: F401 - the door fixture

COLLECTIONS = ["staff", "lab", "guests", "night", "vendors", "board"]


def _seed(db) -> None:
    with Store(db) as s:
        for c in COLLECTIONS:
            s.insert_collection(c, V)
            s.insert_user(c, "ann")
            add_faces(s, c, 1, "ann")


def _unread(sock: socket.socket) -> int:
    try:
        return len(sock.recv(65536, socket.MSG_PEEK))
    except BlockingIOError:  # nothing yet (paho's socket does not block)
        return 0


def _retain_heads(port: int, key, seq: int) -> None:
    """Heads the desk signed at ``seq`` for every collection, retained (its history before the
    database went back to an empty journal)."""
    c = MqttClient(MqttSettings(port=port), client_id="rv87-setup")
    try:
        assert c.wait_connected(30)
        for coll in COLLECTIONS:
            head = encode_head(key, Head(collection_id=coll, face_model_version=V, seq=seq, issued_at=1.0))
            assert c.publish(CollectionTopics(PREFIX, coll).head, head.decode(), qos=1, retain=True)
    finally:
        c.stop()


def test_every_collection_is_held_before_anything_is_journaled_on_a_broker_with_one_message_in_flight(
        tmp_path, desk_db, keys):
    """mosquitto's ``max_inflight_messages 1``: the retained head of the second collection waits
    for the PUBACK of the first, behind the SUBACKs. The desk must still read every head before it
    journals: a collection journaled first publishes its restored history (other bytes at the seqs
    the doors applied) and its head overwrites the retained evidence."""
    broker = Broker(tmp_path / "broker", mosquitto_extra="max_inflight_messages 1\n").start()
    _seed(desk_db)
    _retain_heads(broker.port, keys[0], 7)
    store, journal = Store(desk_db), Journal(desk_db)
    publisher = Publisher(store, journal, keys[0], COLLECTIONS, PREFIX)
    subscriptions = publisher.subscriptions()
    first: list[bool] = []

    def on_message(topic: str, payload: bytes) -> None:
        """The first message's PUBACK (sent once this returns) only after the broker answered
        every SUBSCRIBE (5 bytes a SUBACK, still unread on the socket): the order the broker
        chose, the same on every run."""
        if not first:
            first.append(True)
            sock = client._client.socket()
            deadline = time.monotonic() + 30
            while _unread(sock) < 5 * len(subscriptions) and time.monotonic() < deadline:
                pass
        publisher.on_message(topic, payload)

    client = MqttClient(MqttSettings(port=broker.port), client_id="rv87-desk",
                        subscriptions=subscriptions, on_message=on_message)
    try:
        assert client.wait_connected(30)
        publisher.step(client)
        journaled = {c: journal.last(c) for c in COLLECTIONS}
        assert journaled == {c: None for c in COLLECTIONS}, "journaled before its retained head was read"
        assert sorted(publisher.held()) == sorted(COLLECTIONS)
    finally:
        client.stop()
        publisher.close()
        journal.close()
        store.close()
        broker.stop()


def test_accept_restore_while_the_desk_runs(door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    """The operator accepts while `facelink fleet publish` runs (the README says the running desk
    picks it up): the desk journals past the lost seqs at its next step, the door diverges and
    takes its snapshot, and what the desk wrote after the command closed its own connection is in
    the database (586a3dd: closing a descriptor dropped the desk's SQLite locks, and the command
    deleted the -wal the desk was writing)."""
    site, _ = _held_at_restart(door, keys, broker, listeners, desk_db, tmp_path)
    d = site.door
    try:
        with Store(desk_db) as store:  # the lost revocation made again (held: not journaled yet)
            store.delete_user("staff", "bob")
        site.heartbeat()
        assert "staff" in site.desk.publisher.held() and site.desk.journal.last("staff").seq == 2
        done = _accept_restore(desk_db)  # the desk is running
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["LostSeqs"] == [3, 3]
        site.heartbeat()
        assert site.desk.publisher.held() == {} and site.desk.journal.last("staff").seq == 5
        assert "DIVERGED" in [a["reason"] for a in d.alarms]
        site.heartbeat()
        assert d.follower.applied_seq == 5 and d.follower.diverged is None and not d.follower.stale()
        assert d.store.user_by_credential("staff", BADGE) is None
        wal = desk_db.with_name(desk_db.name + "-wal")
        assert wal.exists(), "the command deleted the -wal the running desk writes"
        other = Journal(desk_db)  # another connection sees what the running desk committed
        try:
            assert other.last("staff").seq == 5 and other.published_seq("staff") == 5
            assert other.restores()[0].accepted_at is not None
        finally:
            other.close()
    finally:
        site.stop()
    journal = Journal(desk_db)  # and so does the desk started again: nothing held, nothing lost
    try:
        assert journal.last("staff").seq == 5 and journal.published_seq("staff") == 5
    finally:
        journal.close()



def test_a_subscription_the_broker_refuses_is_said(caplog):
    """A SUBACK with 0x80 (a broker or an auth plugin refusing the desk's read on the heads): the
    desk could never see that its history went back; before, that SUBACK counted as a subscription
    like any other, silently. (mosquitto's own acl_file grants the subscription and filters at
    delivery: README, the desk's ACL.)"""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    head = CollectionTopics(PREFIX, "staff").head
    client = MqttClient(MqttSettings(port=1), client_id="rv87-desk", subscriptions=[(head, 0), "other"])
    try:
        client._suback_due = {1: head, 2: "other"}
        client._on_subscribe(None, None, 1, [ReasonCode(PacketTypes.SUBACK, identifier=0x80)], None)
        client._on_subscribe(None, None, 2, [ReasonCode(PacketTypes.SUBACK, identifier=1)], None)
        assert client.refused == {head} and client._subscribed.is_set()
        assert any(r.levelname == "ERROR" and head in r.getMessage() for r in caplog.records)
    finally:
        client.stop()
