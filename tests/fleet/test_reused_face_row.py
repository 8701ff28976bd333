"""A face deleted at the desk is deleted at the doors even when the face enrolled right after it
takes its row id (found in review 53).

``faces.id`` is a plain rowid: once the collection's newest face is deleted, the next face
inserted gets the same id. The change feed named a changed face as deleted only when its *row*
no longer existed, so a DeleteFaces followed by an IndexFaces in the same batch (one poll of the
publisher, or any time the publisher was behind: a restart, a slow step) sent a delta with the new
face and no deletion: the door kept the deleted face, still associated with its user, and kept
granting it. Real desk store, journal, publisher, mosquitto and Ed25519; a real door follower."""

from __future__ import annotations

from facelink.fleet.protocol import SyncRequest

from .conftest import V, add_faces, wait_for
from .test_follower import DOOR, Door
from .test_publisher import T, desk, own  # noqa: F401 - the desk fixture


def _door_faces(door: Door) -> dict[str, str | None]:
    return dict(door.store.query("SELECT face_id, user_id FROM faces WHERE collection_id = 'staff'"))


def test_a_deleted_face_whose_row_is_reused_is_deleted_at_the_door(desk, keys, listeners, tmp_path):  # noqa: F811
    d = desk(heartbeat_s=3600)
    d.store.insert_collection("staff", V)
    d.store.insert_user("staff", "ann")
    d.store.insert_user("staff", "bob")
    [badge_photo] = add_faces(d.store, "staff", 1, "ann", seed=1)
    d.step()  # seq 1: the collection's first change set, a Rebase
    watch = listeners([T.changes, T.reply(DOOR)], "watch")
    watch.client.publish(own(DOOR), SyncRequest(device_id=DOOR, snapshot=True).encode().decode(), qos=1)
    assert wait_for(lambda: (d.step(), len(watch.on(T.reply(DOOR))) >= 1)[1], 60)
    door = Door(tmp_path / "door" / "facelink.db", keys[1])
    try:
        for chunk in watch.on(T.reply(DOOR)):
            door.feed(chunk, T.reply(DOOR))
        assert door.follower.replica.state().seq == 1 and _door_faces(door) == {badge_photo: "ann"}

        row = d.store.get_faces("staff", [badge_photo])[0].id
        assert d.store.delete_faces("staff", [badge_photo]) == [badge_photo]  # revoked at the desk ...
        [other] = add_faces(d.store, "staff", 1, "bob", seed=2)  # ... and the next enrollment
        assert d.store.get_faces("staff", [other])[0].id == row  # takes the deleted face's row id
        d.step()
        assert wait_for(lambda: len(watch.on(T.changes)) >= 1, 30)
        for change in watch.on(T.changes):
            door.feed(change)
        assert door.follower.replica.state().seq == 2
        assert _door_faces(door) == {other: "bob"}  # the deleted face is gone from the door
    finally:
        door.close()
