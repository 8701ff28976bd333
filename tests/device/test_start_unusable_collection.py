"""A collection that cannot be read at start (a malformed row, a database busy for now) leaves
the real door running locked and saying why — ERROR and health — and usable once the desk
repairs it, not exiting 1 into systemd's restart loop (which ends at the unit's start limit with
the door silent: no ERROR, no health, no retry)."""

from __future__ import annotations

import shutil

from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store

from .conftest import Watcher

FAST = {"matching__frames_required": 1, "matching__frames_window": 1, "matching__cooldown_s": 0,
        "matching__track_max_age_s": 0, "liveness__enabled": "false"}


def test_a_malformed_row_at_start_keeps_the_door_running_locked_until_repaired(
        tmp_path, broker, engine, faces_dir, enroll, start_door):
    enroll(faces_dir, "obama", "1.jpg")
    broken = enroll(faces_dir, "biden", "1.jpg")
    with Store(tmp_path / "facelink.db") as store, store.transaction() as c:
        c.execute("UPDATE faces SET embedding = zeroblob(508) WHERE face_id = ?", (broken,))
    feed = tmp_path / "feed"
    feed.mkdir()
    shutil.copy(faces_dir / "people/obama/2.jpg", feed / "obama.jpg")  # an enrolled face, every frame
    watcher = Watcher(broker.port, ["facelink/+/decision", "facelink/+/health"], client_id="unusable-watcher")
    door = start_door(broker.port, str(feed), camera__loop="true", **FAST)

    def unusable_health() -> list[dict]:
        return [h for h in watcher.payloads("/health") if h["collection_ok"] is False]

    assert door.wait_for(lambda: unusable_health() and watcher.payloads("/decision"), 90), door.log()
    assert door.proc.poll() is None, door.log()  # running, not exited into a restart loop
    (health,) = unusable_health()[:1]
    assert "malformed" in health["collection_error"]
    errors = watcher.payloads("/decision")
    assert {d["decision"] for d in errors} == {"ERROR"} and "malformed" in errors[0]["reason"]

    with Store(tmp_path / "facelink.db") as store:  # the desk removes the damaged face
        desk = Context(store, lambda: engine)
        users.disassociate_faces(desk, "door", "biden", [broken])
        assert faces.delete_faces(desk, "door", [broken])["DeletedFaces"] == [broken]
    assert watcher.wait_for(lambda: any(d["decision"] == "GRANTED" for d in watcher.payloads("/decision")),
                            60), door.log()
    decisions = watcher.payloads("/decision")
    first_grant = next(i for i, d in enumerate(decisions) if d["decision"] == "GRANTED")
    assert decisions[first_grant]["user_id"] == "obama"
    assert {d["decision"] for d in decisions[:first_grant]} == {"ERROR"}  # nothing decided while unusable
    assert watcher.wait_for(lambda: watcher.payloads("/health")[-1]["collection_ok"] is True, 10)
    assert door.stop() == 0, door.log()
    watcher.close()
