"""A desk whose database was restored from an older backup knows it, and publishes nothing until
the site acts (fail closed). Before, it re-issued the seqs its doors had applied: doors DIVERGED
(test_desk_history_rewound.py, test_history_fingerprint.py), then took the restored desk's
snapshot once its new history passed their seq -- the revocations made after the backup undone at
every door, and no one told which.

Now the retained head (signed by the desk's own key, for the collection) naming a seq beyond the
journal's newest holds the collection (fleet/journal.py ``fleet_restore``, durable): no change set,
head, snapshot or answer; `facelink fleet status` says RESTORED with the lost seqs; the doors keep
their copy (the revoked user stays revoked) and go stale. `facelink fleet accept-restore` lets it
go on: empty change sets through the evidence seq + 1, so a door holding the lost history is
DIVERGED, then takes the desk's snapshot. Real parts: the desk's Publisher and journal on a real
desk database restored from a real SQLite backup, the door's Follower, a real mosquitto (the
RestoredSite of restored_site.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from facelink.enroll.store import Store
from facelink.fleet.journal import Journal
from facelink.fleet.protocol import Head, encode_head
from facelink.fleet.status import _desk_heads, _restore_report

from .conftest import V
from .restored_site import RestoredSite, _desk_change
from .test_follower import DOOR, T, door  # noqa: F401 - the door fixture
from .test_status_reads_only import _settings

BADGE = "H10301:18:4343"  # bob's


def _fresh_without_bob(d) -> bool:
    return not d.follower.stale() and not d.store.user_exists("staff", "bob")


def _site_with_bob_revoked_after_the_backup(door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    """ann (the snapshot at seq 1), bob with his badge (2); the desk's database backed up; then bob
    revoked (DeleteUser, seq 3): the door fresh at seq 3 without him."""

    def enroll_bob(s: Store) -> None:
        s.insert_user("staff", "bob")
        s.set_user_credential("staff", "bob", BADGE)

    site, backup = RestoredSite.backed_up(door, keys, broker, listeners, desk_db, tmp_path,
                                          history=[enroll_bob, lambda s: s.delete_user("staff", "bob")])
    assert site.door.follower.applied_seq == 3 and _fresh_without_bob(site.door)
    return site, backup


def _desk_output(site: RestoredSite, since: int) -> list[tuple[str, bytes]]:
    """What the desk published that reached the door since message ``since`` (probes left out)."""
    return [(t, p) for t, p in site.inbox.snapshot()[since:] if t != site.inbox.probe_topic]


def _accept_restore(desk_db: Path, collection: str = "staff") -> subprocess.CompletedProcess:
    """`facelink fleet accept-restore` as the operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACELINK_")}
    env["FACELINK_STORE__DATABASE"] = str(desk_db)
    return subprocess.run([sys.executable, "-m", "facelink.enroll.cli", "fleet", "accept-restore",
                           "--collection", collection], env=env, capture_output=True, text=True, timeout=120)


