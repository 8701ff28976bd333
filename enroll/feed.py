"""The collection change feed: the one module that writes the ``changes`` table and the one API
that follows it.

Writers: every write of ``enroll/store.py`` to a collection's faces, users or the collection
itself calls :func:`record` inside the same transaction, so a change is visible exactly when the
data it describes is. Nothing else writes ``changes``.

Followers (the door's in-memory index, ``facelink.device.matcher``; fleet sync later) never read
the desk's tables themselves. They keep a *position* (an opaque, increasing integer) and call
``ChangeFeed(store, collection_id).read_since(position)``, which returns one :class:`ChangeBatch`
read in one read transaction (one consistent snapshot of the database):

- ``batch.full`` False: ``batch.changed`` lists the face rows that changed since ``position``;
  the follower drops its copy of each and adds the rows in ``batch.faces`` (the current version
  of those that still exist in the collection);
- ``batch.full`` True: ``batch.faces`` is the whole collection and replaces the follower's copy.
  This happens when the collection was deleted (``collection`` is then None), when ``position``
  is older than what the feed still holds (pruned, see below) or newer than its end (another
  database file);
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
    from .store import Collection, FaceRow, Store

KEEP_CHANGES = 10_000  # change rows kept; a follower further behind does a full reload
PRUNED_KEY = "changes_pruned_through"
OPS = ("add", "del", "user", "reset")


def record(conn: Any, collection_id: str, face_rows: Iterable[int], op: str, *,
           keep: int = KEEP_CHANGES) -> None:
    """Append changes inside the caller's write transaction, then prune to the newest ``keep``."""
    assert op in OPS
    conn.executemany("INSERT INTO changes(collection_id, face_row, op) VALUES (?, ?, ?)",
                     [(collection_id, int(r), op) for r in face_rows])
    cut = last_seq(conn) - keep
    if cut > 0 and conn.execute("DELETE FROM changes WHERE seq <= ?", (cut,)).rowcount > 0:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (PRUNED_KEY, str(cut)))


def last_seq(conn: Any) -> int:
    """The newest change's seq (AUTOINCREMENT: never reused, even once pruned)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'changes'").fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class ChangeBatch:
    """What changed in one collection between a follower's position and ``position``."""

    position: int  # store this once the batch is applied
    full: bool  # True: ``faces`` is the whole collection; replace everything
    collection: Collection | None  # the collection as of this batch; None: it does not exist
    faces: tuple[FaceRow, ...]  # full: every face; else the current rows of the changed faces
    changed: tuple[int, ...] = ()  # not full: face rows whose previous copy must be dropped
    changes: int = 0  # change records covered (0 and not full: nothing happened)

    @property
    def empty(self) -> bool:
        return not self.full and self.changes == 0


class ChangeFeed:
    """Follows one collection's changes (see the module docstring for the contract)."""

    def __init__(self, store: Store, collection_id: str) -> None:
        self.store = store
        self.collection_id = collection_id

    def snapshot(self) -> ChangeBatch:
        """The whole collection and the position it corresponds to."""
        with self.store.read_transaction():
            return self._snapshot(self._last())

    def read_since(self, position: int) -> ChangeBatch:
        with self.store.read_transaction():
            last = self._last()
            rows = self.store.query("SELECT value FROM meta WHERE key = ?", (PRUNED_KEY,))
            pruned = int(rows[0][0]) if rows else 0
            if position < pruned or position > last:
                return self._snapshot(last)
            changes = self.store.query(
                "SELECT face_row, op FROM changes WHERE seq > ? AND collection_id = ? ORDER BY seq",
                (position, self.collection_id))
            if not changes:
                return ChangeBatch(last, False, None, ())
            if any(op == "reset" for _, op in changes):
                return self._snapshot(last)
            changed = tuple(sorted({int(row) for row, _ in changes}))
            faces = tuple(f for f in self.store.faces_by_rows(list(changed))
                          if f.collection_id == self.collection_id)
            return ChangeBatch(last, False, self.store.get_collection(self.collection_id), faces,
                               changed, len(changes))

    def _last(self) -> int:
        rows = self.store.query("SELECT seq FROM sqlite_sequence WHERE name = 'changes'")
        return int(rows[0][0]) if rows else 0

    def _snapshot(self, last: int) -> ChangeBatch:
        collection = self.store.get_collection(self.collection_id)
        faces = tuple(self.store.collection_faces(self.collection_id)) if collection else ()
        return ChangeBatch(last, True, collection, faces)
