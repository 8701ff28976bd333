"""The collection change feed: the one module that writes the ``changes`` table and the one API
that follows it.

Writers: every write of ``enroll/store.py`` to a collection's faces, users or the collection
itself calls :func:`record` (face rows) or :func:`record_users` (users: created, deleted, badge
credential changed) inside the same transaction, so a change is visible exactly when the data it
describes is. Nothing else writes ``changes``. Each face change keeps the face's FaceId, so a
deleted face can still be named to a follower (fleet sync sends FaceIds, not row numbers).

Followers (the door's in-memory index, ``facelink.device.matcher``; the desk's fleet publisher,
``facelink.fleet.publisher``) never read the desk's tables themselves. They keep a *position* (an
opaque, increasing integer) and call ``ChangeFeed(store, collection_id).read_since(position)``,
which returns one :class:`ChangeBatch` read in one read transaction (one consistent snapshot):

- ``batch.full`` False: ``batch.changed`` lists the face rows that changed since ``position``;
  the follower drops its copy of each and adds the rows in ``batch.faces`` (the current version
  of those that still exist in the collection). ``batch.faces_deleted`` names (by FaceId) the
  changed faces that no longer exist; ``batch.users`` are the changed users that exist (with
  their credential), ``batch.users_deleted`` the changed users that no longer do;
- ``batch.full`` True: ``batch.faces`` is the whole collection and replaces the follower's copy
  (``batch.users`` then holds every user). This happens when the collection was deleted
  (``collection`` is then None), when ``position`` is older than what the feed still holds
  (pruned, see below) or newer than its end (another database file);
- then the follower stores ``batch.position``: only after it applied the batch. A batch is all or
  nothing: when ``read_since`` raises (``StoreError``), nothing was consumed and the same call
  may be made again; a follower that failed to apply a batch must not advance its position (the
  door then grants nobody until a full reload succeeds).

Pruning: :func:`record` keeps the newest ``keep`` change rows (default :data:`KEEP_CHANGES`) and
remembers, in ``meta.changes_pruned_through``, the last ``seq`` it deleted. A follower whose
position lies before that mark gets a full batch instead of silently missing changes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store import Collection, FaceColumns, FaceRow, Store

KEEP_CHANGES = 10_000  # change rows kept; a follower further behind does a full reload
PRUNED_KEY = "changes_pruned_through"
FACE_OPS = ("add", "del", "user")  # a face row was added, deleted, (dis)associated
USER_OPS = ("user_put", "user_del")  # a user was created or its credential changed; deleted
OPS = (*FACE_OPS, *USER_OPS, "reset")  # reset: the collection was deleted


def record(conn: Any, collection_id: str, faces: Iterable[tuple[int, str | None]], op: str, *,
           keep: int = KEEP_CHANGES) -> None:
    """Append face changes ``(row id, FaceId)`` inside the caller's write transaction (``reset``:
    ``[(0, None)]``), then prune to the newest ``keep``."""
    assert op in FACE_OPS or op == "reset"
    conn.executemany("INSERT INTO changes(collection_id, face_row, face_id, op) VALUES (?, ?, ?, ?)",
                     [(collection_id, int(r), fid, op) for r, fid in faces])
    _prune(conn, keep)


def record_users(conn: Any, collection_id: str, user_ids: Iterable[str], op: str, *,
                 keep: int = KEEP_CHANGES) -> None:
    """Append user changes inside the caller's write transaction, then prune."""
    assert op in USER_OPS
    conn.executemany("INSERT INTO changes(collection_id, face_row, user_id, op) VALUES (?, 0, ?, ?)",
                     [(collection_id, u, op) for u in user_ids])
    _prune(conn, keep)


def _prune(conn: Any, keep: int) -> None:
    cut = last_seq(conn) - keep
    if cut > 0 and conn.execute("DELETE FROM changes WHERE seq <= ?", (cut,)).rowcount > 0:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PRUNED_KEY, str(cut)))


def last_seq(conn: Any) -> int:
    """The newest change's seq (AUTOINCREMENT: never reused, even once pruned)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class UserState:
    """A user as it is now (``credential``: the badge, or None)."""

    user_id: str
    credential: str | None


@dataclass(frozen=True)
class ChangeBatch:
    """What changed in one collection between a follower's position and ``position``."""

    position: int  # store this once the batch is applied
    full: bool  # True: ``faces`` is the whole collection; replace everything
    collection: Collection | None  # the collection as of this batch; None: it does not exist
    faces: tuple[FaceRow, ...]  # full: every face; else the current rows of the changed faces
    changed: tuple[int, ...] = ()  # not full: face rows whose previous copy must be dropped
    changes: int = 0  # change records covered (0 and not full: nothing happened)
    faces_deleted: tuple[str, ...] = ()  # not full: FaceIds of changed faces that are gone
    users: tuple[UserState, ...] = ()  # full: every user; else the changed users that exist
    users_deleted: tuple[str, ...] = ()  # not full: changed users that no longer exist

    @property
    def empty(self) -> bool:
        return not self.full and self.changes == 0


