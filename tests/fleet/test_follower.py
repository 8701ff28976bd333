"""The door's follower on a real door store (SQLite + sqlite-vec), real Ed25519 signatures and,
where it asks the desk for something, a real mosquitto: change sets apply atomically with their
seq; re-deliveries are harmless; forged, tampered, replayed, reordered, foreign, other-model and
malformed messages change nothing and raise an alarm; gaps and rebases are repaired by request;
snapshots are staged and applied whole; heads confirm freshness."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from facelink.config import MqttSettings
from facelink.device.matcher import UserIndex
from facelink.enroll.store import Store
from facelink.fleet.changeset import encode
from facelink.fleet.follower import Follower
from facelink.fleet.protocol import (
    Delta,
    FacePut,
    Head,
    Rebase,
    SnapshotChunk,
    SyncRequest,
    UserPut,
    encode_head,
    vector_to_b64,
)
from facelink.fleet.signing import generate_keypair, load_private
from facelink.mqtt import wall_clock
from facelink.mqtt.client import MqttClient
from facelink.mqtt.schema import SyncAlarmMessage
from facelink.mqtt.topics import CollectionTopics, DeviceTopics
from tests.waiting import round_trip

from .conftest import PREFIX, V, wait_for

T = CollectionTopics(PREFIX, "staff")
DOOR = "door-7"
ASK = DeviceTopics(PREFIX, DOOR).sync_request("staff")  # the door asks on its own topic


def unit(seed: int, dim: int = 128) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim).astype(np.float32)
    return v / np.linalg.norm(v)


def face(fid: str, user: str | None, seed: int, dim: int = 128, length: float = 1.0) -> FacePut:
    """A face to put; another ``dim`` or ``length`` builds one the protocol refuses (unvalidated,
    as a hostile or broken desk would send it)."""
    fields = dict(face_id=fid, user_id=user, image_id=str(uuid.uuid4()), confidence=99.0,
                  bounding_box={"Width": 0.5}, embedding=vector_to_b64(unit(seed, dim) * length))
    return FacePut(**fields) if (dim, length) == (128, 1.0) else FacePut.model_construct(**fields)


def delta(seq: int, **fields) -> dict:
    return Delta(feed_position=seq * 10, **fields).model_dump()


class Clock:
    """The door's two clocks: ``clock.now += s`` is time passing (both move);
    :meth:`step_wall` is the wall clock being set (NTP, fake-hwclock): the monotonic one stays."""

    def __init__(self) -> None:
        self._wall, self._mono = 1_000_000.0, 5_000.0

    @property
    def now(self) -> float:
        return self._wall

    @now.setter
    def now(self, value: float) -> None:
        self._mono += value - self._wall
        self._wall = value

    def step_wall(self, seconds: float) -> None:
        self._wall += seconds

    def __call__(self) -> float:
        return self._wall

    def monotonic(self) -> float:
        return self._mono


class Door:
    """A door's store with its follower (no MQTT unless ``transport`` is given) and its alarms."""

    def __init__(self, path, trusted, transport=None, **options) -> None:
        self.store = Store(path)
        self.alarms: list[dict] = []
        self.clock = Clock()
        self.follower = Follower(self.store, "staff", V, trusted, DOOR, PREFIX, transport=transport,
                                 alarm=self.alarms.append, clock=self.clock, monotonic=self.clock.monotonic,
                                 **options)

    def feed(self, message: bytes, topic: str = T.changes) -> None:
        self.follower.handle(topic, message)
        self.follower.tick()

    def state(self) -> tuple:
        """Everything a change set may touch, in a comparable form."""
        faces = self.store.query("SELECT face_id, user_id, embedding FROM faces ORDER BY face_id")
        vectors = self.store.query("SELECT count(*) FROM face_vectors")
        users = self.store.query("SELECT user_id, credential FROM users ORDER BY user_id")
        applied = self.store.query("SELECT seq, key_id, feed_position FROM sync_applied")
        return faces, vectors, users, applied

    def close(self) -> None:
        self.store.close()