def _held_at_restart(door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    site, backup = _site_with_bob_revoked_after_the_backup(door, keys, broker, listeners, desk_db, tmp_path)
    d = site.door
    site.stop()
    site.restore(backup)  # the desk's database back at seq 2: bob is enrolled there again
    since = len(site.inbox.snapshot())
    site.start()
    for _ in range(3):
        site.heartbeat()
    assert _desk_output(site, since) == [], "the restored desk published"
    held = site.desk.publisher.held()["staff"]
    assert held.lost == (3, 3) and held.journal_seq == 2 and held.evidence_seq == 3
    assert d.follower.applied_seq == 3 and d.store.user_by_credential("staff", BADGE) is None
    return site, since


def test_a_restored_desk_holds_the_collection_until_the_restore_is_accepted(
        door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    site, since = _held_at_restart(door, keys, broker, listeners, desk_db, tmp_path)
    d = site.door
    try:
        # `facelink fleet status` (read-only): RESTORED, the lost seqs, what to do
        restores: list = []
        assert _desk_heads(_settings(desk_db), restores) == {"staff": 2}
        report = {r.collection_id: _restore_report(r) for r in restores}["staff"]
        assert report["State"] == "RESTORED" and report["LostSeqs"] == [3, 3]
        assert "accept-restore --collection staff" in report["Action"]
        # held across a restart, also with the retained head gone (the broker restarted without it)
        site.stop()
        site.lose_retained_head()
        since = len(site.inbox.snapshot())
        site.start()
        for _ in range(11):  # over max_staleness_s: the door's copy goes stale, bob still revoked
            site.heartbeat()
        assert _desk_output(site, since) == [] and "staff" in site.desk.publisher.held()
        assert d.follower.stale() and d.follower.applied_seq == 3
        assert not d.store.user_exists("staff", "bob") and d.store.user_by_credential("staff", BADGE) is None
        assert site.desk.journal.last("staff").seq == 2
    finally:
        site.stop()


def test_after_accept_restore_the_door_converges_on_the_desk(door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    site, _ = _held_at_restart(door, keys, broker, listeners, desk_db, tmp_path)
    d = site.door
    try:
        with Store(desk_db) as store:  # the operator re-does the lost revocation (not journaled while held)
            store.delete_user("staff", "bob")
        site.heartbeat()
        assert site.desk.journal.last("staff").seq == 2 and "staff" in site.desk.publisher.held()
        # accepted while the desk is stopped (the in-process desk of this test: a second process
        # closing the database while it runs deletes its -wal, see the report), durable
        site.stop()
        done = _accept_restore(desk_db)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["LostSeqs"] == [3, 3]
        site.start()
        site.heartbeat()  # empty sets 3 and 4, then the deletion (5): the door's seq 3 is other bytes
        assert "DIVERGED" in [a["reason"] for a in d.alarms]
        site.heartbeat()  # the desk's snapshot past it
        assert site.desk.publisher.held() == {} and site.desk.journal.last("staff").seq == 5
        assert d.follower.applied_seq == 5 and d.follower.diverged is None and _fresh_without_bob(d)
        assert d.store.user_exists("staff", "ann") and d.store.user_by_credential("staff", BADGE) is None
        restores: list = []
        assert _desk_heads(_settings(desk_db), restores) == {"staff": 5}
        assert restores == []  # nothing held any more
        site.stop()
        again = _accept_restore(desk_db)  # nothing to accept: a typed error, exit 4
        assert again.returncode == 4 and "ResourceNotFoundException" in again.stderr
        site.start()  # the retained head (5) is the journal's: a normal start
        _desk_change(site, lambda s: s.insert_user("staff", "cat"))
        site.heartbeat()
        assert d.follower.applied_seq == 6 and not d.follower.stale() and site.desk.publisher.held() == {}
    finally:
        site.stop()


def test_no_hold_on_a_normal_restart_a_lost_retained_head_or_a_foreign_head(
        door, keys, broker, listeners, desk_db, tmp_path):  # noqa: F811
    site, backup = _site_with_bob_revoked_after_the_backup(door, keys, broker, listeners, desk_db, tmp_path)
    d = site.door
    try:
        site.stop()
        site.start()  # a normal restart: the retained head is the journal's newest
        _desk_change(site, lambda s: s.insert_user("staff", "cat"))  # seq 4
        site.heartbeat()
        assert site.desk.publisher.held() == {} and d.follower.applied_seq == 4 and not d.follower.stale()
        # heads beyond the journal, but signed by another key, or for another collection: ignored
        for key, collection in ((Ed25519PrivateKey.generate(), "staff"), (keys[0], "lab")):
            forged = encode_head(key, Head(collection_id=collection, face_model_version=V, seq=99, issued_at=1.0))
            site.desk.publisher.on_message(T.head, forged)
        site.heartbeat()
        assert site.desk.publisher.held() == {} and d.follower.applied_seq == 4 and not d.follower.stale()
        # the backup restored while the broker lost its retained head: the desk cannot tell, starts
        # normally (the doors' own checks, test_history_fingerprint.py)
        site.stop()
        site.restore(backup)
        site.lose_retained_head()
        site.start()
        site.heartbeat()
        assert site.desk.publisher.held() == {}
        journal = Journal(desk_db)
        try:
            assert journal.restores() == []
        finally:
            journal.close()
    finally:
        site.stop()
