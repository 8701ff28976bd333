"""The desk's journal: every signed change set it ever sent, per collection, seq 1, 2, ... with no
gaps, in its own table of the desk's database (0600 like the database, ``config/paths.py``).

A change set is written here BEFORE it is published (``published_at`` is set once the broker
acknowledged it), so a crash between the two re-sends it on restart, and re-sending a range to a
door that asks answers from here: the same bytes, the same signature, never rebuilt. The next
seq is chosen inside the write transaction that stores the message (``BEGIN IMMEDIATE``), so two
writers can never take the same seq and none is skipped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from facelink.enroll.db import connect
from facelink.errors import StoreError

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
            self._write(lambda c: (c.execute(SCHEMA), c.execute(HEADS_SCHEMA)))

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
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"fleet journal write failed: {exc}") from exc

    def _read(self, sql: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._conn.execute(sql, params).fetchall()
        except Exception as exc:  # noqa: BLE001 - driver-specific error classes
            raise StoreError(f"fleet journal read failed: {exc}") from exc

    def append(self, collection_id: str, model_version: str, feed_position: int,
               build: Callable[[int, bytes | None], bytes]) -> Entry:
        """Journal the change set ``build(seq, previous)`` signs for the next seq, given the
        journaled bytes of the one before it (None at seq 1: its ``prev``, read in the same
        transaction, so it is what was published before, also after a restart); returns it."""
        def write(c: Any) -> Entry:
            row = c.execute("SELECT seq, message FROM fleet_journal WHERE collection_id = ? "
                            "ORDER BY seq DESC LIMIT 1", (collection_id,)).fetchone()
            seq = int(row[0]) + 1 if row else 1
            message = build(seq, bytes(row[1]) if row else None)
            c.execute("INSERT INTO fleet_journal(collection_id, seq, feed_position, face_model_version, "
                      "message, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                      (collection_id, seq, feed_position, model_version, message, time.time()))
            return Entry(collection_id, seq, feed_position, model_version, message)

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