@pytest.fixture()
def door(tmp_path, keys):
    made: list[Door] = []

    def make(transport=None, name: str = "door", **options) -> Door:
        made.append(Door(tmp_path / name / "facelink.db", keys[1], transport, **options))
        return made[-1]

    yield make
    for d in made:
        d.close()


@pytest.fixture()
def desk_client(broker):
    client = MqttClient(MqttSettings(port=broker.port), client_id="door-7-transport")
    assert client.wait_connected(30)
    yield client
    client.stop()


def test_deltas_apply_with_their_seq_and_the_matcher_follows(door, keys):
    key = keys[0]
    d = door()
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann", credential="H10301:1:42"),
                                                          UserPut(user_id="bob")],
                                            faces_put=[face("fa", "ann", 1), face("fb", "bob", 2)])))
    index = UserIndex(d.store, "staff", V)
    index.load()
    assert index.best(unit(1)).user_id == "ann" and index.best(unit(2)).user_id == "bob"
    assert d.store.user_by_credential("staff", "H10301:1:42") == "ann"
    assert d.store.knn("staff", unit(2), 1)[0][1] == pytest.approx(0, abs=1e-5)  # sqlite-vec row too
    assert d.follower.applied_seq == 1 and d.follower.applied_event.is_set()
    assert d.store.query("SELECT seq, key_id, feed_position FROM sync_applied") == [(1, next(iter(keys[1])), 10)]

    # revocation: bob deleted (his face loses its user), ann's badge moves to a new face
    d.feed(encode(key, "staff", V, 2, delta(2, users_deleted=["bob"], faces_put=[face("fb", None, 2)],
                                            faces_deleted=["fa"])))
    d.feed(encode(key, "staff", V, 3, delta(3, faces_put=[face("fa2", "ann", 3)])))
    assert index.refresh(0)
    best = index.best(unit(2))
    assert best is None or best.user_id != "bob"
    assert index.best(unit(3)).user_id == "ann" and len(index) == 1
    assert not d.store.user_exists("staff", "bob") and d.follower.applied_seq == 3
    assert d.follower.rejected == {} and d.alarms == []


def test_duplicate_is_harmless_replay_and_forgeries_change_nothing(door, keys, tmp_path, monkeypatch):
    # the kernel's word fixed at "not synchronized" (found in review: compared with this machine's
    # own state, the check below passed on a synchronized machine with alarms never stamped)
    monkeypatch.setattr(wall_clock, "synchronized", lambda: False)
    key = keys[0]
    d = door()
    first = encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")],
                                             faces_put=[face("fa", "ann", 1)]))
    d.feed(first)
    before = d.state()

    d.feed(first)  # QoS 1 re-delivery: same seq, same bytes
    assert d.follower.duplicates == 1 and d.follower.rejected == {} and d.alarms == []

    generate_keypair(tmp_path / "evil.key", tmp_path / "evil.pub")
    evil = load_private(tmp_path / "evil.key")
    mallory = [face("fm", "mallory", 9)]
    envelope = json.loads(encode(key, "staff", V, 2, delta(2, faces_put=mallory)))
    tampered = json.dumps({**envelope, "payload": envelope["payload"].replace('"fm"', '"fx"')}).encode()
    cases = {
        "REPLAY": encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="mallory")], faces_put=mallory)),
        "UNKNOWN_KEY": encode(evil, "staff", V, 2, delta(2, faces_put=mallory)),
        "BAD_SIGNATURE": tampered,
        "UNSIGNED": json.dumps({"payload": envelope["payload"]}).encode(),
        "WRONG_COLLECTION": encode(key, "guests", V, 2, delta(2, faces_put=mallory)),
        "WRONG_MODEL": encode(key, "staff", "other-model/1", 2, delta(2, faces_put=mallory)),
        "MALFORMED": b"\x00not json",
    }
    for reason, message in cases.items():
        d.feed(message)
        assert d.state() == before, reason
        assert d.follower.rejected.get(reason) == 1, (reason, d.follower.rejected)
        alarm = SyncAlarmMessage.model_validate(d.alarms[-1])
        assert alarm.reason == reason and alarm.device_id == DOOR and alarm.collection_id == "staff"
        # stamped like every event: said when this machine's clock is not synchronized
        assert d.alarms[-1].get("clock_synchronized") is False
    # the desk's key over other bytes at an applied seq is the desk's own history gone back, not a
    # forgery: also DIVERGED, the copy stale until a snapshot (test_desk_history_rewound.py)
    assert len(d.alarms) == len(cases) + 1 and d.follower.rejected["DIVERGED"] == 1 and d.follower.stale()
    for body in ({"kind": "teleport"}, delta(2, faces_put=[face("fw", "ann", 4, dim=64)]),
                 delta(2, faces_put=[face("fl", "ann", 4, length=5.0)])):  # scores 5x: refused
        d.feed(encode(key, "staff", V, 2, body))  # signed, but not a body a door can apply
    assert d.follower.rejected["MALFORMED"] == 4 and d.state() == before
    assert d.follower.applied_seq == 1 and d.follower.health()["rejected"] == d.follower.rejected


