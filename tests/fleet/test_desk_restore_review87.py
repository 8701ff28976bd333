"""Review 87 of the restore hold (test_desk_restore_held.py): what the desk reads before it
journals, with more than one collection, on a broker that holds QoS 1 messages back; and the
operator's `facelink fleet accept-restore` run while the desk runs."""

from __future__ import annotations

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
