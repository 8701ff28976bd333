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


def test_batches_name_deleted_faces_and_changed_users_with_their_credential(tmp_path):
    """What a fleet delta needs: a deleted face's FaceId, and user changes without any face."""
    store = Store(tmp_path / "f.db")
    store.insert_collection("door", "v1")
    feed = ChangeFeed(store, "door")
    start = feed.snapshot().position
    store.insert_user("door", "ann")
    store.insert_user("door", "bob")
    store.set_user_credential("door", "bob", "H10301:1:2")
    created = feed.read_since(start)
    assert created.faces == () and created.changed == () and created.changes == 3
    assert [(u.user_id, u.credential) for u in created.users] == [("ann", None), ("bob", "H10301:1:2")]
    assert created.users_deleted == () and created.faces_deleted == ()
    a = _face(store, "door", "face-a", "ann")
    store.delete_faces("door", ["face-a"])
    gone = feed.read_since(created.position)
    assert gone.changed == (a,) and gone.faces == () and gone.faces_deleted == ("face-a",)
    _face(store, "door", "face-b", "ann")
    store.set_user_credential("door", "bob", None)
    store.delete_user("door", "ann")
    revoked = feed.read_since(gone.position)
    assert revoked.users_deleted == ("ann",) and revoked.faces_deleted == ()
    assert [(u.user_id, u.credential) for u in revoked.users] == [("bob", None)]
    assert [(f.face_id, f.user_id) for f in revoked.faces] == [("face-b", None)]
    full = feed.snapshot()
    assert [u.user_id for u in full.users] == ["bob"] and [f.face_id for f in full.faces] == ["face-b"]
    store.close()


def test_a_schema_3_database_keeps_its_feed_after_the_upgrade(tmp_path):
    """Migration 4 rebuilds ``changes``: old rows keep their seq and gain their FaceId, and a
    follower's position from before the upgrade still reads incrementally."""
    from facelink.enroll import store as store_module
    from facelink.enroll.db import connect

    conn = connect(tmp_path / "old.db")
    for v in (1, 2, 3):
        for sql in store_module.MIGRATIONS[v]:
            conn.execute(sql)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    conn.execute("INSERT INTO collections VALUES ('door', 'v1', 0)")
    vec = np.zeros(128, dtype=np.float32).tobytes()
    for i in (1, 2):
        conn.execute("INSERT INTO faces(id, face_id, collection_id, image_id, image_sha256, bounding_box, "
                     "confidence, embedding, indexed_at) VALUES (?, ?, 'door', 'i', 's', '{}', 1, ?, 0)",
                     (i, f"old-{i}", vec))
        conn.execute("INSERT INTO changes(collection_id, face_row, op) VALUES ('door', ?, 'add')", (i,))
    conn.close()
    store = Store(tmp_path / "old.db")
    assert store.query("SELECT seq, face_id FROM changes ORDER BY seq") == [(1, "old-1"), (2, "old-2")]
    feed = ChangeFeed(store, "door")
    store.delete_faces("door", ["old-1"])
    batch = feed.read_since(1)  # a position from before the upgrade
    assert not batch.full and batch.position == 3 and batch.faces_deleted == ("old-1",)
    assert [f.face_id for f in batch.faces] == ["old-2"]
    store.close()