def test_a_failing_apply_changes_nothing_and_says_why(door, keys):
    key = keys[0]
    d = door()
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")], faces_put=[face("fa", "ann", 1)])))
    d.store.insert_collection("other", V)  # a face id the door holds elsewhere: the insert must fail
    d.store.insert_faces([{"face_id": "taken", "collection_id": "other", "image_id": "i", "image_sha256": "s",
                           "bounding_box": {}, "confidence": 99.0, "embedding": unit(5)}])
    before = d.state()
    d.feed(encode(key, "staff", V, 2, delta(2, users_deleted=["ann"], faces_deleted=["fa"],
                                            faces_put=[face("taken", "bob", 6)])))
    assert d.state() == before  # ann's deletion, earlier in the same set, was rolled back too
    assert d.store.user_exists("staff", "ann") and d.follower.applied_seq == 1
    health = d.follower.health()
    assert health["rejected"] == {"APPLY_FAILED": 1} and "StoreError" in health["error"]
    assert d.alarms[-1]["reason"] == "APPLY_FAILED"


def test_reordered_set_is_refused_and_the_gap_repaired_by_request(door, keys, desk_client, listeners):
    key = keys[0]
    asks = listeners([ASK], "request-listener")
    d = door(desk_client)
    sets = [encode(key, "staff", V, s, delta(s, users_put=[UserPut(user_id=f"u{s}")],
                                             faces_put=[face(f"f{s}", f"u{s}", s)])) for s in (1, 2, 3)]
    d.feed(sets[0])
    before = d.state()
    d.feed(sets[2])  # seq 3 before seq 2
    assert d.state() == before and d.follower.rejected == {"GAP": 1} and d.alarms[-1]["reason"] == "GAP"
    assert wait_for(lambda: asks.on(ASK))
    # the desk sends the range over several steps, new sets going out first: while the range is
    # asked for, a newer set ahead of it is counted but not alarmed again (one alarm for the gap)
    fourth = encode(key, "staff", V, 4, delta(4, users_put=[UserPut(user_id="u4")], faces_put=[face("f4", "u4", 4)]))
    d.feed(fourth)
    assert d.follower.rejected == {"GAP": 2} and [a["reason"] for a in d.alarms] == ["GAP"]
    request = SyncRequest.decode(asks.on(ASK)[0])
    assert (request.device_id, request.from_seq, request.snapshot) == (DOOR, 2, False)
    assert d.follower.health()["waiting_for"] == "range"
    d.feed(sets[1], T.reply(DOOR))  # the desk's answer: 2, 3 on reply/<door>
    d.feed(sets[2], T.reply(DOOR))
    d.feed(sets[1])  # and the broker's queued copy of 2: a duplicate
    assert d.follower.applied_seq == 3 and d.store.user_exists("staff", "u3") and d.follower.duplicates == 1
    assert d.follower.health()["waiting_for"] == "range"  # seq 4 was seen: still behind
    d.feed(fourth, T.reply(DOOR))  # the rest of the range
    assert d.follower.applied_seq == 4 and d.follower.health()["waiting_for"] is None
    assert len(asks.on(ASK)) == 1  # answered: no retry


