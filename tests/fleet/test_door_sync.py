"""Desk -> doors end to end: one desk (`facelink fleet publish` process) and real door daemons
(real models on real faces, their own SQLite stores) through a real mosquitto. Doors bootstrap
from a snapshot, a revocation at the desk stops every door granting, forged / replayed /
reordered change sets are refused (alarm, health counter, nothing changes), a door that was
offline during 50 change sets catches up from its persistent session, and a door cut off from
the desk goes STALE (deny: ERROR STALE_COLLECTION; keep: decisions stand)."""

from __future__ import annotations

import json
import shutil
import signal
import time
from datetime import datetime
from pathlib import Path

import pytest

from facelink.enroll import faces, users
from facelink.enroll.context import Context
from facelink.enroll.store import Store
from facelink.fleet.changeset import encode
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import Delta, FacePut, UserPut
from facelink.fleet.signing import generate_keypair, load_private
from facelink.mqtt.topics import CollectionTopics
from tests.device.conftest import DoorProcess, Watcher

from .conftest import PREFIX, wait_for

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
                                reason="needs mosquitto (persistent sessions)")
T = CollectionTopics(PREFIX, "staff")
# a decision on every frame of a looped still: these tests are about what the door may grant
FAST = {"matching__frames_required": 1, "matching__frames_window": 1, "matching__cooldown_s": 0,
        "matching__track_max_age_s": 0, "liveness__enabled": "false", "camera__loop": "true",
        "camera__max_fps": "3", "matching__collection_id": "staff", "models__threads": "1"}
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def log_times(door: DoorProcess, needle: str) -> list[float]:
    """Wall-clock times of the door's log lines containing ``needle`` (logging's asctime)."""
    out = []
    for line in door.log().splitlines():
        if needle in line:
            try:
                out.append(datetime.strptime(line[:23], LOG_TIME).timestamp())
            except ValueError:
                continue
    return out


def health(watcher: Watcher, device: str) -> dict:
    got = [json.loads(p) for t, p, _ in list(watcher.messages) if t == f"{PREFIX}/{device}/health"]
    return got[-1] if got else {}


def synced(watcher: Watcher, device: str) -> dict:
    return health(watcher, device).get("sync", {}).get("staff", {})


class Site:
    """The desk's database (real faces enrolled with the real engine), its key and its process."""

    def __init__(self, tmp_path: Path, engine, faces_dir: Path, keys, broker, start_desk) -> None:
        self.tmp, self.engine, self.broker, self.keys = tmp_path, engine, broker, keys
        self.db = tmp_path / "desk" / "facelink.db"
        self.store = Store(self.db)
        self.ctx = Context(self.store, lambda: engine)
        faces.create_collection(self.ctx, "staff")
        for name, photo in (("obama", "1.jpg"), ("biden", "1.jpg")):
            users.create_user(self.ctx, "staff", name)
            faces.index_faces(self.ctx, "staff", faces_dir / "people" / name / photo, f"{name}-badge", user_id=name)
        self.desk = start_desk(broker.port, self.db, keys[2], ["staff"], [f"door-{i}" for i in range(3)] +
                               ["door-a", "door-b", "door-k", "door-d"], fleet__heartbeat_s="1",
                               fleet__request_burst="50")
        self.trusted_pub = keys[2].parent / "desk.pub"
        self.models_dir: Path = Path()
        self.doors: list[DoorProcess] = []

    def seq(self) -> int:
        journal = Journal(self.db)
        try:
            last = journal.last("staff")
            return last.seq if last else 0
        finally:
            journal.close()

    def door(self, name: str, feed: Path, **settings: str) -> DoorProcess:
        workdir = self.tmp / name
        workdir.mkdir(exist_ok=True)
        self.doors.append(DoorProcess(workdir, self.models_dir, self.broker.port, str(feed), mqtt__device_id=name,
                                      sync__enabled="true", fleet__trusted_keys=json.dumps([str(self.trusted_pub)]),
                                      **{**FAST, **settings}))
        return self.doors[-1]

    def close(self) -> None:
        self.store.close()


@pytest.fixture()
def site(tmp_path, engine, faces_dir, keys, broker, start_desk, models_dir):
    s = Site(tmp_path, engine, faces_dir, keys, broker, start_desk)
    s.models_dir = models_dir
    yield s
    for d in s.doors:
        if d.proc.poll() is None:
            d.stop(signal.SIGKILL, timeout=10)
    s.close()


def feed_of(tmp_path: Path, faces_dir: Path, name: str) -> Path:
    feed = tmp_path / f"feed-{name}"
    feed.mkdir(exist_ok=True)
    shutil.copy(faces_dir / "people" / name / "2.jpg", feed / "a.jpg")
    return feed


