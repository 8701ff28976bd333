"""The door's copy of a followed collection, in the door's own store (facelink.sync/1 applied).

Every write is ONE transaction of the door's store that also records, in ``sync_applied``, the
seq it brings the copy to (with the signing key, the desk's feed position and the time): a crash
leaves either the old data and the old seq or the new data and the new seq, never a half-applied
change set or a seq that disagrees with the data. Every face/user change is also recorded in the
store's change feed (``facelink.enroll.feed``) in the same transaction, so the door's matcher
(device/matcher.py) follows it like any other change.

Snapshots are staged chunk by chunk in tables (``sync_stage*``; 100k faces never sit in Python
objects), then replace the copy in one transaction at their base seq.

The door tables are created here (``CREATE TABLE IF NOT EXISTS``): they exist only on doors that
follow a desk and are not part of the collection schema the desk exports.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from facelink.enroll import feed
from facelink.enroll.store import Store
from facelink.errors import FaceLinkError

from .changeset import ChangeSet, ChangeSetRejected, is_fingerprint, position_after
from .protocol import Delta, FacePut, SnapshotChunk

SEEN_KEEP = 10_000  # applied change sets whose hash is kept (a re-delivery is told from a replay)

TABLES = (
    """CREATE TABLE IF NOT EXISTS sync_applied(
        collection_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, key_id TEXT NOT NULL,
        feed_position INTEGER NOT NULL, applied_at REAL NOT NULL, snapshot_seq INTEGER NOT NULL,
        head_issued_at REAL NOT NULL, confirmed_at REAL)""",
    """CREATE TABLE IF NOT EXISTS sync_seen(
        collection_id TEXT NOT NULL, seq INTEGER NOT NULL, sha256 TEXT NOT NULL,
        PRIMARY KEY (collection_id, seq))""",
    """CREATE TABLE IF NOT EXISTS sync_stage(
        collection_id TEXT PRIMARY KEY, snapshot_id TEXT NOT NULL, seq INTEGER NOT NULL,
        chunks INTEGER NOT NULL, feed_position INTEGER NOT NULL, key_id TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sync_stage_chunks(
        collection_id TEXT NOT NULL, chunk INTEGER NOT NULL, PRIMARY KEY (collection_id, chunk))""",
    """CREATE TABLE IF NOT EXISTS sync_stage_faces(
        collection_id TEXT NOT NULL, face_id TEXT NOT NULL, user_id TEXT, external_image_id TEXT,
        image_id TEXT NOT NULL, image_sha256 TEXT NOT NULL, bounding_box TEXT NOT NULL,
        confidence REAL NOT NULL, embedding BLOB NOT NULL, PRIMARY KEY (collection_id, face_id))""",
    """CREATE TABLE IF NOT EXISTS sync_stage_users(
        collection_id TEXT NOT NULL, user_id TEXT NOT NULL, credential TEXT,
        PRIMARY KEY (collection_id, user_id))""",
)
_FACE_COLS = "face_id, collection_id, image_id, external_image_id, user_id, image_sha256, bounding_box, " \
             "confidence, embedding, indexed_at"


class PositionUnreadable(FaceLinkError):
    """The door's kept position (``meta`` ``sync_position:<C>``) is there but cannot be read: the
    copy is treated as diverged (a snapshot replaces it), never as of an unknown position."""

    code = "PositionUnreadable"


@dataclass(frozen=True)
class Applied:
    """What the door's copy reflects (all zero: nothing applied yet)."""

    seq: int = 0
    key_id: str = ""
    feed_position: int = 0
    applied_at: float = 0.0
    snapshot_seq: int = 0  # change sets at or below it are covered by the snapshot applied
    head_issued_at: float = 0.0  # the newest head accepted (older ones confirm nothing)
    confirmed_at: float | None = None  # door clock: when a head last said "you are up to date"


class Replica:
    def __init__(self, store: Store, collection_id: str, model_version: str) -> None:
        self.store, self.collection_id, self.model_version = store, collection_id, model_version
        with store.transaction() as c:
            for sql in TABLES:
                c.execute(sql)

    # -- reads -----------------------------------------------------------------------------
    def state(self) -> Applied:
        rows = self.store.query("SELECT seq, key_id, feed_position, applied_at, snapshot_seq, head_issued_at, "
                                "confirmed_at FROM sync_applied WHERE collection_id = ?", (self.collection_id,))
        return Applied(*rows[0]) if rows else Applied()

    def position(self) -> str | None:
        """The desk's fingerprint (``changeset.payload_sha256``) of the payload at the applied seq,
        kept with that seq in the transaction that applied it; None when not known: none kept
        (applied before the fingerprint existed, or from an older desk's snapshot), or kept at
        another seq than the applied one (an older release applied sets after it): the next change
        set's ``prev`` is then taken as it comes. :class:`PositionUnreadable` when one is kept but
        cannot be read (not JSON, no seq, not a SHA-256): fail closed -- taken as unknown, any
        ``prev`` would do, and a copy of another history would be built on (review 90)."""
        (value, seq), = self.store.query(  # one statement: one consistent read
            "SELECT (SELECT value FROM meta WHERE key = ?), "
            "(SELECT seq FROM sync_applied WHERE collection_id = ?)", (self._position_key(), self.collection_id))
        if value is None or seq is None:
            return None
        try:
            kept = json.loads(value)
            kept_seq, sha256 = int(kept["seq"]), kept["sha256"]
        except (ValueError, TypeError, KeyError, RecursionError):
            raise PositionUnreadable(f"{self.collection_id}: the kept position {str(value)[:80]!r} "
                                     "is unreadable") from None
        if not is_fingerprint(sha256):
            raise PositionUnreadable(f"{self.collection_id}: the kept position is not a SHA-256")
        return sha256 if kept_seq == int(seq) else None

    def seen(self, seq: int) -> str | None:
        """The SHA-256 of the change set applied at ``seq`` (None: not known)."""
        rows = self.store.query("SELECT sha256 FROM sync_seen WHERE collection_id = ? AND seq = ?",
                                (self.collection_id, seq))
        return rows[0][0] if rows else None

    # -- a delta ---------------------------------------------------------------------------
    def apply_delta(self, cs: ChangeSet, delta: Delta, sha256: str) -> None:
        """``delta`` and its seq, in one transaction (StoreError / ChangeSetRejected: nothing changed)."""
        c_id = self.collection_id
        with self.store.transaction() as c:
            at = self._seq(c)
            if cs.seq != at + 1:  # another writer moved it: refuse rather than guess
                raise ChangeSetRejected("GAP", f"seq {cs.seq} after {at} (stored)", seq=cs.seq)
            if delta.collection_deleted:
                self._clear(c, delete_collection=True)
            else:
                self._ensure_collection(c)
                self._delete_users(c, delta.users_deleted)
                self._put_users(c, [(u.user_id, u.credential) for u in delta.users_put])
                self._delete_faces(c, delta.faces_deleted + [f.face_id for f in delta.faces_put])
                self._insert_faces(c, delta.faces_put)
            self._record(c, cs.seq, cs.key_id, delta.feed_position, snapshot=False, position=position_after(cs))
            c.execute("INSERT OR REPLACE INTO sync_seen VALUES (?, ?, ?)", (c_id, cs.seq, sha256))
            c.execute("DELETE FROM sync_seen WHERE collection_id = ? AND seq <= ?", (c_id, cs.seq - SEEN_KEEP))

    # -- snapshots -------------------------------------------------------------------------
    def stage_chunk(self, cs: ChangeSet, chunk: SnapshotChunk) -> bool:
        """Stage one chunk (its own transaction); True once every chunk of its snapshot is staged.
        A chunk of an older snapshot than the one being staged is ignored (False)."""
        c_id = self.collection_id
        with self.store.transaction() as c:
            row = c.execute("SELECT snapshot_id, seq, chunks, feed_position FROM sync_stage "
                            "WHERE collection_id = ?", (c_id,)).fetchone()
            if row is None or row[0] != chunk.snapshot_id:
                if row is not None and row[1] > cs.seq:
                    return False
                self._unstage(c)
                c.execute("INSERT INTO sync_stage VALUES (?, ?, ?, ?, ?, ?)",
                          (c_id, chunk.snapshot_id, cs.seq, chunk.chunks, chunk.feed_position, cs.key_id))
            elif (row[1], row[2], row[3]) != (cs.seq, chunk.chunks, chunk.feed_position):
                raise ChangeSetRejected("MALFORMED", f"chunk {chunk.chunk} of snapshot {chunk.snapshot_id} "
                                                     "disagrees with its other chunks")
            if chunk.chunk >= chunk.chunks:
                raise ChangeSetRejected("MALFORMED", f"chunk {chunk.chunk} of {chunk.chunks}")
            if c.execute("INSERT OR IGNORE INTO sync_stage_chunks VALUES (?, ?)", (c_id, chunk.chunk)).rowcount:
                c.executemany("INSERT OR REPLACE INTO sync_stage_faces VALUES (?,?,?,?,?,?,?,?,?)",
                              [(c_id, f.face_id, f.user_id, f.external_image_id, f.image_id, f.image_sha256,
                                json.dumps(f.bounding_box), f.confidence, f.vector().tobytes())
                               for f in chunk.faces_put])
                c.executemany("INSERT OR REPLACE INTO sync_stage_users VALUES (?, ?, ?)",
                              [(c_id, u.user_id, u.credential) for u in chunk.users_put])
            staged = c.execute("SELECT count(*) FROM sync_stage_chunks WHERE collection_id = ?", (c_id,)).fetchone()[0]
            return int(staged) == chunk.chunks

    def staging(self) -> tuple[int, int] | None:
        """The snapshot being staged: (its seq, chunks staged so far); None when none is."""
        rows = self.store.query("SELECT seq FROM sync_stage WHERE collection_id = ?", (self.collection_id,))
        if not rows:
            return None
        staged = self.store.query("SELECT count(*) FROM sync_stage_chunks WHERE collection_id = ?",
                                  (self.collection_id,))
        return int(rows[0][0]), int(staged[0][0])

    def apply_snapshot(self, position: str | None = None) -> int:
        """Replace the copy with the staged snapshot in one transaction; its base seq. ``position``:
        the snapshot's (every chunk of one ``snapshot_id`` carries the same, signed), kept with it."""
        c_id = self.collection_id
        with self.store.transaction() as c:
            row = c.execute("SELECT seq, chunks, feed_position, key_id FROM sync_stage WHERE collection_id = ?",
                            (c_id,)).fetchone()
            staged = c.execute("SELECT count(*) FROM sync_stage_chunks WHERE collection_id = ?", (c_id,)).fetchone()
            if row is None or int(staged[0]) != int(row[1]):
                raise ChangeSetRejected("MALFORMED", "the staged snapshot is incomplete")
            seq, _, feed_position, key_id = row
            if seq < self._seq(c):
                raise ChangeSetRejected("REPLAY", f"snapshot at seq {seq} is older than the applied one", seq=seq)
            self._clear(c, delete_collection=False)
            self._ensure_collection(c)
            now = time.time()
            c.execute(f"INSERT INTO faces({_FACE_COLS}) SELECT face_id, collection_id, image_id, external_image_id, "
                      "user_id, image_sha256, bounding_box, confidence, embedding, ? FROM sync_stage_faces "
                      "WHERE collection_id = ?", (now, c_id))
            c.execute("INSERT INTO face_vectors(rowid, embedding, collection_id) SELECT id, embedding, collection_id "
                      "FROM faces WHERE collection_id = ?", (c_id,))
            c.execute("INSERT INTO users(collection_id, user_id, created_at, credential) SELECT collection_id, "
                      "user_id, ?, credential FROM sync_stage_users WHERE collection_id = ?", (now, c_id))
            feed.record(c, c_id, [(0, None)], "reset", keep=self.store.changes_keep)  # followers reload whole
            self._record(c, seq, key_id, feed_position, snapshot=True, position=position)
            c.execute("DELETE FROM sync_seen WHERE collection_id = ?", (c_id,))
            c.execute("DELETE FROM meta WHERE key = ?", (self._diverged_key(),))  # replaced whole
            self._unstage(c)
        return int(seq)

    # -- heads -----------------------------------------------------------------------------
    def note_head(self, issued_at: float, confirmed_at: float | None,
                  anchor: tuple[float, float] | None = None, answered: float | None = None) -> None:
        """A head was accepted: ``issued_at`` is the newest accepted (older ones confirm nothing);
        ``confirmed_at``: it said this copy is up to date; ``anchor``: (its issued_at, the door's
        wall-clock time it was issued at, at the latest), which bounds when the next head can have
        been issued, see :meth:`head_anchor`; ``answered``: it answered a challenge sent at this
        wall-clock time (:meth:`answered_at`)."""
        with self.store.transaction() as c:
            if not c.execute("UPDATE sync_applied SET head_issued_at = ?, confirmed_at = coalesce(?, confirmed_at) "
                             "WHERE collection_id = ?", (issued_at, confirmed_at, self.collection_id)).rowcount:
                c.execute("INSERT INTO sync_applied VALUES (?, 0, '', 0, 0, 0, ?, ?)",
                          (self.collection_id, issued_at, confirmed_at))
            for key, value in ((self._anchor_key(), anchor), (self._answered_key(), answered)):
                if value is not None:
                    c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def diverged(self) -> int | None:
        """The seq this copy held when the desk's change sets were found to belong to another
        history (its database restored from an older copy); None: not diverged. Cleared only by
        a snapshot applied (:meth:`apply_snapshot`)."""
        try:
            value = self._meta(self._diverged_key())
            return None if value is None else int(value)
        except (ValueError, TypeError):
            return 0  # unreadable: diverged all the same (fail closed)

    def mark_diverged(self, seq: int) -> None:
        with self.store.transaction() as c:
            c.execute("INSERT OR IGNORE INTO meta VALUES (?, ?)", (self._diverged_key(), json.dumps(int(seq))))

    def _diverged_key(self) -> str:
        return f"sync_diverged:{self.collection_id}"

    def head_anchor(self) -> tuple[float, float] | None:
        """(issued_at of the last accepted head, the door's wall-clock time it was issued at)."""
        try:
            issued_at, issued_wall = self._meta(self._anchor_key()) or (None, None)
            return None if issued_at is None else (float(issued_at), float(issued_wall))
        except (ValueError, TypeError):
            return None

    def _anchor_key(self) -> str:
        return f"sync_head_anchor:{self.collection_id}"

    def answered_at(self) -> float | None:
        """The door's wall-clock time it sent the last challenge the desk answered (None: none yet)."""
        try:
            value = self._meta(self._answered_key())
            return None if value is None else float(value)
        except (ValueError, TypeError):
            return None

    def _meta(self, key: str) -> Any:
        """The JSON value kept in ``meta`` under ``key`` (None: none); ValueError when it is not JSON."""
        rows = self.store.query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else None

    def _answered_key(self) -> str:
        return f"sync_challenge_answered:{self.collection_id}"

    # -- inside a transaction --------------------------------------------------------------
    def _seq(self, c: Any) -> int:
        row = c.execute("SELECT seq FROM sync_applied WHERE collection_id = ?", (self.collection_id,)).fetchone()
        return int(row[0]) if row else 0

    def _record(self, c: Any, seq: int, key_id: str, feed_position: int, *, snapshot: bool,
                position: str | None) -> None:
        """Record ``seq`` (and the door's ``position`` in the desk's history at it; None: not known)."""
        now = time.time()
        if not c.execute("UPDATE sync_applied SET seq = ?, key_id = ?, feed_position = ?, applied_at = ?, "
                         "snapshot_seq = CASE WHEN ? THEN ? ELSE snapshot_seq END WHERE collection_id = ?",
                         (seq, key_id, feed_position, now, snapshot, seq, self.collection_id)).rowcount:
            c.execute("INSERT INTO sync_applied VALUES (?, ?, ?, ?, ?, ?, 0, NULL)",
                      (self.collection_id, seq, key_id, feed_position, now, seq if snapshot else 0))
        if position is not None and not is_fingerprint(position):  # rolls the whole apply back
            raise ChangeSetRejected("MALFORMED", f"position {str(position)[:80]!r} is not a SHA-256", seq=seq)
        if position is None:
            c.execute("DELETE FROM meta WHERE key = ?", (self._position_key(),))
        else:
            c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                      (self._position_key(), json.dumps({"seq": int(seq), "sha256": position})))

    def _position_key(self) -> str:
        return f"sync_position:{self.collection_id}"

    def _ensure_collection(self, c: Any) -> None:
        c.execute("INSERT OR IGNORE INTO collections VALUES (?, ?, ?)", (self.collection_id, self.model_version,
                                                                         time.time()))
        c.execute("UPDATE collections SET face_model_version = ? WHERE collection_id = ?",
                  (self.model_version, self.collection_id))

    def _clear(self, c: Any, *, delete_collection: bool) -> None:
        c_id = self.collection_id
        c.execute("DELETE FROM face_vectors WHERE rowid IN (SELECT id FROM faces WHERE collection_id = ?)", (c_id,))
        c.execute("DELETE FROM faces WHERE collection_id = ?", (c_id,))
        c.execute("DELETE FROM users WHERE collection_id = ?", (c_id,))
        if delete_collection:
            c.execute("DELETE FROM collections WHERE collection_id = ?", (c_id,))
            feed.record(c, c_id, [(0, None)], "reset", keep=self.store.changes_keep)

    def _delete_users(self, c: Any, user_ids: list[str]) -> None:
        c_id = self.collection_id
        for u in user_ids:
            rows = c.execute("SELECT id, face_id FROM faces WHERE collection_id = ? AND user_id = ?", (c_id, u)).fetchall()
            c.execute("UPDATE faces SET user_id = NULL WHERE collection_id = ? AND user_id = ?", (c_id, u))
            feed.record(c, c_id, [(int(r), fid) for r, fid in rows], "user", keep=self.store.changes_keep)
            c.execute("DELETE FROM users WHERE collection_id = ? AND user_id = ?", (c_id, u))
        if user_ids:
            feed.record_users(c, c_id, user_ids, "user_del", keep=self.store.changes_keep)

    def _put_users(self, c: Any, users: list[tuple[str, str | None]]) -> None:
        c_id, now = self.collection_id, time.time()
        for u, _ in users:  # first every user without a badge: a badge may move between them
            c.execute("INSERT OR IGNORE INTO users(collection_id, user_id, created_at) VALUES (?, ?, ?)", (c_id, u, now))
            c.execute("UPDATE users SET credential = NULL WHERE collection_id = ? AND user_id = ?", (c_id, u))
        for u, credential in users:
            if credential is not None:
                c.execute("UPDATE users SET credential = NULL WHERE collection_id = ? AND credential = ?",
                          (c_id, credential))
                c.execute("UPDATE users SET credential = ? WHERE collection_id = ? AND user_id = ?",
                          (credential, c_id, u))
        if users:
            feed.record_users(c, c_id, [u for u, _ in users], "user_put", keep=self.store.changes_keep)

    def _delete_faces(self, c: Any, face_ids: list[str]) -> None:
        gone = []
        for fid in dict.fromkeys(face_ids):
            row = c.execute("SELECT id FROM faces WHERE collection_id = ? AND face_id = ?",
                            (self.collection_id, fid)).fetchone()
            if row is not None:
                c.execute("DELETE FROM face_vectors WHERE rowid = ?", (row[0],))
                c.execute("DELETE FROM faces WHERE id = ?", (row[0],))
                gone.append((int(row[0]), fid))
        feed.record(c, self.collection_id, gone, "del", keep=self.store.changes_keep)

    def _insert_faces(self, c: Any, faces: list[FacePut]) -> None:
        added = []
        now = time.time()
        for f in faces:
            emb = f.vector().tobytes()
            cur = c.execute(f"INSERT INTO faces({_FACE_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                            (f.face_id, self.collection_id, f.image_id, f.external_image_id, f.user_id,
                             f.image_sha256, json.dumps(f.bounding_box), f.confidence, emb, now))
            c.execute("INSERT INTO face_vectors(rowid, embedding, collection_id) VALUES (?, ?, ?)",
                      (cur.lastrowid, emb, self.collection_id))
            added.append((int(cur.lastrowid), f.face_id))
        feed.record(c, self.collection_id, added, "add", keep=self.store.changes_keep)

    def _unstage(self, c: Any) -> None:
        for table in ("sync_stage", "sync_stage_chunks", "sync_stage_faces", "sync_stage_users"):
            c.execute(f"DELETE FROM {table} WHERE collection_id = ?", (self.collection_id,))