def test_request_retried_with_backoff_while_nothing_arrives(door, keys, desk_client, listeners):
    asks = listeners([ASK], "request-listener")
    d = door(desk_client, request_retry_s=5.0)
    head = Head(collection_id="staff", face_model_version=V, seq=4, issued_at=d.clock.now)
    d.feed(encode_head(keys[0], head), T.head)  # a new door: it asks for a snapshot
    assert wait_for(lambda: len(asks.on(ASK)) == 1)
    for step, expected in ((4.0, 1), (1.5, 2), (5.0, 2), (5.5, 3)):  # retried after 5 s, then 10 s
        d.clock.now += step
        d.follower.tick()
        assert wait_for(lambda n=expected: len(asks.on(ASK)) >= n)
    assert len(asks.on(ASK)) == 3 and all(SyncRequest.decode(m).snapshot for m in asks.on(ASK))


def test_snapshot_bootstrap_staged_then_applied_whole(door, keys, desk_client, listeners):
    key = keys[0]
    asks = listeners([ASK], "request-listener")
    d = door(desk_client)
    d.feed(encode(key, "staff", V, 5, Rebase(feed_position=50, reason="first").model_dump()))
    assert wait_for(lambda: asks.on(ASK)) and SyncRequest.decode(asks.on(ASK)[0]).snapshot
    assert d.follower.rejected == {} and d.alarms == []  # a new door expects this: no alarm
    users = [UserPut(user_id=f"u{i}", credential=f"H10301:1:{i}") for i in range(6)]
    chunks = [SnapshotChunk(snapshot_id="snap1", chunk=i, chunks=3, feed_position=60, users_put=users if i == 0 else [],
                            faces_put=[face(f"f{i}{j}", f"u{i * 2 + j}", i * 2 + j) for j in range(2)]).model_dump()
              for i in range(3)]
    before = d.state()
    for i in (2, 0):  # out of order, and not yet complete: staged, nothing applied
        d.feed(encode(key, "staff", V, 6, chunks[i]), T.reply(DOOR))
        assert d.state() == before
    assert d.store.query("SELECT count(*) FROM sync_stage_faces") == [(4,)]
    d.feed(encode(key, "staff", V, 6, chunks[0]), T.reply(DOOR))  # a re-delivered chunk
    d.feed(encode(key, "staff", V, 6, chunks[1]), T.reply(DOOR))
    assert d.follower.applied_seq == 6 and d.store.count("faces", "staff") == 6
    assert d.store.credentials("staff")["u5"] == "H10301:1:5"
    assert d.store.query("SELECT count(*) FROM sync_stage_faces") == [(0,)]
    index = UserIndex(d.store, "staff", V)
    index.load()
    assert index.best(unit(5)).user_id == "u5"
    # change sets covered by the snapshot (still queued on `changes`) are dropped quietly
    d.feed(encode(key, "staff", V, 6, delta(6, users_put=[UserPut(user_id="late")])))
    assert d.follower.duplicates == 1 and d.alarms == []
    d.feed(encode(key, "staff", V, 7, delta(7, users_deleted=["u5"])))
    assert d.follower.applied_seq == 7 and not d.store.user_exists("staff", "u5")
    # an older snapshot replayed on the reply topic cannot roll the door back
    old = SnapshotChunk(snapshot_id="snap0", chunk=0, chunks=1, feed_position=40,
                        users_put=[UserPut(user_id="u5")], faces_put=[face("f21", "u5", 5)]).model_dump()
    after = d.state()
    d.feed(encode(key, "staff", V, 4, old), T.reply(DOOR))
    assert d.state() == after and d.follower.rejected == {"REPLAY": 1}