@pytest.fixture()
def obama_feed(tmp_path, faces_dir) -> Path:
    return feed_of(tmp_path, faces_dir, "obama")


def granted(door: DoorProcess, user: str) -> list[float]:
    return log_times(door, f"decision GRANTED user={user} ")


def test_three_doors_bootstrap_and_a_revocation_reaches_every_door(site, broker, obama_feed):
    watcher = Watcher(broker.port, [f"{PREFIX}/+/health", f"{PREFIX}/+/alarm", f"{PREFIX}/+/decision"], "w-revoke")
    doors = [site.door(f"door-{i}", obama_feed) for i in range(3)]
    for d in doors:  # snapshot bootstrap, confirmed by a head, then the real face is granted
        assert d.wait_for(lambda d=d: granted(d, "obama"), 240), d.log()[-3000:]
    seq_before = site.seq()
    t0 = time.time()
    site.store.delete_user("staff", "obama")  # the desk revokes (DeleteUser)
    assert wait_for(lambda: site.seq() > seq_before, 60)
    needle = f"sync staff: applied seq {site.seq()} "  # the revocation's change set

    def reached(d: DoorProcess) -> tuple[float, float] | None:
        """(applied, matcher reloaded after it): the door's own log times."""
        applied = [t for t in log_times(d, needle) if t >= t0]
        reloaded = [t for t in log_times(d, "user index updated") if applied and t >= applied[0]]
        return (applied[0], reloaded[0]) if reloaded else None

    for d in doors:
        assert d.wait_for(lambda d=d: reached(d), 60), d.log()[-3000:]
    applied = {d: reached(d)[0] for d in doors}  # type: ignore[index]
    effective = {d: reached(d)[1] for d in doors}  # type: ignore[index]
    for d in doors:  # still deciding, and nobody grants obama once the revocation is in the matcher
        made = len(d.decisions())
        assert d.wait_for(lambda d=d, made=made: len(d.decisions()) >= made + 3, 60)
        assert not [t for t in granted(d, "obama") if t > effective[d]], d.log()[-3000:]
        assert wait_for(lambda d=d: synced(watcher, d.log_path.parent.name).get("applied_seq", 0) > seq_before, 30)
    latencies = sorted(effective[d] - t0 for d in doors)
    print(f"\nrevocation desk DeleteUser -> door matcher (s): {[round(x, 3) for x in latencies]}; "
          f"-> applied (s): {sorted(round(applied[d] - t0, 3) for d in doors)}")
    assert watcher.payloads("/alarm") == []  # nothing refused on the way
    for d in doors:
        assert d.stop() == 0
    watcher.close()


def test_forged_replayed_and_reordered_sets_are_refused_by_a_running_door(site, broker, obama_feed, keys, tmp_path):
    watcher = Watcher(broker.port, [f"{PREFIX}/+/health", f"{PREFIX}/+/alarm"], "w-forged")
    door = site.door("door-a", obama_feed)
    assert door.wait_for(lambda: granted(door, "obama"), 240), door.log()[-3000:]
    site.store.delete_user("staff", "obama")
    assert door.wait_for(lambda: "DENIED_UNKNOWN user=None" in door.log().split("user index updated")[-1], 120)
    at = site.seq()
    assert wait_for(lambda: synced(watcher, "door-a").get("applied_seq") == at, 60)
    # each tries to give obama's face back to a user; none may change the door
    face = FacePut(face_id="f-evil", user_id="mallory", image_id="x", confidence=99.0,
                   embedding=_obama_embedding(site))
    body = Delta(feed_position=10**6, users_put=[UserPut(user_id="mallory")], faces_put=[face]).model_dump()
    generate_keypair(tmp_path / "evil.key", tmp_path / "evil.pub")
    attacks = {"UNKNOWN_KEY": encode(load_private(tmp_path / "evil.key"), "staff", site.engine.model_version,
                                     at + 1, body),
               # (the desk's own key over other bytes at an applied seq is no forgery but the desk's
               # history gone back: DIVERGED, the door stale until a snapshot past it;
               # test_desk_history_rewound.py, test_follower.py)
               "GAP": encode(keys[0], "staff", site.engine.model_version, at + 2, body)}
    publisher = Watcher(broker.port, [], "attacker")
    for reason, message in attacks.items():
        publisher.client.publish(T.changes, message, qos=1)
        assert watcher.wait_for(lambda r=reason: any(a["reason"] == r for a in watcher.payloads("/alarm")), 60), \
            door.log()[-3000:]
    assert wait_for(lambda: all(synced(watcher, "door-a").get("rejected", {}).get(r) == 1 for r in attacks), 30)
    alarm = watcher.payloads("/alarm")[0]
    assert alarm["schema"] == "facelink.alarm/1" and alarm["device_id"] == "door-a" and alarm["topic"] == T.changes
    made = len(door.decisions())
    assert door.wait_for(lambda: len(door.decisions()) >= made + 5, 60)
    assert "mallory" not in door.log() or "decision GRANTED user=mallory" not in door.log()
    assert synced(watcher, "door-a")["applied_seq"] == at
    # the gap made the door ask the desk; the desk's journal has nothing beyond its head, so the
    # next real change set (at + 1) applies and the forged at + 2 never does
    site.store.insert_user("staff", "carol")
    assert wait_for(lambda: synced(watcher, "door-a").get("applied_seq") == at + 1, 60)
    assert door.stop() == 0
    door_store = Store(tmp_path / "door-a" / "facelink.db")
    assert not door_store.user_exists("staff", "mallory") and door_store.user_exists("staff", "carol")
    assert door_store.get_faces("staff", ["f-evil"]) == []
    door_store.close()
    publisher.close()
    watcher.close()


