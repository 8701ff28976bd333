"""Every database that holds what a site must not lose commits durably (``synchronous = FULL``:
the WAL is fsynced before a commit returns): the desk's collection (a revocation confirmed to the
operator), its fleet journal (a change set already published to the doors), a door's copy, the
outbox and the audit log. Under NORMAL, WAL commits are synced only at checkpoints and a power
cut could undo the last ~30 s of them. Checked by asking each connection: a power cut cannot be
pulled in a test."""

from __future__ import annotations

from facelink.audit.store import AuditLog
from facelink.enroll.store import Store
from facelink.fleet.journal import Journal
from facelink.mqtt.outbox import Outbox

FULL = 2  # PRAGMA synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA


def test_every_writer_commits_durably(tmp_path):
    store = Store(tmp_path / "facelink.db")
    journal = Journal(tmp_path / "facelink.db")
    outbox = Outbox(tmp_path / "outbox.db")
    audit = AuditLog(tmp_path / "audit.db")
    try:
        for name, conn in (("store", store._conn), ("journal", journal._conn), ("outbox", outbox._conn),
                           ("audit", audit._conn)):
            assert conn.execute("PRAGMA synchronous").fetchone()[0] == FULL, name
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name
    finally:
        for closing in (store, journal, outbox, audit):
            closing.close()
