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


@pytest.mark.parametrize("doors,why", [(None, "fleet.doors"), ('{"door-a": ["lab"]}', "not in fleet.publish"),
                                       ('{"desk-user": ["staff"]}', "not a door")])
def test_publish_without_its_doors_listed_exits_78(broker, keys, desk_db, start_desk, doors, why):
    """fleet.doors names the doors a desk sends each collection to: without it, listing a
    collection the desk does not publish, or listing the desk's own MQTT user, no desk."""
    desk = start_desk(broker.port, desk_db, keys[2], ["staff"], mqtt__username="desk-user",
                      **({} if doors is None else {"fleet__doors": doors}))
    assert desk.proc.wait(60) == 78
    assert why in json.loads(desk.log().strip().splitlines()[-1])["Message"]


def _acl(tmp_path, *args: str, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env.update({"FACELINK_STORE__DATABASE": str(tmp_path / "facelink.db"),
                **{f"FACELINK_{k.upper()}": v for k, v in settings.items()}})
    return subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "acl", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def test_fleet_acl_writes_one_block_per_listed_door(tmp_path):
    """`facelink fleet acl` from the desk's settings: the desk's user, the logger, each door of
    fleet.doors under its own `user` line reading only its collections, the shared request topic
    only while it is accepted."""
    from facelink.fleet.acl import broker_acl

    doors = {"door-a": ["staff"], "door-b": ["staff", "lab"]}
    out = _acl(tmp_path, fleet__doors=json.dumps(doors), mqtt__username="desk-user",
               mqtt__topic_prefix="site1", fleet__accept_shared_request_topic="false")
    assert out.returncode == 0, out.stderr
    assert out.stdout == broker_acl("site1", doors, "desk-user", "facelink-logger", False)
    blocks = {b.split("\n", 1)[0]: b for b in out.stdout.split("\n\n")}
    assert list(blocks)[1:] == ["user desk-user", "user facelink-logger", "user door-a", "user door-b"]
    assert "topic read site1/collections/staff/changes" in blocks["user door-a"]
    assert "lab" not in blocks["user door-a"] and "topic read site1/collections/lab/changes" in blocks["user door-b"]
    assert "topic write site1/door-b/#" in blocks["user door-b"] and "request" not in out.stdout.replace("/sync/#", "")
    assert not [ln for ln in out.stdout.splitlines() if ln.startswith("pattern")]
    no_logger = _acl(tmp_path, "--logger-user", "", fleet__doors=json.dumps(doors))
    assert [ln.split()[1] for ln in no_logger.stdout.splitlines() if ln.startswith("user ")] == \
        ["facelink-desk", "door-a", "door-b"]


@pytest.mark.parametrize("doors,args,why", [
    ({}, (), "list each door"),
    ({"door-a": ["staff"]}, ("--logger-user", "door-a"), "not a door"),
    ({"door-a": ["staff"]}, ("--desk-user", "x", "--logger-user", "x"), "user names of their own"),
    ({"door-a": ["staff"]}, ("--desk-user", "desk\nuser x"), "user name"),
])
def test_fleet_acl_refuses_what_it_cannot_write_safely(tmp_path, doors, args, why):
    out = _acl(tmp_path, *args, fleet__doors=json.dumps(doors))
    assert out.returncode == 2 and out.stdout == ""
    assert why in json.loads(out.stderr.strip().splitlines()[-1])["Message"]


def test_fleet_doors_refuses_what_no_door_can_be(tmp_path):
    from facelink.config import load_settings
    from facelink.errors import ConfigError

    (tmp_path / "door.toml").write_text('[mqtt]\ndevice_id = "collections"\n')
    with pytest.raises(ConfigError, match="device_id"):
        load_settings(tmp_path / "door.toml")
    for doors, why in [('collections = ["staff"]', "reserved"), ('door-a = []', "needs its collections"),
                       ('door-a = ["staff", "staff"]', "each once"), ('"door a" = ["staff"]', "doors"),
                       ('door-a = ["st/aff"]', "doors")]:
        (tmp_path / "desk.toml").write_text(f"[fleet.doors]\n{doors}\n")
        with pytest.raises(ConfigError, match=why):
            load_settings(tmp_path / "desk.toml")