@dataclass(frozen=True)
class ColumnSnapshot:
    """A full snapshot as columns (a large follower's bulk load): the user-associated faces."""

    position: int
    collection: Collection | None
    faces: FaceColumns | None  # None when the collection does not exist


class ChangeFeed:
    """Follows one collection's changes (see the module docstring for the contract)."""

    def __init__(self, store: Store, collection_id: str) -> None:
        self.store = store
        self.collection_id = collection_id

    def snapshot(self) -> ChangeBatch:
        """The whole collection and the position it corresponds to."""
        with self.store.read_transaction():
            return self._snapshot(self._last())

    def position_in_transaction(self) -> int:
        """The feed's newest position, inside the caller's ``store.read_transaction()``."""
        return self._last()

    def snapshot_columns(self) -> ColumnSnapshot:
        """:meth:`snapshot` of the faces associated with a user, as columns (one read transaction)."""
        with self.store.read_transaction():
            last = self._last()
            collection = self.store.get_collection(self.collection_id)
            faces = (self.store.collection_face_columns(self.collection_id, users_only=True)
                     if collection else None)
            return ColumnSnapshot(last, collection, faces)

    def read_since(self, position: int) -> ChangeBatch:
        with self.store.read_transaction():
            return self.read_since_in_transaction(position)

    def read_since_in_transaction(self, position: int) -> ChangeBatch:
        """:meth:`read_since` inside the caller's ``store.read_transaction()`` (so that more
        reads — a snapshot for the fleet — see the same state)."""
        last = self._last()
        rows = self.store.query("SELECT value FROM meta WHERE key = ?", (PRUNED_KEY,))
        pruned = int(rows[0][0]) if rows else 0
        if position < pruned or position > last:
            return self._snapshot(last)
        changes = self.store.query(
            "SELECT face_row, face_id, user_id, op FROM changes WHERE seq > ? AND collection_id = ? "
            "ORDER BY seq", (position, self.collection_id))
        if not changes:
            return ChangeBatch(last, False, None, ())
        if any(op == "reset" for *_, op in changes):
            return self._snapshot(last)
        changed = tuple(sorted({int(row) for row, _, _, op in changes if op in FACE_OPS}))
        faces = tuple(f for f in self.store.faces_by_rows(list(changed))
                      if f.collection_id == self.collection_id)
        # by FaceId, not by row: a deleted face's row id can be taken by a face added after it
        # (faces.id is a rowid, reused once the highest row is deleted), and that new face being
        # present must not hide the deletion of the old one from followers that hold FaceIds
        present = {f.face_id for f in faces}
        deleted = {fid for _, fid, _, op in changes
                   if op in FACE_OPS and fid is not None and fid not in present}
        user_ids = sorted({u for _, _, u, op in changes if op in USER_OPS and u is not None})
        users = self._users(user_ids)
        gone = tuple(u for u in user_ids if u not in {s.user_id for s in users})
        return ChangeBatch(last, False, self.store.get_collection(self.collection_id), faces,
                           changed, len(changes), tuple(sorted(deleted)), users, gone)

    def _users(self, user_ids: list[str] | None) -> tuple[UserState, ...]:
        """The named users that exist (all of them with None), by UserId."""
        sql = "SELECT user_id, credential FROM users WHERE collection_id = ?"
        if user_ids is None:
            return tuple(UserState(*r) for r in self.store.query(sql + " ORDER BY user_id",
                                                                 (self.collection_id,)))
        out: list[UserState] = []
        for start in range(0, len(user_ids), 500):
            part = user_ids[start:start + 500]
            out += [UserState(*r) for r in self.store.query(
                sql + f" AND user_id IN ({','.join('?' * len(part))}) ORDER BY user_id",
                (self.collection_id, *part))]
        return tuple(out)

    def _last(self) -> int:
        rows = self.store.query("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return int(rows[0][0]) if rows else 0

    def _snapshot(self, last: int) -> ChangeBatch:
        collection = self.store.get_collection(self.collection_id)
        faces = tuple(self.store.collection_faces(self.collection_id)) if collection else ()
        users = self._users(None) if collection else ()
        return ChangeBatch(last, True, collection, faces, users=users)
