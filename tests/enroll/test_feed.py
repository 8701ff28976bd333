"""The change feed on a real SQLite + sqlite-vec database: incremental batches, one snapshot per
read, and pruning that sends a follower that fell behind to a full reload."""

from __future__ import annotations

import numpy as np

from facelink.enroll.feed import ChangeFeed
from facelink.enroll.store import Store


def _face(store: Store, collection: str, name: str, user: str | None = None) -> int:
    vec = np.random.default_rng(abs(hash(name)) % 2**32).normal(size=128).astype(np.float32)
    return store.insert_faces([{
        "face_id": name, "collection_id": collection, "image_id": name, "user_id": user,
        "image_sha256": name, "bounding_box": {}, "confidence": 1.0,
        "embedding": vec / np.linalg.norm(vec)}])[0]


def test_incremental_batches_follow_adds_deletes_and_users(tmp_path):
    store = Store(tmp_path / "f.db")
    store.insert_collection("door", "v1")
    store.insert_collection("other", "v1")
    feed = ChangeFeed(store, "door")
    start = feed.snapshot()
    assert start.full and start.faces == () and start.collection.collection_id == "door"
    store.insert_user("door", "ann")
    a = _face(store, "door", "a", "ann")
    _face(store, "other", "x")  # another collection's change: not in this feed's batches
    batch = feed.read_since(start.position)
    assert not batch.full and batch.changed == (a,) and [f.face_id for f in batch.faces] == ["a"]
    assert feed.read_since(batch.position).empty  # nothing new
    store.delete_user("door", "ann")
    revoked = feed.read_since(batch.position)
    assert revoked.changed == (a,) and revoked.faces[0].user_id is None
    store.delete_faces("door", ["a"])
    deleted = feed.read_since(revoked.position)
    assert deleted.changed == (a,) and deleted.faces == ()
    store.delete_collection("door")
    gone = feed.read_since(deleted.position)
    assert gone.full and gone.collection is None
    store.close()


def test_pruned_feed_sends_a_follower_behind_to_a_full_reload(tmp_path):
    store = Store(tmp_path / "f.db", changes_keep=3)
    store.insert_collection("door", "v1")
    feed = ChangeFeed(store, "door")
    behind = feed.snapshot().position
    for i in range(5):
        _face(store, "door", f"face-{i}", None)
    assert store.query("SELECT count(*) FROM changes")[0][0] == 3  # pruned to the newest 3
    batch = feed.read_since(behind)
    assert batch.full and sorted(f.face_id for f in batch.faces) == [f"face-{i}" for i in range(5)]
    recent = feed.read_since(batch.position - 2)  # still within what the feed holds: incremental
    assert not recent.full and len(recent.changed) == 2
    assert feed.read_since(batch.position + 100).full  # a position from another database
    store.close()
