"""`facelink fleet publish` as the real desk process: publishes a revocation and its head, stops
cleanly on SIGTERM, and refuses to start without a signing key (exit 78, naming the key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from facelink.enroll.store import Store
from facelink.fleet.changeset import ChangeSetVerifier
from facelink.fleet.protocol import decode_head, parse_body
from facelink.mqtt.topics import CollectionTopics

from .conftest import PREFIX, V, add_faces, wait_for

T = CollectionTopics(PREFIX, "staff")


def test_publish_process_sends_changes_and_heads(broker, keys, desk_db, listeners, start_desk):
    store = Store(desk_db)
    store.insert_collection("staff", V)
    store.insert_user("staff", "ann")
    add_faces(store, "staff", 3, "ann")
    door = listeners([T.changes, T.head], "door-p")
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"], fleet__heartbeat_s="0.5")
    assert wait_for(lambda: len(door.on(T.changes)) == 1, 60), desk.log()  # seq 1: a Rebase
    store.delete_user("staff", "ann")  # the revocation
    assert wait_for(lambda: len(door.on(T.changes)) == 2, 60), desk.log()
    v = ChangeSetVerifier(keys[1], "staff", V)
    bodies = []
    for m in door.on(T.changes):
        cs = v.check(m)
        v.applied(cs)
        bodies.append(parse_body(cs.body))
    assert [b.kind for b in bodies] == ["rebase", "delta"] and bodies[1].users_deleted == ["ann"]
    heads = lambda: [decode_head(keys[1], h) for h in door.on(T.head)]  # noqa: E731
    assert wait_for(lambda: len({h.issued_at for h in heads() if h.seq == 2}) >= 2, 60)  # heartbeat
    assert desk.stop() == 0, desk.log()
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"FACELINK_MQTT__PORT": str(broker.port), "FACELINK_STORE__DATABASE": str(desk_db)})
    status = subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "status", "--deadline-s", "0.5"],
                            env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(status.stdout)["DeskHeads"] == {"staff": 2}, status.stderr  # from the desk's journal


def test_publish_without_a_signing_key_exits_78(broker, desk_db, start_desk):
    desk = start_desk(broker.port, desk_db, None, ["staff"])
    assert desk.proc.wait(60) == 78
    assert "fleet.signing_key" in json.loads(desk.log().strip().splitlines()[-1])["Message"]
