"""The door's in-memory user index, following the collection through its change feed.

Faces are loaded once in bulk (``ChangeFeed.snapshot_columns``: a few SQL rows of concatenated
embeddings, no object per face), then only the desk's changes are applied
(``ChangeFeed.read_since``): enrollment and revocation take effect within ``reload_interval_s``
without a restart. Matching is the exact float32 nearest face; from ``quantised_from`` faces it
goes through an int8 copy with an exact re-rank that provably returns the same face
(``device/scan.py``; README "Performance").

Fail closed: a refresh is all or nothing. A new gallery (float32 rows and their int8 copy
together) is built aside and swapped in whole, and the feed position advances only with it.
After *any* failure (unreadable database, missing collection, another FaceModelVersion, a
malformed row) the index is unusable: ``best()`` raises and the door grants nobody until a full
reload succeeds (retried every ``reload_interval_s``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from facelink.enroll.feed import ChangeBatch, ChangeFeed, ColumnSnapshot
from facelink.enroll.store import Collection, Store
from facelink.errors import ConflictException, ResourceNotFoundException, StoreError
from facelink.models.runtime import thread_budget

from . import scan
from .gallery import QUANTISED_FROM, Gallery

log = logging.getLogger(__name__)


class IndexUnusable(StoreError):
    """The last read of the collection failed: nobody is grantable until a full reload succeeds."""


@dataclass(frozen=True)
class Match:
    user_id: str
    face_id: str
    external_image_id: str | None
    cosine: float


class UserIndex:
    def __init__(self, store: Store, collection_id: str, model_version: str, *, threads: int = 0,
                 quantised_from: int = QUANTISED_FROM) -> None:
        self.feed = ChangeFeed(store, collection_id)
        self.collection_id = collection_id
        self.model_version = model_version
        self.threads = min(2, thread_budget(threads))  # the scan is memory-bound beyond two
        self.quantised_from = quantised_from
        self._gallery = Gallery.empty()
        self.position = 0  # the change-feed position the index reflects
        self.error: str | None = "not loaded yet"  # None: usable
        self._last_poll = 0.0

    def __len__(self) -> int:
        return len(self._gallery)

    @property
    def usable(self) -> bool:
        return self.error is None

    def load(self) -> None:
        """A full reload (one bulk read); on failure the index stays unusable and the error is raised."""
        self._guarded(self.feed.snapshot_columns)
        log.info("user index: %d faces of %d users", len(self), len(set(self._gallery.user_ids.tolist())))

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
            batch: ChangeBatch | ColumnSnapshot = read()
            if isinstance(batch, ChangeBatch) and batch.full:
                batch = self.feed.snapshot_columns()  # a full batch is re-read in bulk
            if isinstance(batch, ChangeBatch) and batch.empty:
                return False
            gallery = self._applied(batch)
        except Exception as exc:
            self._gallery, self.error = Gallery.empty(), f"{type(exc).__name__}: {exc}"
            log.error("user index unusable, nobody is granted until a full reload succeeds: %s", self.error)
            raise
        self._gallery, self.position, self.error = gallery, batch.position, None
        if isinstance(batch, ChangeBatch):
            log.info("user index updated: %d changes, %d faces", batch.changes, len(self))
        return True

    def _applied(self, batch: ChangeBatch | ColumnSnapshot) -> Gallery:
        """The gallery with ``batch`` applied, built aside (the current one is left untouched)."""
        if isinstance(batch, ColumnSnapshot):
            self._check(batch.collection)
            assert batch.faces is not None
            return Gallery.from_columns(batch.faces)
        if batch.collection is None:  # deleted in the meantime: a full read says so
            self._check(None)
        if not batch.changed and not batch.faces:  # users' credentials only: same faces
            return self._gallery
        return self._gallery.changed(batch.changed, [f for f in batch.faces if f.user_id is not None])

    def _check(self, coll: Collection | None) -> None:
        if coll is None:
            raise ResourceNotFoundException(f"collection {self.collection_id!r} does not exist: "
                                            "create it and enroll faces with `facelink`")
        if coll.face_model_version != self.model_version:
            raise ConflictException(f"collection {self.collection_id!r} holds FaceModelVersion "
                                    f"{coll.face_model_version}, the engine runs {self.model_version}")

    def scan_info(self) -> dict[str, object]:
        """How best() scans now (health): the int8 kernel and from how many faces, and threads."""
        kernel = scan.kernel_isa()
        return {"kernel": kernel, "threads": self.threads, "int8_from": self.quantised_from,
                "int8": kernel is not None and len(self) >= self.quantised_from}

    def best(self, embedding: np.ndarray) -> Match | None:
        """The best-matching user (best of the user's faces), or None when nobody is enrolled."""
        if self.error is not None:
            raise IndexUnusable(f"collection {self.collection_id!r} unusable: {self.error}")
        g = self._gallery
        if not len(g):
            return None
        i, cosine = g.search(embedding, self.threads, self.quantised_from)
        return Match(g.user_ids[i], g.face_ids[i], g.external_image_ids[i], cosine)

    def best_of_user(self, user_id: str, embedding: np.ndarray) -> Match | None:
        """1:1 verification (card + face): the best of ``user_id``'s faces, None if they have none."""
        if self.error is not None:
            raise IndexUnusable(f"collection {self.collection_id!r} unusable: {self.error}")
        g = self._gallery
        found = g.search_user(user_id, embedding)
        if found is None:
            return None
        i, cosine = found
        return Match(g.user_ids[i], g.face_ids[i], g.external_image_ids[i], cosine)