def test_a_door_missing_a_chunk_asks_again_once_the_desk_would_send_it(door, keys, desk_client):
    """The desk sends a door no second snapshot within SNAPSHOT_REPEAT_S (requests are unsigned).
    A door that got some chunks and lost one (a reconnect with a clean session) therefore asks
    again just after that window from its last new chunk, not on its growing back-off (5, 10, 20,
    40, 60 s: up to a minute more); a replayed chunk (no progress) does not push that back."""
    from facelink.fleet.protocol import SNAPSHOT_REPEAT_S

    key = keys[0]
    d = door(desk_client, request_retry_s=5.0)
    d.feed(encode(key, "staff", V, 5, Rebase(feed_position=50, reason="first").model_dump()))
    assert d.follower.requests_sent == 1  # a snapshot, asked at once
    chunks = [SnapshotChunk(snapshot_id="s1", chunk=i, chunks=2, feed_position=60,
                            faces_put=[face(f"f{i}", None, i)]).model_dump() for i in range(2)]
    d.clock.now += 2.0
    d.feed(encode(key, "staff", V, 6, chunks[0]), T.reply(DOOR))  # chunk 1 is lost
    for step in (4.0, 10.0, 10.0):  # past the 5 s back-off, and on: still waiting
        d.clock.now += step
        d.feed(encode(key, "staff", V, 6, chunks[0]), T.reply(DOOR))  # a replay: no progress
        assert d.follower.requests_sent == 1
    d.clock.now += SNAPSHOT_REPEAT_S + 1.5 - 24.0  # just past the window from the new chunk
    d.follower.tick()
    assert d.follower.requests_sent == 2
    d.feed(encode(key, "staff", V, 6, chunks[1]), T.reply(DOOR))  # the desk sent it again
    assert d.follower.applied_seq == 6 and d.store.count("faces", "staff") == 2


def test_replayed_chunks_of_two_runs_cannot_keep_a_door_from_asking(door, keys, desk_client):
    """Signed chunks of two snapshot runs at the same seq (different ids), replayed in turn by
    anyone who can publish on the door's topics, each look like progress (staging restarts with
    the other id). The door still asks again no later than the longest back-off after its own
    last request: it is not kept stale for as long as the replays go on."""
    from facelink.fleet.follower import MAX_BACKOFF_S
    from facelink.fleet.protocol import SNAPSHOT_REPEAT_S

    key = keys[0]
    d = door(desk_client, request_retry_s=5.0)
    d.feed(encode(key, "staff", V, 5, Rebase(feed_position=50, reason="first").model_dump()))
    assert d.follower.requests_sent == 1
    runs = [[encode(key, "staff", V, 6, SnapshotChunk(snapshot_id=sid, chunk=i, chunks=3, feed_position=60,
                                                      faces_put=[face(f"{sid}{i}", None, i)]).model_dump())
             for i in range(2)] for sid in ("x", "y")]  # 2 of 3 chunks each: never complete
    replays = runs[0] + runs[1]  # x0 x1 y0 y1: staging goes (6, 1) (6, 2) (6, 1) (6, 2): each "progress"
    limit = SNAPSHOT_REPEAT_S + 1.0 + MAX_BACKOFF_S
    waited = 0.0
    while d.follower.requests_sent == 1 and waited <= limit + 10:
        d.clock.now += 5.0
        waited += 5.0
        d.feed(replays[int(waited / 5) % len(replays)], T.reply(DOOR))
    assert d.follower.requests_sent == 2 and waited <= limit + 5.0


