"""The desk's journal: every signed change set it ever sent, per collection, seq 1, 2, ... with no
gaps, in its own table of the desk's database (0600 like the database, ``config/paths.py``).

A change set is written here BEFORE it is published (``published_at`` is set once the broker
acknowledged it), so a crash between the two re-sends it on restart, and re-sending a range to a
door that asks answers from here: the same bytes, the same signature, never rebuilt. The next
seq is chosen inside the write transaction that stores the message (``BEGIN IMMEDIATE``), so two
writers can never take the same seq and none is skipped.

It also owns a collection's *restore hold* (table ``fleet_restore``): a head signed by this desk's
own key naming a seq beyond the journal's newest means the desk database went back (restored from
an older backup, or replaced): the change sets ``journal_seq + 1 .. evidence_seq`` -- revocations
among them -- were published and are lost here. :meth:`Journal.note_restore` records it (the
publisher then publishes nothing of that collection), :meth:`Journal.accept_restore` is the
operator's acknowledgement (``facelink fleet accept-restore``), after which the publisher journals
empty change sets through ``evidence_seq + 1`` (in batches, one transaction each: a desk stopped
mid-way goes on from its journal) and goes on. Both are rows of the desk database, so
a desk started again stays held until acknowledged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelink.enroll.db import connect
from facelink.errors import FaceLinkError, ResourceNotFoundException, StoreError

SCHEMA = """CREATE TABLE IF NOT EXISTS fleet_journal(
    collection_id TEXT NOT NULL,
    seq INTEGER NOT NULL CHECK (seq >= 1),
    feed_position INTEGER NOT NULL,
    face_model_version TEXT NOT NULL,
    message BLOB NOT NULL,
    created_at REAL NOT NULL,
    published_at REAL,
    PRIMARY KEY (collection_id, seq))"""
# the last head published per collection: its issued_at and the desk's wall clock then, so a desk
# started again goes on from it (fleet/publisher.py Publisher._issued_at)
HEADS_SCHEMA = """CREATE TABLE IF NOT EXISTS fleet_heads(
    collection_id TEXT PRIMARY KEY, issued_at REAL NOT NULL, wall REAL NOT NULL)"""

# a collection whose history went back (see the module docstring): held until accepted_at is set
RESTORE_SCHEMA = """CREATE TABLE IF NOT EXISTS fleet_restore(
    collection_id TEXT PRIMARY KEY, journal_seq INTEGER NOT NULL, evidence_seq INTEGER NOT NULL,
    key_id TEXT NOT NULL, detected_at REAL NOT NULL, accepted_at REAL)"""


@dataclass(frozen=True)
class Restore:
    """The desk's history of ``collection_id`` went back: its journal ended at ``journal_seq`` when
    a head signed by its key (``key_id``) named ``evidence_seq``. Held until ``accepted_at``."""

    collection_id: str
    journal_seq: int
    evidence_seq: int
    key_id: str
    detected_at: float
    accepted_at: float | None

    @property
    def held(self) -> bool:
        return self.accepted_at is None

    @property
    def lost(self) -> tuple[int, int]:
        """The seqs published before the restore and no longer in the journal."""
        return self.journal_seq + 1, self.evidence_seq


@dataclass(frozen=True)
class Entry:
    collection_id: str
    seq: int
    feed_position: int
    face_model_version: str
    message: bytes


class Journal:
    """The journal table of the desk database at ``path`` (its own connection)."""

    def __init__(self, path: Path | str, *, group_access: bool = False, readonly: bool = False) -> None:
        """``readonly``: only read (``facelink fleet status``): nothing is created or written, so
        another user (root) reading it leaves no files the desk cannot open. A read-only SQLite
        connection still creates -wal/-shm when they are missing: then no one is writing the
        database (a writer keeps -shm) and it is read as immutable, which creates nothing."""
        self.path = Path(path)
        self.immutable = readonly and not self.writer_present()  # read as a file no one writes
        self._conn = connect(self.path, readonly=readonly, group=group_access, immutable=self.immutable)
        if not readonly:
            self._write(lambda c: (c.execute(SCHEMA), c.execute(HEADS_SCHEMA), c.execute(RESTORE_SCHEMA)))

    def close(self) -> None:
        self._conn.close()

    def writer_present(self) -> bool:
        """A connection that writes the database keeps its -shm. A read as immutable (none was
        there) ignores what a writer that appeared meanwhile wrote to its -wal, or reads pages a
        checkpoint tore: read again if this turns True."""
        return self.path.with_name(self.path.name + "-shm").exists()

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            out = fn(conn)
            conn.execute("COMMIT")
            return out
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, FaceLinkError):  # StoreError, or the caller's own (accept_restore)
                raise
            raise StoreError(f"fleet journal write failed: {exc}") from exc

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            raise StoreError(f"fleet journal read failed: {exc}") from exc

    def append(self, collection_id: str, model_version: str, feed_position: int,
               build: Callable[[int, bytes | None], bytes], count: int = 1) -> Entry:
        """Journal the change set ``build(seq, previous)`` signs for the next seq, given the
        journaled bytes of the one before it (None at seq 1: its ``prev``, read in the same
        transaction, so it is what was published before, also after a restart); returns it.
        ``count``: that many in one transaction, each built on the one before (the last returned)."""
        if count < 1:
            raise ValueError(f"count {count}")

        def write(c: Any) -> Entry:
            row = c.execute("SELECT seq, message FROM fleet_journal WHERE collection_id = ? "
                            "ORDER BY seq DESC LIMIT 1", (collection_id,)).fetchone()
            seq, previous, now = int(row[0]) + 1 if row else 1, bytes(row[1]) if row else None, time.time()
            for _ in range(count):
                message = build(seq, previous)
                c.execute("INSERT INTO fleet_journal(collection_id, seq, feed_position, face_model_version, "
                          "message, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                          (collection_id, seq, feed_position, model_version, message, now))
                entry = Entry(collection_id, seq, feed_position, model_version, message)
                seq, previous = seq + 1, message
            return entry

        return self._write(write)

    def last(self, collection_id: str) -> Entry | None:
        rows = self._read("SELECT collection_id, seq, feed_position, face_model_version, message "
                          "FROM fleet_journal WHERE collection_id = ? ORDER BY seq DESC LIMIT 1",
                          (collection_id,))
        return Entry(*rows[0][:4], bytes(rows[0][4])) if rows else None

    def collections(self) -> list[str]:
        """The collections this desk ever published (none in a database it never published from)."""
        if not self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'fleet_journal'"):
            return []
        return [r[0] for r in self._read("SELECT DISTINCT collection_id FROM fleet_journal ORDER BY 1")]

    def entries(self, collection_id: str, first: int, last: int) -> list[Entry]:
        """The journaled change sets ``first..last`` in seq order (exactly as signed)."""
        return [Entry(r[0], r[1], r[2], r[3], bytes(r[4])) for r in self._read(
            "SELECT collection_id, seq, feed_position, face_model_version, message FROM fleet_journal "
            "WHERE collection_id = ? AND seq BETWEEN ? AND ? ORDER BY seq", (collection_id, first, last))]

    def unpublished(self, collection_id: str) -> list[Entry]:
        """Journaled but not yet acknowledged by the broker, in seq order."""
        return [Entry(r[0], r[1], r[2], r[3], bytes(r[4])) for r in self._read(
            "SELECT collection_id, seq, feed_position, face_model_version, message FROM fleet_journal "
            "WHERE collection_id = ? AND published_at IS NULL ORDER BY seq", (collection_id,))]

    def published(self, collection_id: str, seq: int) -> None:
        self._write(lambda c: c.execute(
            "UPDATE fleet_journal SET published_at = ? WHERE collection_id = ? AND seq = ?",
            (time.time(), collection_id, seq)))

    def note_head(self, collection_id: str, issued_at: float, wall: float) -> None:
        self._write(lambda c: c.execute(
            "INSERT INTO fleet_heads(collection_id, issued_at, wall) VALUES (?, ?, ?) ON CONFLICT(collection_id) "
            "DO UPDATE SET issued_at = excluded.issued_at, wall = excluded.wall", (collection_id, issued_at, wall)))

    def last_head(self, collection_id: str) -> tuple[float, float] | None:
        """(issued_at, the desk's wall clock then) of the last head published, None if none."""
        rows = self._read("SELECT issued_at, wall FROM fleet_heads WHERE collection_id = ?", (collection_id,))
        return (float(rows[0][0]), float(rows[0][1])) if rows else None

    def published_seq(self, collection_id: str) -> int:
        """The newest seq the broker acknowledged with every earlier one acknowledged too."""
        rows = self._read("SELECT min(seq) FROM fleet_journal WHERE collection_id = ? AND "
                          "published_at IS NULL", (collection_id,))
        if rows and rows[0][0] is not None:
            return int(rows[0][0]) - 1
        last = self.last(collection_id)
        return last.seq if last else 0

    # -- the restore hold ---------------------------------------------------------------------
    def _has_table(self, name: str) -> bool:
        return bool(self._read("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)))

    def note_restore(self, collection_id: str, evidence_seq: int, key_id: str) -> Restore | None:
        """A head signed by this desk's key ``key_id`` named ``evidence_seq``: if that is beyond
        the journal's newest seq, the collection is held (the hold returned; a newer evidence seq
        widens a hold not yet accepted). None when the journal is at or past it, or an accepted
        hold already covers it (the publisher is journaling past it)."""
        def write(c: Any) -> Restore | None:
            row = c.execute("SELECT max(seq) FROM fleet_journal WHERE collection_id = ?", (collection_id,)).fetchone()
            newest = int(row[0]) if row and row[0] is not None else 0
            if evidence_seq <= newest:
                return None
            known = _restore(c, collection_id)
            if known is not None and not known.held and evidence_seq <= known.evidence_seq:
                return None
            evidence = evidence_seq
            if known is not None and known.held:
                evidence, newest = max(evidence, known.evidence_seq), min(newest, known.journal_seq)
            c.execute("INSERT OR REPLACE INTO fleet_restore(collection_id, journal_seq, evidence_seq, key_id, "
                      "detected_at, accepted_at) VALUES (?, ?, ?, ?, ?, NULL)",
                      (collection_id, newest, evidence, key_id,
                       known.detected_at if known is not None and known.held else time.time()))
            return _restore(c, collection_id)

        return self._write(write)

    def restore(self, collection_id: str) -> Restore | None:
        """The restore hold of ``collection_id`` (held or accepted), None if it never had one."""
        if not self._has_table("fleet_restore"):  # a database read-only from before this release
            return None
        return _restore(self._conn, collection_id, self._read)

    def collection_in_store(self, collection_id: str) -> bool:
        """Does the desk database (the store beside this journal) hold ``collection_id``? An accepted
        restore of one it does not hold waits for it to be created (``Publisher._absent``)."""
        if not self._has_table("collections"):
            return False
        return bool(self._read("SELECT 1 FROM collections WHERE collection_id = ?", (collection_id,)))

    def restores(self) -> list[Restore]:
        if not self._has_table("fleet_restore"):
            return []
        return [Restore(*r) for r in self._read(
            "SELECT collection_id, journal_seq, evidence_seq, key_id, detected_at, accepted_at "
            "FROM fleet_restore ORDER BY collection_id")]

    def accept_restore(self, collection_id: str) -> Restore:
        """The operator's acknowledgement (after re-doing the lost revocations): durable; the
        publisher then journals past the evidence seq. ResourceNotFoundException: nothing held."""
        def write(c: Any) -> Restore:
            known = _restore(c, collection_id)
            if known is None or not known.held:
                raise ResourceNotFoundException(f"{collection_id}: the desk holds no restored history of this "
                                                "collection (see `facelink fleet status`)")
            c.execute("UPDATE fleet_restore SET accepted_at = ? WHERE collection_id = ?", (time.time(), collection_id))
            return _restore(c, collection_id)

        return self._write(write)


def _restore(conn: Any, collection_id: str, read: Callable[[str, tuple], list[tuple]] | None = None) -> Restore | None:
    sql = ("SELECT collection_id, journal_seq, evidence_seq, key_id, detected_at, accepted_at "
           "FROM fleet_restore WHERE collection_id = ?")
    rows = read(sql, (collection_id,)) if read is not None else conn.execute(sql, (collection_id,)).fetchall()
    return Restore(*rows[0]) if rows else None
