"""`facelink fleet publish` as the real desk process: publishes a revocation and its head, stops
cleanly on SIGTERM, and refuses to start without a signing key (exit 78, naming the key)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"], ["door-p"], fleet__heartbeat_s="0.5")
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


def test_publish_without_its_doors_listed_exits_78(broker, keys, desk_db, start_desk):
    """fleet.doors names the doors a desk sends the collection to: without it, no desk."""
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"])
    assert desk.proc.wait(60) == 78
    assert "fleet.doors" in json.loads(desk.log().strip().splitlines()[-1])["Message"]


def _acl(tmp_path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"FACELINK_STORE__DATABASE": str(tmp_path / "facelink.db"),
                **{f"FACELINK_{k.upper()}": v for k, v in settings.items()}})
    return subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "acl", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_fleet_acl_writes_one_block_per_listed_door(tmp_path):
    """`facelink fleet acl` from the desk's settings: the desk's user, the logger, each door of
    fleet.doors under its own `user` line, the shared request topic only while it is accepted."""
    from facelink.fleet.acl import broker_acl

    out = _acl(tmp_path, fleet__doors='["door-a", "door-b"]', mqtt__username="desk-user",
               mqtt__topic_prefix="site1", fleet__accept_shared_request_topic="false")
    assert out.returncode == 0, out.stderr
    assert out.stdout == broker_acl("site1", ["door-a", "door-b"], "desk-user", "facelink-logger", False)
    users = [ln.split()[1] for ln in out.stdout.splitlines() if ln.startswith("user ")]
    assert users == ["desk-user", "facelink-logger", "door-a", "door-b"]
    assert "topic write site1/door-b/#" in out.stdout and "request" not in out.stdout.replace("/sync/#", "")
    assert not [ln for ln in out.stdout.splitlines() if ln.startswith("pattern")]
    override = _acl(tmp_path, "--door", "door-x", "--logger-user", "", fleet__doors='["door-a"]')
    assert [ln.split()[1] for ln in override.stdout.splitlines() if ln.startswith("user ")] == \
        ["facelink-desk", "door-x"]


@pytest.mark.parametrize("args,why", [
    ((), "no doors"),
    (("--door", "collections"), "sync topics"),
    (("--door", "door-a", "--door", "door-a"), "listed twice"),
    (("--door", "facelink-logger"), "not a door"),
    (("--door", "door a\nuser x"), "user name"),
])
def test_fleet_acl_refuses_what_it_cannot_write_safely(tmp_path, args, why):
    out = _acl(tmp_path, *args)
    assert out.returncode == 2 and out.stdout == ""
    assert why in json.loads(out.stderr.strip().splitlines()[-1])["Message"]


def test_a_door_cannot_be_called_collections(tmp_path):
    from facelink.config import load_settings
    from facelink.errors import ConfigError

    (tmp_path / "door.toml").write_text('[mqtt]\ndevice_id = "collections"\n')
    with pytest.raises(ConfigError, match="device_id"):
        load_settings(tmp_path / "door.toml")
    (tmp_path / "desk.toml").write_text('[fleet]\ndoors = ["door-a", "collections"]\n')
    with pytest.raises(ConfigError, match="reserved"):
        load_settings(tmp_path / "desk.toml")