def test_heads_confirm_freshness_and_staleness_follows(door, keys, desk_client, listeners):
    key = keys[0]
    asks = listeners([ASK], "request-listener")
    d = door(desk_client, max_staleness_s=60.0)
    d.feed(encode(key, "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    assert d.follower.stale()  # never confirmed
    head = Head(collection_id="staff", face_model_version=V, seq=1, issued_at=500.0)
    d.feed(encode_head(key, head), T.head)
    assert not d.follower.stale() and d.follower.health()["head_seq"] == 1
    d.clock.now += 61
    assert d.follower.stale() and d.follower.health()["stale"]
    d.feed(encode_head(key, head), T.head)  # the same (retained) head again confirms nothing
    assert d.follower.stale()
    d.feed(encode_head(key, head.model_copy(update={"issued_at": 561.0})), T.head)
    assert not d.follower.stale()
    # a forged head is refused; a head ahead of the door asks for the range
    generate_keypair(d.store.path.parent / "evil.key", d.store.path.parent / "evil.pub")
    evil = load_private(d.store.path.parent / "evil.key")
    d.feed(encode_head(evil, head.model_copy(update={"issued_at": 900.0, "seq": 1})), T.head)
    assert d.follower.rejected == {"UNKNOWN_KEY": 1} and d.alarms[-1]["topic"] == T.head
    d.feed(encode_head(key, head.model_copy(update={"issued_at": 600.0, "seq": 3})), T.head)
    # (the copy went stale meanwhile, so the door also challenged the desk for a fresh head)
    ranges = lambda: [SyncRequest.decode(m) for m in asks.on(ASK) if "nonce" not in json.loads(m)]  # noqa: E731
    assert wait_for(ranges)
    assert ranges()[0].from_seq == 2
    d.clock.now += 61
    assert d.follower.stale()  # behind the head: not confirmed

    # what was applied and confirmed survives a restart of the door
    again = Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic,
                     max_staleness_s=1e9)
    assert again.applied_seq == 1 and again.head_issued_at == 600.0 and not again.stale()


def test_a_100k_face_snapshot_is_staged_in_tables_and_applied_whole(door, keys):
    """50 chunks of 2,000 synthetic faces, built and handed over one at a time (as they arrive)."""
    key = keys[0]
    d = door()
    rng = np.random.default_rng(7)
    chunks, per = 50, 2_000
    for i in range(chunks):
        vecs = rng.normal(size=(per, 128)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        users = [UserPut(user_id=f"u{n}") for n in range(1000)] if i == 0 else []
        chunk = SnapshotChunk(snapshot_id="big", chunk=i, chunks=chunks, feed_position=1,
                              users_put=users, faces_put=[
                                  FacePut(face_id=f"f{i}-{j}", user_id=f"u{(i * per + j) % 1000}", image_id="x",
                                          confidence=99.0, embedding=vector_to_b64(v)) for j, v in enumerate(vecs)])
        d.feed(encode(key, "staff", V, 9, chunk.model_dump()), T.reply(DOOR))
        if i < chunks - 1:
            assert d.follower.applied_seq == 0
    assert d.follower.applied_seq == 9 and d.follower.rejected == {}
    assert d.store.count("faces", "staff") == chunks * per and d.store.count("users", "staff") == 1000
    assert d.store.query("SELECT count(*) FROM face_vectors") == [(chunks * per,)]
    assert d.store.query("SELECT count(*) FROM sync_stage_faces") == [(0,)]
    index = UserIndex(d.store, "staff", V)
    index.load()
    assert len(index) == chunks * per and index.best(vecs[-1]).face_id == f"f{chunks - 1}-{per - 1}"


def test_a_flood_of_garbage_is_counted_but_raises_bounded_alarms(door):
    """Anyone can publish to `changes`: every refusal is counted, but alarms (which go through the
    door's outbox, beside its decisions) are limited per reason and minute."""
    d = door()
    for i in range(25):
        d.feed(f"garbage {i}".encode())
    assert d.follower.rejected == {"MALFORMED": 25} and len(d.alarms) == 10
    assert d.follower.health()["alarms_suppressed"] == 15
    d.clock.now += 61
    d.feed(b"garbage again")
    assert len(d.alarms) == 11 and d.follower.rejected == {"MALFORMED": 26}


def test_unparseable_garbage_is_refused_counted_and_alarmed_by_the_worker(door, broker, desk_client, caplog):
    """Unsigned garbage the JSON parser itself chokes on (nesting deeper than it recurses: a
    RecursionError; a payload with a lone surrogate that cannot be encoded to check its signature)
    is a MALFORMED refusal like any other -- through the real broker and the real worker thread,
    counted, alarmed, and never a traceback from the worker's catch-all."""
    d = door()
    door_client = MqttClient(MqttSettings(port=broker.port), client_id="facelink-door-7",
                             subscriptions=d.follower.subscriptions(), on_message=d.follower.on_message)
    probes = lambda: [a for a in d.alarms if a["topic"] == T.reply(DOOR)]  # noqa: E731
    caplog.set_level("WARNING", logger="facelink.fleet.follower")
    try:
        assert door_client.wait_connected(30)
        d.follower.start()
        before = d.state()
        # the door's subscriptions are live: a probe (garbage on reply/<door>) comes back refused
        assert round_trip(lambda p: desk_client.publish(T.reply(DOOR), p, qos=1), lambda p: probes())
        surrogate = '{"payload": "\\ud800", "signature": {}}'
        hostile = [(T.head, "[" * 2_000 + "]" * 2_000), (T.changes, "[" * 100_000 + "]" * 100_000),
                   (T.head, surrogate), (T.changes, surrogate)]
        for topic, payload in hostile:
            assert desk_client.publish(topic, payload, qos=1)
        seen = len(probes())  # and everything published before the next probe has been handled
        assert round_trip(lambda p: desk_client.publish(T.reply(DOOR), p, qos=1), lambda p: len(probes()) > seen)
    finally:
        d.follower.stop()
        door_client.stop()
    refused = [a for a in d.alarms if a["topic"] != T.reply(DOOR)]
    assert [(a["topic"], a["reason"]) for a in refused] == [(t, "MALFORMED") for t, _ in hostile], d.alarms
    assert d.follower.rejected == {"MALFORMED": 4 + len(probes())} and d.follower.alarms_suppressed == 0
    assert d.state() == before
    assert not [r for r in caplog.records if r.exc_info or "unexpected failure" in r.getMessage()]


DAY = 86_400.0


def _confirmed_door(door, keys, **options) -> Door:
    d = door(max_staleness_s=300.0, **options)
    d.feed(encode(keys[0], "staff", V, 1, delta(1, users_put=[UserPut(user_id="ann")])))
    d.feed(encode_head(keys[0], Head(collection_id="staff", face_model_version=V, seq=1, issued_at=100.0)), T.head)
    assert not d.follower.stale() and d.follower.health()["stale_reason"] is None
    return d


def test_a_wall_clock_stepped_back_does_not_keep_the_copy_fresh(door, keys):
    """on_stale = deny must hold when the door's wall clock is set back (NTP correcting a clock
    that ran ahead, fake-hwclock, a spoofed NTP server): freshness is measured on the monotonic
    clock, so an hour without a head is an hour, whatever the wall clock says."""
    d = _confirmed_door(door, keys)
    d.clock.step_wall(-DAY)  # the wall clock goes back a day right after the confirmation
    d.clock.now += 100  # ... 100 s pass: still within max_staleness_s
    assert not d.follower.stale()
    d.clock.now += 3_500  # an hour cut off from the desk, no head at all
    assert d.follower.stale()
    health = d.follower.health()
    assert health["stale"] and "not confirmed for 3600 s" in health["stale_reason"]


def test_after_a_restart_a_confirmation_counts_only_with_an_age_in_0_to_max(door, keys):
    """confirmed_at is persisted on the wall clock: after a restart it makes the copy fresh only
    if its age is in [0, max_staleness_s]; one "in the future" (the clock went back while the
    door was off) is stale until a new signed head confirms the copy."""
    d = _confirmed_door(door, keys)

    def restart() -> Follower:
        return Follower(d.store, "staff", V, keys[1], DOOR, PREFIX, clock=d.clock, monotonic=d.clock.monotonic,
                        max_staleness_s=300.0)

    d.clock.now += 200
    again = restart()  # age 200 s: fresh, and carried on the monotonic clock from here
    assert not again.stale()
    d.clock.step_wall(-DAY)
    d.clock.now += 150  # 350 s after the confirmation, whatever the wall clock says
    assert again.stale()

    back = restart()  # the wall clock is now a day behind the persisted confirmation
    health = back.health()
    assert health["stale"] and "clock is" in health["stale_reason"] and "behind" in health["stale_reason"]
    d.clock.now += 1_000
    assert back.stale()  # still: only a new head confirms
    back.handle(T.head, encode_head(keys[0], Head(collection_id="staff", face_model_version=V, seq=1,
                                                  issued_at=200.0)))
    assert not back.stale() and back.health()["stale_reason"] is None

    d.clock.now += 301
    assert back.stale() and restart().stale()  # too old either way