def _iso(t: float) -> str:
    from datetime import timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _obama_embedding(site: Site) -> str:
    from facelink.fleet.protocol import vector_to_b64

    rows = [f for f in site.store.collection_faces("staff") if f.external_image_id == "obama-badge"]
    return vector_to_b64(rows[0].embedding)


def test_offline_door_catches_up_on_50_changes_and_stale_doors_follow_on_stale(site, broker, obama_feed,
                                                                               tmp_path, faces_dir):
    watcher = Watcher(broker.port, [f"{PREFIX}/+/health", f"{PREFIX}/+/decision"], "w-offline")
    door = site.door("door-b", obama_feed)
    biden = feed_of(tmp_path, faces_dir, "biden")
    keep = site.door("door-k", biden, sync__on_stale="keep", sync__max_staleness_s="6")
    deny = site.door("door-d", biden, sync__max_staleness_s="6")
    for d, user in ((door, "obama"), (keep, "biden"), (deny, "biden")):
        assert d.wait_for(lambda d=d, user=user: granted(d, user), 240), d.log()[-3000:]
    assert door.stop() == 0  # offline; its persistent session keeps collecting change sets
    start = site.seq()
    for i in range(50):  # 50 change sets (one write each, waiting for the desk to journal it)
        if i % 2 == 0:
            site.store.insert_user("staff", f"temp-{i}")
        else:
            site.store.delete_user("staff", f"temp-{i - 1}")
        assert wait_for(lambda i=i: site.seq() == start + i + 1, 60), site.desk.log()[-2000:]
    site.store.delete_user("staff", "obama")
    end = start + 51
    assert wait_for(lambda: site.seq() == end, 60)
    again = site.door("door-b", obama_feed)
    assert wait_for(lambda: synced(watcher, "door-b").get("applied_seq") == end, 240), again.log()[-3000:]
    assert len(log_times(again, "sync staff: applied seq")) >= 51  # from the queued sets, in order
    assert "asked for a snapshot" not in again.log()
    t_caught = max(log_times(again, "user index updated"))
    made = len(again.decisions())
    assert again.wait_for(lambda: len(again.decisions()) >= made + 3, 60)
    assert not [t for t in granted(again, "obama") if t > t_caught]

    # the desk goes away: nothing confirms the doors are up to date any more
    assert site.desk.stop() == 0
    assert wait_for(lambda: synced(watcher, "door-d").get("stale") and synced(watcher, "door-k").get("stale"), 60)

    def stale_errors(device: str) -> list[dict]:
        return [d for d in watcher.payloads("/decision") if d["device_id"] == device and d["decision"] == "ERROR"
                and (d.get("reason") or "").startswith("STALE_COLLECTION")]

    t_lost = time.time()
    assert watcher.wait_for(lambda: [d for d in stale_errors("door-d") if d["timestamp"] > _iso(t_lost)], 60), \
        deny.log()[-3000:]
    t_stale = max(log_times(deny, "is STALE"))
    # deny: biden is not granted once the copy is stale; keep: biden still is, and health says stale
    assert not [t for t in granted(deny, "biden") if t > t_stale]
    assert keep.wait_for(lambda: [t for t in granted(keep, "biden") if t > max(log_times(keep, "is STALE") or [2e9])],
                         60), keep.log()[-3000:]
    assert not stale_errors("door-k")
    for d in (again, keep, deny):
        assert d.stop() == 0
    watcher.close()
