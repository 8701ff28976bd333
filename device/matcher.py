"""The door's in-memory user index, following the collection through its change feed.

Faces are loaded once (``ChangeFeed.snapshot``), then only the desk's changes are applied
(``ChangeFeed.read_since``): enrollment and revocation take effect within ``reload_interval_s``
without a restart. Matching is a numpy matrix-vector product (128-d): README "Performance".

Fail closed: a refresh is all or nothing. A new index is built aside and swapped in whole, and
the feed position advances only with it. After *any* failure (unreadable database, missing
collection, another FaceModelVersion, a malformed row) the index is unusable: ``best()`` raises
and the door grants nobody until a full reload succeeds (retried every ``reload_interval_s``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from facelink.enroll.feed import ChangeBatch, ChangeFeed
from facelink.enroll.store import FaceRow, Store
from facelink.errors import ConflictException, ResourceNotFoundException, StoreError
from facelink.models.embedder import EMBEDDING_DIM

log = logging.getLogger(__name__)


class IndexUnusable(StoreError):
    """The last read of the collection failed: nobody is grantable until a full reload succeeds."""


@dataclass(frozen=True)
class Match:
    user_id: str
    face_id: str
    external_image_id: str | None
    cosine: float


@dataclass(frozen=True)
class _Snapshot:
    """One immutable version of the index (swapped in whole)."""

    rows: dict[int, FaceRow]
    meta: list[FaceRow]
    matrix: np.ndarray

    @classmethod
    def of(cls, rows: dict[int, FaceRow]) -> _Snapshot:
        meta = list(rows.values())
        matrix = (np.stack([r.embedding for r in meta]).astype(np.float32, copy=False) if meta
                  else np.zeros((0, EMBEDDING_DIM), dtype=np.float32))
        if matrix.shape[1] != EMBEDDING_DIM:
            raise StoreError(f"collection holds embeddings of {matrix.shape[1]} values, "
                             f"expected {EMBEDDING_DIM}")
        return cls(rows, meta, matrix)


EMPTY = _Snapshot({}, [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32))


class UserIndex:
    def __init__(self, store: Store, collection_id: str, model_version: str) -> None:
        self.feed = ChangeFeed(store, collection_id)
        self.collection_id = collection_id
        self.model_version = model_version
        self._snap = EMPTY
        self.position = 0  # the change-feed position the index reflects
        self.error: str | None = "not loaded yet"  # None: usable
        self._last_poll = 0.0

    def __len__(self) -> int:
        return len(self._snap.meta)

    @property
    def usable(self) -> bool:
        return self.error is None

    def load(self) -> None:
        """A full reload; on failure the index stays unusable and the error is raised."""
        self._guarded(self.feed.snapshot)
        log.info("user index: %d faces of %d users", len(self), len({r.user_id for r in self._snap.meta}))

    def refresh(self, interval_s: float) -> bool:
        """Apply the desk's changes if ``interval_s`` has passed; True when anything changed.
        An unusable index tries a full reload instead. Raises what failed (the index is then
        unusable)."""
        now = time.monotonic()
        if now - self._last_poll < interval_s:
            return False
        self._last_poll = now
        if not self.usable:
            self.load()
            log.warning("user index usable again after a full reload")
            return True
        return self._guarded(lambda: self.feed.read_since(self.position))

    def _guarded(self, read) -> bool:
        try:
            batch: ChangeBatch = read()
            if batch.empty:
                return False
            snap = self._applied(batch)
        except Exception as exc:
            self._snap, self.error = EMPTY, f"{type(exc).__name__}: {exc}"
            log.error("user index unusable, nobody is granted until a full reload succeeds: %s", self.error)
            raise
        self._snap, self.position, self.error = snap, batch.position, None
        if not batch.full:
            log.info("user index updated: %d changes, %d faces", batch.changes, len(self))
        return True

    def _applied(self, batch: ChangeBatch) -> _Snapshot:
        """The index with ``batch`` applied, built aside (the current one is left untouched)."""
        coll = batch.collection
        if batch.full or coll is None:
            if coll is None:
                raise ResourceNotFoundException(f"collection {self.collection_id!r} does not exist: "
                                                "create it and enroll faces with `facelink`")
            if coll.face_model_version != self.model_version:
                raise ConflictException(f"collection {self.collection_id!r} holds FaceModelVersion "
                                        f"{coll.face_model_version}, the engine runs {self.model_version}")
            return _Snapshot.of({f.id: f for f in batch.faces if f.user_id is not None})
        rows = dict(self._snap.rows)
        for row in batch.changed:
            rows.pop(row, None)
        rows.update({f.id: f for f in batch.faces if f.user_id is not None})
        return _Snapshot.of(rows)

    def best(self, embedding: np.ndarray) -> Match | None:
        """The best-matching user (best of the user's faces), or None when nobody is enrolled."""
        if self.error is not None:
            raise IndexUnusable(f"collection {self.collection_id!r} unusable: {self.error}")
        snap = self._snap
        if not snap.meta:
            return None
        scores = snap.matrix @ embedding.astype(np.float32)
        i = int(np.argmax(scores))
        r = snap.meta[i]
        return Match(r.user_id, r.face_id, r.external_image_id, float(scores[i]))

    def best_of_user(self, user_id: str, embedding: np.ndarray) -> Match | None:
        """1:1 verification (card + face): the best of ``user_id``'s faces, None if they have none."""
        if self.error is not None:
            raise IndexUnusable(f"collection {self.collection_id!r} unusable: {self.error}")
        snap = self._snap
        rows = [i for i, r in enumerate(snap.meta) if r.user_id == user_id]
        if not rows:
            return None
        scores = snap.matrix[rows] @ embedding.astype(np.float32)
        i = int(np.argmax(scores))
        r = snap.meta[rows[i]]
        return Match(r.user_id, r.face_id, r.external_image_id, float(scores[i]))
