"""Desk -> door sync at fleet scale: a 10,000-face collection reaching 50 doors, and how long a
revocation takes to reach every one of them (p50/p95).

Everything is real except the doors' bodies: a private mosquitto (tools/broker.py, loopback),
the desk's real publisher (fleet/publisher.py: change feed -> signed change set -> journal ->
MQTT) on a real SQLite + sqlite-vec database, real Ed25519 signatures. The 50 doors are
SIMULATED: lightweight subscribers in this one process (one MQTT connection each, as a door
has) that verify every message (signature, collection, model, seq order: ChangeSetVerifier),
parse it (protocol.parse_body) and apply it to an in-memory copy of the collection; a door
that sees the first change set (a Rebase) asks for a snapshot, as real doors do. The faces'
embeddings are SYNTHETIC (random unit vectors): sync cost does not depend on their values.

    python tools/bench_fleet.py [--faces 10000] [--doors 50] [--revocations 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from broker import Broker

from facelink.config import MqttSettings
from facelink.config.access import FleetSettings
from facelink.enroll.store import Store
from facelink.fleet.changeset import ChangeSetRejected, ChangeSetVerifier
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import Delta, Rebase, SnapshotChunk, SyncRequest, parse_body
from facelink.fleet.publisher import Publisher
from facelink.fleet.signing import generate_keypair, load_private, load_trusted, verify
from facelink.mqtt.client import MqttClient
from facelink.mqtt.topics import CollectionTopics, DeviceTopics

COLLECTION = "bench"
MODEL = "synthetic/bench"
PREFIX = "facelink"


class SimDoor:
    """A simulated door: verify -> parse -> apply into memory; records when each seq was applied."""

    def __init__(self, device_id: str, port: int, trusted, probe: str) -> None:
        self.device_id = device_id
        self.trusted = trusted
        self.topics = CollectionTopics(PREFIX, COLLECTION)
        self.verifier = ChangeSetVerifier(trusted, COLLECTION, MODEL)
        self.faces: dict[str, str | None] = {}
        self.users: set[str] = set()
        self.applied_at: dict[int, float] = {}
        self.staged: dict[int, SnapshotChunk] = {}
        self.rejected = 0
        self.probed = threading.Event()
        self.lock = threading.Lock()
        self.probe = probe
        self.client = MqttClient(MqttSettings(port=port, keepalive_s=60), client_id=f"sim-{device_id}",
                                 subscriptions=[self.topics.changes, self.topics.reply(device_id), probe],
                                 on_message=self.on_message)

    def on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.probe:
            self.probed.set()
            return
        with self.lock:
            try:
                self._take(payload)
            except (ChangeSetRejected, ValueError):
                self.rejected += 1

    def _take(self, payload: bytes) -> None:
        envelope = json.loads(payload)
        inner = json.loads(envelope["payload"])
        body = inner["body"]
        if body.get("kind") == "snapshot":
            verify(self.trusted, envelope["payload"].encode(), envelope["signature"])
            chunk = parse_body(body)
            assert isinstance(chunk, SnapshotChunk)
            self.staged[chunk.chunk] = chunk
            if len(self.staged) == chunk.chunks and inner["seq"] > self.verifier.applied_seq:
                self.faces = {f.face_id: f.user_id for c in self.staged.values() for f in c.faces_put}
                self.users = {u.user_id for c in self.staged.values() for u in c.users_put}
                self.verifier.applied_seq = inner["seq"]
                self.applied_at[inner["seq"]] = time.monotonic()
                self.staged = {}
            return
        if inner["seq"] <= self.verifier.applied_seq:
            return  # covered by the snapshot, or a QoS 1 re-delivery
        cs = self.verifier.check(payload)
        change = parse_body(cs.body)
        if isinstance(change, Rebase):
            self.client.publish(DeviceTopics(PREFIX, self.device_id).sync_request(COLLECTION), SyncRequest(device_id=self.device_id, snapshot=True)
                                .encode().decode(), qos=1, timeout=0)
            return
        assert isinstance(change, Delta)
        for fid in change.faces_deleted:
            self.faces.pop(fid, None)
        self.faces.update({f.face_id: f.user_id for f in change.faces_put})
        self.users -= set(change.users_deleted)
        self.users |= {u.user_id for u in change.users_put}
        self.verifier.applied(cs)
        self.applied_at[cs.seq] = time.monotonic()


def door_cost_per_1000_faces(key, trusted) -> tuple[float, int]:
    """Seconds one door spends to verify + parse a change set of 2,000 faces, per 1,000 faces
    (alone, no other door competing for the CPU)."""
    from facelink.fleet.changeset import encode
    from facelink.fleet.protocol import FacePut, vector_to_b64

    rng = np.random.default_rng(2)
    vecs = rng.standard_normal((2000, 128)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    faces = [FacePut(face_id=str(uuid.uuid4()), image_id="i", confidence=99.0,
                     embedding=vector_to_b64(v)) for v in vecs]
    message = encode(key, COLLECTION, MODEL, 1, Delta(feed_position=1, faces_put=faces).model_dump())
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        parse_body(ChangeSetVerifier(trusted, COLLECTION, MODEL).check(message).body)
        runs.append(time.perf_counter() - t)
    return min(runs) / 2, len(message) // 2000


def percentile(values: list[float], p: float) -> float:
    return float(np.percentile(np.asarray(values), p)) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=1_000)
    ap.add_argument("--doors", type=int, default=50)
    ap.add_argument("--revocations", type=int, default=30)
    fleet = FleetSettings()
    ap.add_argument("--snapshot-replies-per-minute", type=int, default=fleet.snapshot_replies_per_minute,
                    help="the desk's global snapshot budget (default: the product's, fleet.snapshot_replies_per_minute)")
    ap.add_argument("--snapshot-mb-per-minute", type=float, default=fleet.snapshot_mb_per_minute,
                    help="(default: fleet.snapshot_mb_per_minute)")
    print(json.dumps(run(ap.parse_args()), indent=2))


def run(args: argparse.Namespace) -> dict:
    """The measurement (``args``: faces, users, doors, revocations); the report."""
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "broker") as broker:
        work = Path(tmp)
        generate_keypair(work / "desk.key", work / "desk.pub")
        key, trusted = load_private(work / "desk.key"), load_trusted([work / "desk.pub"])
        store = Store(work / "desk.db")
        store.insert_collection(COLLECTION, MODEL)
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((args.faces, 128), dtype=np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        users = [f"user-{i:05d}" for i in range(args.users)]
        for u in users:
            store.insert_user(COLLECTION, u)
        store.insert_faces([{"face_id": str(uuid.uuid4()), "collection_id": COLLECTION,
                             "image_id": str(uuid.uuid4()), "user_id": users[i % len(users)],
                             "image_sha256": "synthetic", "bounding_box": {}, "confidence": 99.0,
                             "embedding": v} for i, v in enumerate(vecs)])
        probe = f"{PREFIX}/bench-probe"
        doors = [SimDoor(f"door-{i:03d}", broker.port, trusted, probe) for i in range(args.doors)]
        assert all(d.client.wait_connected(60) for d in doors), "doors could not connect"
        prober = MqttClient(MqttSettings(port=broker.port), client_id="bench-probe")
        assert prober.wait_connected(30)
        deadline = time.monotonic() + 60
        while not all(d.probed.is_set() for d in doors) and time.monotonic() < deadline:
            prober.publish(probe, "probe", qos=1)
            doors[0].probed.wait(0.5)
        assert all(d.probed.is_set() for d in doors), "door subscriptions not live"
        journal = Journal(work / "desk.db")
        desk_store = Store(work / "desk.db")  # the publisher's own connection (as in its own process)
        fleet = FleetSettings()
        publisher = Publisher(desk_store, journal, key, [COLLECTION], PREFIX, heartbeat_s=30,
                              request_burst=5, request_interval_s=1.0,
                              snapshot_replies_per_minute=getattr(args, "snapshot_replies_per_minute",
                                                                  fleet.snapshot_replies_per_minute),
                              snapshot_mb_per_minute=getattr(args, "snapshot_mb_per_minute",
                                                             fleet.snapshot_mb_per_minute))
        desk = MqttClient(MqttSettings(port=broker.port, keepalive_s=60), client_id="bench-desk",
                          subscriptions=publisher.subscriptions(), on_message=publisher.on_message)
        assert desk.wait_connected(30)
        stop = threading.Event()
        worker = threading.Thread(target=publisher.run, args=(desk, stop), daemon=True)
        t0 = time.monotonic()
        worker.start()
        deadline = t0 + 900
        while time.monotonic() < deadline and not all(len(d.faces) == args.faces for d in doors):
            time.sleep(0.1)
        reached = [d.applied_at.get(min(d.applied_at, default=0), float("nan")) - t0 for d in doors]
        bootstrap_s = max(reached)
        complete = all(len(d.faces) == args.faces and len(d.users) == args.users for d in doors)
        every, each = [], []
        pause = np.random.default_rng(1)
        for r in range(args.revocations):
            time.sleep(float(pause.uniform(0, 0.5)))  # out of phase with the publisher's poll
            user = users[(r * 37) % len(users)]
            before = {d.device_id: d.verifier.applied_seq for d in doors}
            t = time.monotonic()
            store.delete_user(COLLECTION, user)  # the desk's DeleteUser; the publisher polls the feed
            seq = max(before.values()) + 1
            end = t + 60
            while time.monotonic() < end and not all(seq in d.applied_at for d in doors):
                time.sleep(0.005)
            lat = [d.applied_at.get(seq, float("nan")) - t for d in doors]
            each += lat
            every.append(max(lat))
            assert all(user not in d.users for d in doors), f"{user} still present at a door"
        # the same number of faces again, enrolled while the doors follow: deltas on `changes`
        # (one message fanned out by the broker to every door) instead of a snapshot per door
        more = rng.standard_normal((args.faces, 128), dtype=np.float32)
        more /= np.linalg.norm(more, axis=1, keepdims=True)
        target = {d.device_id: len(d.faces) + args.faces for d in doors}
        t = time.monotonic()
        for start in range(0, args.faces, 1000):
            store.insert_faces([{"face_id": str(uuid.uuid4()), "collection_id": COLLECTION,
                                 "image_id": str(uuid.uuid4()), "user_id": None,
                                 "image_sha256": "synthetic", "bounding_box": {}, "confidence": 99.0,
                                 "embedding": v} for v in more[start:start + 1000]])
        enrolled_s = time.monotonic() - t
        while time.monotonic() < t + 900 and not all(len(d.faces) >= target[d.device_id] for d in doors):
            time.sleep(0.05)
        delta_s = time.monotonic() - t
        delta_complete = all(len(d.faces) >= target[d.device_id] for d in doors)
        stop.set()
        publisher.wake()
        per_1000, bytes_per_face = door_cost_per_1000_faces(key, trusted)
        worker.join(30)
        desk.stop()
        prober.stop()
        for d in doors:
            d.client.stop()
        journal.close()
        desk_store.close()
        store.close()
    load_after = os.getloadavg()
    result = {
        "date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}",
        "load_avg_1_5_15_before": [round(x, 2) for x in load_before],
        "load_avg_1_5_15_after": [round(x, 2) for x in load_after],
        "faces": args.faces, "users": args.users, "doors_simulated": args.doors,
        "embeddings": "SYNTHETIC unit vectors", "doors": "SIMULATED, one process",
        "bootstrap_complete": complete, "bootstrap_s_all_doors": round(bootstrap_s, 2),
        "bootstrap_s_first_door": round(min(reached), 2),
        "delta_path_complete": delta_complete, "delta_path_s_all_doors": round(delta_s, 2),
        "delta_path_enroll_s": round(enrolled_s, 2),
        "revocations": args.revocations,
        "snapshot_budget_per_minute": [getattr(args, "snapshot_replies_per_minute", None),
                                       getattr(args, "snapshot_mb_per_minute", None)],
        "revocation_every_door_p50_s": round(percentile(every, 50), 3),
        "revocation_every_door_p95_s": round(percentile(every, 95), 3),
        "revocation_per_door_p50_s": round(percentile(each, 50), 3),
        "revocation_per_door_p95_s": round(percentile(each, 95), 3),
        "door_verify_parse_s_per_1000_faces": round(per_1000, 3),
        "change_set_bytes_per_face": bytes_per_face,
        "rejected": sum(d.rejected for d in doors),
        "publisher": {"poll_interval_s": 0.2, "chunk_faces": 2000},
    }
    return result


if __name__ == "__main__":
    main()
